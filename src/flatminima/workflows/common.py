"""The first steps every command shares: get data, get a (trained) model, build the Objective."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data import Dataset, load, load_file
from ..errors import FlatminimaError, require_choice
from ..models import build
from ..objective import Objective
from ..train import Recipe, flat_params, load_checkpoint
from ..train.losses import LOSS_NAMES, loss_function
from .pipeline import train_model

SPLITS = ("train", "test")


def get_data(data: str = "mnist1d", **kwargs: Any) -> Dataset:
    """A built-in data set by name, a user's data file by path (``.npz``, ``.csv``, ``.pt``), or a user's
    ``module:factory`` (see :func:`data_from_factory`).

    ``task`` (``"classification"`` or ``"regression"``) overrides the task a file's or a factory's targets
    give (integer targets: classification; floating-point targets: regression, always); the built-in data sets
    are classification. ``dataset.task`` holds the task and ``dataset.info["task_from"]`` how it was decided."""
    if not isinstance(data, str) or not data.strip():
        raise FlatminimaError(f"data must be a built-in data set's name, a data file (.npz, .csv, .pt) or "
                              f"'module:function', got {data!r}.")
    if is_factory_name(data):  # pkg.mod:fn has a "suffix" (.mod:fn) but is no file
        return data_from_factory(data, **kwargs)
    if Path(data).suffix:
        try:
            return load_file(data, **kwargs)
        except TypeError as err:
            raise FlatminimaError(f"data file {data!r}: {err}; a file takes test_fraction, seed, input_shape, "
                                  "label_column, num_classes and task.") from None
    task = kwargs.pop("task", None)
    dataset = load(data, **kwargs)
    if task not in (None, dataset.task):
        raise FlatminimaError(f"data set {data!r} is a {dataset.task} data set; task={task!r} does not apply "
                              "(task= is for your own files and factories).")
    dataset.info.setdefault("task_from", "built-in data set")
    return dataset


def is_factory_name(data: str) -> bool:
    """Whether ``data`` names a data factory ``module:function`` (``pkg.mod:fn`` too), not a file: a dotted
    module path, one colon, a function name, and no data file suffix or path separator."""
    import re

    from ..data.files import SUFFIXES

    return (re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", data) is not None
            and not data.lower().endswith(SUFFIXES))


def data_from_factory(spec: str, *, task: str | None = None, **kwargs: Any) -> Dataset:
    """Call a user's data factory ``module:function`` (the working directory is importable, as for model
    factories) with ``**kwargs``. It returns a flatminima ``Dataset``, or ``(train, test)`` / ``{"train": ...,
    "test": ...}`` where each part is a ``torch.utils.data.Dataset``, a ``DataLoader`` or ``(X, y)`` tensors;
    the parts are read once into memory. Without a test part the train part serves as both.

    The task follows the targets' dtype: integer (or boolean) targets are class labels (classification),
    floating-point targets are regression targets of shape ``(N,)`` or ``(N, k)`` (regression, always, also
    when every value is a whole number; never truncated to labels). ``task=`` (flatminima's keyword, not passed
    to the factory; ``--data-arg task=classification`` on the command line) overrides: ``"classification"``
    reads whole-number float targets as labels, ``"regression"`` reads integer targets as floats. A returned
    ``Dataset`` keeps its own task unless ``task=`` is given."""
    from ..data.datasets import as_inputs, as_labels, regression_dataset, with_task
    from ..data.files import check_split, infer_task, targets_for_task
    from ..models.zoo import factory_origin, import_origin
    from ..train.trainer import materialise

    try:
        where = factory_origin(spec)
    except FlatminimaError as err:  # said of a data factory, not a model's
        raise FlatminimaError(str(err).replace("model factory", "data factory")) from None
    try:
        obj: Any = import_origin(where)
    except (ImportError, AttributeError) as err:
        raise FlatminimaError(f"cannot load data factory {spec!r}: {err}.") from err
    if where["kind"] != "user" or not inspect.isfunction(obj):
        raise FlatminimaError(f"data factory {spec!r} must be a function in a module of your own.")
    if task is not None:
        infer_task(np.zeros(1), task)  # a bad task is refused before the factory runs
    try:
        made = obj(**kwargs)
    except TypeError as err:
        raise FlatminimaError(f"data factory {spec!r} refused its arguments {sorted(kwargs)}: {err}.") from err
    if isinstance(made, Dataset):
        made.info.setdefault("task_from", "the factory's Dataset (its task field)")
        return with_task(made, task, f"data factory {spec!r}")
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
            x, y = torch.as_tensor(part[0]), torch.as_tensor(part[1])
        else:
            x, y = materialise(part, f"data factory {spec!r}'s {what} part")
            # materialise flattens each item's target: (N, k) regression targets come back as N*k values
            if y.dim() == 1 and len(x) and len(y) != len(x) and len(y) % len(x) == 0:
                y = y.reshape(len(x), -1)
        return x.detach().cpu(), y.detach().cpu()

    x, y = tensors(train, "train")
    xt, yt = tensors(test, "test") if test is not None else (x, y)
    for s, xs, ts in (("train", x, y), ("test", xt, yt)):  # checked once, here: emptiness, dtypes, sizes
        if len(xs) == 0 or len(ts) == 0:
            raise FlatminimaError(f"data factory {spec!r} returned an empty {s} part ({len(xs)} inputs, {len(ts)} "
                                  "targets); it must return at least one sample.")
        if xs.is_complex() or xs.dtype == torch.bool or ts.is_complex() or xs.layout != torch.strided:
            raise FlatminimaError(f"data factory {spec!r}'s {s} part has inputs {xs.dtype} ({xs.layout}) and "
                                  f"targets {ts.dtype}; give dense real-valued inputs and integer labels or real "
                                  "targets.")
    x, xt = (t.float() if t.dtype in (torch.float16, torch.bfloat16) else t for t in (x, xt))
    y, yt = (t.float() if t.dtype in (torch.float16, torch.bfloat16) else t for t in (y, yt))
    kind, why = infer_task(y.numpy(), task)
    info = {"factory": spec, "test_is_train": test is None, "task_from": why}
    ys = {s: targets_for_task(f"data factory {spec!r}: {s}", t.numpy(), kind)
          for s, t in (("train", y), ("test", yt))}
    for s, xs in (("train", x), ("test", xt)):
        if len(xs) != len(ys[s]):
            raise FlatminimaError(f"data factory {spec!r}'s {s} part: {len(xs)} inputs but {len(ys[s])} targets; "
                                  "they must match.")
        if kind == "regression":  # labels keep the factory path's old (lenient) handling
            check_split(f"data factory {spec!r}: {s}", xs.reshape(len(xs), -1).numpy(), ys[s], kind)
    if kind == "regression":
        return regression_dataset(where["attr"], x.numpy(), ys["train"], xt.numpy(), ys["test"], info=info,
                                  where=f"data factory {spec!r}")
    for s in ("train", "test"):  # class labels: integers 0..K-1, K at most MAX_CLASSES
        check_split(f"data factory {spec!r}: {s}", np.zeros((len(ys[s]), 1)), np.asarray(ys[s]), kind)
    classes = int(max(int(ys["train"].max()), int(ys["test"].max()))) + 1
    return Dataset(where["attr"], as_inputs(x.numpy()), as_labels(ys["train"]), as_inputs(xt.numpy()),
                   as_labels(ys["test"]), classes, info=info)


def describe_data(dataset: Dataset) -> dict[str, Any]:
    """The data's name, task, outputs per sample and how the task was decided (for a command's output)."""
    return {"name": dataset.name, "task": dataset.task, "outputs": dataset.num_classes,
            "task_from": dataset.info.get("task_from", "the Dataset's task field"),
            "train_samples": len(dataset.x_train), "test_samples": len(dataset.x_test)}


# ---- the loss: one name for training and measuring ------------------------------------------------------------
def default_loss(dataset: Dataset) -> str:
    """The loss a data set's task takes by default: cross-entropy for classification, MSE for regression."""
    return "mse" if dataset.task == "regression" else "cross_entropy"


def resolve_loss(loss: str | Callable | None) -> Callable | None:
    """``loss`` through the one loss registry (:func:`flatminima.train.losses.loss_function`): ``None`` (the
    data's default, decided later), ``"cross_entropy"``, ``"mse"``, a callable or a user's ``"module:function"``
    (imported now, so a missing module is refused before any data is loaded or model trained)."""
    if loss is None:
        return None
    if isinstance(loss, str) and ":" not in loss and loss not in LOSS_NAMES:
        raise FlatminimaError(f"--loss must be one of {list(LOSS_NAMES)} or a function of your own as "
                              f"'module:function' (outputs, targets) -> mean loss, got {loss!r}.")
    return loss_function(loss)


def check_loss(loss: str | Callable, model: nn.Module, dataset: Dataset, *, name: str | None = None) -> None:
    """Refuse, before any training or measuring, a loss that does not fit the data or cannot be differentiated:
    cross-entropy on regression targets; a loss that fails, returns anything but a finite 0-dim tensor, or
    gives no gradient (or an exactly zero one) on two training samples through ``model``. One forward and
    one backward pass in eval mode (the model's mode is restored; ``autograd.grad`` leaves ``.grad`` alone)."""
    what = name or (loss if isinstance(loss, str) else getattr(loss, "__name__", "the loss"))
    if loss == "cross_entropy" and dataset.task == "regression":
        raise FlatminimaError(f"--loss cross_entropy needs class labels, but {dataset.name!r} is a regression data "
                              "set (floating-point targets); use --loss mse or a loss of your own (module:function), "
                              "or --data-arg task=classification if the targets are class labels.")
    fn = loss_function(loss)
    first = next(model.parameters(), None)
    where = {"device": first.device, "dtype": first.dtype} if first is not None else {}
    x, y = dataset.x_train[:2].to(**where), dataset.y_train[:2].to(where.get("device", "cpu"))
    was_training = model.training
    model.eval()
    try:
        try:
            out = model(x)
        except Exception as err:  # noqa: BLE001 - the model, not the loss
            raise FlatminimaError(f"the model cannot take two training samples of shape {tuple(x.shape[1:])}: "
                                  f"{type(err).__name__}: {err}.") from None
        value = fn(out, y)
    except FlatminimaError:
        raise
    except Exception as err:  # noqa: BLE001 - the user's loss failing on the model's outputs and the targets
        raise FlatminimaError(f"loss {what!r} failed on two training samples (targets {tuple(y.shape)} "
                              f"{y.dtype}): {type(err).__name__}: {err}.") from None
    finally:
        model.train(was_training)
    if not isinstance(value, torch.Tensor) or value.dim() != 0:
        got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise FlatminimaError(f"loss {what!r} returned {got}; it must return the batch's mean loss as a 0-dim "
                              "tensor (e.g. .mean() over the samples).")
    if not torch.isfinite(value):
        raise FlatminimaError(f"loss {what!r} is {float(value)} on two training samples; it must be finite.")
    if not value.requires_grad:
        raise FlatminimaError(f"loss {what!r} is not differentiable: its value does not depend on the model's "
                              "outputs through autograd (a .detach(), .item(), argmax or a NumPy step?); curvature "
                              "needs a loss torch can differentiate twice.")
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(value, params, allow_unused=True)
    if all(g is None or not bool(g.abs().sum() > 0) for g in grads):
        raise FlatminimaError(f"loss {what!r} has an exactly zero gradient on two training samples (rounding, "
                              "comparisons or argmax inside?); curvature needs a loss torch can differentiate.")


# ---- the model: built, then trained or loaded from checkpoints ---------------------------------------------------
def build_for(model: str, dataset: Dataset, **model_kwargs: Any) -> nn.Module:
    """``model`` (a built-in name or ``module:factory``) built for ``dataset``: ``num_classes`` outputs per sample
    (logits, or a regression's k outputs; ``(batch,)`` also for one regression target), checked by one forward
    pass."""
    from ..models.zoo import check_outputs, from_factory

    if ":" in model and dataset.task == "regression":  # build() checks class logits; a regression's outputs here
        net = from_factory(model, **model_kwargs)
        check_outputs(net, dataset.input_shape, dataset.num_classes, model, task="regression")
        return net
    return build(model, dataset.input_shape, dataset.num_classes, **model_kwargs)


def check_checkpoint(path: str, model: nn.Module, what: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The state dict in ``path`` (loaded with ``weights_only=True``), refused unless it fits ``model``
    exactly: every missing, unexpected or mis-shaped tensor is named."""
    state = load_checkpoint(path)["model"]
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    shaped = [f"{k} {tuple(state[k].shape)} (the model has {tuple(own[k].shape)})" for k in own
              if k in state and isinstance(state[k], torch.Tensor) and state[k].shape != own[k].shape]
    if missing or extra or shaped:
        parts = ([f"missing {', '.join(missing[:8])}"] if missing else []) + \
                ([f"unexpected {', '.join(extra[:8])}"] if extra else []) + \
                ([f"mis-shaped {'; '.join(shaped[:8])}"] if shaped else [])
        raise FlatminimaError(f"{what} {str(path)!r} does not fit the model: {'; '.join(parts)}. Give the "
                              "architecture and sizes it was trained with (--model, --model-arg).")
    return state


def get_model(model: str, dataset: Dataset, *, checkpoint: str | None = None, recipe: Recipe | dict | None = None,
              out_dir: str | None = None, progress: bool = True, device: str | torch.device = "cpu",
              say: Any = None, loss: str | Callable | None = None, keep_init: bool = False,
              **model_kwargs: Any) -> tuple[nn.Module, dict]:
    """Build ``model`` (built-in name or ``module:factory``); load ``checkpoint`` or else train it on
    ``device``. With ``out_dir`` a finished training run there (``last.pt``, same recipe) is reused, and
    ``say(text)`` (if given) is told so.

    ``loss`` (default: the recipe's, else the data's task: cross-entropy or MSE) is checked on two samples
    before any work (:func:`check_loss`) and is the loss the model trains with: ``"cross_entropy"``/``"mse"``
    go into the recipe, a callable or ``"module:function"`` to :func:`flatminima.train.fit` as ``loss_fn``.
    ``keep_init=True`` puts the flat initial parameters (before training) into ``info["init"]``."""
    seed = recipe.seed if isinstance(recipe, Recipe) else (recipe or {}).get("seed", 0)
    torch.manual_seed(seed)
    net = build_for(model, dataset, **model_kwargs)
    if checkpoint:
        check_checkpoint(checkpoint, net)
        if loss is not None:
            check_loss(loss, net, dataset)
        load_checkpoint(checkpoint, net)
        return net.eval(), {"checkpoint": checkpoint}
    if loss is None:
        loss = recipe.loss if isinstance(recipe, Recipe) else (recipe or {}).get("loss", default_loss(dataset))
    check_loss(loss, net, dataset)
    loss_fn = None
    if isinstance(loss, str) and loss in LOSS_NAMES:
        recipe = (recipe.model_copy(update={"loss": loss}) if isinstance(recipe, Recipe)
                  else {**(recipe or {}), "loss": loss})
    else:
        loss_fn = loss_function(loss)
    init = flat_params(net) if keep_init else None  # before training: the weights the run starts from
    last = Path(out_dir) / "last.pt" if out_dir else None
    if say is not None and last is not None and last.exists():
        say(f"reusing the training run in {last} (delete it, or give another --out, to train afresh)")
    net, result = train_model(net, dataset.train, recipe, checkpoint_dir=out_dir, progress=progress, device=device,
                              loss_fn=loss_fn)  # the shared pipeline's training step
    # the loss it trained with: a user's loss is not in the recipe (whose loss field names the built-in ones)
    info = {"trained": True, "history": result.history[-1] if result.history else None,
            "seconds": result.seconds, "checkpoint": result.checkpoint, "reused": result.epochs_this_call == 0,
            "loss": loss if isinstance(loss, str) else getattr(loss, "__name__", type(loss).__name__)}
    return net.eval(), info | ({"init": init} if keep_init else {})


def load_models(model: str, dataset: Dataset, checkpoints: list[str], *, loss: str | Callable | None = None,
                seed: int = 0, **model_kwargs: Any) -> list[tuple[nn.Module, dict]]:
    """``model`` built once per checkpoint and loaded from it (``weights_only=True``), in eval mode. Every
    checkpoint is checked against the architecture first (:func:`check_checkpoint`, naming the tensors that
    do not fit) and ``loss`` on two samples (:func:`check_loss`), so a bad one is refused before any
    measuring."""
    nets = []
    for path in checkpoints:
        torch.manual_seed(seed)
        net = build_for(model, dataset, **model_kwargs)
        try:
            check_checkpoint(path, net)
        except FlatminimaError as err:
            raise FlatminimaError(f"{err}{_task_hint(dataset)}") from None
        nets.append(net)
    if loss is not None and nets:
        check_loss(loss, nets[0], dataset)
    for path, net in zip(checkpoints, nets, strict=True):
        load_checkpoint(path, net)
    return [(net.eval(), {"checkpoint": path}) for path, net in zip(checkpoints, nets, strict=True)]


def _task_hint(dataset: Dataset) -> str:
    """Where the task was inferred, a hint that it decides the model's outputs (a classifier's checkpoint does
    not fit a regression's model, and the other way round)."""
    why = dataset.info.get("task_from", "")
    if not why.startswith("inferred"):
        return ""
    other = "classification" if dataset.task == "regression" else "regression"
    return (f" The data was read as a {dataset.task} ({why.split('; ')[0]}), {dataset.num_classes} output(s) per "
            f"sample; --data-arg task={other} reads it the other way.")


def initial_params(model: str, dataset: Dataset, checkpoint: str, **model_kwargs: Any) -> torch.Tensor:
    """The flat initial parameters (``flatminima.train.flat_params`` order) from a state dict of the initial
    weights, checked against the architecture like any checkpoint."""
    net = build_for(model, dataset, **model_kwargs)
    check_checkpoint(checkpoint, net, "--init-checkpoint")
    load_checkpoint(checkpoint, net)
    return flat_params(net)


def objective_for(model: nn.Module, dataset: Dataset, *, split: str = "train", dtype: str = "float32",
                  device: str | None = None, params: list[str] | None = None, batch_size: int = 1024,
                  loss: str | Callable | None = None) -> Objective:
    """The full-data objective of ``model`` on the chosen split (``train`` or ``test``).

    ``loss``: None -> the data's task decides (cross-entropy for classification, MSE for regression); else
    ``"cross_entropy"``, ``"mse"``, a callable ``(outputs, targets) -> batch mean`` or ``"module:function"``,
    all through :func:`flatminima.train.losses.loss_function`, the loss training uses too."""
    require_choice("split", split, SPLITS)
    if dtype not in ("float32", "float64"):
        raise FlatminimaError(f"dtype must be float32 or float64, got {dtype!r}.")
    if loss is None:
        loss = default_loss(dataset)
    if loss == "cross_entropy" and dataset.task == "regression":
        raise FlatminimaError(f"loss cross_entropy needs class labels, but {dataset.name!r} is a regression data "
                              "set; use loss='mse' or a loss of your own.")
    fn = loss_function(loss)
    # The Objective's own CrossEntropyLoss is the same function as the registry's (no label smoothing when
    # measuring) and also checks the labels against the model's outputs, so the name is passed for it.
    data = dataset.train if split == "train" else dataset.test
    return Objective(model, "cross_entropy" if loss == "cross_entropy" else fn, data, dtype=getattr(torch, dtype),
                     device=device, params=params, batch_size=batch_size)
