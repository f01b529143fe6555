"""Built-in models, sized for a CPU, and loading a user's model factory by name."""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Sequence

from torch import nn

from ..errors import FlatminimaError, require_in_range, require_positive_int


def _check_sizes(*, dropout: float, **sizes: int) -> None:
    for name, value in sizes.items():
        require_positive_int(name, value)
    require_in_range("dropout", dropout, 0.0, 1.0, inclusive=True)
    if dropout == 1.0:
        raise FlatminimaError("dropout must be below 1 (1 drops every unit), got 1.0.")


def mlp(input_shape: Sequence[int], num_classes: int, *, width: int = 64, depth: int = 2,
        activation: str = "relu", dropout: float = 0.0, batchnorm: bool = False) -> nn.Module:
    """A fully connected net: ``depth`` hidden layers of ``width`` units."""
    acts = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}
    if activation not in acts:
        raise FlatminimaError(f"activation must be one of {sorted(acts)}, got {activation!r}.")
    _check_sizes(width=width, depth=depth, dropout=dropout)
    layers: list[nn.Module] = [nn.Flatten()]
    fan_in = math.prod(input_shape)
    for _ in range(depth):
        layers.append(nn.Linear(fan_in, width))
        if batchnorm:
            layers.append(nn.BatchNorm1d(width))
        layers.append(acts[activation]())
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        fan_in = width
    layers.append(nn.Linear(fan_in, num_classes))
    return nn.Sequential(*layers)


def cnn1d(input_shape: Sequence[int], num_classes: int, *, channels: int = 16, depth: int = 2,
          dropout: float = 0.0, batchnorm: bool = False) -> nn.Module:
    """A 1-D convolutional net for signals of shape (length,) or (channels, length)."""
    _check_sizes(channels=channels, depth=depth, dropout=dropout)
    if len(input_shape) not in (1, 2):
        raise FlatminimaError(f"cnn1d takes signals of shape (length,) or (channels, length); got "
                              f"input_shape "
                              f"{tuple(input_shape)} (use cnn2d, resnet or vgg for images).")
    in_ch = 1 if len(input_shape) == 1 else input_shape[0]
    layers: list[nn.Module] = [nn.Unflatten(1, (1, input_shape[0]))] if len(input_shape) == 1 else []
    size = input_shape[-1]
    for _ in range(depth):
        layers.append(nn.Conv1d(in_ch, channels, 3, padding=1))
        if batchnorm:
            layers.append(nn.BatchNorm1d(channels))
        layers.append(nn.ReLU())
        if size >= 2:  # pool while there is something to pool (short signals keep their length)
            layers.append(nn.MaxPool1d(2))
            size //= 2
        in_ch = channels
    layers += [nn.AdaptiveAvgPool1d(4), nn.Flatten()]
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(channels * 4, num_classes))
    return nn.Sequential(*layers)


MODELS: dict[str, Callable[..., nn.Module]] = {"mlp": mlp, "cnn1d": cnn1d}


def register_model(name: str, factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Add ``factory(input_shape, num_classes, **kw) -> nn.Module`` to the built-in models under ``name``."""
    MODELS[name] = factory
    return factory


def build(name: str, input_shape: Sequence[int], num_classes: int, **kwargs) -> nn.Module:
    """A built-in model by name, or a user's ``package.module:factory`` called with ``**kwargs``."""
    if ":" in name:
        return from_factory(name, **kwargs)
    if name not in MODELS:
        raise FlatminimaError(f"unknown model {name!r}; built in: {sorted(MODELS)}, "
                              "or 'package.module:factory'.")
    try:
        return MODELS[name](input_shape, num_classes, **kwargs)
    except TypeError as err:  # a misspelt keyword: say which model and what it takes
        import inspect

        takes = [p for p in inspect.signature(MODELS[name]).parameters
                 if p not in ("input_shape", "num_classes")]
        raise FlatminimaError(f"model {name!r}: {err}; its options are {takes}.") from err


def from_factory(spec: str, **kwargs) -> nn.Module:
    """Import ``package.module:factory`` (named explicitly by the user) and call it."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise FlatminimaError(f"a model factory must look like 'package.module:factory', got {spec!r}.")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise FlatminimaError(f"cannot load model factory {spec!r}: {err}.") from err
    try:
        model = factory(**kwargs)
    except TypeError as err:  # wrong keyword arguments for the user's factory
        raise FlatminimaError(f"model factory {spec!r} refused its arguments "
                              f"{sorted(kwargs)}: {err}.") from err
    if not isinstance(model, nn.Module):
        raise FlatminimaError(f"{spec} returned {type(model).__name__}, not a torch.nn.Module.")
    return model
