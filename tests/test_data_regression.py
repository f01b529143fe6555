"""Regression data end to end in the data layer: a factory's or a file's float targets become a regression
Dataset (never truncated to class labels), the task rule and its override, the model-output check and the
objective's default loss per task."""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from flatminima.data import load_file
from flatminima.errors import FlatminimaError
from flatminima.models import build
from flatminima.models.zoo import check_outputs
from flatminima.workflows.common import get_data, objective_for

MOD = "fm_regression_data_factories"  # a name no other test module uses (sys.modules is shared)

FACTORIES = '''
import torch
from torch.utils.data import DataLoader, TensorDataset

def targets(n=12, k=1):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, generator=g)
    y = torch.tensor([0.84, -1.5, 2.25, 0.1, 0.0, 3.0, -0.4, 1.7, 0.9, -2.2, 0.33, 1.01])[:n]
    return x, (y if k == 1 else torch.stack([y * (i + 1) for i in range(k)], 1))

def loaders(k=2):
    x, y = targets(k=k)
    return {"train": DataLoader(TensorDataset(x[:8], y[:8]), batch_size=3),
            "test": DataLoader(TensorDataset(x[8:], y[8:]), batch_size=3)}

def whole(n=12):
    x, _ = targets(n)
    return x, torch.arange(n, dtype=torch.float32) % 3

def labels(n=12):
    x, _ = targets(n)
    return x, torch.arange(n) % 3

def not_finite():
    x, y = targets()
    y[3] = float("nan")
    return x, y
'''


@pytest.fixture(scope="module")
def factories(tmp_path_factory):
    folder = tmp_path_factory.mktemp("factories")
    (folder / f"{MOD}.py").write_text(textwrap.dedent(FACTORIES))
    sys.path.insert(0, str(folder))
    yield folder
    sys.path.remove(str(folder))
    sys.modules.pop(MOD, None)


def _refused(fn, *fragments: str) -> str:
    with pytest.raises(FlatminimaError) as err:
        fn()
    for f in fragments:
        assert f in str(err.value), str(err.value)
    return str(err.value)


# ---- the data factory -----------------------------------------------------------------------------------------
def test_factory_float_targets_are_kept_as_regression_targets(factories):
    d = get_data(f"{MOD}:targets")
    expected = torch.tensor([0.84, -1.5, 2.25, 0.1, 0.0, 3.0, -0.4, 1.7, 0.9, -2.2, 0.33, 1.01])
    assert d.task == "regression" and d.num_classes == 1
    assert d.y_train.dtype == torch.float32 and torch.equal(d.y_train, expected)  # 0.84 stays 0.84, not 0
    assert "floating-point" in d.info["task_from"] and d.info["test_is_train"]


def test_factory_multi_output_targets_through_data_loaders(factories):
    d = get_data(f"{MOD}:loaders", k=2)
    assert d.task == "regression" and d.num_classes == 2
    assert d.y_train.shape == (8, 2) and d.y_test.shape == (4, 2)  # the loaders' flattened targets reshaped
    assert torch.equal(d.y_train[:, 1], 2 * d.y_train[:, 0])


def test_factory_task_rule_and_override(factories):
    assert get_data(f"{MOD}:labels").task == "classification"  # integer dtype: class labels
    floats = get_data(f"{MOD}:whole")
    assert floats.task == "regression"  # floating dtype: regression, also when every value is whole
    as_labels = get_data(f"{MOD}:whole", task="classification")
    assert as_labels.task == "classification" and as_labels.num_classes == 3
    assert as_labels.y_train.dtype == torch.int64 and as_labels.info["task_from"] == "given"
    as_floats = get_data(f"{MOD}:labels", task="regression")
    assert as_floats.task == "regression" and as_floats.y_train.dtype == torch.float32
    _refused(lambda: get_data(f"{MOD}:targets", task="classification"), "not whole numbers", "0.84")
    _refused(lambda: get_data(f"{MOD}:targets", task="regresion"), "task must be one of", "regresion")
    _refused(lambda: get_data(f"{MOD}:not_finite"), "NaN or infinite")
    _refused(lambda: get_data("two_class", num_samples=20, task="regression"), "classification data set")


# ---- data files -----------------------------------------------------------------------------------------------
def test_npz_and_pt_float_targets_are_regression(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(20, 4)), rng.normal(size=(20, 2))
    np.savez(tmp_path / "r.npz", x_train=x[:15], y_train=y[:15], x_test=x[15:], y_test=y[15:])
    d = load_file(str(tmp_path / "r.npz"))
    assert d.task == "regression" and d.num_classes == 2 and d.y_train.dtype == torch.float32
    np.testing.assert_allclose(d.y_test.numpy(), y[15:].astype(np.float32))
    torch.save({"x_train": torch.as_tensor(x), "y_train": torch.as_tensor(y[:, 0])}, tmp_path / "r.pt")
    one = load_file(str(tmp_path / "r.pt"), test_fraction=0.25)
    assert one.task == "regression" and one.num_classes == 1 and one.y_train.shape == (15,)
    assert load_file(str(tmp_path / "r.pt"), num_classes=1).num_classes == 1
    _refused(lambda: load_file(str(tmp_path / "r.pt"), num_classes=3), "num_classes=3", "1 output")
    np.savez(tmp_path / "i.npz", x_train=x, y_train=(x[:, 0] > 0).astype(np.int64))
    assert load_file(str(tmp_path / "i.npz")).task == "classification"
    regressed = load_file(str(tmp_path / "i.npz"), task="regression")
    assert regressed.task == "regression" and regressed.y_train.dtype == torch.float32


@pytest.mark.parametrize("arrays,fragment", [
    ({"y_train": np.full(6, np.inf)}, "NaN or infinite"),
    ({"y_train": np.zeros((6, 2, 2))}, "(samples,) or (samples, outputs)"),
    ({"y_train": np.zeros(5)}, "6 inputs but 5 targets"),
    ({"y_train": np.zeros((6, 2)), "x_test": np.zeros((2, 3)), "y_test": np.zeros((2, 3))},
     "train targets have per-sample shape (2,) but test targets (3,)"),
])
def test_bad_regression_files_are_refused(tmp_path, arrays, fragment):
    np.savez(tmp_path / "d.npz", x_train=np.zeros((6, 3)), **arrays)
    _refused(lambda: load_file(str(tmp_path / "d.npz")), fragment)


def test_csv_fractions_and_several_target_columns(tmp_path):
    rows = ["a,b,y,z"] + [f"{i},{i % 3},{0.5 * i},{i * i}" for i in range(10)]
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    one = load_file(str(tmp_path / "d.csv"))  # 'y' holds fractions: regression, features a, b and z
    assert one.task == "regression" and one.input_shape == (3,) and one.num_classes == 1
    two = load_file(str(tmp_path / "d.csv"), label_column="y,z")
    assert two.task == "regression" and two.input_shape == (2,) and two.num_classes == 2
    assert sorted(two.y_train[:, 1].tolist() + two.y_test[:, 1].tolist()) == [float(i * i) for i in range(10)]
    whole = load_file(str(tmp_path / "d.csv"), label_column="b")  # whole numbers in one column: class labels
    assert whole.task == "classification" and whole.num_classes == 3
    _refused(lambda: load_file(str(tmp_path / "d.csv"), label_column="y,w"), "no label column", "w")


# ---- models and the objective ---------------------------------------------------------------------------------
def test_check_outputs_for_regression():
    check_outputs(torch.nn.Linear(3, 2), (3,), 2, task="regression")
    check_outputs(torch.nn.Linear(3, 1), (3,), 1, task="regression")
    check_outputs(torch.nn.Sequential(torch.nn.Linear(3, 1), torch.nn.Flatten(0)), (3,), 1, task="regression")
    _refused(lambda: check_outputs(torch.nn.Linear(3, 4), (3,), 1, "net", task="regression"),
             "regression: one output per target", "(4,)")
    _refused(lambda: check_outputs(torch.nn.Sequential(torch.nn.Linear(3, 1), torch.nn.Flatten(0)), (3,), 2,
                                   task="regression"), "2 value(s) per sample")
    _refused(lambda: check_outputs(torch.nn.Linear(3, 4), (3,), 2), "2 logits")  # classification unchanged


def test_objective_default_loss_follows_the_task(factories):
    d = get_data(f"{MOD}:targets", k=1)
    torch.manual_seed(0)
    net = build("mlp", d.input_shape, d.num_classes, width=4)
    obj = objective_for(net, d, dtype="float64")
    with torch.no_grad():
        out = net.double()(d.x_train.double())
    assert obj.loss() == pytest.approx(float(F.mse_loss(out[:, 0], d.y_train.double())), rel=1e-12)
    two = get_data(f"{MOD}:targets", k=2)
    net2 = build("mlp", two.input_shape, two.num_classes, width=4).double()
    with torch.no_grad():
        ref = float(F.mse_loss(net2(two.x_train.double()), two.y_train.double()))
    assert objective_for(net2, two, dtype="float64").loss() == pytest.approx(ref, rel=1e-12)
    _refused(lambda: objective_for(net, d, loss="cross_entropy"), "needs class labels")
    labels = get_data(f"{MOD}:labels")
    net3 = build("mlp", labels.input_shape, labels.num_classes, width=4).double()
    with torch.no_grad():
        ce = float(F.cross_entropy(net3(labels.x_train.double()), labels.y_train))
    assert objective_for(net3, labels, dtype="float64").loss() == pytest.approx(ce, rel=1e-12)
