"""Objective values at many parameter vectors: landscape grids, sharpness samples, interpolation paths.

    value_m(θ_p) = Σ_b w_b · m_b(θ_p) / Σ_b w_b        for every point p and every metric m at once

where m_b is the batch mean of the loss or of a metric (accuracy, or ``metric(outputs, targets)``) and w_b
the batch's weight, as in :class:`~flatminima.objective.Objective`. One forward per point and batch feeds
every metric (loss and accuracy share the outputs). The points are rows of a matrix, or a :class:`Span`
θ_p = origin + Σ_i c_pi·d_i (a line, a plane).

Two engines, picked by device:

- ``loop`` (CPU): the points loop inside each batch, θ_p is written into the Objective's own copy of the
  model in place (restored afterwards). On the built-in MLP this was 2.1x faster per point than ``vmap``
  (whose stacked activations fall out of the CPU caches) and ~0.2 ms per call cheaper than the
  Objective's ``torch.func.functional_call`` (docs/bench_landscape.md, benchmarks/landscape_parts.py).
- ``vmap`` (GPUs, analytic objectives): ``torch.func.vmap`` over a chunk of points, one kernel for many.

On a span with few directions the loop also uses an exact identity for the layers that read the data.
A ``Linear`` or ``Conv`` layer is linear in its (weight, bias), so at W = W₀ + Σ_i c_i·D_i

    layer(x; W) = layer(x; W₀) + Σ_i c_i · layer(x; D_i)

Its output at the origin and along each direction is computed once per batch and chunk of points and
combined per point, so that layer's matrix product is not repeated at every point. A layer qualifies when
its input does not depend on θ (checked with autograd), it runs once per forward, it is a plain
``nn.Linear``/``nn.Conv1d/2d/3d`` without hooks, and the objective is in eval mode (no random masks).
The result is checked against a plain forward at one point before it is used.

For the built-in cross-entropy the loss is computed as logsumexp(z) − z_y, the same value to float
rounding, because ``F.cross_entropy`` is ~4x slower on CPUs for few classes (0.61 vs 0.15 ms, 4,000 × 10).

Why hand-written: no library evaluates a network on a parameter subspace; ``loss-landscapes`` and Li et
al.'s code run the full forward at every point, one point at a time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn
from torch.func import vmap

from ..errors import FlatminimaError, require_choice
from ._terms import ELEMENTWISE_LOSSES


class Objective(Protocol):
    """What the pointwise engine reads from an objective (data-backed or analytic): this protocol, not the
    class, so that this module and ``_objective`` (which calls :func:`values_at`) do not import each other."""

    dtype: torch.dtype
    device: torch.device
    mode: str
    reduction: str
    param_names: list[str]
    total_weight: float

    @property
    def dim(self) -> int: ...
    @property
    def param_numels(self) -> list[int]: ...
    @property
    def memory_mb(self) -> float | None: ...
    @property
    def fixed_mask(self) -> bool: ...
    @property
    def has_outputs(self) -> bool: ...
    @property
    def loss_function(self) -> Callable | None: ...
    @property
    def stored_batches(self) -> Iterable: ...
    @property
    def working_model(self) -> nn.Module: ...
    @property
    def fixed_tensors(self) -> dict[str, torch.Tensor]: ...
    def unflatten(self, theta: torch.Tensor) -> dict[str, torch.Tensor]: ...
    def batches(self) -> Iterator[Any]: ...
    def terms(self, theta: torch.Tensor | None, batch: Any) -> tuple[torch.Tensor, float]: ...
    def working_terms(self, batch: Any) -> tuple[torch.Tensor, float]: ...
    def outputs(self, theta: torch.Tensor | None, batch: Any) -> tuple[torch.Tensor, torch.Tensor]: ...
    def loss_terms(self, outputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, float]: ...
    def reduce(self, total: torch.Tensor, weight: float, reduction: str | None = None) -> torch.Tensor: ...
    def fixed_randomness(self) -> AbstractContextManager: ...
    def theta_chunk(self, chunk_size: int) -> int: ...
    def record(self, kind: str | None, points: int = 1, passes: float = 1.0, seconds: float = 0.0) -> None: ...


__all__ = ["LOOP_CHUNK", "MERGE_ROWS", "Span", "activation_bytes", "default_engine", "values_at"]

Metric = str | Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
LOOP_CHUNK = 256  # points per data pass in the CPU loop; its memory does not grow with the chunk
# The CPU loop merges consecutive in-memory batches up to this many rows: on the built-in MLP the four
# 1,024-row batches merged ran 1.35x faster per point (benchmarks/landscape_parts.py). Forward only, no
# graph is kept, so larger batches cost only their activations, which the memory budget bounds.
MERGE_ROWS = 4096
_INPUT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass
class Span:
    """The points θ_p = origin + Σ_i coefs[p, i]·vectors[i] (P points, k directions)."""

    origin: torch.Tensor
    vectors: torch.Tensor
    coefs: torch.Tensor

    def __len__(self) -> int:
        return self.coefs.shape[0]

    def rows(self, start: int, stop: int) -> torch.Tensor:
        return self.origin[None] + self.coefs[start:stop].to(self.vectors.device) @ self.vectors


def values_at(
    obj: Objective,
    points: torch.Tensor | Span,
    metrics: Sequence[Metric] = ("loss",),
    *,
    chunk_size: int | None = None,
    memory_mb: float = 512.0,
    on_progress: Callable[[float], None] | None = None,
    shortcut: bool = True,
    engine: str | None = None,
) -> list[torch.Tensor]:
    """Every metric at every point: a list (one tensor of P values per metric, in ``metrics`` order).

    ``points``: an (n × dim) matrix of parameter vectors or a :class:`Span`. ``metrics``: ``"loss"``,
    ``"accuracy"`` or callables ``metric(outputs, targets)`` returning a batch mean. ``chunk_size``:
    points per pass over the data (default 256 in the CPU loop, the memory-fitting chunk under vmap).
    ``memory_mb`` bounds the cached input-layer outputs of the span identity; ``shortcut=False`` turns
    that identity off. ``on_progress(points_done)`` is called as batches finish (a float; progress bars).
    ``engine``: ``"loop"`` or ``"vmap"`` to override the choice by device (:func:`default_engine`).
    Non-finite values are returned as they are (a landscape may leave the finite region).
    """
    start = time.perf_counter()
    points = _checked(obj, points)
    fns = [_metric_fn(obj, m) for m in metrics]
    engine = engine or default_engine(obj)
    require_choice("engine", engine, ["loop", "vmap"])
    if engine == "loop" and not _has_model(obj):
        raise FlatminimaError("engine='loop' needs a model; an analytic objective is evaluated with 'vmap'.")
    loop = engine == "loop"
    chunk = _chunk(obj, chunk_size, loop)
    report = on_progress or (lambda _: None)
    n, out, passes = len(points), [], 0
    for s in range(0, n, chunk):
        stop = min(s + chunk, n)
        if loop:
            vals = _loop_chunk(obj, points, s, stop, fns, shortcut, memory_mb,
                               lambda frac, s=s, stop=stop: report(s + frac * (stop - s)))
        else:
            vals = _vmap_chunk(obj, _rows(points, s, stop), fns)
        out.append(vals)
        passes += 1
        report(stop)
    obj.record("batched_points", n, passes, time.perf_counter() - start)
    return [torch.cat([v[i] for v in out]) for i in range(len(fns))]


def default_engine(obj: Objective) -> str:
    """``"loop"`` for models on the CPU, ``"vmap"`` on other devices and for analytic objectives."""
    return "loop" if obj.device.type == "cpu" and _has_model(obj) else "vmap"


def _has_model(obj: Objective) -> bool:
    return bool(getattr(obj, "has_model", False))


# ----------------------------------------------------------------------------- checks and set-up
def _checked(obj: Objective, points: torch.Tensor | Span) -> torch.Tensor | Span:
    if isinstance(points, Span):
        v = points.vectors.to(device=obj.device, dtype=obj.dtype)
        c = torch.as_tensor(points.coefs).to(device="cpu", dtype=obj.dtype)  # read per point, as floats
        if v.dim() != 2 or v.shape[1] != obj.dim or c.dim() != 2 or c.shape[1] != v.shape[0]:
            raise FlatminimaError(
                f"a Span needs vectors of shape (k, {obj.dim}) and coefs of shape (points, k); got "
                f"{tuple(v.shape)} and {tuple(c.shape)}.")
        points = Span(points.origin.to(device=obj.device, dtype=obj.dtype), v, c)
    else:
        points = torch.as_tensor(points).to(device=obj.device, dtype=obj.dtype)
        if points.dim() != 2 or points.shape[1] != obj.dim:
            raise FlatminimaError(f"thetas must have shape (n, {obj.dim}), got {tuple(points.shape)}.")
    if len(points) == 0:
        raise FlatminimaError("there are no points to evaluate (n = 0); pass at least one parameter vector.")
    return points


def _rows(points: torch.Tensor | Span, start: int, stop: int) -> torch.Tensor:
    return points.rows(start, stop) if isinstance(points, Span) else points[start:stop]


def _theta(points: torch.Tensor | Span, p: int) -> torch.Tensor:
    if isinstance(points, Span):
        return torch.addmv(points.origin, points.vectors.T, points.coefs[p].to(points.vectors.device))
    return points[p]


def _chunk(obj: Objective, chunk_size: int | None, loop: bool) -> int:
    if chunk_size is not None and (isinstance(chunk_size, bool) or int(chunk_size) < 1):
        raise FlatminimaError(f"chunk_size must be a positive number of points, got {chunk_size!r}.")
    if loop:
        return int(chunk_size or LOOP_CHUNK)
    return obj.theta_chunk(chunk_size or 32)


def _metric_fn(obj: Objective, metric: Metric) -> Callable | None:
    """None stands for the objective's loss; names and callables become ``f(outputs, targets)``."""
    if metric == "loss":
        return None
    if not obj.has_outputs:
        raise FlatminimaError("metrics need (inputs, targets) batches and `loss=`; evaluate the loss instead.")
    if metric == "accuracy":
        return _accuracy
    if not callable(metric):
        raise FlatminimaError(f"unknown metric {metric!r}; use 'loss', 'accuracy' or f(outputs, targets).")
    return metric


def _accuracy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return (outputs.argmax(-1) == targets).to(outputs.dtype).mean()


def _loss_of(obj: Objective) -> Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, float]]:
    """The objective's batch terms (s_b, w_b) from (outputs, targets): its loss sum and weight."""
    terms = obj.loss_terms
    loss = obj.loss_function
    plain_ce = (type(loss) is nn.CrossEntropyLoss and loss.weight is None and loss.label_smoothing == 0.0
                and loss.ignore_index < 0)

    if not plain_ce:
        return terms

    def cross_entropy(z: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, float]:
        # logsumexp(z) − z_y summed equals the cross-entropy sum for class-index targets none of which is
        # ignored; each row then counts once in the mean's denominator.
        if z.dim() == 2 and y.dim() == 1 and not y.is_floating_point() and bool((y >= 0).all()):
            return (torch.logsumexp(z, 1) - z.gather(1, y[:, None])[:, 0]).sum(), float(y.shape[0])
        return terms(z, y)

    return cross_entropy


def _metric_terms(f: Callable, outputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, float]:
    rows = float(targets.shape[0]) if targets.dim() > 0 else 1.0
    return f(outputs, targets) * rows, rows


# ----------------------------------------------------------------------------- the CPU loop
def _loop_chunk(obj: Objective, points: torch.Tensor | Span, start: int, stop: int, fns: list,
                shortcut: bool, memory_mb: float, report: Callable[[float], None]) -> list[torch.Tensor]:
    count = stop - start
    totals = torch.zeros(len(fns), count, dtype=torch.float64)
    weights = torch.zeros(len(fns), 1, dtype=torch.float64)
    loss = _loss_of(obj) if obj.has_outputs else None
    k = points.vectors.shape[0] if isinstance(points, Span) else 0
    use_span = shortcut and k > 0 and obj.mode == "eval" and k + 1 < count
    with torch.no_grad(), _loaded(obj) as load:
        layers, done = None, 0
        for batch in _eval_batches(obj, fns, memory_mb):
            if use_span and layers is None:
                layers = _InputLayers.find(obj, points, batch, loss, memory_mb) or False
            values = torch.empty(count, len(fns), dtype=obj.dtype, device=obj.device)
            with layers.active() if layers else nullcontext():
                for j in range(count):
                    load(_theta(points, start + j))
                    if layers:
                        layers.at(points.coefs[start + j].tolist())
                    with obj.fixed_randomness():  # fixed_mask: the same dropout mask as the objective's
                        values[j], w = _forward_values(obj, batch, fns, loss)
            totals += values.T.to(torch.float64).cpu()
            weights += w[:, None]
            if layers:
                layers.clear()
            done += batch[-1].shape[0] if obj.has_outputs else 0
            if obj.has_outputs and obj.total_weight:  # known after the first chunk: fraction of the rows done
                report(min(done / obj.total_weight, 1.0))
    return [obj.reduce(totals[i].to(obj.device), float(weights[i]), _reduction(obj, fns[i])) for i in range(len(fns))]


def _reduction(obj: Objective, fn: Callable | None) -> str:
    """The loss follows the objective's reduction; metrics are always means over rows."""
    return obj.reduction if fn is None else "mean"


def _forward_values(obj: Objective, batch: Any, fns: list, loss: Callable | None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum term of each metric on this batch, its weight) at the θ loaded in the model."""
    if not obj.has_outputs:  # a loss_fn: it reports its own weight
        value, weight = obj.working_terms(batch)
        return torch.as_tensor(value).reshape(1), torch.tensor([float(weight)], dtype=torch.float64)
    try:
        outputs = obj.working_model(*batch[:-1])
    except (RuntimeError, TypeError) as err:
        raise FlatminimaError(
            f"the model's forward failed on a batch with tensor shapes "
            f"{[tuple(t.shape) for t in batch if torch.is_tensor(t)]}: {err}.") from err
    targets = batch[-1]
    terms = [loss(outputs, targets) if f is None else _metric_terms(f, outputs, targets) for f in fns]
    values = torch.stack([s.to(outputs.dtype) for s, _ in terms])
    return values, torch.tensor([float(w) for _, w in terms], dtype=torch.float64)


def activation_bytes(obj: Objective) -> int:
    """Bytes of every module output on the objective's first (largest) batch, from forward hooks.

    An over-estimate of a forward's peak (it counts every output as alive at once): the safe side for a
    budget. Analytic objectives count a few vectors of θ's size.
    """
    if not _has_model(obj):
        return 4 * obj.dim * torch.empty((), dtype=obj.dtype).element_size()
    total = [0]

    def hook(_m: Any, _inp: Any, out: Any) -> None:
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if torch.is_tensor(t):
                total[0] += t.numel() * t.element_size()

    # The batch is taken before the hooks go in: the objective's one-off determinism check runs forwards.
    first = next(iter(obj.batches()))  # batches are equal-sized but for the last
    handles = [m.register_forward_hook(hook) for m in obj.working_model.modules()]
    try:
        with torch.no_grad():
            obj.working_terms(first)
    finally:
        for h in handles:
            h.remove()
    return total[0]


def _eval_batches(obj: Objective, fns: list, memory_mb: float) -> Iterator[Any]:
    """The objective's batches; in-memory ``(inputs..., targets)`` tuples merged up to ``MERGE_ROWS`` rows.

    Only where merging leaves the value unchanged: the loss is a torch loss module whose sum and
    denominator add over batches (cross-entropy, NLL, the elementwise losses), the metrics are the loss or
    accuracy (a user's metric may not be a per-row mean, so theirs are never merged), the model is in eval
    mode (train-mode BatchNorm statistics depend on the batch), and no HVP budget (``obj.memory_mb``) asks
    for small batches. Merged lazily (one merged batch alive at a time), while the activations fit
    ``memory_mb``.
    """
    batches = obj.stored_batches
    loss = obj.loss_function
    additive = obj.has_outputs and isinstance(loss, (nn.CrossEntropyLoss, nn.NLLLoss, *ELEMENTWISE_LOSSES))
    mergeable = (additive and obj.mode == "eval" and all(f is None or f is _accuracy for f in fns)
                 and obj.memory_mb is None and isinstance(batches, list) and len(batches) > 1
                 and all(_row_tuple(b) for b in batches))
    if not mergeable:
        yield from obj.batches()
        return
    first_rows = batches[0][-1].shape[0]
    per_row = activation_bytes(obj) / max(first_rows, 1)
    rows = max(first_rows, int(min(MERGE_ROWS, memory_mb * 2**20 / max(2 * per_row, 1.0))))
    group: list[tuple] = []
    for b in [*batches, None]:
        if group and (b is None or sum(g[-1].shape[0] for g in group) + b[-1].shape[0] > rows):
            yield from _merged(obj, group)
            group = []
        if b is not None:
            group.append(b)


def _row_tuple(batch: Any) -> bool:
    """A tuple of tensors that all have one row per sample (so concatenating batches is meaningful)."""
    return isinstance(batch, tuple) and all(
        torch.is_tensor(t) and t.dim() > 0 and t.shape[0] == batch[-1].shape[0] for t in batch)


def _merged(obj: Objective, group: list[tuple]) -> Iterator[tuple]:
    parts = group if len(group) == 1 else [tuple(torch.cat(p) for p in zip(*group, strict=True))]
    for b in parts:
        yield tuple(t.to(device=obj.device, dtype=obj.dtype if t.is_floating_point() else None) for t in b)


@contextmanager
def _loaded(obj: Objective) -> Iterator[Callable[[torch.Tensor], None]]:
    """Yield load(θ), which writes θ into the objective's model copy; the model is as before on exit.

    The selected parameters are re-pointed (``.data``) at views of one flat buffer for the duration, so
    loading θ is a single copy. Buffers are re-bound, never written: to the fixed tensors the objective
    swaps in (e.g. recomputed BatchNorm statistics), and to copies in train mode (whose forward updates
    BatchNorm statistics in place). The original tensors keep their values and autograd version counters,
    so a cached gradient graph (``reuse_graph``) stays valid.
    """
    model = obj.working_model
    named = dict(model.named_parameters())
    params = [named[n] for n in obj.param_names]
    saved_data = [p.data for p in params]
    flat = torch.cat([p.detach().reshape(-1) for p in params])
    owners = {n: model.get_submodule(n.rpartition(".")[0]) for n, _ in model.named_buffers()}
    originals = {n: owners[n]._buffers[n.rpartition(".")[2]] for n in owners}
    fixed = obj.fixed_tensors
    try:
        with torch.no_grad():
            for p, part in zip(params, torch.split(flat, obj.param_numels), strict=True):
                p.data = part.view_as(p)
        for n, original in originals.items():
            t = fixed.get(n, original)
            owners[n]._buffers[n.rpartition(".")[2]] = t.clone() if obj.mode == "train" else t
        yield flat.copy_
    finally:
        for p, data in zip(params, saved_data, strict=True):
            p.data = data
        for n, original in originals.items():
            owners[n]._buffers[n.rpartition(".")[2]] = original


class _InputLayers:
    """The span identity for the layers that read the data (see the module docstring)."""

    def __init__(self, layers: list[tuple[nn.Module, list[torch.Tensor], list[torch.Tensor]]]):
        # Per layer: its module, [W₀, D_1, ..., D_k] and [b₀, e_1, ..., e_k] (biases empty if it has none).
        self.layers = layers
        self.cache: dict[int, list[torch.Tensor]] = {}
        self.coefs: list[float] = []

    @classmethod
    def find(cls, obj: Objective, span: Span, batch: Any, loss: Callable | None,
             memory_mb: float) -> _InputLayers | None:
        """The qualifying layers for this objective (None if there are none, or the check fails)."""
        model = obj.working_model
        names = {m: n for n, m in model.named_modules() if type(m) in _INPUT_LAYERS and _plain(m)}
        calls: dict[nn.Module, list[bool]] = {m: [] for m in names}
        sizes: dict[nn.Module, int] = {}

        def record(m: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            calls[m].append(not any(torch.is_tensor(x) and x.requires_grad for x in inputs))
            sizes[m] = output.numel() * output.element_size()

        handles = [m.register_forward_hook(record) for m in names]
        try:
            with torch.enable_grad():  # the model's own parameters require grad: θ-dependence shows
                obj.working_terms(batch)
        finally:
            for h in handles:
                h.remove()
        chosen = set(obj.param_names)
        k = span.vectors.shape[0]
        budget = memory_mb * 2**20
        parts = [obj.unflatten(span.origin)] + [obj.unflatten(v) for v in span.vectors]
        layers = []
        for m, name in names.items():
            keys = [f"{name}.weight"] + ([f"{name}.bias"] if m.bias is not None else [])
            if calls[m] != [True] or not all(key in chosen for key in keys):
                continue
            if sizes[m] * (k + 2) > budget:  # the origin's output, k directions' and their combination
                continue
            weights = [part[keys[0]] for part in parts]
            biases = [part[keys[1]] for part in parts] if len(keys) > 1 else []
            layers.append((m, weights, biases))
        found = cls(layers) if layers else None
        if found is not None and not found._agrees(obj, span, batch, loss):
            return None
        return found

    def _agrees(self, obj: Objective, span: Span, batch: Any, loss: Callable | None) -> bool:
        """Guard: the identity reproduces a plain forward at the point farthest from the origin."""
        p = int(span.coefs.abs().sum(1).argmax())
        with _loaded(obj) as load:
            load(_theta(span, p))
            plain, _ = _forward_values(obj, batch, [None], loss)
            with self.active():
                self.at(span.coefs[p].tolist())
                fast, _ = _forward_values(obj, batch, [None], loss)
            self.clear()
        tol = 1e-4 if obj.dtype in (torch.float32, torch.float16, torch.bfloat16) else 1e-9
        return bool(torch.isclose(fast, plain, rtol=tol, atol=tol).all()) or not bool(torch.isfinite(plain).all())

    def at(self, coefs: list[float]) -> None:
        self.coefs = coefs

    def clear(self) -> None:
        self.cache.clear()

    @contextmanager
    def active(self) -> Iterator[None]:
        # An instance attribute `forward` takes precedence over the class's, and nn.Module.__call__ uses it.
        for i, (m, _, _) in enumerate(self.layers):
            m.forward = self._forward(i)
        try:
            yield
        finally:
            for m, _, _ in self.layers:
                del m.forward

    def _forward(self, i: int) -> Callable[[torch.Tensor], torch.Tensor]:
        m, weights, biases = self.layers[i]

        def forward(x: torch.Tensor) -> torch.Tensor:
            parts = self.cache.get(i)
            if parts is None:  # first point of this batch: the origin's output and each direction's
                bias = biases or [None] * len(weights)
                parts = self.cache[i] = [_apply(m, x, w, b) for w, b in zip(weights, bias, strict=True)]
            out = torch.add(parts[0], parts[1], alpha=self.coefs[0])
            for c, part in zip(self.coefs[1:], parts[2:], strict=True):
                out.add_(part, alpha=c)
            return out

        return forward


def _plain(m: nn.Module) -> bool:
    from torch.nn.utils import parametrize

    return not (m._forward_hooks or m._forward_pre_hooks or parametrize.is_parametrized(m)
                or "forward" in vars(m))


def _apply(m: nn.Module, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    if isinstance(m, nn.Linear):
        return nn.functional.linear(x, weight, bias)
    return m._conv_forward(x, weight, bias)


# ----------------------------------------------------------------------------- vmap (GPUs, analytic)
def _vmap_chunk(obj: Objective, thetas: torch.Tensor, fns: list) -> list[torch.Tensor]:
    totals = torch.zeros(len(fns), thetas.shape[0], device=obj.device, dtype=torch.float64)
    weight = None
    with torch.no_grad():
        for batch in obj.batches():
            values, w = _vmap_batch(obj, thetas, batch, fns)
            totals += values.T.to(torch.float64)
            weight = w if weight is None else weight + w
    if weight is None:  # an empty shard on this rank: the other ranks' sums still count
        weight = torch.zeros(len(fns), dtype=torch.float64)
    return [obj.reduce(totals[i], float(weight[i]), _reduction(obj, fns[i])) for i in range(len(fns))]


def _vmap_batch(obj: Objective, thetas: torch.Tensor, batch: Any, fns: list) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum term of every metric at every θ, each metric's weight) on one batch."""
    if obj.has_outputs:
        loss = obj.loss_terms
        weights = [0.0] * len(fns)  # depend on the targets only (never on θ): the same for every point

        def one(t: torch.Tensor) -> torch.Tensor:
            out, targets = obj.outputs(t, batch)
            values = []
            for i, f in enumerate(fns):
                s, weights[i] = loss(out, targets) if f is None else _metric_terms(f, out, targets)
                values.append(s)
            return torch.stack(values)
    else:  # a loss_fn or an analytic f(θ): the loss only, weighted by what it reports
        weights = [0.0]

        def one(t: torch.Tensor) -> torch.Tensor:
            s, weights[0] = obj.terms(t, batch)
            return s.reshape(1)
    try:
        if obj.fixed_mask:  # vmap would draw one mask per θ; the loop reuses the batch's fixed mask
            raise RuntimeError("fixed_mask")
        values = vmap(one)(thetas)
    except (RuntimeError, ValueError):  # ops vmap cannot batch (in-place BatchNorm updates...): loop
        values = torch.stack([one(t) for t in thetas])
    return values, torch.tensor(weights, dtype=torch.float64)
