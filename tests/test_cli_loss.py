"""``flatminima curvature`` and ``flatminima sharpness`` beyond classification: regression data and a user's own
loss (checked against a dense Hessian), several checkpoints in one call, measures needing the initial weights,
a failing measure keeping the others, and bad --loss values refused before any work."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from flatminima.cli import app
from flatminima.errors import FlatminimaError
from flatminima.models import mlp
from flatminima.train import fit, flat_params

MOD = "fm_cli_loss_user"  # a name no other test module uses (sys.modules is shared)
WIDTH = 3

USER = '''
import torch

def regression(n=40):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, generator=g)
    y = x @ torch.tensor([0.7, -0.3, 0.2]) + 0.3 * torch.randn(n, generator=g) + 0.04
    return x, y

def classes(n=40):
    x, y = regression(n)
    return x, (y > 0).long()

def logcosh(out, y):
    return torch.log(torch.cosh(out.reshape(y.shape) - y)).mean()

def rounded(out, y):
    return (torch.round(out.reshape(y.shape)) - y).abs().mean()

def detached(out, y):
    return ((out.reshape(y.shape) - y) ** 2).mean().detach()

def per_sample(out, y):
    return (out.reshape(y.shape) - y) ** 2
'''

runner = CliRunner()


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    folder = tmp_path_factory.mktemp("user")
    (folder / f"{MOD}.py").write_text(textwrap.dedent(USER))
    sys.path.insert(0, str(folder))
    yield __import__(MOD)
    sys.path.remove(str(folder))
    sys.modules.pop(MOD, None)


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # flatminima-out/ lands in the test's folder


def _checkpoint(path: Path, seed: int, outputs: int = 1, width: int = WIDTH) -> str:
    torch.manual_seed(seed)
    torch.save(mlp((3,), outputs, width=width).state_dict(), path)
    return str(path)


def _invoke(args: list[str]):
    return runner.invoke(app, args, env={"COLUMNS": "200"})


def _ok(args: list[str]) -> str:
    res = _invoke(args)
    assert res.exit_code == 0, (res.output, res.exception)
    return res.output


def _refused(args: list[str], *fragments: str) -> str:
    res = _invoke(args)
    assert isinstance(res.exception, FlatminimaError), (res.output, res.exception)
    for f in fragments:
        assert f in str(res.exception), str(res.exception)
    return str(res.exception)


def _dense_eigenvalues(state_path: str, x: torch.Tensor, y: torch.Tensor, loss) -> torch.Tensor:
    """Every eigenvalue of the exact Hessian of ``loss(model(x), y)`` over all parameters (float64, dense)."""
    net = mlp((3,), 1, width=WIDTH).double()
    net.load_state_dict(torch.load(state_path, weights_only=True))
    names = [n for n, _ in net.named_parameters()]
    shapes = [p.shape for _, p in net.named_parameters()]
    theta0 = torch.cat([p.detach().reshape(-1) for p in net.parameters()])

    def f(theta: torch.Tensor) -> torch.Tensor:
        parts = dict(zip(names, (t.reshape(s) for t, s in zip(theta.split([s.numel() for s in shapes]), shapes,
                                                               strict=True)), strict=True))
        return loss(torch.func.functional_call(net, parts, (x.double(),)), y.double())

    return torch.linalg.eigvalsh(torch.func.hessian(f)(theta0))


CURV = ["curvature", "--model-arg", f"width={WIDTH}", "--dtype", "float64", "--compute", "eigenvalues",
        "--k", "2", "--tol", "1e-10", "--json", "--no-progress"]


# ---- regression and a user's loss against the dense Hessian ----------------------------------------------------
def test_regression_lambda_max_equals_the_dense_hessian(user, tmp_path):
    ckpt = _checkpoint(tmp_path / "net.pt", 0)
    rep = json.loads(_ok([*CURV, "--data", f"{MOD}:regression", "--checkpoint", ckpt, "--loss", "mse"]))
    x, y = user.regression()
    dense = _dense_eigenvalues(ckpt, x, y, lambda out, t: torch.nn.functional.mse_loss(out[:, 0], t))
    assert rep["top"]["values"] == pytest.approx(dense.flip(0)[:2].tolist(), rel=1e-9, abs=1e-12)
    assert rep["top"]["values"][0] > 0.1  # the float targets were not truncated to class 0
    assert rep["data"]["task"] == "regression" and "floating-point" in rep["data"]["task_from"]
    assert rep["loss_function"] == "mse" and rep["objective"]["samples"] == 40
    # without --loss the regression data's default is the same MSE
    again = json.loads(_ok([*CURV, "--data", f"{MOD}:regression", "--checkpoint", ckpt]))
    assert again["top"]["values"] == pytest.approx(rep["top"]["values"], rel=1e-12)


def test_a_user_loss_matches_the_dense_hessian(user, tmp_path):
    ckpt = _checkpoint(tmp_path / "net.pt", 1)
    rep = json.loads(_ok([*CURV, "--data", f"{MOD}:regression", "--checkpoint", ckpt, "--loss", f"{MOD}:logcosh"]))
    x, y = user.regression()
    dense = _dense_eigenvalues(ckpt, x, y, user.logcosh)
    assert rep["top"]["values"] == pytest.approx(dense.flip(0)[:2].tolist(), rel=1e-9, abs=1e-12)
    assert rep["loss_function"] == f"{MOD}:logcosh"
    assert rep["loss"] == pytest.approx(float(user.logcosh(_net(ckpt)(x.double()), y.double()).detach()), rel=1e-12)


def _net(path: str, outputs: int = 1) -> torch.nn.Module:
    net = mlp((3,), outputs, width=WIDTH).double()
    net.load_state_dict(torch.load(path, weights_only=True))
    return net


def test_a_user_loss_is_also_the_training_loss(user):
    out = _ok(["sharpness", "--data", f"{MOD}:regression", "--model-arg", f"width={WIDTH}", "--epochs", "2",
               "--loss", f"{MOD}:logcosh", "--measures", "param_norm", "--json", "--no-progress"])
    assert json.loads(out)["model"]["loss"] == f"{MOD}:logcosh"
    trained = torch.load(Path(json.loads(out)["out"]) / "last.pt", weights_only=True)["model"]
    x, y = user.regression()
    torch.manual_seed(0)  # the command's seed: the same initial weights, the same shuffling
    ref = mlp((3,), 1, width=WIDTH)
    fit(ref, (x, y), {"epochs": 2, "seed": 0}, progress=False, loss_fn=user.logcosh)
    assert all(torch.equal(trained[k], v) for k, v in ref.state_dict().items())
    torch.manual_seed(0)
    mse = mlp((3,), 1, width=WIDTH)
    fit(mse, (x, y), {"epochs": 2, "seed": 0, "loss": "mse"}, progress=False)
    assert not torch.equal(mse.state_dict()["1.weight"], ref.state_dict()["1.weight"])


def test_task_override_turns_whole_number_floats_into_labels(user, tmp_path, monkeypatch):
    ckpt = _checkpoint(tmp_path / "c.pt", 0, outputs=2)
    (tmp_path / "floatlabels.py").write_text(f"from {MOD} import classes\n\ndef make():\n    x, y = classes()\n"
                                             "    return x, y.float()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    args = [*CURV, "--data", "floatlabels:make", "--checkpoint", ckpt]
    _refused(args, "does not fit", "task=classification")  # float targets: a regression of one output
    rep = json.loads(_ok([*args, "--data-arg", "task=classification"]))
    assert rep["data"]["task"] == "classification" and rep["loss_function"] == "cross_entropy"


# ---- several checkpoints ---------------------------------------------------------------------------------------
def test_several_checkpoints_give_one_row_each(user, tmp_path):
    paths = [_checkpoint(tmp_path / f"net{i}.pt", i) for i in range(3)]
    base = [*CURV, "--data", f"{MOD}:regression"]
    several = json.loads(_ok([*base, *(a for p in paths for a in ("--checkpoint", p))]))
    assert isinstance(several, list) and [r["model"]["checkpoint"] for r in several] == paths
    for p, rep in zip(paths, several, strict=True):
        alone = json.loads(_ok([*base, "--checkpoint", p]))
        assert rep["top"]["values"] == pytest.approx(alone["top"]["values"], rel=1e-12)
    table = _ok([a for a in base if a != "--json"] + [a for p in paths for a in ("--checkpoint", p)])
    rows = [line for line in table.splitlines() if line.startswith("│")]
    assert [r.split("│")[1].strip() for r in rows] == ["net0.pt", "net1.pt", "net2.pt"]
    out = _ok(["sharpness", "--data", f"{MOD}:regression", "--model-arg", f"width={WIDTH}", "--measures",
               "lambda_max,param_norm", "--no-progress", *(a for p in paths[:2] for a in ("--checkpoint", p))])
    rows = [line for line in out.splitlines() if line.startswith("│")]
    assert len(rows) == 2 and "net0.pt" in rows[0] and "net1.pt" in rows[1]


def test_a_failing_checkpoint_keeps_the_other_rows(user, tmp_path):
    good = _checkpoint(tmp_path / "good.pt", 0)
    torch.save({k: v * float("nan") for k, v in torch.load(good, weights_only=True).items()}, tmp_path / "nan.pt")
    args = [*CURV, "--data", f"{MOD}:regression", "--checkpoint", good, "--checkpoint", str(tmp_path / "nan.pt")]
    res = _invoke(args)
    reps = json.loads(res.output)
    assert res.exit_code == 1 and reps[0]["model"]["checkpoint"] == good and reps[0]["top"]["values"][0] > 0
    assert reps[1]["model"]["checkpoint"].endswith("nan.pt") and "not finite" in reps[1]["failed"]
    res = _invoke([a for a in args if a != "--json"])
    assert res.exit_code == 1 and "good.pt" in res.output and "failed nan.pt" in res.output


def test_a_checkpoint_of_another_architecture_is_refused_before_measuring(user, tmp_path):
    good = _checkpoint(tmp_path / "good.pt", 0)
    wrong = _checkpoint(tmp_path / "wrong.pt", 0, width=WIDTH + 2)
    for command in ("curvature", "sharpness"):
        msg = _refused([command, "--data", f"{MOD}:regression", "--model-arg", f"width={WIDTH}", "--checkpoint",
                        good, "--checkpoint", wrong, "--no-progress"], "wrong.pt", "does not fit", "1.weight")
        assert f"({WIDTH + 2}, 3) (the model has ({WIDTH}, 3))" in msg
    assert not Path("flatminima-out").exists()  # nothing measured, nothing written


# ---- measures that need the initial weights; a failing measure ---------------------------------------------
def test_default_sharpness_set_on_a_checkpoint_leaves_distance_from_init_out(user, tmp_path):
    ckpt = _checkpoint(tmp_path / "net.pt", 0)
    args = ["sharpness", "--data", f"{MOD}:regression", "--model-arg", f"width={WIDTH}", "--checkpoint", ckpt,
            "--no-progress", "--set", "samples=6", "--set", "worst_case.steps=2", "--set", "keskar.steps=2"]
    out = _ok(args)
    left = next(line for line in out.splitlines() if line.startswith("left out:"))
    assert "distance_from_init" in left and "--init-checkpoint" in left
    rep = json.loads(_ok([*args, "--json"]))
    assert "distance_from_init" in rep["left_out"] and "distance_from_init" not in rep["measures"]
    assert {"lambda_max", "trace", "worst_case", "average_case", "param_norm"} <= set(rep["measures"])
    assert rep["failed"] == {}
    # asked for by name: refused before any work, unless the initial weights are given
    args = args[:7] + ["--measures", "distance_from_init"]
    _refused(args, "distance_from_init", "--init-checkpoint")
    init = _checkpoint(tmp_path / "init.pt", 5)
    rep = json.loads(_ok([*args, "--json", "--init-checkpoint", init, "--set", "biases=true"]))
    ref = (flat_params(_net(ckpt)) - flat_params(_net(init))).norm()
    assert rep["measures"]["distance_from_init"]["value"] == pytest.approx(float(ref), rel=1e-6)


def test_a_trained_model_passes_its_own_initial_weights(user):
    out = json.loads(_ok(["sharpness", "--data", f"{MOD}:regression", "--model-arg", f"width={WIDTH}", "--epochs",
                          "2", "--measures", "distance_from_init", "--set", "biases=true", "--json",
                          "--no-progress"]))
    trained = torch.load(Path(out["out"]) / "last.pt", weights_only=True)["model"]
    torch.manual_seed(0)
    init = flat_params(mlp((3,), 1, width=WIDTH))
    end = torch.cat([v.reshape(-1) for v in trained.values()])
    assert out["measures"]["distance_from_init"]["value"] == pytest.approx(float((end - init).norm()), rel=1e-6)


def test_a_failing_measure_keeps_what_was_measured(user, tmp_path):
    ckpt = _checkpoint(tmp_path / "c.pt", 0, outputs=2)
    # sigma_max this small cannot drop the accuracy by the target: pac_bayes_mag fails in the middle
    args = ["sharpness", "--data", f"{MOD}:classes", "--model-arg", f"width={WIDTH}", "--checkpoint", ckpt,
            "--measures", "param_norm,pac_bayes_mag,lambda_max", "--set", "pac_bayes_mag.sigma_max=1e-9",
            "--no-progress"]
    res = _invoke(args)
    assert res.exit_code == 1, res.output
    assert "param_norm" in res.output and "lambda_max" in res.output
    assert "failed pac_bayes_mag" in res.output and "sigma_max" in res.output
    res = _invoke([*args, "--json"])
    rep = json.loads(res.output)
    assert res.exit_code == 1 and set(rep["measures"]) == {"param_norm", "lambda_max"}
    assert "pac_bayes_mag" in rep["failed"]


# ---- bad --loss values: refused before any work ----------------------------------------------------------------
@pytest.mark.parametrize("loss,fragments", [
    ("hinge", ("--loss must be one of", "module:function")),
    ("no_such_module_here:f", ("no module named",)),
    (f"{MOD}:missing", ("cannot load loss function", "missing")),
    (f"{MOD}:rounded", ("exactly zero gradient",)),
    (f"{MOD}:detached", ("not differentiable",)),
    (f"{MOD}:per_sample", ("0-dim tensor",)),
    ("cross_entropy", ("needs class labels", "--loss mse")),
])
@pytest.mark.parametrize("command", ["curvature", "sharpness"])
def test_bad_losses_are_refused_before_training(user, command, loss, fragments):
    _refused([command, "--data", f"{MOD}:regression", "--model-arg", f"width={WIDTH}", "--loss", loss,
              "--no-progress"], *fragments)
    assert not Path("flatminima-out").exists()  # no training run was started
