"""The one train → measure → evaluate pipeline: fit a model with a recipe, compute named sharpness measures on
its exact training objective, score it on the test set (and the train set and every shifted test set).

The study worker (:func:`flatminima.study.worker.execute_with_weights`, one run of a study), the CLI
(``flatminima train``, ``flatminima sharpness`` and ``flatminima curvature`` through
:func:`flatminima.workflows.common.get_model`) and the claims' trained networks
(:meth:`flatminima.lab.bench.Bench.train`) all go through these functions; none of them has a copy of its own.

    train_model(model, data, recipe)      ``flatminima.train.fit`` with the recipe: ``(model, TrainResult)``
    training_record(result)               how training ended: epochs run, exact final train loss, target
    measure(obj, measures, init=...)      named registry measures on an Objective, each with its cost
    evaluate_model(model, dataset, ...)   train/test loss and accuracy, gaps, calibration (ECE, NLL, Brier),
                                          shifts; MSE for regression. Classifiers are scored by the one
                                          classifier evaluation, :func:`flatminima.train.classification_scores`
    train_measure_evaluate(...)           the three in order, with the seconds each took (:class:`Outcome`)

What the evaluation reports (a study run's outcomes, which its targets read):

* ECE (Guo et al. 2017): with B equal-width bins of the top-class confidence p̂ on [0, 1],
  ECE = Σ_b (|S_b|/n) · |acc(S_b) − conf(S_b)|.  The bin count is stored with the result.
* NLL: mean −log p(y|x) (= cross-entropy).  Brier (Brier 1950, multi-class): (1/n) Σ_i Σ_k (p_ik − 1[y_i = k])².
* Regression: MSE = mean over samples and outputs of (f(x) − y)²; ``mse_gap`` = test − train MSE; under a
  shift ``drop`` is the rise of the MSE over the clean test MSE.
* ``train_loss``/``test_loss`` are the run's loss (``loss_fn``) when one is given, else NLL / MSE.
Classifier scores keep the keys stored study results have always had (``acc``, ``nll``, ``brier``, ``ece``).

Nothing here draws random numbers of its own: a model's initial weights come from the caller (who seeds
them), training from the recipe's seed, each random measure from its ``seed`` setting. The order of the
steps is fixed (train; exact train loss; measures in the order given; evaluation), so the same inputs give
the same numbers wherever the pipeline runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .. import sharpness
from ..errors import FlatminimaError
from ..objective import Objective
from ..train import TrainResult, fit, flat_params
from ..train.evaluation import classification_scores, predict

__all__ = ["Outcome", "evaluate_model", "measure", "takes_init", "train_measure_evaluate", "train_model",
           "training_record"]


# ---- train -----------------------------------------------------------------------------------------------------
def train_model(model: nn.Module, data: Any, recipe: Any, *, progress: bool = False, **fit_kwargs: Any
                ) -> tuple[nn.Module, TrainResult]:
    """Train ``model`` in place on ``data`` with ``recipe`` (a :class:`~flatminima.train.Recipe` or a dict of
    its fields) by :func:`flatminima.train.fit`; ``fit_kwargs`` (``checkpoint_dir``, ``device``, ``loss_fn``,
    ``eval_data``, ``callback``, ``step_callback`` ...) go to it unchanged. Returns ``(model, result)``."""
    return model, fit(model, data, recipe, progress=progress, **fit_kwargs)


def training_record(result: TrainResult) -> dict[str, Any]:
    """How a training run ended: ``epochs_run``, ``final_train_loss`` (exact: eval mode, all training data),
    ``reached_target`` (None without a target) and ``target_train_loss``."""
    return {"epochs_run": result.epochs_run, "final_train_loss": result.final_train_loss,
            "reached_target": result.reached_target, "target_train_loss": result.recipe.target_train_loss}


# ---- measure ---------------------------------------------------------------------------------------------------
def takes_init(name: str, config: Mapping[str, Any]) -> bool:
    """Whether the registered measure ``name`` takes the initial weights (an ``init`` keyword) and ``config``
    does not give them."""
    return "init" in sharpness.entry(name).defaults() and config.get("init") is None


def measure(obj: Objective, measures: Mapping[str, Mapping[str, Any]], *, init: torch.Tensor | None = None,
            failed: dict[str, str] | None = None, advance: Callable[[], Any] | None = None
            ) -> dict[str, sharpness.Measure]:
    """The registry's measures ``{name: settings}`` on ``obj``, in the order given, as
    :class:`~flatminima.sharpness.Measure` (value, standard error, settings, cost).

    ``init`` (flat initial trainable parameters) goes to every measure that takes it and is not given it
    (:func:`takes_init`), cast to the objective's dtype. Without ``failed`` the first error is raised; with a
    dict, a measure that fails is recorded there as ``"Type: message"`` and the others still run, and an
    interrupt (Ctrl-C) is recorded as ``"interrupted"`` and stops the loop (what was measured is returned).
    ``advance()`` is called after each measure that finished or failed."""
    out: dict[str, sharpness.Measure] = {}
    for name, settings in measures.items():
        config = dict(settings)
        try:
            if name not in sharpness.available():
                raise FlatminimaError(f"unknown measure {name!r}; available: {sorted(sharpness.available())}.")
            if init is not None and takes_init(name, config):
                config["init"] = init.to(obj.dtype)
            out[name] = sharpness.measure(obj, name, **config)
        except KeyboardInterrupt:
            if failed is None:
                raise
            failed[name] = "interrupted"
            break
        except Exception as err:
            if failed is None:
                raise
            failed[name] = f"{type(err).__name__}: {err}"
        if advance is not None:
            advance()
    return out


# ---- evaluate --------------------------------------------------------------------------------------------------
def _scores(model: nn.Module, x: torch.Tensor, y: torch.Tensor, bins: int, batch_size: int) -> dict[str, float]:
    """:func:`flatminima.train.classification_scores` of ``model`` on ``(x, y)`` under the keys stored results
    have always had (``acc``, ``nll``, ``brier``, ``ece``); the model is left in eval mode."""
    model.eval()
    s = classification_scores(predict(model, x, batch_size=batch_size, device=x.device), y, bins)
    return {"acc": s["accuracy"], "nll": s["nll"], "brier": s["brier"], "ece": s["ece"]}


@torch.no_grad()
def _outputs(model: nn.Module, x: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    model.eval()
    return torch.cat([model(x[i : i + batch_size]).double() for i in range(0, len(x), batch_size)])


@torch.no_grad()
def _loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: Any) -> float:
    """``loss_fn`` over all of ``(x, y)`` (a row-weighted mean of batch means: exact for mean losses)."""
    model.eval()
    total, n = 0.0, 0
    for i in range(0, len(x), 4096):
        xb, yb = x[i : i + 4096], y[i : i + 4096]
        total += float(loss_fn(model(xb), yb)) * len(xb)
        n += len(xb)
    return total / max(n, 1)


def _mse(out: torch.Tensor, y: torch.Tensor) -> float:
    return float(((out - y.double().reshape(out.shape)) ** 2).mean())


def regression_metrics(model: nn.Module, dataset: Any, shifts: list[str]) -> dict[str, Any]:
    """Train/test MSE, the MSE gap, and on every shift the MSE and its rise over the clean test MSE."""
    train = _mse(_outputs(model, dataset.x_train), dataset.y_train)
    test = _mse(_outputs(model, dataset.x_test), dataset.y_test)
    out: dict[str, Any] = {"train_loss": train, "test_loss": test, "train_mse": train, "test_mse": test,
                           "mse_gap": test - train, "shifts": {}}
    rises = []
    for name in shifts:
        for severity, (xs, ys) in sorted(dataset.shifts[name].items()):
            m = _mse(_outputs(model, xs), ys)
            out["shifts"][f"{name}@{severity}"] = {"mse": m, "drop": m - test}
            rises.append(m - test)
    out["shift_drop"] = sum(rises) / len(rises) if rises else None
    return out


def classification_evaluation(model: nn.Module, dataset: Any, shifts: list[str], bins: int = 15,
                              batch_size: int = 4096) -> dict[str, Any]:
    """Train/test loss (NLL) and accuracy, gaps, calibration on test, accuracy and drop on every shift."""
    train = _scores(model, dataset.x_train, dataset.y_train, bins, batch_size)
    test = _scores(model, dataset.x_test, dataset.y_test, bins, batch_size)
    out: dict[str, Any] = {
        "train_loss": train["nll"],
        "train_acc": train["acc"],
        "test_loss": test["nll"],
        "test_acc": test["acc"],
        "gap": train["acc"] - test["acc"],
        "loss_gap": test["nll"] - train["nll"],
        "ece": test["ece"],
        "nll": test["nll"],
        "brier": test["brier"],
        "ece_bins": bins,
        "ece_binning": f"{bins} equal-width bins of top-class confidence on [0, 1]",
        "shifts": {},
    }
    drops = []
    for name in shifts:
        for severity, (xs, ys) in sorted(dataset.shifts[name].items()):
            m = _scores(model, xs, ys, bins, batch_size)
            drop = test["acc"] - m["acc"]
            out["shifts"][f"{name}@{severity}"] = {
                "acc": m["acc"],
                "drop": drop,
                "ece": m["ece"],
                "nll": m["nll"],
            }
            drops.append(drop)
    out["shift_drop"] = sum(drops) / len(drops) if drops else None
    accs = [v["acc"] for v in out["shifts"].values()]
    out["shift_acc"] = sum(accs) / len(accs) if accs else None
    return out


def evaluate_model(model: nn.Module, dataset: Any, shifts: list[str] | tuple[str, ...] = (), *, bins: int = 15,
                   loss_fn: Any = None, batch_size: int = 4096) -> dict[str, Any]:
    """Train/test loss and accuracy, the gaps (``gap`` = train − test accuracy, ``loss_gap``), calibration on
    test (``ece`` with ``bins`` equal-width bins, ``nll``, ``brier``) and on every shift in ``shifts`` (all of
    its severities, keyed ``"name@severity"``) the accuracy and its drop; regression data: MSE
    (:func:`regression_metrics`). ``loss_fn`` gives ``train_loss``/``test_loss`` in that loss (else NLL /
    MSE). ``batch_size``: the rows a classifier scores at once. The model is left in eval mode."""
    shifts = list(shifts)
    if getattr(dataset, "task", "classification") == "regression":
        out = regression_metrics(model, dataset, shifts)
    else:
        out = classification_evaluation(model, dataset, shifts, bins, batch_size)
    if loss_fn is not None:
        out["train_loss"] = _loss(model, dataset.x_train, dataset.y_train, loss_fn)
        out["test_loss"] = _loss(model, dataset.x_test, dataset.y_test, loss_fn)
    return out


# ---- all three -------------------------------------------------------------------------------------------------
@dataclass
class Outcome:
    """What :func:`train_measure_evaluate` returns: the (trained) model, the flat initial parameters (None when
    unknown), how training ended (a :class:`~flatminima.train.TrainResult`, or what the caller's ``obtain``
    returned; None when nothing was trained), the exact training loss the measures see (None when not asked),
    the measures, the evaluation's metrics (empty when not asked) and the seconds each step took."""

    model: nn.Module = field(repr=False)
    init: torch.Tensor | None = field(repr=False)
    training: Any
    train_loss: float | None
    measures: dict[str, sharpness.Measure]
    metrics: dict[str, Any]
    seconds: dict[str, float]


def train_measure_evaluate(model: nn.Module | Callable[[], tuple[nn.Module, torch.Tensor | None, Any]],
                           dataset: Any, recipe: Any = None, *,
                           measures: Mapping[str, Mapping[str, Any]] | None = None,
                           loss: Any = "cross_entropy", dtype: torch.dtype = torch.float32,
                           measure_data: Any = None, shifts: list[str] | tuple[str, ...] = (), bins: int = 15,
                           loss_fn: Any = None, eval_batch_size: int = 4096, train_loss: bool = True,
                           evaluate: bool = True) -> Outcome:
    """Train, measure and evaluate one model.

    1. train: ``model`` (untrained, seeded by the caller) is trained on ``dataset.train`` with ``recipe``
       (:func:`train_model`; its flat initial parameters are kept for measures taking ``init``); without a
       recipe it is measured as it is. ``model`` may instead be a function ``() -> (model, init, training)``
       that obtains it (trains it through :func:`train_model`, loads a checkpoint, ...).
    2. measure: the exact objective ``Objective(model, loss, measure_data or dataset.train, dtype=dtype)``;
       its loss at the trained weights (``train_loss=True``), then the ``measures`` (:func:`measure`).
    3. evaluate (``evaluate=True``): :func:`evaluate_model` with ``shifts``, ``bins``, ``loss_fn`` and
       ``eval_batch_size``.

    ``seconds`` holds ``train``, ``measure`` and ``evaluate``."""
    t0 = time.perf_counter()
    if callable(model) and not isinstance(model, nn.Module):
        net, init, training = model()
    elif recipe is not None:
        init = flat_params(model)
        net, training = train_model(model, dataset.train, recipe)
    else:
        net, init, training = model, None, None
    t1 = time.perf_counter()
    obj = Objective(net, loss, dataset.train if measure_data is None else measure_data, dtype=dtype)
    exact = float(obj.loss(obj.params)) if train_loss else None
    measured = measure(obj, measures or {}, init=init)
    t2 = time.perf_counter()
    metrics = (evaluate_model(net, dataset, shifts, bins=bins, loss_fn=loss_fn, batch_size=eval_batch_size)
               if evaluate else {})
    t3 = time.perf_counter()
    return Outcome(net, init, training, exact, measured, metrics,
                   {"train": t1 - t0, "measure": t2 - t1, "evaluate": t3 - t2})
