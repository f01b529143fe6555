"""Built-in data sets as tensors: MNIST-1D generated locally (Greydanus & Kabir 2020, ``mnist1d``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import FlatminimaError, require_positive_int


@dataclass
class Dataset:
    """Train/test tensors of a classification (or regression) task, with optional shifted test sets."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    shifts: dict[str, dict[int, tuple[torch.Tensor, torch.Tensor]]] = field(default_factory=dict)
    info: dict = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def train(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x_train, self.y_train

    @property
    def test(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x_test, self.y_test


def mnist1d_arrays(num_samples: int = 5000, seed: int = 42, **overrides) -> dict[str, np.ndarray]:
    """MNIST-1D from the ``mnist1d`` generator's templates (never its download path).

    ``overrides`` set any generator parameter (``iid_noise_scale``, ``corr_noise_scale``,
    ``max_translation``, ``scale_coeff``, ``shear_scale``, ...). NumPy's global RNG state, which the
    generator reseeds, is restored afterwards.
    """
    from mnist1d.data import get_dataset_args, make_dataset

    require_positive_int("num_samples", num_samples)
    args = get_dataset_args()
    unknown = [k for k in overrides if not hasattr(args, k)]
    if unknown:
        raise FlatminimaError(f"unknown MNIST-1D generator parameters {unknown}; "
                              f"allowed: {sorted(get_dataset_args(as_dict=True))}.")
    args.num_samples, args.seed = num_samples, seed
    for k, v in overrides.items():
        setattr(args, k, v)
    state = np.random.get_state()
    try:
        return make_dataset(args)
    finally:
        np.random.set_state(state)


def load_mnist1d(num_samples: int = 5000, seed: int = 42, **overrides) -> Dataset:
    """MNIST-1D: 40-point 1-D signals of 10 digit templates, split 80/20 into train and test."""
    d = mnist1d_arrays(num_samples, seed, **overrides)
    as_x = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
    as_y = lambda a: torch.as_tensor(a, dtype=torch.int64)  # noqa: E731
    return Dataset("mnist1d", as_x(d["x"]), as_y(d["y"]), as_x(d["x_test"]), as_y(d["y_test"]), 10,
                   info={"num_samples": num_samples, "seed": seed, **overrides})


LOADERS: dict[str, Callable[..., Dataset]] = {"mnist1d": load_mnist1d}


def load(name: str, **kwargs) -> Dataset:
    """A built-in data set by name."""
    if name not in LOADERS:
        raise FlatminimaError(f"unknown data set {name!r}; built in: {sorted(LOADERS)}.")
    return LOADERS[name](**kwargs)


def load_file(path: str, *, name: str | None = None, test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """A user's data from ``.npz`` with ``x_train``, ``y_train`` and optionally ``x_test``, ``y_test``.

    Without a test split, ``test_fraction`` of the rows (shuffled with ``seed``) become the test set.
    """
    from pathlib import Path

    p = Path(path)
    if not p.exists():
        raise FlatminimaError(f"data file {path!r} does not exist.")
    if p.suffix != ".npz":
        raise FlatminimaError(f"data file {path!r}: only .npz is read here (keys x_train, y_train[, x_test, y_test]).")
    with np.load(p, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    for key in ("x_train", "y_train"):
        if key not in arrays:
            raise FlatminimaError(f"data file {path!r} has no array {key!r}; it has {sorted(arrays)}.")
    x, y = arrays["x_train"], arrays["y_train"]
    if "x_test" in arrays and "y_test" in arrays:
        xt, yt = arrays["x_test"], arrays["y_test"]
    else:
        order = np.random.default_rng(seed).permutation(len(x))
        cut = int(round(len(x) * (1 - test_fraction)))
        x, y, xt, yt = x[order[:cut]], y[order[:cut]], x[order[cut:]], y[order[cut:]]
    for xs, ys, split in ((x, y, "train"), (xt, yt, "test")):
        if len(xs) != len(ys):
            raise FlatminimaError(f"{split} split: {len(xs)} inputs but {len(ys)} labels; they must match.")
        if not np.issubdtype(ys.dtype, np.integer):
            raise FlatminimaError(f"{split} labels have dtype {ys.dtype}; class labels must be integers.")
    classes = int(max(y.max(), yt.max())) + 1
    return Dataset(name or p.stem, torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.int64),
                   torch.as_tensor(xt, dtype=torch.float32), torch.as_tensor(yt, dtype=torch.int64), classes,
                   info={"path": str(p)})
