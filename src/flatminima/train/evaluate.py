"""Evaluation of a model (or an ensemble) on a data split: loss, accuracy, calibration.

ECE (expected calibration error, Guo et al. 2017): Σ_b (|b|/n)·|acc(b) − conf(b)| over 15 equal-width
confidence bins (:func:`flatminima.statistics.ece`). NLL is the mean cross-entropy of the predicted probabilities.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import FlatminimaError
from ..statistics import ece as _ece

LOSS_NAMES = ("cross_entropy", "mse")


def loss_function(name: str | Callable, label_smoothing: float = 0.0) -> Callable:
    """``(outputs, targets) -> mean loss`` for "cross_entropy", "mse" (one-hot targets for class labels),
    a user's callable, or a user's ``"module:function"`` (imported only because the user named it; the
    working directory is importable, as for model factories). The one loss registry of training, the
    study and the commands: every run is measured on the loss it names."""
    if callable(name):
        return name
    if isinstance(name, str) and ":" in name:
        return user_loss(name)
    if name == "cross_entropy":
        return lambda out, y: F.cross_entropy(out, y, label_smoothing=label_smoothing)
    if name == "mse":
        def mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            if not y.is_floating_point():  # class labels: regress the one-hot vector
                y = F.one_hot(y, out.shape[-1]).to(out.dtype)
            return F.mse_loss(out, y.reshape(out.shape))
        return mse
    raise FlatminimaError(f"loss must be 'cross_entropy', 'mse', a callable or 'module:function', got {name!r}.")


def user_loss(spec: str) -> Callable:
    """The loss function ``module:function`` names: a function of your own ``(outputs, targets) -> 0-dim
    tensor`` (the batch mean). Checked on import: it must be a plain function in your own module."""
    import inspect

    from ..models.zoo import factory_origin, import_origin

    try:
        where = factory_origin(spec)
    except FlatminimaError as err:
        raise FlatminimaError(f"loss {spec!r}: {str(err).replace('model factory', 'loss function')}") from None
    try:
        fn = import_origin(where)
    except Exception as err:  # noqa: BLE001 - a missing name or the module failing on import
        raise FlatminimaError(f"cannot load loss function {spec!r}: {type(err).__name__}: {err}.") from None
    if where["kind"] != "user" or not inspect.isfunction(fn):
        raise FlatminimaError(f"loss {spec!r} must be a function of your own, (outputs, targets) -> the batch's "
                              "mean loss as a 0-dim tensor.")
    return fn


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, *, batch_size: int = 1024, device: str | torch.device = "cpu"
            ) -> torch.Tensor:
    """Model outputs on ``x`` in eval mode (the model's train/eval mode is restored afterwards)."""
    was_training = model.training
    model.eval()
    try:
        return torch.cat([model(x[i:i + batch_size].to(device)).cpu() for i in range(0, len(x), batch_size)])
    finally:
        model.train(was_training)


def evaluate(model: nn.Module, data: tuple[torch.Tensor, torch.Tensor], *,
             loss: str | Callable = "cross_entropy", batch_size: int = 1024,
             device: str | torch.device = "cpu", bins: int = 15) -> dict[str, float]:
    """``{"loss", "accuracy", "nll", "ece", "n"}`` of ``model`` on ``data = (X, y)`` in eval mode.

    ``loss`` is the training loss (cross-entropy by default); accuracy, NLL and ECE are reported when the
    targets are class labels.
    """
    x, y = data
    if len(x) == 0 or len(x) != len(y):
        raise FlatminimaError(f"evaluate needs as many labels as inputs (≥ 1), got {len(x)} and {len(y)}.")
    out = predict(model, x, batch_size=batch_size, device=device).float()
    result = {"loss": float(loss_function(loss)(out, y)), "n": len(x)}
    if y.is_floating_point() or out.dim() != 2:
        return result
    logp = F.log_softmax(out, dim=1)
    pred = logp.argmax(dim=1)
    correct = (pred == y).float()
    ece = _ece(logp.exp(), y, bins)  # the one ECE: equal-width bins, right-closed
    return result | {"accuracy": float(correct.mean()), "nll": float(F.nll_loss(logp, y)), "ece": float(ece)}


def evaluate_shifts(model: nn.Module, shifts: dict, **kw) -> dict[str, dict[int, dict[str, float]]]:
    """:func:`evaluate` on every shifted test set ``shifts[name][severity] = (x, y)`` of a Dataset."""
    return {name: {s: evaluate(model, xy, **kw) for s, xy in sev.items()} for name, sev in shifts.items()}
