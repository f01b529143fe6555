"""Built-in models, sized for a CPU, and loading a user's model factory by name."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import math
import sys
import sysconfig
from collections.abc import Callable, Sequence
from pathlib import Path

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


def check_outputs(model: nn.Module, input_shape: Sequence[int], num_classes: int, name: str = "the model", *,
                  task: str = "classification") -> None:
    """Refuse a model whose output does not fit the data, for inputs of ``input_shape`` (one forward pass of two
    zero samples in eval mode; the model's mode is restored): a classifier must output ``(batch, num_classes)``
    logits; a regression model ``(batch, num_classes)`` values (``num_classes`` = outputs per sample), or
    ``(batch,)`` when there is one target per sample."""
    import torch

    was_training = model.training
    try:
        with torch.no_grad():
            out = model.eval()(torch.zeros(2, *input_shape))
    except Exception as err:
        raise FlatminimaError(f"model {name!r} cannot take inputs of per-sample shape {tuple(input_shape)}: "
                              f"{type(err).__name__}: {err}.") from None
    finally:
        model.train(was_training)
    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else None
    got = shape[1:] if shape is not None else type(out).__name__
    if task == "regression":
        if shape == (2, num_classes) or (num_classes == 1 and shape == (2,)):
            return
        raise FlatminimaError(f"model {name!r} outputs {got} per sample; a regression model for this data must "
                              f"output {num_classes} value(s) per sample (regression: one output per target"
                              f"{', or shape (batch,) for one target' if num_classes == 1 else ''}): fix its "
                              "output layer, or the targets.")
    if shape != (2, num_classes):
        raise FlatminimaError(f"model {name!r} outputs {got} per sample; a classifier for this data must output "
                              f"{num_classes} logits (one per class): fix its output layer, or the labels.")


def build(name: str, input_shape: Sequence[int], num_classes: int, **kwargs) -> nn.Module:
    """A built-in model by name, or a user's ``package.module:factory`` called with ``**kwargs``."""
    if ":" in name:
        model = from_factory(name, **kwargs)
        check_outputs(model, input_shape, num_classes, name)
        return model
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


def _system_dirs() -> tuple[list[Path], list[Path]]:
    """(standard-library folders, installed-package folders) of this interpreter."""
    paths = sysconfig.get_paths()
    stdlib = {paths[k] for k in ("stdlib", "platstdlib") if paths.get(k)}
    packages = {paths[k] for k in ("purelib", "platlib") if paths.get(k)}
    packages |= {p for p in sys.path if p.rstrip("/").endswith(("site-packages", "dist-packages"))}
    resolve = lambda ps: [Path(p).resolve() for p in ps]  # noqa: E731
    return resolve(stdlib - packages), resolve(packages)


def _under(path: Path, folders: list[Path]) -> bool:
    return any(path == f or f in path.parents for f in folders)


def current_folder_importable() -> None:
    """Make the working directory importable for ``module:factory`` (as ``python -m`` would), appended to
    ``sys.path`` so a file there never shadows an installed package or the standard library."""
    cwd = str(Path.cwd())
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)
        importlib.invalidate_caches()


def factory_origin(spec: str) -> dict[str, str]:
    """Where ``package.module:factory`` would be imported from, found *without importing it*.

    Returns ``{"spec", "module", "attr", "file", "kind"}`` with ``kind`` ``"user"`` (your own module: any
    ``nn.Module`` class or function returning one) or ``"installed"`` (a package in site-packages: only
    ``nn.Module`` classes, e.g. ``torch.nn:Linear``). The standard library, built-in and frozen modules
    are refused: a spec can never name ``os:system``, ``subprocess:run`` or ``builtins:eval``.
    """
    current_folder_importable()
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr or not all(p.isidentifier() for p in module_name.split(".") + attr.split(".")):
        raise FlatminimaError(f"a model factory must look like 'package.module:factory', got {spec!r}.")
    top = module_name.split(".")[0]
    refuse = (f"model factory {spec!r} is not a torch.nn.Module class or a function of your own: module "
              f"{top!r} is ")
    if top in sys.builtin_module_names or top in getattr(sys, "stdlib_module_names", ()):
        raise FlatminimaError(refuse + "part of Python's standard library (or built in), which a spec may "
                              "never call; put the factory in a module of your own.")
    try:
        found = importlib.util.find_spec(top)
    except (ImportError, ValueError) as err:
        raise FlatminimaError(f"cannot load model factory {spec!r}: {err}.") from err
    if found is None:
        raise FlatminimaError(f"cannot load model factory {spec!r}: no module named {top!r} in the working "
                              f"directory ({Path.cwd()}) or on PYTHONPATH; run from the folder holding "
                              f"{top}.py (or {top}/), or add that folder to PYTHONPATH.")
    origin = found.origin if found.has_location else None
    if origin is None and found.submodule_search_locations:
        origin = next(iter(found.submodule_search_locations), None)
    if origin is None or origin in ("built-in", "frozen"):
        raise FlatminimaError(refuse + "built into the interpreter; put the factory in a module of your own.")
    file = Path(origin).resolve()
    stdlib, packages = _system_dirs()
    if _under(file, packages):
        kind = "installed"
    elif _under(file, stdlib):
        raise FlatminimaError(refuse + f"part of Python's standard library ({file}); put the factory in a "
                              "module of your own.")
    else:
        kind = "user"
    return {"spec": spec, "module": module_name, "attr": attr, "file": str(file), "kind": kind}


def import_origin(where: dict[str, str]) -> object:
    """The object a :func:`factory_origin` record names: its ``module`` imported, then its dotted ``attr``
    looked up (ImportError / AttributeError when either is missing; whatever the module raises on import)."""
    obj: object = importlib.import_module(where["module"])
    for part in where["attr"].split("."):
        obj = getattr(obj, part)
    return obj


def load_factory(spec: str) -> Callable[..., nn.Module]:
    """The callable ``package.module:factory`` names, after :func:`factory_origin`'s checks: a
    ``torch.nn.Module`` subclass, or (from your own modules only) a plain Python function."""
    where = factory_origin(spec)
    try:
        obj = import_origin(where)
    except (ImportError, AttributeError) as err:
        raise FlatminimaError(f"cannot load model factory {spec!r}: {err}.") from err
    except Exception as err:  # the user's module raised while being imported
        raise FlatminimaError(f"importing the module of model factory {spec!r} raised "
                              f"{type(err).__name__}: {err}.") from err
    if inspect.isclass(obj) and issubclass(obj, nn.Module):
        return obj
    if where["kind"] == "user" and inspect.isfunction(obj):
        return obj
    what = "a function" if inspect.isfunction(obj) else type(obj).__name__
    allowed = ("a torch.nn.Module class" if where["kind"] == "installed"
               else "a torch.nn.Module class or a Python function returning one")
    raise FlatminimaError(f"model factory {spec!r} is {what}, not a torch.nn.Module class; from "
                          f"{'an installed package' if where['kind'] == 'installed' else 'your module'} "
                          f"a factory must be {allowed}.")


def from_factory(spec: str, **kwargs) -> nn.Module:
    """Import ``package.module:factory`` (named explicitly by the user, checked by :func:`load_factory`)
    and call it."""
    factory = load_factory(spec)
    try:
        model = factory(**kwargs)
    except TypeError as err:  # wrong keyword arguments for the user's factory
        raise FlatminimaError(f"model factory {spec!r} refused its arguments "
                              f"{sorted(kwargs)}: {err}.") from err
    except FlatminimaError:
        raise
    except Exception as err:  # the factory itself failed
        raise FlatminimaError(f"model factory {spec!r} raised {type(err).__name__}: {err}.") from err
    if not isinstance(model, nn.Module):
        raise FlatminimaError(f"{spec} returned {type(model).__name__}, not a torch.nn.Module.")
    return model
