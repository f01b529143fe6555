"""The Objective's one memory model: reservations for the algorithm's vectors, the advised floor."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from flatminima import Objective
from flatminima.curvature import eigenvalues, spectral_density, trace
from flatminima.errors import FlatminimaError
from flatminima.models import mlp


def _problem(n=200, width=32):
    gen = torch.Generator().manual_seed(0)
    X, y = torch.randn(n, 40, generator=gen), torch.randint(0, 10, (n,), generator=gen)
    torch.manual_seed(0)
    return mlp([40], 10, width=width, depth=2), X, y


def _floor(model, X, y):
    with pytest.raises(FlatminimaError, match="raise memory_mb above") as err:
        Objective(model, "cross_entropy", (X, y), batch_size=len(X), reuse_graph=False, memory_mb=1e-4).memory_plan  # noqa: B018
    return float(str(err.value).split("raise memory_mb above ")[1].split()[0].rstrip("."))


def test_reserve_lowers_rows_and_refuses_vectors_that_do_not_fit():
    model, X, y = _problem()
    obj = Objective(model, "cross_entropy", (X, y), batch_size=200, memory_mb=0.5)
    free = obj.memory_plan.rows
    vec_mb = obj.dim * 4 / 2**20
    with obj.reserve(20, "twenty vectors") as plan:
        assert plan.reserved_vectors == 20 and plan.rows < free
        with obj.reserve(5) as inner:  # nested reservations add up
            assert inner.reserved_vectors == 25
        assert plan.peak_bytes <= 0.5 * 2**20
    assert obj.memory_plan.rows == free and obj.memory_plan.reserved_vectors == 0
    too_many = int(0.5 / vec_mb) + 1
    with pytest.raises(FlatminimaError, match="twenty vectors.*alone take"), obj.reserve(too_many, "twenty vectors"):
        pass
    assert obj.memory_plan.reserved_vectors == 0  # released after the refusal
    unbudgeted = Objective(model, "cross_entropy", (X, y))
    with unbudgeted.reserve(10**9) as plan:
        assert plan is None


def test_reservation_turns_graph_reuse_off_and_products_stay_exact():
    model, X, y = _problem()
    obj = Objective(model, "cross_entropy", (X, y), batch_size=50, memory_mb=0.6)
    ref = Objective(model, "cross_entropy", (X, y), batch_size=50)
    v = torch.randn(obj.dim, generator=torch.Generator().manual_seed(1))
    assert obj.memory_plan.reuse_graph
    with obj.reserve(int(0.4 * 2**20 / (obj.dim * 4))) as plan:
        assert not plan.reuse_graph
        torch.testing.assert_close(obj.hvp(v), ref.hvp(v), rtol=1e-5, atol=1e-6)


def test_algorithms_reserve_their_vectors():
    model, X, y = _problem()
    obj = Objective(model, "cross_entropy", (X, y), batch_size=200, memory_mb=0.3)
    per = obj.dim * 4 / 2**20
    assert 2 * 41 * per > 0.3  # Lanczos's basis of 40 steps cannot fit
    with pytest.raises(FlatminimaError, match="Lanczos's basis of max_iter=40"):
        eigenvalues(obj, k=1, max_iter=40)
    with pytest.raises(FlatminimaError, match="Hutch\\+\\+ sketch"):
        trace(obj, "hutch++", samples=90)
    with pytest.raises(FlatminimaError, match="SLQ basis"):
        spectral_density(obj, samples=1, steps=40)
    small = eigenvalues(obj, k=1, max_iter=4, tol=1e-2)  # a basis that fits runs
    assert small.iterations <= 4


def test_just_above_the_advised_floor_works_and_gives_the_same_product():
    model, X, y = _problem(n=40)
    floor = _floor(model, X, y)
    obj = Objective(model, "cross_entropy", (X, y), batch_size=40, reuse_graph=False, memory_mb=floor * 1.01)
    ref = Objective(model, "cross_entropy", (X, y), batch_size=40)
    v = torch.randn(obj.dim, generator=torch.Generator().manual_seed(2))
    assert obj.memory_plan.rows == 1
    torch.testing.assert_close(obj.hvp(v), ref.hvp(v), rtol=1e-5, atol=1e-6)


_PROBE = textwrap.dedent("""
    import json, sys, torch
    from flatminima import Objective
    from flatminima.models import mlp
    def problem(n):
        gen = torch.Generator().manual_seed(0)
        X, y = torch.randn(n, 40, generator=gen), torch.randint(0, 10, (n,), generator=gen)
        torch.manual_seed(0)
        return mlp([40], 10, width=256, depth=2), X, y
    m, X, y = problem(64)
    w = Objective(m, "cross_entropy", (X, y), reuse_graph=False); w.hvp(torch.randn(w.dim)); del w
    m, X, y = problem(int(sys.argv[2]))
    obj = Objective(m, "cross_entropy", (X, y), batch_size=len(X), reuse_graph=False, memory_mb=float(sys.argv[1]))
    v = torch.randn(obj.dim); obj.memory_plan; obj.loss()
    def status(key):
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) / 1024 for line in f if line.startswith(key))
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets the high-water mark (VmHWM) to the current resident set
    before = status("VmRSS:")
    obj.hvp(v)
    print(json.dumps({"peak": status("VmHWM:") - before, "rows": obj.memory_plan.rows}))
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="peak resident set from /proc and ru_maxrss")
@pytest.mark.parametrize("n", [300, 2000])
def test_measured_peak_near_the_advised_floor(n):
    """The floor is right to 20%: one HVP just above it peaks within 0.8-1.2x of it (fresh process, RSS, the
    median of three processes), whatever the data's size. At n=2000 it once measured 0.71x: planning and every
    pass built the views of all n/rows chunks at once (~1 KB each), leaving freed heap that hid the product's own
    allocations. One process alone is too noisy for the lower bound: on a 2 MB floor single peaks spread over
    0.77-0.89x (six runs; one under 0.8 once in a few runs), the medians of their triples were 0.86 and 0.87x."""
    model, X, y = _problem(n=300, width=256)
    floor = _floor(model, X, y)
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1"}
    runs = []
    for _ in range(3):
        out = subprocess.run([sys.executable, "-c", _PROBE, str(floor * 1.02), str(n)], env=env,
                             capture_output=True, text=True, check=True, timeout=300)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    assert all(r["rows"] <= 10 for r in runs)  # a few rows: the floor is printed to 3 digits, 2% above it fits several
    peak = sorted(r["peak"] for r in runs)[1]
    assert 0.8 * floor <= peak <= 1.2 * floor * 1.02, (runs, floor)


class _Attention(torch.nn.Module):
    """Embedding, one causal attention through ``F.scaled_dot_product_attention``, a head: at 128 tokens its
    attention matrices are most of what a forward saves."""

    def __init__(self):
        super().__init__()
        self.emb, self.qkv, self.head = torch.nn.Embedding(16, 8), torch.nn.Linear(8, 24), torch.nn.Linear(8, 16)

    def forward(self, ids):
        b, t = ids.shape
        q, k, v = self.qkv(self.emb(ids)).view(b, t, 3, 2, 4).permute(2, 0, 3, 1, 4)
        y = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.head(y.transpose(1, 2).reshape(b, t, 8))


def _attention_objective():
    torch.manual_seed(0)
    ids = torch.randint(0, 16, (4, 128), generator=torch.Generator().manual_seed(1))

    def loss_fn(model, batch):
        (x,) = batch
        return torch.nn.functional.cross_entropy(model(x).reshape(-1, 16), x.reshape(-1))

    return Objective(_Attention(), loss_fn=loss_fn, data=[(ids,)], memory_mb=64, reuse_graph=False)


def test_the_plan_counts_the_attention_the_products_run_whoever_asks_first():
    # The products run SDPA on its math backend (attention matrices saved). A plan asked for first, as
    # memory_plan, reserve() (Lanczos, Hutch++, SLQ) and a refusal naming the floor do, outside any product,
    # was measured on the fused CPU kernel, which saves none of them: here 5.2x fewer bytes per sample.
    asked = _attention_objective()
    planned_first = asked.memory_plan
    product_first = _attention_objective()
    product_first.hvp(torch.ones(product_first.dim))
    assert planned_first.per_sample_bytes == product_first.memory_plan.per_sample_bytes
    assert planned_first.fixed_bytes == product_first.memory_plan.fixed_bytes
    with asked.reserve(2) as plan:
        assert plan.per_sample_bytes == product_first.memory_plan.per_sample_bytes


_CACHED_PROBE = textwrap.dedent("""
    import json, sys
    import torch
    from flatminima import Objective
    from flatminima.models import mlp
    torch.set_num_threads(1)
    budget, batches = float(sys.argv[1]), int(sys.argv[2])
    gen = torch.Generator().manual_seed(0)
    X, y = torch.randn(10 * batches, 40, generator=gen), torch.randint(0, 10, (10 * batches,), generator=gen)
    torch.manual_seed(0)
    obj = Objective(mlp([40], 10, width=1000, depth=2), "cross_entropy", (X, y), batch_size=10, memory_mb=budget)
    v = torch.randn(obj.dim, generator=gen); plan = obj.memory_plan; obj.loss()
    def status(key):
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) / 1024 for line in f if line.startswith(key))
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = status("VmRSS:")
    obj.hvp(v)
    print(json.dumps({"peak": status("VmHWM:") - before, "reuse": plan.reuse_graph}))
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="peak resident set from /proc")
@pytest.mark.parametrize("budget, reuse", [(60.0, False), (200.0, True)])
def test_kept_graphs_count_their_gradients(budget, reuse):
    """Under graph reuse every kept batch's graph ends in its gradient, a parameter-sized vector (4 MB here):
    40 batches of 10 rows peaked at 199 MB under a 60 MB budget (3.3x) while the plan counted 34 MB. The plan
    counts them now: reuse where they fit (planned 195 MB, measured 198 MB), rebuilt graphs where they do not."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", _CACHED_PROBE, str(budget), "40"], env=env, capture_output=True,
                         text=True, check=True, timeout=300)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["reuse"] is reuse
    assert got["peak"] <= 1.1 * budget, got
