"""A user's own data from ``.npz``, ``.csv`` or ``.pt`` files, loaded safely and checked.

- ``.npz``: arrays ``x_train``, ``y_train`` and optionally ``x_test``, ``y_test``
  (``np.load(allow_pickle=False)``).
- ``.pt``: a dict of tensors with the same keys (``torch.load(weights_only=True)``: no code runs).
- ``.csv``: a header row; the label column (``label`` or ``y``, or ``label_column=``; several target columns
  of a regression as ``label_column="y1,y2"``), an optional ``split`` column (``train``/``test``), every other
  column a numeric feature; ``input_shape`` reshapes the features.

Task (classification or regression, see :func:`infer_task`): integer targets are class labels; floating-point
targets are regression targets, always (a CSV has no dtype: a target column of whole numbers only, one column,
reads as integer labels, anything else as floats). ``task=`` overrides: ``"classification"`` turns whole-number
floats into labels (and refuses fractions), ``"regression"`` reads integer targets as floats.

Images: 4-D inputs may be channels-first ``(N, C, H, W)`` or channels-last ``(N, H, W, C)`` with ``C`` in 1, 3
or 4 (moved to channels-first, which PyTorch's convolutions take); ``uint8`` inputs (0-255 pixels) are
scaled to ``[0, 1]``. Other integer or float inputs are used as they are.

Checks (each failure names the split, what was found and what is required): the file and keys exist;
inputs are numeric and finite with at least one feature; class labels are 1-D integers ≥ 0, regression
targets finite numbers of shape ``(N,)`` or ``(N, k)``; inputs and targets have the same number of rows;
train and test inputs (and regression targets) have the same per-sample shape; ``input_shape``, if given,
matches (or reshapes) the per-sample shape.
"""

from __future__ import annotations

import csv
import math
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..errors import FlatminimaError, require_in_range
from ..validate import MAX_CLASSES

SUFFIXES = (".npz", ".csv", ".pt")
TASKS = ("classification", "regression")


def _read_npz(p: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(p, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except ValueError as err:  # object arrays need pickle: refused
        if "pickle" not in str(err).lower():
            raise FlatminimaError(f"data file {str(p)!r} is not a readable .npz archive ({err}); save it again "
                                  "with numpy.savez.") from None
        raise FlatminimaError(f"data file {str(p)!r} cannot be read without pickle ({err}); "
                              "save plain numeric arrays.") from err
    except (OSError, EOFError, zipfile.BadZipFile, KeyError) as err:  # truncated or not a zip archive
        raise FlatminimaError(f"data file {str(p)!r} is damaged or not a .npz archive "
                              f"({type(err).__name__}: {err}); save it again with numpy.savez.") from None


def _read_pt(p: Path) -> dict[str, np.ndarray]:
    try:
        blob = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle payloads with code, truncated files
        raise FlatminimaError(f"cannot load data file {str(p)!r} safely (weights_only=True): {err}") from err
    if not isinstance(blob, dict):
        raise FlatminimaError(f"data file {str(p)!r} holds a {type(blob).__name__}; it must hold a dict "
                              "with tensors x_train, y_train[, x_test, y_test].")
    if not blob:
        raise FlatminimaError(f"data file {str(p)!r} holds an empty dict; save tensors x_train, y_train[, x_test, "
                              "y_test] in it.")
    return {k: _pt_array(p, k, v) for k, v in blob.items()}


def _pt_array(p: Path, key: str, v: object) -> np.ndarray:
    """One entry of a .pt data file as a NumPy array: a dense real tensor (half precision and bfloat16 are read
    as float32, which holds them exactly); sparse, complex, quantized or non-numeric entries are refused."""
    where = f"data file {str(p)!r}: {key!r}"
    if isinstance(v, torch.Tensor):
        if v.layout != torch.strided:
            raise FlatminimaError(f"{where} is a sparse tensor ({v.layout}); save it dense: tensor.to_dense().")
        if v.is_complex() or v.is_quantized:
            raise FlatminimaError(f"{where} has dtype {v.dtype}; data must be real numbers (float or integer).")
        if v.dtype in (torch.float16, torch.bfloat16):
            v = v.float()
        return v.detach().cpu().numpy()
    a = np.asarray(v) if isinstance(v, (list, tuple, np.ndarray, int, float)) else None
    if a is None or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        kind = type(v).__name__ if a is None else f"{type(v).__name__} of {a.dtype}"
        raise FlatminimaError(f"{where} holds a {kind}; save numeric tensors (torch.tensor(...)) under x_train, "
                              "y_train[, x_test, y_test].")
    return a


def _read_csv(p: Path, label_column: str | None) -> dict[str, np.ndarray]:
    try:
        with p.open(newline="", encoding="utf-8") as fh:
            rows = [r for r in csv.reader(fh) if any(cell.strip() for cell in r)]  # blank lines skipped
    except (UnicodeDecodeError, csv.Error) as err:
        raise FlatminimaError(f"data file {str(p)!r} is not a UTF-8 CSV text file ({err}).") from None
    if len(rows) < 2:
        raise FlatminimaError(f"data file {str(p)!r} needs a header row and at least one data row.")
    header = [h.strip() for h in rows[0]]
    # several comma-separated target columns: the k outputs of a regression
    labels = [c.strip() for c in label_column.split(",") if c.strip()] if label_column else []
    if not labels:
        labels = [next((h for h in ("label", "y") if h in header), "label/y")]
    missing = [c for c in labels if c not in header]
    if missing:
        raise FlatminimaError(f"data file {str(p)!r} has no label column {', '.join(missing)!r}; "
                              f"its columns are {header}.")
    if len(set(header)) != len(header):
        dup = sorted({h for h in header if header.count(h) > 1})
        raise FlatminimaError(f"data file {str(p)!r}: the header names column(s) {dup} more than once.")
    for n, r in enumerate(rows[1:], start=2):
        if len(r) != len(header):  # a value too many (or too few) would shift every column after it
            raise FlatminimaError(f"data file {str(p)!r}, line {n}: {len(r)} values but the header has "
                                  f"{len(header)} columns; every row needs one value per column.")
    li, si = [header.index(c) for c in labels], header.index("split") if "split" in header else None
    feats = [i for i in range(len(header)) if i not in (*li, si)]
    try:
        x = np.array([[float(r[i]) for i in feats] for r in rows[1:]], dtype=np.float64)
        yf = np.array([[float(r[i]) for i in li] for r in rows[1:]])
    except (ValueError, IndexError) as err:
        raise FlatminimaError(f"data file {str(p)!r}: every row needs a number in every column "
                              f"({err}).") from err
    # Text has no dtype: one column of whole numbers reads as class labels (int64), anything else as floats
    # (regression targets); load_file's task= overrides either way.
    y = yf[:, 0] if len(li) == 1 else yf
    # whole numbers NumPy holds exactly as int64 (|y| ≤ 2**53): labels; a huge one is then named by check_split
    if len(li) == 1 and np.all(np.isfinite(y)) and np.all(y == np.round(y)) and np.all(np.abs(y) <= 2**53):
        y = y.astype(np.int64)
    if si is None:
        return {"x_train": x, "y_train": y}
    split = np.array([r[si].strip().lower() for r in rows[1:]])
    bad = sorted(set(split) - {"train", "test"})
    if bad:
        raise FlatminimaError(f"data file {str(p)!r}: column 'split' must hold 'train' or 'test', "
                              f"found {bad}.")
    tr, te = split == "train", split == "test"
    return {"x_train": x[tr], "y_train": y[tr], "x_test": x[te], "y_test": y[te]}


def infer_task(y: np.ndarray, task: str | None = None) -> tuple[str, str]:
    """``(task, why)`` for targets ``y``: ``task`` when given (checked), else integer (or boolean) dtype ->
    ``"classification"`` and floating-point dtype -> ``"regression"``, always (whole-number floats too: say
    ``task="classification"`` to read them as class labels). ``why`` says how it was decided, for the output."""
    if task is not None:
        if task not in TASKS:
            raise FlatminimaError(f"task must be one of {list(TASKS)}, got {task!r}.")
        return task, "given"
    if np.issubdtype(y.dtype, np.integer) or y.dtype == bool:
        return "classification", f"inferred: integer targets ({y.dtype})"
    if np.issubdtype(y.dtype, np.floating):
        return "regression", (f"inferred: floating-point targets ({y.dtype}); pass task=classification "
                              "if they are class labels")
    raise FlatminimaError(f"targets have dtype {y.dtype}; they must be integer class labels or real numbers.")


def targets_for_task(split: str, y: np.ndarray, task: str) -> np.ndarray:
    """``y`` in the dtype ``task`` uses: int64 class labels (whole-number floats converted, fractions refused)
    or float64 regression targets (cast to float32 by the Dataset); shapes are checked by :func:`check_split`."""
    y = np.asarray(y)
    if y.dtype == bool:
        y = y.astype(np.int64)
    if not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)):
        raise FlatminimaError(f"{split} targets have dtype {y.dtype}; they must be integers or real numbers.")
    if task == "regression":
        return y.astype(np.float64)
    if np.issubdtype(y.dtype, np.floating):
        finite = np.isfinite(y)
        if np.all(finite) and y.size and np.abs(y).max() >= MAX_CLASSES:
            big = float(np.abs(y).max())
            raise FlatminimaError(f"{split} labels go up to {big:.6g}, but the task is classification: a classifier "
                                  f"has at most {MAX_CLASSES} classes numbered 0..K-1; renumber the classes, or pass "
                                  "task=regression for real-valued targets.")
        if not np.all(finite) or not np.all(y == np.round(y)):
            bad = ", ".join(f"{v:.6g}" for v in y[~finite | (y != np.round(np.where(finite, y, 0)))].ravel()[:3])
            raise FlatminimaError(f"{split} labels are not whole numbers (e.g. {bad}) but the task is "
                                  "classification; class labels must be integers (or pass task=regression "
                                  "for real-valued targets).")
        return y.astype(np.int64)
    return y


def check_split(split: str, x: np.ndarray, y: np.ndarray, task: str = "classification") -> None:
    """Inputs (numeric, finite, at least one sample and feature) and targets of one split for ``task``:
    class labels 1-D integers ≥ 0, regression targets finite of shape ``(N,)`` or ``(N, k)``, k ≥ 1."""
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)) or x.dtype == bool:
        raise FlatminimaError(f"{split} inputs have dtype {x.dtype}; inputs must be real numbers.")
    if x.ndim < 2 or x.shape[0] == 0 or math.prod(x.shape[1:]) == 0:
        raise FlatminimaError(f"{split} inputs have shape {x.shape}; they must be (samples, features...) "
                              "with at least one sample and one feature.")
    if not np.all(np.isfinite(x)):
        raise FlatminimaError(f"{split} inputs contain NaN or infinite values.")
    if task == "regression":
        _check_regression_targets(split, len(x), y)
        return
    if y.ndim != 1:
        raise FlatminimaError(f"{split} labels have shape {y.shape}; they must be 1-D class indices "
                              "(not one-hot).")
    if not np.issubdtype(y.dtype, np.integer):
        raise FlatminimaError(f"{split} labels have dtype {y.dtype}; class labels must be integers.")
    if len(x) != len(y):
        raise FlatminimaError(f"{split} split: {len(x)} inputs but {len(y)} labels; they must match.")
    if y.min() < 0:
        raise FlatminimaError(f"{split} labels must be ≥ 0, found {int(y.min())}.")
    if y.max() >= MAX_CLASSES:
        raise FlatminimaError(f"{split} labels go up to {int(y.max())}: a classifier would need {int(y.max()) + 1} "
                              f"outputs (at most {MAX_CLASSES} classes); renumber the classes 0..K-1 (np.unique(y, "
                              "return_inverse=True)), or pass task=regression if they are real values.")


def _check_regression_targets(split: str, n: int, y: np.ndarray) -> None:
    if y.ndim not in (1, 2) or (y.ndim == 2 and y.shape[1] == 0):
        raise FlatminimaError(f"{split} regression targets have shape {y.shape}; they must be (samples,) or "
                              "(samples, outputs) with at least one output.")
    if not np.issubdtype(y.dtype, np.floating):
        raise FlatminimaError(f"{split} regression targets have dtype {y.dtype}; they must be real numbers.")
    if len(y) != n:
        raise FlatminimaError(f"{split} split: {n} inputs but {len(y)} targets; they must match.")
    if not np.all(np.isfinite(y)):
        raise FlatminimaError(f"{split} regression targets contain NaN or infinite values; they must be finite.")



def _reshape(split: str, x: np.ndarray, input_shape: Sequence[int] | None) -> np.ndarray:
    if input_shape is None:
        return x
    shape = tuple(int(s) for s in input_shape)
    if x.shape[1:] == shape:
        return x
    if math.prod(x.shape[1:]) != math.prod(shape):
        raise FlatminimaError(f"{split} inputs have per-sample shape {tuple(x.shape[1:])} "
                              f"({math.prod(x.shape[1:])} values), which cannot be the requested "
                              f"input_shape {shape} ({math.prod(shape)} values).")
    return x.reshape(len(x), *shape)


def read_arrays(path: str | Path, *, label_column: str | None = None) -> dict[str, np.ndarray]:
    """The raw arrays of a user's data file (no checks beyond the format)."""
    p = Path(path)
    if not p.exists():
        raise FlatminimaError(f"data file {str(path)!r} does not exist.")
    if p.suffix.lower() not in SUFFIXES:
        raise FlatminimaError(f"data file {str(path)!r}: suffix {p.suffix!r} is not read; "
                              f"use one of {SUFFIXES}.")
    suffix = p.suffix.lower()
    if suffix == ".npz":
        return _read_npz(p)
    if suffix == ".pt":
        return _read_pt(p)
    return _read_csv(p, label_column)


def split_arrays(arrays: dict[str, np.ndarray], path: str, *, test_fraction: float, seed: int,
                 input_shape: Sequence[int] | None, task: str = "classification") -> tuple[np.ndarray, ...]:
    """Checked ``(x, y, x_test, y_test)``; without a test split, ``test_fraction`` of the rows (shuffled).
    The targets come back in ``task``'s dtype (:func:`targets_for_task`): int64 labels or float64 targets."""
    for key in ("x_train", "y_train"):
        if key not in arrays:
            raise FlatminimaError(f"data file {path!r} has no array {key!r}; it has {sorted(arrays)}.")
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise FlatminimaError(f"data file {path!r} has only one of x_test and y_test; give both or neither.")
    if task not in TASKS:
        raise FlatminimaError(f"task must be one of {list(TASKS)}, got {task!r}.")
    x, y = np.asarray(arrays["x_train"]), targets_for_task("train", arrays["y_train"], task)
    if "x_test" in arrays:
        xt, yt = np.asarray(arrays["x_test"]), targets_for_task("test", arrays["y_test"], task)
    else:
        require_in_range("test_fraction", test_fraction, 0.0, 1.0, inclusive=False)
        check_split(f"data file {path!r}: train", x, y, task)
        order = np.random.default_rng(seed).permutation(len(x))
        cut = int(round(len(x) * (1 - test_fraction)))
        if cut in (0, len(x)):
            raise FlatminimaError(f"data file {path!r}: {len(x)} rows are too few to split with "
                                  f"test_fraction={test_fraction}.")
        x, y, xt, yt = x[order[:cut]], y[order[:cut]], x[order[cut:]], y[order[cut:]]
    for split, xs, ys in (("train", x, y), ("test", xt, yt)):
        check_split(f"data file {path!r}: {split}", xs, ys, task)
    if task == "regression" and y.shape[1:] != yt.shape[1:]:
        raise FlatminimaError(f"data file {path!r}: train targets have per-sample shape {tuple(y.shape[1:])} "
                              f"but test targets {tuple(yt.shape[1:])}; they must be the same.")
    if x.shape[1:] != xt.shape[1:]:
        raise FlatminimaError(f"data file {path!r}: train inputs have per-sample shape "
                              f"{tuple(x.shape[1:])} but "
                              f"test inputs {tuple(xt.shape[1:])}; they must be the same.")
    x, xt = _as_images(x, input_shape), _as_images(xt, input_shape)
    return _reshape("train", x, input_shape), y, _reshape("test", xt, input_shape), yt


CHANNELS = (1, 3, 4)


def _as_images(x: np.ndarray, input_shape: Sequence[int] | None = None) -> np.ndarray:
    """uint8 inputs scaled to [0, 1]; 4-D image arrays in channels-last layout (N, H, W, C) with C in 1, 3
    or 4 (and H not) moved to PyTorch's channels-first (N, C, H, W). An ``input_shape`` the array already
    has is kept as it is."""
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / 255.0
    if input_shape is not None and tuple(x.shape[1:]) == tuple(int(s) for s in input_shape):
        return x
    if x.ndim == 4 and x.shape[3] in CHANNELS and x.shape[1] not in CHANNELS:
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    return x

