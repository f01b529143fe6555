"""The loss registry: ``loss_function(name)`` for training, the study, the commands and the Objective's
named losses ("cross_entropy", "mse", a callable, or a user's ``"module:function"``)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.nn import functional as F

from ..errors import FlatminimaError

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
