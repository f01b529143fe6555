"""The first steps every command shares: get data, get a (trained) model, build the Objective."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data import Dataset, load, load_file
from ..errors import FlatminimaError, require_choice
from ..models import build
from ..objective import Objective
from ..train import Recipe, fit, load_checkpoint

SPLITS = ("train", "test")


def get_data(data: str = "mnist1d", **kwargs: Any) -> Dataset:
    """A built-in data set by name, a user's data file by path (``.npz``, ``.csv``, ``.pt``), or a user's
    ``module:factory`` (see :func:`data_from_factory`)."""
    if ":" in data and not Path(data).suffix:
        return data_from_factory(data, **kwargs)
    if Path(data).suffix:
        try:
            return load_file(data, **kwargs)
        except TypeError as err:
            raise FlatminimaError(f"data file {data!r}: {err}; a file takes test_fraction, seed, input_shape, "
                                  "label_column and num_classes.") from None
    return load(data, **kwargs)


def data_from_factory(spec: str, **kwargs: Any) -> Dataset:
    """Call a user's data factory ``module:function`` (the working directory is importable, as for model
    factories) with ``**kwargs``. It returns a flatminima ``Dataset``, or ``(train, test)`` / ``{"train": ...,
    "test": ...}`` where each part is a ``torch.utils.data.Dataset``, a ``DataLoader`` or ``(X, y)`` tensors;
    the parts are read once into memory. Without a test part the train part serves as both."""
    from ..data.datasets import as_inputs, as_labels
    from ..models.zoo import factory_origin, import_origin
    from ..train.trainer import materialise

    where = factory_origin(spec)
    try:
        obj: Any = import_origin(where)
    except (ImportError, AttributeError) as err:
        raise FlatminimaError(f"cannot load data factory {spec!r}: {err}.") from err
    if where["kind"] != "user" or not inspect.isfunction(obj):
        raise FlatminimaError(f"data factory {spec!r} must be a function in a module of your own.")
    try:
        made = obj(**kwargs)
    except TypeError as err:
        raise FlatminimaError(f"data factory {spec!r} refused its arguments {sorted(kwargs)}: {err}.") from err
    if isinstance(made, Dataset):
        return made
    if isinstance(made, dict):
        train, test = made.get("train"), made.get("test")
    elif isinstance(made, (tuple, list)) and len(made) == 2 and not isinstance(made[0], torch.Tensor):
        train, test = made
    else:
        train, test = made, None
    if train is None:
        raise FlatminimaError(f"data factory {spec!r} returned no train part.")

    def tensors(part: Any, what: str) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(part, (tuple, list)) and len(part) == 2 and isinstance(part[0], torch.Tensor):
            return torch.as_tensor(part[0]), torch.as_tensor(part[1])
        return materialise(part, f"data factory {spec!r}'s {what} part")

    x, y = tensors(train, "train")
    xt, yt = tensors(test, "test") if test is not None else (x, y)
    classes = int(max(int(y.max()), int(yt.max()))) + 1
    return Dataset(where["attr"], as_inputs(x.numpy()), as_labels(y.numpy()), as_inputs(xt.numpy()),
                   as_labels(yt.numpy()), classes,
                   info={"factory": spec, "test_is_train": test is None})


def get_model(model: str, dataset: Dataset, *, checkpoint: str | None = None, recipe: Recipe | dict | None = None,
              out_dir: str | None = None, progress: bool = True, device: str | torch.device = "cpu",
              say: Any = None, **model_kwargs: Any) -> tuple[nn.Module, dict]:
    """Build ``model`` (built-in name or ``module:factory``); load ``checkpoint`` or else train it on
    ``device``. With ``out_dir`` a finished training run there (``last.pt``, same recipe) is reused, and
    ``say(text)`` (if given) is told so."""
    torch.manual_seed(recipe.seed if isinstance(recipe, Recipe) else (recipe or {}).get("seed", 0))
    net = build(model, dataset.input_shape, dataset.num_classes, **model_kwargs)
    if checkpoint:
        load_checkpoint(checkpoint, net)
        return net.eval(), {"checkpoint": checkpoint}
    last = Path(out_dir) / "last.pt" if out_dir else None
    if say is not None and last is not None and last.exists():
        say(f"reusing the training run in {last} (delete it, or give another --out, to train afresh)")
    result = fit(net, dataset.train, recipe, checkpoint_dir=out_dir, progress=progress, device=device)
    return net.eval(), {"trained": True, "history": result.history[-1] if result.history else None,
                        "seconds": result.seconds, "checkpoint": result.checkpoint,
                        "reused": result.epochs_this_call == 0}


def objective_for(model: nn.Module, dataset: Dataset, *, split: str = "train", dtype: str = "float32",
                  device: str | None = None, params: list[str] | None = None, batch_size: int = 1024) -> Objective:
    """The full-data cross-entropy objective of ``model`` on the chosen split (``train`` or ``test``)."""
    require_choice("split", split, SPLITS)
    if dtype not in ("float32", "float64"):
        raise FlatminimaError(f"dtype must be float32 or float64, got {dtype!r}.")
    data = dataset.train if split == "train" else dataset.test
    return Objective(model, "cross_entropy", data, dtype=getattr(torch, dtype), device=device, params=params,
                     batch_size=batch_size)
