"""The Objective's memory model: one budget (``memory_mb``) for everything a curvature computation holds.

    peak ≈ fixed + reserved + HVP_FACTOR · r · s                    (graph rebuilt for every product)
    peak ≈ fixed + reserved + s · (CACHE_FACTOR · N + CACHE_TRANSIENTS · r) + K · dim · itemsize
                                                                    (reuse_graph: every chunk's graph kept)

    fixed    = c + FIXED_VECTORS · dim · itemsize   (the products' own parameter-sized vectors)
    reserved = n · dim · itemsize                   (the vectors the running algorithm keeps: ``reserve(n)``)

``s`` is the slope of the bytes autograd saves in one forward pass against the rows of a batch (measured
once with ``saved_tensors_hooks`` on 1 and 4 rows of the first batch), ``c`` its intercept, ``r`` the rows
of one chunk, ``N`` the rows of the whole data and ``K`` its chunks (each kept graph ends in its gradient, a
parameter-sized vector). The plan takes the largest ``r`` that fits, keeps graph
reuse only where the cached graphs fit too, and refuses a budget too small for one row.

Where the factors come from (``benchmarks/scaling.py``, MLP 40-256-256-10, float32, fresh processes,
peak resident set above the level before the operation, docs/bench_scaling.md):

- ``HVP_FACTOR = 3.1``: one double-backward product at r = 500, 2,000 and 8,000 rows peaked at
  3.07 · r · s above an intercept of 1.8 MB: the forward's saved tensors (1×), those the ``create_graph``
  backward saves (about 1× again) and the second backward's transients (about 1×).
- ``CACHE_FACTOR = 2.0``: with the gradient graph of every batch kept, three products at one θ peaked at
  1.95–2.0 · N · s above that intercept (forward plus ``create_graph`` backward saved tensors, per row), plus
  the transients of one chunk's backward and, per kept chunk, its gradient: one parameter-sized vector each,
  which that model's small dim hid. Uncounted, an MLP 40-1000-1000-10 (1.05M parameters, 4 MB a vector)
  with 40 batches of 10 rows kept peaked at 3.3x its budget (199 MB at 60 MB, planned 34 MB), 4.2 MB more
  per batch.
- ``CACHE_TRANSIENTS = 1.5``: the second backward through a kept graph retains it (``retain_graph``), so
  its transients come on top of all 2·N·s: a 55M-parameter GPT-2 (SDPA, 256 tokens, one kept chunk of 8
  sequences, s = 161 MB) peaked 6,036 MB, 28.0·s above the fixed part and the chunk's gradient, 2·8 + 1.5·8
  (it was planned at 2·8 + 1·8 and no gradient: 5,173 MB, 1.17x low).
- ``FIXED_VECTORS = 5``: one product just above the floor peaked at 1.66–1.77 MB at dim 78,858 in
  float32 (300, 2,000 and 8,000 rows; 4 vectors planned 1.47 MB, 13–20% low): c (0.26 MB, the parameter
  views the forward saves) plus five parameter-sized vectors (θ's leaf copy, the float64 running total
  counting two, the chunk's H·v, and the gradient the second backward holds while it runs). ``v`` is the
  caller's vector: an algorithm that keeps vectors reserves them.

One cost is not the product's own: the first backward through a backward graph in a process makes torch
keep about 33 MB resident (anonymous, measured in fresh processes, torch 2.13 CPU) for the rest of the
process, the same for a 10×10 matrix as for a 1000×1000 one. Left to the first product it was most of the
overshoot measured on an MLP 40-1000-1000-10 (first product 63 MB above the idle objective, every later one
26 MB, against a plan of 30 MB). :func:`warm_second_backward` pays it once, on a 10×10 problem, when the
plan is measured, so the budget covers what the products themselves hold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import FlatminimaError

__all__ = ["CACHE_FACTOR", "CACHE_TRANSIENTS", "FIXED_VECTORS", "HVP_FACTOR", "MemoryPlan", "cached_bytes",
           "plan", "warm_second_backward"]

HVP_FACTOR = 3.1
CACHE_FACTOR = 2.0
CACHE_TRANSIENTS = 1.5
FIXED_VECTORS = 5
MIB = 2**20
_WARMED: set[str] = set()  # devices whose one-time cost of a second backward is paid in this process


def warm_second_backward(device: torch.device | str = "cpu") -> None:
    """Pay torch's one-time cost of the first backward through a backward graph on ``device`` (see the
    module: ~33 MB resident on CPU, independent of the model) on a 10×10 problem, once per process."""
    key = str(torch.device(device))
    if key in _WARMED:
        return
    _WARMED.add(key)
    with torch.inference_mode(False), torch.enable_grad():
        a = torch.ones(8, 10, device=device, requires_grad=True)
        b = torch.ones(10, 10, device=device, requires_grad=True)
        (g,) = torch.autograd.grad(torch.tanh(a @ b).sum(), b, create_graph=True)
        torch.autograd.grad(g, b, grad_outputs=torch.ones_like(g))


@dataclass
class MemoryPlan:
    """How an Objective spends its memory budget (see :mod:`flatminima.objective._memory`).

    ``rows`` samples per chunk; ``per_sample_bytes`` (s) and ``fixed_bytes`` (c plus the products' own
    vectors) as measured; ``reserved_bytes`` for the ``reserved_vectors`` the running algorithm holds
    (``Objective.reserve``); ``reuse_graph`` whether every batch's gradient graph is kept between products;
    ``peak_bytes`` the planned peak of one product, never above ``memory_mb``.
    """

    memory_mb: float
    per_sample_bytes: float
    fixed_bytes: float
    rows: int
    reuse_graph: bool
    reserved_vectors: int = 0
    reserved_bytes: float = 0.0
    peak_bytes: float = 0.0

    @property
    def floor_mb(self) -> float:
        """The smallest budget that works for the same data and reservation (one row per chunk, no reuse)."""
        return (self.fixed_bytes + self.reserved_bytes + HVP_FACTOR * self.per_sample_bytes) / MIB


def _round_up(mb: float) -> float:
    """``mb`` rounded up to three significant digits (a named floor rounded down would be refused)."""
    if mb <= 0:
        return mb
    step = 10.0 ** (math.floor(math.log10(mb)) - 2)
    return math.ceil(mb * (1 + 1e-9) / step) * step


def cached_bytes(per_sample: float, vector_bytes: float, total_rows: int, chunk: int, batches: int,
                 batch_rows: int) -> float:
    """What the kept gradient graphs of ``total_rows`` rows hold at the peak of a product built on them.

    Per row, the forward's and the ``create_graph`` backward's saved tensors (``CACHE_FACTOR · s``); per
    chunk, the gradient the graph ends in, a parameter-sized vector (the 1.05M-parameter MLP with 40 kept
    batches of 10 rows peaked 4.2 MB higher a batch, 3.3x its budget, before it was counted); and the
    transients of the second backward through one chunk (``CACHE_TRANSIENTS · r · s``, on top of the kept
    graphs, which it retains). ``batches`` of up to
    ``batch_rows`` rows split into ``ceil(batch_rows / chunk)`` chunks each (0 batches: full chunks).
    """
    chunks = batches * math.ceil(batch_rows / chunk) if batches else math.ceil(total_rows / chunk)
    return (per_sample * (CACHE_FACTOR * total_rows + CACHE_TRANSIENTS * chunk)
            + min(chunks, max(total_rows, 1)) * vector_bytes)


def plan(memory_mb: float, per_sample: float, intercept: float, vector_bytes: float, reserved: int,
         total_rows: int | None, batch_rows: int, reuse: bool, what: str = "", largest_bytes: float = 0.0,
         batches: int | None = None) -> MemoryPlan:
    """The memory plan for a budget, the measured bytes per sample and a reservation of vectors.

    ``vector_bytes``: one parameter-sized vector; ``reserved``: vectors the algorithm holds (``what`` names
    it in errors); ``total_rows``: rows of the whole data (None: unknown, streamed, so no graph reuse);
    ``batch_rows``: the rows of the largest batch (a chunk never exceeds it); ``largest_bytes``: the largest
    parameter tensor; ``batches``: how many batches the data holds (None: as many as full chunks of its rows).
    """
    budget = memory_mb * MIB
    # + the largest parameter tensor once more: while the second backward accumulates, it holds that tensor's
    # gradient beside the products' vectors. Measured on an MLP 40-1000-1000-10 (one matrix holds 95 % of θ):
    # without it a product at the named floor peaked 1.05-1.13x the budget, depending on the environment.
    fixed = intercept + FIXED_VECTORS * vector_bytes + largest_bytes
    held = reserved * vector_bytes
    one_row = HVP_FACTOR * per_sample
    floor = _round_up((fixed + held + one_row) / MIB)  # the budget named works as written
    if held and fixed + held + one_row > budget:
        raise FlatminimaError(
            f"memory_mb={memory_mb:g} is too small for {what or 'the algorithm'}: its {reserved} "
            f"parameter-sized vectors alone take {held / MIB:.3g} MiB, and one Hessian-vector product needs "
            f"{(fixed + one_row) / MIB:.3g} MiB more; raise memory_mb above {floor:.3g} or keep fewer vectors "
            "(a smaller max_iter, probes or steps).")
    rows = int((budget - fixed - held) // one_row)
    if rows < 1:
        raise FlatminimaError(
            f"memory_mb={memory_mb:g} is too small: one sample needs about {one_row / MIB:.3g} MiB for a "
            f"Hessian-vector product on top of {fixed / MIB:.3g} MiB for the parameter-sized vectors; raise "
            f"memory_mb above {floor:.3g}.")
    chunk = min(rows, max(batch_rows, 1))  # the rows a chunk really holds
    cached = fixed + held + cached_bytes(per_sample, vector_bytes, total_rows or 0, chunk,
                                         batches or 0, max(batch_rows, 1))
    reuse = bool(reuse and total_rows is not None and cached <= budget)
    peak = cached if reuse else fixed + held + one_row * chunk
    return MemoryPlan(memory_mb, per_sample, fixed, rows, reuse, reserved, held, peak)
