"""The batch source of an Objective: the data, split into chunks, moved to the device, with fixed dropout
masks and the memory plan.

Every operation of an Objective walks the same prepared batches:

    for batch in source.batches():   # moved to the device and cast, split into memory chunks
        s_b, w_b = terms(θ, batch)    # flatminima.objective._terms

:class:`DataSource` holds a data set (a tuple of tensors cut into batches, a list of batches, a DataLoader,
any re-iterable) and, with a memory budget (``memory_mb``), the :class:`~flatminima.objective._memory.MemoryPlan`
that sets the rows per chunk; :class:`OneBatch` is the source of an analytic f(θ): one batch, ``None``,
no data. Both give ``randomness()``, the context every evaluation of the current batch runs in: with
``fixed_mask`` the RNG seeded by (seed, batch index), so a dropout mask is redrawn identically at every
evaluation and L(θ) is one deterministic function.

Also the helpers to walk, move and split batches (tensors, tuples, lists, any ``Mapping``) and to check
the dtype, device and batch size a user asks for.
"""

from __future__ import annotations

import contextlib
import fnmatch
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from ..errors import FlatminimaError, require_nonnegative
from ._attention import second_order_attention
from ._memory import MemoryPlan, plan, warm_second_backward

__all__ = [
    "DataSource", "OneBatch", "check_batch_size", "check_reservation", "iter_row_chunks", "leaf_tensors",
    "move_batch", "name_matches", "prepare_data", "resolve_float_dtype", "resolve_torch_device", "row_count",
]


def name_matches(name: str, patterns: Sequence[str]) -> bool:
    """Whether parameter ``name`` matches one of ``patterns`` (a glob, the exact name, or a module prefix)."""
    return any(fnmatch.fnmatchcase(name, p) or name == p or name.startswith(p + ".") for p in patterns)


def _is_mapping(x: Any) -> bool:
    return isinstance(x, Mapping)


def _rebuild_mapping(x: Mapping, items: dict) -> Any:
    """A mapping of the same type as ``x`` (UserDict, BatchEncoding...) when its constructor takes a dict."""
    if type(x) is dict:
        return items
    try:
        return type(x)(items)
    except Exception:  # noqa: BLE001 - a mapping type we cannot rebuild: a plain dict carries the same data
        return items


def leaf_tensors(batch: Any) -> Iterator[torch.Tensor]:
    """Every tensor in a batch (a tensor, or tensors nested in tuples, lists and mappings), in order."""
    if isinstance(batch, torch.Tensor):
        yield batch
    elif _is_mapping(batch):
        for v in batch.values():
            yield from leaf_tensors(v)
    elif isinstance(batch, (list, tuple)):
        for v in batch:
            yield from leaf_tensors(v)


def move_batch(batch: Any, device: torch.device, dtype: torch.dtype) -> Any:
    """The batch with every tensor on ``device`` (floating tensors also cast to ``dtype``), same structure."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device=device, dtype=dtype if batch.is_floating_point() else None)
    if _is_mapping(batch):
        return _rebuild_mapping(batch, {k: move_batch(v, device, dtype) for k, v in batch.items()})
    if isinstance(batch, (list, tuple)):
        parts = [move_batch(v, device, dtype) for v in batch]
        return parts if isinstance(batch, list) else tuple(parts)
    return batch


def row_count(batch: Any) -> int:
    """The rows of a batch: dim 0 of its first tensor (1 for a 0-dim tensor or a batch with no tensors)."""
    for t in leaf_tensors(batch):
        return int(t.shape[0]) if t.dim() > 0 else 1
    return 1


def iter_row_chunks(batch: Any, rows: int | None) -> Iterator[Any]:
    """Split a batch (tensor, tuple, list or mapping) into parts of at most ``rows`` rows along dim 0, one
    part at a time: every tensor leaf whose first dimension is the batch's row count is sliced, other leaves
    are shared, and only the current part's views exist.

    Measured: the views of every part at once cost about 1 KB per part (0.4 MB at 2,000 rows in 5-row
    chunks), memory the plan did not count and that grew with the data, not the chunk.
    """
    n = row_count(batch)
    if not rows or rows >= n:
        yield batch
        return

    def cut(x: Any, i: int) -> Any:
        if isinstance(x, torch.Tensor):
            return x[i:i + rows] if x.dim() > 0 and x.shape[0] == n else x
        if _is_mapping(x):
            return _rebuild_mapping(x, {k: cut(v, i) for k, v in x.items()})
        if isinstance(x, (list, tuple)):
            parts = [cut(v, i) for v in x]
            return parts if isinstance(x, list) else tuple(parts)
        return x

    for i in range(0, n, rows):
        yield cut(batch, i)


_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def resolve_float_dtype(dtype: Any) -> torch.dtype | None:
    """``dtype`` as a torch floating dtype: a ``torch.dtype`` or the strings ``"float32"`` / ``"float64"``."""
    if dtype is None:
        return None
    if isinstance(dtype, str):
        key = dtype.removeprefix("torch.")
        if key not in _DTYPES:
            raise FlatminimaError(f"dtype={dtype!r} is not supported; pass 'float32' or 'float64' (or torch.float32 / "
                                  "torch.float64). Half precision is too coarse for exact Hessian products.")
        return _DTYPES[key]
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise FlatminimaError(f"dtype must be a floating torch dtype or 'float32' / 'float64', got {dtype!r}.")
    return dtype


def _available_devices() -> list[str]:
    found = ["cpu"]
    if torch.cuda.is_available():
        found += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        found.append("mps")
    return found


def resolve_torch_device(device: Any) -> torch.device | None:
    """``device`` as a ``torch.device`` that exists on this machine; a clear error naming the ones that do."""
    if device is None:
        return None
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise FlatminimaError(f"device={device!r} is not a device name ({err}); available here: "
                              f"{', '.join(_available_devices())}.") from None
    if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
        what = "CUDA is not available on this machine" if not torch.cuda.is_available() else (
            f"only {torch.cuda.device_count()} CUDA device(s) are visible")
        raise FlatminimaError(f"device={device!r}: {what}; available here: {', '.join(_available_devices())}.")
    if dev.type == "mps" and "mps" not in _available_devices():
        raise FlatminimaError(f"device={device!r}: MPS is not available on this machine; available here: "
                              f"{', '.join(_available_devices())}.")
    return dev


def check_batch_size(batch_size: Any) -> int:
    """``batch_size`` itself when it is a positive int; a clear error otherwise."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise FlatminimaError(f"batch_size must be a positive whole number of samples, got {batch_size!r}; "
                              "for the whole data in one batch pass its number of samples.")
    return batch_size


def check_reservation(n_vectors: Any) -> None:
    """``n_vectors`` of a reservation: a whole, non-negative number."""
    if isinstance(n_vectors, bool) or not isinstance(n_vectors, int):
        raise FlatminimaError(f"n_vectors must be a whole number of vectors, got {n_vectors!r}.")
    require_nonnegative("n_vectors", n_vectors)


def prepare_data(data: Any, batch_size: int, distributed: bool = False) -> tuple[Iterable, bool]:
    """(the batches to walk, whether they are held in memory) for the ``data`` an Objective is given."""
    if data is None:
        raise FlatminimaError("data is required: a DataLoader, a tuple (X, y) of tensors, or a list of batches.")
    if isinstance(data, tuple) and data and all(isinstance(t, torch.Tensor) for t in data):
        n = data[0].shape[0]
        if n == 0 and not distributed:  # a rank's shard may be empty; the global sum is not
            raise FlatminimaError("data is empty (0 samples); pass at least one sample.")
        if any(t.shape[0] != n for t in data):
            raise FlatminimaError(f"data tensors have different lengths {[t.shape[0] for t in data]}; "
                                  "inputs and targets must have one row per sample.")
        return [tuple(t[i:i + batch_size] for t in data) for i in range(0, n, batch_size)], True
    if isinstance(data, torch.utils.data.Dataset) and not isinstance(data, torch.utils.data.IterableDataset):
        return _loader_over(data, batch_size), False
    if iter(data) is data:
        raise FlatminimaError(
            "data is a one-shot iterator (a generator?); the objective passes over the data many times. "
            "Pass a list of batches, a DataLoader or a tuple of tensors.")
    return data, isinstance(data, (list, tuple))


def _loader_over(dataset: torch.utils.data.Dataset, batch_size: int) -> torch.utils.data.DataLoader:
    """A map-style Dataset yields single samples, and iterating it walks indices until ``__getitem__`` raises
    IndexError (forever, for one that wraps its index): its batches come from a DataLoader over ``len``."""
    try:
        n = len(dataset)  # type: ignore[arg-type]
    except TypeError as err:
        raise FlatminimaError(
            f"data is a map-style Dataset ({type(dataset).__name__}) without __len__, so its end is unknown; give "
            "it a __len__, or pass DataLoader(dataset, batch_size=..., sampler=...) yourself.") from err
    if n == 0:
        raise FlatminimaError("data is empty (a Dataset of length 0); pass at least one sample.")
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)


# ----------------------------------------------------------------------------- the sources
def _no_bytes(batch: Any) -> float:
    return 0.0


def _no_check(batch: Any) -> None:
    return None


def _nothing() -> None:
    return None


class OneBatch:
    """The source of an analytic objective f(θ): one batch, ``None``, of weight 1; no budget, no masks."""

    memory_mb: float | None = None
    memory_plan: MemoryPlan | None = None
    distributed = False
    fixed_mask = False
    reuse_graph = False
    n_batches = 1
    stored_batches: list[None] = [None]  # noqa: RUF012 - never mutated: the one batch an analytic f reads

    def batches(self) -> Iterator[None]:
        yield None

    def randomness(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    @contextmanager
    def reserve(self, n_vectors: int, what: str = "") -> Iterator[MemoryPlan | None]:
        check_reservation(n_vectors)
        yield None

    def theta_chunk(self, chunk_size: int) -> int:
        return max(1, int(chunk_size))


class DataSource:
    """A data set walked batch by batch: moved to ``device``/``dtype``, split into the memory plan's chunks,
    each batch evaluated under its own fixed dropout mask (``fixed_mask``).

    The memory plan is measured lazily, on the first batch, by ``saved_bytes(batch)`` (the bytes autograd
    saves in one forward pass; the Objective's terms give it) and redone whenever a reservation changes;
    ``on_replan()`` is called first (the Objective frees graphs built for the old chunks). ``on_first(batch)``
    runs once, on the first prepared batch (the Objective's determinism and label checks).
    """

    def __init__(self, data: Any, *, batch_size: int, device: torch.device, dtype: torch.dtype,
                 distributed: bool = False, memory_mb: float | None = None, reuse_graph: bool | str = "auto",
                 fixed_mask: bool = False, seed: int = 0):
        self.device, self.dtype, self.distributed = device, dtype, distributed
        self.fixed_mask, self.seed = bool(fixed_mask), int(seed)
        self.stored_batches, in_memory = prepare_data(data, batch_size, distributed)
        self.reuse_graph = in_memory if reuse_graph == "auto" else bool(reuse_graph)
        self.memory_mb = None if memory_mb is None else float(memory_mb)
        self.n_batches: int | None = None
        self.batch_index = 0  # of the batch last yielded: keys its fixed dropout mask
        self.dim, self.itemsize = 0, 0  # of θ, for the plan's parameter-sized vectors (set by bind)
        self.largest = 0  # entries of θ's largest parameter tensor (set by bind)
        # Named functions, not lambdas: an Objective stays picklable (spawned workers, saved studies).
        self.saved_bytes: Callable[[Any], float] = _no_bytes
        self.check_first: Callable[[Any], None] | None = None
        self.check_labels: Callable[[Any], None] = _no_check
        self.on_replan: Callable[[], None] = _nothing
        self._plan: MemoryPlan | None = None
        self._probe: tuple[float, float, int] | None = None
        self._reserved = 0
        self._reserved_for: list[str] = []

    def bind(self, *, dim: int, saved_bytes: Callable[[Any], float], check_first: Callable[[Any], None] | None,
             check_labels: Callable[[Any], None], on_replan: Callable[[], None], largest: int = 0) -> DataSource:
        """Connect the source to the objective's terms (see the class); returns the source. ``largest``: the
        entries of θ's largest parameter tensor (the memory plan counts one more copy of it)."""
        self.dim, self.itemsize = dim, torch.empty((), dtype=self.dtype).element_size()
        self.largest = largest
        self.saved_bytes, self.check_first, self.check_labels = saved_bytes, check_first, check_labels
        self.on_replan = on_replan
        return self

    # ------------------------------------------------------------------------- batches
    def batches(self) -> Iterator[Any]:
        """The prepared batches: moved to the device and cast, split into the memory plan's chunks."""
        count = 0
        rows = self.memory_plan.rows if self.memory_mb is not None else None
        for batch in self.stored_batches:
            for part in (iter_row_chunks(batch, rows) if rows else (batch,)):
                part = move_batch(part, self.device, self.dtype)
                self.batch_index = count
                if self.check_first is not None:
                    check, self.check_first = self.check_first, None
                    try:
                        check(part)
                    except BaseException:
                        self.check_first = check  # a failed first-batch check runs again next time
                        raise
                count += 1
                yield part
        if count == 0 and not self.distributed:  # a rank may hold an empty shard; the sum still counts
            raise FlatminimaError("data yielded no batches; pass a non-empty data set.")
        self.n_batches = count

    @contextmanager
    def randomness(self) -> Iterator[None]:
        """With ``fixed_mask``: the RNG seeded by (seed, batch index), so each batch redraws the same mask."""
        if not self.fixed_mask:
            yield
            return
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seed * 1_000_003 + self.batch_index)
            yield

    # ------------------------------------------------------------------------- the memory plan
    @property
    def memory_plan(self) -> MemoryPlan | None:
        """How the memory budget is spent (rows per chunk, bytes per sample); ``None`` without a budget."""
        if self.memory_mb is None:
            return None
        if self._plan is None:
            self._plan = self._make_plan()
        return self._plan

    @property
    def planned(self) -> MemoryPlan | None:
        """The plan in force if one was made already (never measures)."""
        return self._plan

    def _make_plan(self) -> MemoryPlan:
        if self._probe is None:
            self._probe = self._measure()
        per_sample, intercept, batch_rows = self._probe
        if batch_rows == 0:  # an empty shard on this rank: nothing to split, any chunk fits
            return MemoryPlan(self.memory_mb, 0.0, 0.0, 1 << 62, self.reuse_graph)
        return plan(self.memory_mb, per_sample, intercept, self.dim * self.itemsize, self._reserved,
                    self._known_rows(), batch_rows, self.reuse_graph, " and ".join(self._reserved_for),
                    largest_bytes=self.largest * self.itemsize, batches=self._known_batches())

    def _measure(self) -> tuple[float, float, int]:
        """(bytes saved per sample, intercept, rows of the first batch), measured once on that batch."""
        first = next(iter(self.stored_batches), None)
        if first is None:
            return 0.0, 0.0, 0
        first = move_batch(first, self.device, self.dtype)
        self.check_labels(first)
        warm_second_backward(self.device)  # torch's one-time cost, outside the products the budget covers
        n = row_count(first)
        small = 1 if n > 1 else n
        big = min(n, 4) if n > 1 else n
        # next(iter_row_chunks(...)): only the first part's views (all n/rows of them took ~1 KB a part,
        # 7 MB at n=8000).
        # On the attention backend every product runs (math SDPA, _attention), whoever asks for the plan first
        # (memory_plan, reserve, a refusal): outside it SDPA takes a fused kernel that saves no attention
        # matrices (11% fewer bytes per sample on a 55M GPT-2 at 256 tokens).
        with second_order_attention():
            s_small = self.saved_bytes(next(iter_row_chunks(first, small)))
            s_big = self.saved_bytes(next(iter_row_chunks(first, big))) if big > small else s_small
        # Saved-for-backward bytes grow linearly in the rows: slope per sample, intercept fixed (θ views...).
        per_sample = (s_big - s_small) / (big - small) if big > small else s_small
        per_sample = max(per_sample, 1.0)
        return per_sample, max(s_small - per_sample * small, 0.0), n

    def _known_batches(self) -> int | None:
        return len(self.stored_batches) if isinstance(self.stored_batches, (list, tuple)) else None

    def _known_rows(self) -> int | None:
        if not isinstance(self.stored_batches, (list, tuple)):
            return None
        return sum(row_count(b) for b in self.stored_batches)

    @contextmanager
    def reserve(self, n_vectors: int, what: str = "") -> Iterator[MemoryPlan | None]:
        """Hold ``n_vectors`` parameter-sized vectors inside the budget for the block (nested ones add up);
        the plan is redone with them taken out. Without a budget: nothing, and None is yielded."""
        check_reservation(n_vectors)
        if self.memory_mb is None:
            yield None
            return
        self._reserved += n_vectors
        self._reserved_for.append(what or f"{n_vectors} reserved vectors")
        try:
            self._replan()
            yield self.memory_plan
        finally:
            self._reserved -= n_vectors
            self._reserved_for.pop()
            self._replan()

    def _replan(self) -> None:
        self._plan = None
        self.on_replan()  # graphs built for the old chunks and budget
        self._plan = self._make_plan()

    def theta_chunk(self, chunk_size: int) -> int:
        """How many θ one vectorised pass takes: ``chunk_size``, or fewer to fit the budget; the same on
        every rank (a MIN all-reduce), since every chunk ends with one all-reduce."""
        chunk = max(1, int(chunk_size))
        p = self.memory_plan
        if p is not None and p.per_sample_bytes > 0:
            per_theta = p.rows * p.per_sample_bytes + 2 * self.dim * self.itemsize
            free = p.memory_mb * 2**20 - p.fixed_bytes - p.reserved_bytes
            chunk = max(1, min(chunk, int(free // per_theta)))
        if self.distributed and p is not None:
            import torch.distributed as dist

            box = torch.tensor([chunk], dtype=torch.int64, device=self.device)
            dist.all_reduce(box, op=dist.ReduceOp.MIN)
            chunk = int(box)
        return chunk
