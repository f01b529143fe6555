"""Trained MNIST-1D networks at a matched training loss, measured once, shared within one claims run.

Every network claim compares models that reached the same training loss (STATISTICS.md §1): each run
trains with ``Recipe.target_train_loss = TARGET`` and stops at the first epoch whose exact eval-mode train
cross-entropy is ≤ TARGET; the epoch budget is the cap, and a run that misses the target is kept in the CSV
with ``reached_target = False`` and left out of every comparison (its pair partner too).

A :class:`Bench` is an ordinary object (no module-level cache): the claims runner makes one per run and
hands it to every experiment, so C10, C11 and C15 measure the same models once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

TARGET = 0.1  # matched training cross-entropy (MNIST-1D, 3200 training signals)
SHIFTS = ("iid_noise", "translation")  # MNIST-1D test sets regenerated with harder generator parameters
SEVERITY = 3
MEASURE_N = 1024  # training samples the curvature is measured on (float64, eval mode)
BASE_RECIPE: dict[str, Any] = {"optimizer": "sgd", "lr": 0.02, "momentum": 0.9, "batch_size": 32, "epochs": 300,
                               "target_train_loss": TARGET}
BASE_MODEL: dict[str, Any] = {"width": 64, "depth": 2}


@dataclass(frozen=True)
class NetConfig:
    """A training configuration: recipe and model overrides of the base (as sorted tuples: hashable)."""

    name: str
    recipe: tuple = ()
    model: tuple = ()

    @classmethod
    def of(cls, name: str, recipe: dict | None = None, model: dict | None = None) -> NetConfig:
        return cls(name, tuple(sorted((recipe or {}).items(), key=lambda kv: kv[0])),
                   tuple(sorted((model or {}).items(), key=lambda kv: kv[0])))

    def recipe_dict(self, seed: int) -> dict:
        r = {**BASE_RECIPE, **{k: (list(v) if isinstance(v, tuple) else v) for k, v in self.recipe}, "seed": seed}
        if r.get("swa"):
            r.pop("target_train_loss", None)
        return r

    def model_dict(self) -> dict:
        return {**BASE_MODEL, **dict(self.model)}


@dataclass
class Trained:
    """One trained, measured network."""

    config: str
    seed: int
    model: torch.nn.Module = field(repr=False)
    reached_target: bool
    train_loss: float
    epochs: int
    lambda_max: float
    trace: float
    test_acc: float
    shift_acc: float
    ece: float
    seconds: float
    shift_accs: dict = field(default_factory=dict)  # "shift@severity" -> accuracy (shift_acc is their mean)

    @property
    def drop(self) -> float:
        """Accuracy lost under shift: clean − shifted test accuracy (mean over SHIFTS at SEVERITY)."""
        return self.test_acc - self.shift_acc

    def row(self) -> dict:
        return {k: getattr(self, k) for k in ("config", "seed", "reached_target", "train_loss", "epochs",
                                              "lambda_max", "trace", "test_acc", "shift_acc", "drop", "ece",
                                              "seconds")} | {f"acc_{k}": v for k, v in sorted(self.shift_accs.items())}


class Bench:
    """Data set and trained models of one claims run (keyed by configuration and seed)."""

    def __init__(self, num_samples: int = 4000) -> None:
        self.num_samples = num_samples
        self._data = None
        self._models: dict[tuple[NetConfig, int], Trained] = {}

    @property
    def eval_size(self) -> int:
        """Signals in the clean test set (each shifted test set has as many): the clip of effective robustness."""
        return int(self.data.test[1].shape[0])

    @property
    def data(self):
        if self._data is None:
            from ..data import load_mnist1d

            self._data = load_mnist1d(self.num_samples, shifts=list(SHIFTS))
        return self._data

    def measure(self, model: torch.nn.Module, seed: int) -> dict:
        """λ_max (Lanczos), tr H (Hutch++) on MEASURE_N training samples; clean accuracy, the accuracy under each
        shift (``shift_accs``) and their mean (``shift_acc``), ECE: the shared pipeline on ``model`` as it is."""
        return self._run(lambda: (model, None, None), seed)[0]

    def _run(self, obtain, seed: int) -> tuple[dict, Any]:
        """The shared pipeline (:func:`flatminima.workflows.pipeline.train_measure_evaluate`) on the network
        ``obtain()`` gives (``(model, None, TrainResult or None)``): no exact training loss (``fit`` reports
        it), the bench's two measures in float64 on the first MEASURE_N training samples, the evaluation scored
        1024 rows at a time; the model keeps the train/eval mode it had before the measuring."""
        from ..workflows.pipeline import train_measure_evaluate

        ds = self.data
        modes = []

        def obtained():
            net, init, res = obtain()
            modes.append(net.training)
            return net, init, res

        out = train_measure_evaluate(
            obtained, ds, measures={"lambda_max": {"tol": 1e-3, "seed": seed}, "trace": {"samples": 30, "seed": seed}},
            loss="cross_entropy", dtype=torch.float64, measure_data=(ds.x_train[:MEASURE_N], ds.y_train[:MEASURE_N]),
            shifts=list(SHIFTS), eval_batch_size=1024, train_loss=False)
        out.model.train(modes[0])
        m = out.metrics
        shifts = {f"{s}@{SEVERITY}": float(m["shifts"][f"{s}@{SEVERITY}"]["acc"]) for s in SHIFTS}
        return {"lambda_max": out.measures["lambda_max"].value, "trace": out.measures["trace"].value,
                "test_acc": m["test_acc"], "shift_acc": float(np.mean(list(shifts.values()))), "ece": m["ece"],
                "shift_accs": shifts}, out

    def train(self, cfg: NetConfig, seed: int, data=None) -> Trained:
        """Train (or fetch) ``cfg`` with ``seed`` on ``data`` (default: MNIST-1D train split), through the shared
        train → measure → evaluate pipeline."""
        key = (cfg, seed)
        if data is None and key in self._models:
            return self._models[key]
        from ..models import build
        from ..workflows.pipeline import train_model

        ds = self.data
        t0 = time.perf_counter()

        def obtain():
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model = build("mlp", ds.input_shape, ds.num_classes, **cfg.model_dict())
            model, res = train_model(model, data if data is not None else ds.train, cfg.recipe_dict(seed))
            return model, None, res

        measured, out = self._run(obtain, seed)
        res = out.training
        reached = bool(res.reached_target) if res.reached_target is not None else True
        t = Trained(cfg.name, seed, out.model, reached, float(res.final_train_loss), int(res.epochs_run),
                    seconds=0.0, **measured)
        t.seconds = time.perf_counter() - t0
        if data is None:
            self._models[key] = t
        return t

    def many(self, cfgs: list[NetConfig], seeds: list[int]) -> dict[str, list[Trained]]:
        return {c.name: [self.train(c, s) for s in seeds] for c in cfgs}


def paired(a: list[Trained], b: list[Trained], attr: str, *, log: bool = False) -> np.ndarray:
    """Per-seed differences a − b of ``attr`` over the pairs where both runs reached the target."""
    out = []
    for p, q in zip(a, b, strict=True):
        if p.reached_target and q.reached_target:
            x, y = getattr(p, attr), getattr(q, attr)
            out.append(np.log(x) - np.log(y) if log else x - y)
    return np.asarray(out, float)


def reached(models: list[Trained]) -> list[Trained]:
    return [m for m in models if m.reached_target]


def table(models: list[Trained], path) -> str:
    from ..plotting import save_table

    rows = [m.row() for m in models]
    return save_table(path, {k: [r[k] for r in rows] for k in rows[0]})
