"""Built-in data sets as tensors, with their distribution shifts, and the loader for a user's files.

- ``mnist1d``: MNIST-1D generated locally (Greydanus & Kabir 2020, the ``mnist1d`` package's generator).
- ``digits``: scikit-learn's 8x8 digits (shipped inside scikit-learn), images in [0, 1] of shape (1, 8, 8).
- ``two_class``: two separable Gaussian-like classes with a ``separation`` gap (claim C14).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import FlatminimaError, require_in_range, require_positive_int
from .corruptions import CORRUPTIONS, corrupt
from .files import TASKS, check_split, infer_task, read_arrays, split_arrays, targets_for_task
from .mnist1d_shifts import SHIFTS as MNIST1D_SHIFTS
from .mnist1d_shifts import mnist1d_arrays, mnist1d_shifts
from .synthetic import two_class_arrays

Shifts = dict[str, dict[int, tuple[torch.Tensor, torch.Tensor]]]


@dataclass
class Dataset:
    """Train/test tensors of a task, with shifted test sets ``shifts[name][severity] = (x, y)``.

    ``task`` is ``"classification"`` (int64 class labels; ``num_classes`` logits per sample) or
    ``"regression"`` (float32 targets of shape ``(N,)`` or ``(N, k)``; ``num_classes`` is then the number of
    outputs per sample, ``k`` or 1), so a model factory gets the output width either way."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    shifts: Shifts = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    task: str = "classification"

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def train(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x_train, self.y_train

    @property
    def test(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x_test, self.y_test


def as_inputs(a) -> torch.Tensor:
    """Inputs as a contiguous float32 tensor (the dtype every built-in data set uses)."""
    return torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float32)


def as_labels(a) -> torch.Tensor:
    """Class labels as a contiguous int64 tensor."""
    return torch.as_tensor(np.ascontiguousarray(a), dtype=torch.int64)


def as_targets(a) -> torch.Tensor:
    """Regression targets as a contiguous float32 tensor."""
    return torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float32)


_x, _y = as_inputs, as_labels


def _shift_names(shifts: bool | Sequence[str], allowed: Sequence[str]) -> list[str]:
    if shifts is True:
        return list(allowed)
    if shifts is False or shifts is None:
        return []
    names = [shifts] if isinstance(shifts, str) else list(shifts)
    bad = [n for n in names if n not in allowed]
    if bad:
        raise FlatminimaError(f"unknown shifts {bad}; allowed: {sorted(allowed)} (or shifts=True for all).")
    return names


def load_mnist1d(num_samples: int = 5000, seed: int = 42, *, shifts: bool | Sequence[str] = False,
                 **overrides) -> Dataset:
    """MNIST-1D: 40-point 1-D signals of 10 digit templates, split 80/20 into train and test.

    ``overrides`` set any generator parameter (``iid_noise_scale``, ``corr_noise_scale``, ``max_translation``,
    ``scale_coeff``, ``shear_scale``, ...). ``shifts=True`` (or a list of names from
    ``iid_noise, corr_noise, translation, scale, shear``) adds test sets regenerated with that parameter at
    severities 1..5 (see :mod:`flatminima.data.mnist1d_shifts`).
    """
    require_positive_int("num_samples", num_samples)
    if num_samples < 10:
        raise FlatminimaError(f"num_samples must be at least 10 (one per digit class), got {num_samples}.")
    d = mnist1d_arrays(num_samples, seed, **overrides)
    names = _shift_names(shifts, list(MNIST1D_SHIFTS))
    raw = mnist1d_shifts(d, overrides, names) if names else {}
    out = {n: {s: (_x(x), _y(y)) for s, (x, y) in sev.items()} for n, sev in raw.items()}
    return Dataset("mnist1d", _x(d["x"]), _y(d["y"]), _x(d["x_test"]), _y(d["y_test"]), 10, shifts=out,
                   info={"num_samples": num_samples, "seed": seed, **overrides,
                         "shift_parameters": {n: MNIST1D_SHIFTS[n] for n in names}})


def load_digits(test_fraction: float = 0.2, seed: int = 0, *, shifts: bool | Sequence[str] = False,
                corruption_seed: int = 1) -> Dataset:
    """scikit-learn's 8x8 digits (1797 images), scaled to [0, 1], shape (1, 8, 8), stratified split.

    ``shifts=True`` (or names from ``gaussian_noise, blur, contrast, rotation, translation, occlusion``)
    adds the corrupted test set at severities 1..5 (:mod:`flatminima.data.corruptions`).
    """
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    require_in_range("test_fraction", test_fraction, 0.0, 1.0, inclusive=False)
    bunch = sk_digits()
    x = (bunch.images / 16.0).astype(np.float32)[:, None]
    y = bunch.target.astype(np.int64)
    x, xt, y, yt = train_test_split(x, y, test_size=test_fraction, random_state=seed, stratify=y)
    names = _shift_names(shifts, list(CORRUPTIONS))
    out = {n: {s: (_x(corrupt(xt, n, s, corruption_seed)), _y(yt)) for s in range(1, 6)} for n in names}
    return Dataset("digits", _x(x), _y(y), _x(xt), _y(yt), 10, shifts=out,
                   info={"test_fraction": test_fraction, "seed": seed, "range": [0.0, 1.0]})


def load_two_class(num_samples: int = 1000, separation: float = 1.0, *, dim: int = 2, spread: float = 1.0,
                   test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """Two separable classes with a gap ``separation`` along x₁ (:mod:`flatminima.data.synthetic`)."""
    require_in_range("test_fraction", test_fraction, 0.0, 1.0, inclusive=False)
    require_positive_int("num_samples", num_samples)
    require_positive_int("dim", dim)
    x, y = two_class_arrays(num_samples, separation, dim=dim, spread=spread, seed=seed)
    cut = int(round(num_samples * (1 - test_fraction)))
    return Dataset("two_class", _x(x[:cut]), _y(y[:cut]), _x(x[cut:]), _y(y[cut:]), 2,
                   info={"num_samples": num_samples, "separation": separation, "dim": dim, "spread": spread,
                         "seed": seed})


LOADERS: dict[str, Callable[..., Dataset]] = {"mnist1d": load_mnist1d, "digits": load_digits,
                                              "two_class": load_two_class}


def load(name: str, **kwargs) -> Dataset:
    """A built-in data set by name (``mnist1d``, ``digits``, ``two_class``), or a user's file by path."""
    if Path(name).suffix.lower() in (".npz", ".csv", ".pt"):
        return load_file(name, **kwargs)
    if name not in LOADERS:
        raise FlatminimaError(f"unknown data set {name!r}; built in: {sorted(LOADERS)}, "
                              "or a .npz/.csv/.pt file.")
    try:
        return LOADERS[name](**kwargs)
    except TypeError as err:  # a misspelt keyword: say which loader and what it takes
        import inspect

        takes = list(inspect.signature(LOADERS[name]).parameters)
        raise FlatminimaError(f"data set {name!r}: {err}; it takes {takes}.") from err


def load_file(path: str, *, name: str | None = None, test_fraction: float = 0.2, seed: int = 0,
              input_shape: Sequence[int] | None = None, label_column: str | None = None,
              num_classes: int | None = None, task: str | None = None) -> Dataset:
    """A user's data from ``.npz``, ``.csv`` or ``.pt`` (see :mod:`flatminima.data.files` for the layout).

    Without a test split, ``test_fraction`` of the rows (shuffled with ``seed``) become the test set.
    ``input_shape`` checks (or reshapes flat rows into) the per-sample shape, e.g. ``(1, 8, 8)``.

    ``task`` (``"classification"`` or ``"regression"``; default: inferred by :func:`infer_task`): integer
    targets are class labels, floating-point targets regression targets of shape ``(N,)`` or ``(N, k)``, always;
    ``task=`` overrides. ``info["task_from"]`` says how the task was decided. For a regression ``num_classes``
    is the number of outputs per sample (``k``, or 1 for ``(N,)`` targets); when given it must match.
    """
    arrays = read_arrays(path, label_column=label_column)
    if "y_train" in arrays:
        task, why = infer_task(np.asarray(arrays["y_train"]), task)
    else:  # split_arrays names the missing array
        task, why = task or "classification", "given" if task else "no targets"
    x, y, xt, yt = split_arrays(arrays, str(path), test_fraction=test_fraction, seed=seed,
                                input_shape=input_shape, task=task)
    info = {"path": str(path), "task_from": why}
    if task == "regression":
        return regression_dataset(name or Path(path).stem, x, y, xt, yt, num_classes=num_classes, info=info,
                                  where=f"data file {str(path)!r}")
    if num_classes is not None:
        require_positive_int("num_classes", num_classes)
    found = int(max(y.max(), yt.max())) + 1
    if num_classes is not None and num_classes < found:
        raise FlatminimaError(f"num_classes={num_classes} but the labels go up to {found - 1}.")
    unseen = sorted(set(np.unique(yt).tolist()) - set(np.unique(y).tolist()))
    if unseen and num_classes is None:  # they would silently add classes the model never trains on
        raise FlatminimaError(
            f"data file {str(path)!r}: the test labels include class(es) {unseen[:10]} that no training sample "
            f"has (training labels go up to {int(y.max())}); fix the labels, or pass num_classes= to say how "
            "many classes there are."
        )
    return Dataset(name or Path(path).stem, _x(x), _y(y), _x(xt), _y(yt), num_classes or found, info=info)


def regression_dataset(name: str, x, y, xt, yt, *, num_classes: int | None = None, info: dict | None = None,
                       where: str = "the data") -> Dataset:
    """A regression :class:`Dataset` from checked arrays: float32 targets of shape ``(N,)`` or ``(N, k)``,
    ``num_classes`` = outputs per sample (``k``, 1 for ``(N,)``); a given ``num_classes`` must equal it."""
    y, yt = np.asarray(y), np.asarray(yt)
    if y.shape[1:] != yt.shape[1:]:
        raise FlatminimaError(f"{where}: train targets have per-sample shape {tuple(y.shape[1:])} but test "
                              f"targets {tuple(yt.shape[1:])}; they must be the same.")
    outputs = 1 if y.ndim == 1 else int(y.shape[1])
    if num_classes is not None and num_classes != outputs:
        raise FlatminimaError(f"{where}: num_classes={num_classes} but the regression targets have {outputs} "
                              "output(s) per sample; leave num_classes out (it is read from the targets).")
    return Dataset(name, _x(x), as_targets(y), _x(xt), as_targets(yt), outputs, info=dict(info or {}),
                   task="regression")


def with_task(dataset: Dataset, task: str | None, where: str = "the data") -> Dataset:
    """``dataset`` with its targets read for ``task`` (None: as it is): a regression's targets as float32, or
    a classification's whole-number float targets as int64 labels (fractions refused); checked like a file's."""
    if task is None or task == dataset.task:
        return dataset
    if task not in TASKS:
        raise FlatminimaError(f"task must be one of {list(TASKS)}, got {task!r}.")
    y, yt = (targets_for_task(s, t.numpy(), task) for s, t in (("train", dataset.y_train), ("test", dataset.y_test)))
    for split, x, t in (("train", dataset.x_train, y), ("test", dataset.x_test, yt)):
        check_split(split, x.numpy(), t, task)
    info = dataset.info | {"task_from": "given"}
    if task == "regression":
        return regression_dataset(dataset.name, dataset.x_train, y, dataset.x_test, yt, info=info, where=where)
    classes = int(max(y.max(), yt.max())) + 1
    return Dataset(dataset.name, dataset.x_train, _y(y), dataset.x_test, _y(yt), classes, shifts=dataset.shifts,
                   info=info)
