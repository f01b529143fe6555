"""Tracking measures inside a user's training loop: right values, right steps, no side effects."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.func import functional_call, hessian

import flatminima.track as ft
from flatminima import Objective
from flatminima.errors import FlatminimaError


def _setup(dropout: float = 0.0):
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(60, 4, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (60,), generator=gen)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Dropout(dropout), nn.Linear(5, 3)).double()
    return model, X, y


def _dense_lambda_max(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> float:
    model = copy.deepcopy(model).eval()
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def f(t):
        parts = dict(
            zip(
                names,
                (
                    s.view(sh)
                    for s, sh in zip(torch.split(t, [sh.numel() for sh in shapes]), shapes, strict=True)
                ),
                strict=True,
            )
        )
        return nn.functional.cross_entropy(functional_call(model, parts, (X,)), y)

    return float(torch.linalg.eigvalsh(hessian(f)(theta))[-1])


def _train(model, X, y, steps, tracker=None):
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for step in range(steps):
        loss = nn.functional.cross_entropy(model(X), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if tracker is not None:
            tracker.step(step)
    return model


def test_records_every_n_steps_with_exact_values(tmp_path):
    model, X, y = _setup()
    tracker = ft.track(
        model,
        (X, y),
        loss="cross_entropy",
        measures={"loss": {}, "lambda_max": {"tol": 1e-8}},
        every=3,
        store=tmp_path / "t.sqlite",
        run="a",
    )
    snapshots = {}
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for step in range(7):
        opt.zero_grad()
        nn.functional.cross_entropy(model(X), y).backward()
        opt.step()
        if tracker.step(step):
            snapshots[step] = copy.deepcopy(model)
    tracker.close()
    steps, losses = tracker.series("loss")
    assert steps == [0, 3, 6] and sorted(snapshots) == steps
    for s, value in zip(steps, losses, strict=True):
        with torch.no_grad():
            ref = float(nn.functional.cross_entropy(snapshots[s](X), y))
        assert value == pytest.approx(ref, rel=1e-12)
    _, lams = tracker.series("lambda_max")
    for s, lam in zip(steps, lams, strict=True):
        assert lam == pytest.approx(_dense_lambda_max(snapshots[s], X, y), rel=1e-6)
    rows = ft.load(tmp_path / "t.sqlite", run="a")
    assert [(r["step"], r["measure"]) for r in rows] == [
        (s, m) for s in steps for m in ("lambda_max", "loss")
    ]
    assert all(r["hvps"] > 0 for r in rows if r["measure"] == "lambda_max")


def test_no_side_effects_on_training():
    # Same weights, same RNG stream (dropout), same .grad and train flag with and without the tracker.
    model_a, X, y = _setup(dropout=0.3)
    model_b = copy.deepcopy(model_a)
    torch.manual_seed(7)
    _train(model_a, X, y, 5)
    tracker = ft.Tracker(
        model_b, (X, y), loss="cross_entropy", measures=["loss", "grad_norm", "trace"], every=2
    )
    torch.manual_seed(7)
    _train(model_b, X, y, 5, tracker)
    assert model_b.training
    for pa, pb in zip(model_a.parameters(), model_b.parameters(), strict=True):
        assert torch.equal(pa, pb) and torch.equal(pa.grad, pb.grad)
    assert [s for s, _ in zip(*tracker.series("grad_norm"), strict=True)] == [0, 2, 4]


def test_grad_norm_and_eigenvalues_match_objective(tmp_path):
    model, X, y = _setup()
    tracker = ft.Tracker(
        model,
        (X, y),
        loss="cross_entropy",
        measures={"grad_norm": {}, "eigenvalues": {"k": 2}},
        store=tmp_path,
    )  # a folder: the study store's file, table `track`
    rows = {r["measure"]: r["value"] for r in tracker.record(0)}
    obj = Objective(model, "cross_entropy", (X, y))
    assert rows["grad_norm"] == pytest.approx(float(obj.grad().norm()), rel=1e-12)
    assert rows["eigenvalues[0]"] == pytest.approx(_dense_lambda_max(model, X, y), rel=1e-4)
    assert rows["eigenvalues[0]"] >= rows["eigenvalues[1]"]
    assert (tmp_path / "study.sqlite").exists() and len(ft.load(tmp_path)) == 3


def test_bad_input():
    model, X, y = _setup()
    with pytest.raises(FlatminimaError, match="unknown measures"):
        ft.Tracker(model, (X, y), loss="cross_entropy", measures=["nope"])
    with pytest.raises(FlatminimaError, match="every"):
        ft.Tracker(model, (X, y), loss="cross_entropy", every=0)
    with pytest.raises(FlatminimaError, match="data"):
        ft.Tracker(model, None, loss="cross_entropy")
    with pytest.raises(FlatminimaError, match="no tracking store"):
        ft.load("/nonexistent/place.sqlite")


def test_tensorboard(tmp_path):
    pytest.importorskip("tensorboard")
    model, X, y = _setup()
    with ft.Tracker(model, (X, y), loss="cross_entropy", measures=["loss"], tensorboard=tmp_path / "tb") as t:
        t.step(0)
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))



def _lightning_module(pl, model, **sgd):
    """A LightningModule class around ``model``: cross-entropy and SGD (lr 0.5 unless ``sgd`` says otherwise)."""
    sgd = {"lr": 0.5, **sgd}

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = model

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, batch_idx):
            return nn.functional.cross_entropy(self(batch[0]), batch[1])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), **sgd)

    return Module

def test_lightning_callback():
    pytest.importorskip("lightning")
    import lightning.pytorch as pl

    from flatminima.integrations.lightning import FlatminimaCallback

    model, X, y = _setup()

    Module = _lightning_module(pl, model)

    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=20)
    callback = FlatminimaCallback((X, y), loss="cross_entropy", measures=["loss"], every=2)
    trainer = pl.Trainer(
        max_steps=4,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[callback],
    )
    trainer.fit(Module(), loader)
    steps, values = callback.tracker.series("loss")
    assert steps == [2, 4]
    assert values[-1] == pytest.approx(float(nn.functional.cross_entropy(model(X), y)), rel=1e-10)


def test_huggingface_callback():
    transformers = pytest.importorskip("transformers")
    from flatminima.integrations.huggingface import FlatminimaTrainerCallback
    from flatminima.models.transformer import lm_loss, toy_lm_batches

    config = transformers.GPT2Config(vocab_size=16, n_positions=12, n_embd=8, n_layer=1, n_head=2)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config)
    batches = toy_lm_batches(8, 10, 16, batch_size=4)
    callback = FlatminimaTrainerCallback(
        ft.Tracker(model, batches, loss_fn=lm_loss, measures=["loss"], every=2)
    )
    for step in range(4):
        callback.on_step_end(None, SimpleNamespace(global_step=step), None, model=model)
    steps, values = callback.tracker.series("loss")
    assert steps == [0, 2]
    ref = Objective(model, loss_fn=lm_loss, data=batches).loss()
    assert values[0] == pytest.approx(ref, rel=1e-6)
    with pytest.raises(FlatminimaError, match="Tracker"):
        FlatminimaTrainerCallback("not a tracker")


def test_sharpness_monitor_in_lightning_and_huggingface_callbacks():
    # The callbacks hand the engine's optimiser (unwrapped) to a SharpnessMonitor: threshold rows appear.
    from flatminima.dynamics import SharpnessMonitor

    model, X, y = _setup()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    pytest.importorskip("transformers")
    from flatminima.integrations.huggingface import FlatminimaTrainerCallback

    monitor = SharpnessMonitor(model, (X, y), loss="cross_entropy", every=2)
    hf = FlatminimaTrainerCallback(monitor)
    wrapped = SimpleNamespace(optimizer=opt)  # like accelerate's AcceleratedOptimizer
    for step in range(3):
        hf.on_step_end(None, SimpleNamespace(global_step=step), None, model=model, optimizer=wrapped)
    steps, th = monitor.series("threshold")
    assert steps == [0, 2] and th == pytest.approx([4.0, 4.0])
    assert monitor.series("lambda_max")[1][0] == pytest.approx(_dense_lambda_max(model, X, y), rel=1e-3)

    pytest.importorskip("lightning")
    import lightning.pytorch as pl

    from flatminima.integrations.lightning import FlatminimaCallback

    module = _lightning_module(pl, model, lr=0.25, momentum=0.5)()
    callback = FlatminimaCallback(tracker=SharpnessMonitor(module, (X, y), loss="cross_entropy", every=2))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=20)
    pl.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
               enable_model_summary=False, callbacks=[callback]).fit(module, loader)
    steps, th = callback.tracker.series("threshold")
    assert steps == [2] and th == pytest.approx([3.0 / 0.25])  # heavy ball (2 + 2β)/η


def test_run_names_are_in_every_logged_tag(tmp_path):
    # Two runs into one TensorBoard folder and one logger stay two series.
    model, X, y = _setup()
    seen = []
    for run in ("a", "b"):
        with ft.Tracker(model, (X, y), loss="cross_entropy", measures=["loss"], run=run,
                        logger=lambda metrics, step: seen.append((step, metrics))) as t:
            t.step(0)
    assert [sorted(m) for _, m in seen] == [["flatminima/a/loss"], ["flatminima/b/loss"]]
    with pytest.raises(FlatminimaError, match="logger must be"):
        ft.Tracker(model, (X, y), loss="cross_entropy", measures=["loss"], logger=3)


def test_tensorboard_tags_carry_the_run(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model, X, y = _setup()
    for run in ("a", "b"):
        with ft.Tracker(model, (X, y), loss="cross_entropy", measures=["loss"], run=run,
                        tensorboard=tmp_path / "tb") as t:
            t.step(0)
    tags = set()
    for f in (tmp_path / "tb").glob("events.out.tfevents.*"):
        acc = EventAccumulator(str(f))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
    assert tags == {"flatminima/a/loss", "flatminima/b/loss"}


def test_wandb_style_and_summary_writer_loggers():
    model, X, y = _setup()

    class Run:  # the shape of a wandb run: log(dict, step=)
        def __init__(self):
            self.logged = []

        def log(self, metrics, step=None):
            self.logged.append((step, metrics))

    class Writer:  # the shape of a SummaryWriter
        def __init__(self):
            self.scalars = []

        def add_scalar(self, tag, value, step):
            self.scalars.append((tag, step))

    run, writer = Run(), Writer()
    with ft.Tracker(model, (X, y), loss="cross_entropy", measures=["loss", "grad_norm"], every=2, run="r",
                    logger=[run, writer]) as t:
        for step in range(3):
            t.step(step)
    assert [s for s, _ in run.logged] == [0, 2] and set(run.logged[0][1]) == {"flatminima/r/loss",
                                                                             "flatminima/r/grad_norm"}
    assert ("flatminima/r/loss", 2) in writer.scalars


def test_wandb_when_installed(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "disabled")
    model, X, y = _setup()
    run = wandb.init(mode="disabled", dir=str(tmp_path))
    with ft.Tracker(model, (X, y), loss="cross_entropy", measures=["loss"], logger=run) as t:
        assert t.step(0)
    run.finish()


def test_lightning_callback_logs_through_the_trainers_logger(tmp_path):
    pytest.importorskip("lightning")
    import lightning.pytorch as pl
    from lightning.pytorch.loggers import CSVLogger

    from flatminima.integrations.lightning import FlatminimaCallback

    model, X, y = _setup()

    Module = _lightning_module(pl, model)

    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=20)
    callback = FlatminimaCallback((X, y), loss="cross_entropy", measures=["loss"], every=2, run="mine")
    logger = CSVLogger(str(tmp_path), name="logs")
    pl.Trainer(max_steps=4, accelerator="cpu", logger=logger, enable_checkpointing=False, enable_progress_bar=False,
               enable_model_summary=False, callbacks=[callback]).fit(Module(), loader)
    text = (tmp_path / "logs" / "version_0" / "metrics.csv").read_text()
    assert "flatminima/mine/loss" in text.splitlines()[0]


def test_huggingface_trainer_runs_the_callback(tmp_path):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    from flatminima.integrations.huggingface import FlatminimaTrainerCallback
    from flatminima.models.transformer import lm_loss, toy_lm_batches

    config = transformers.GPT2Config(vocab_size=16, n_positions=12, n_embd=8, n_layer=1, n_head=2)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config)
    batches = toy_lm_batches(8, 10, 16, batch_size=4)
    rows = [{"input_ids": b["input_ids"][i], "labels": b["input_ids"][i]} for b in batches
            for i in range(len(b["input_ids"]))]
    seen = []
    tracker = ft.Tracker(model, batches, loss_fn=lm_loss, measures=["loss"], every=2,
                         logger=lambda metrics, step: seen.append(step))
    args = transformers.TrainingArguments(output_dir=str(tmp_path), max_steps=4, per_device_train_batch_size=4,
                                          report_to=[], use_cpu=True, save_strategy="no", logging_strategy="no",
                                          disable_tqdm=True)
    transformers.Trainer(model=model, args=args, train_dataset=rows,
                         callbacks=[FlatminimaTrainerCallback(tracker)]).train()
    assert seen == [0, 2, 4]


def test_every_measure_goes_through_the_registry_and_rows_say_whether_it_converged(tmp_path, monkeypatch):
    import sqlite3

    from flatminima import sharpness

    model, X, y = _setup()
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:  # a track table from before the converged column
        db.execute("CREATE TABLE track (run TEXT NOT NULL, step INTEGER NOT NULL, measure TEXT NOT NULL, value REAL, "
                   "stderr REAL, hvps INTEGER, data_passes REAL, seconds REAL, wall REAL, "
                   "PRIMARY KEY (run, step, measure))")
        db.execute("INSERT INTO track VALUES ('old', 0, 'loss', 1.0, NULL, 0, 1.0, 0.1, 0.0)")
    called = []
    real = sharpness.measure
    monkeypatch.setattr(sharpness, "measure", lambda obj, name, **c: called.append(name) or real(obj, name, **c))
    with ft.Tracker(model, (X, y), loss="cross_entropy", store=path, measures={
            "loss": {}, "grad_norm": {}, "lambda_max": {"max_iter": 2}, "eigenvalues": {"k": 2, "tol": 1e-8}}) as t:
        rows = {r["measure"]: r for r in t.record(0)}
    assert called == ["grad_norm", "lambda_max", "top_eigenvalues"]  # the alias resolves in the registry
    assert rows["lambda_max"]["converged"] is False  # 2 Lanczos steps: an unconverged lower bound, said so
    assert rows["eigenvalues[0]"]["converged"] is True and rows["eigenvalues[1]"]["converged"] is True
    assert rows["grad_norm"]["converged"] is None and rows["loss"]["converged"] is None
    stored = {(r["run"], r["measure"]): r["converged"] for r in ft.load(path)}
    assert stored[("old", "loss")] is None and stored[("run", "lambda_max")] is False
    assert stored[("run", "eigenvalues[1]")] is True
