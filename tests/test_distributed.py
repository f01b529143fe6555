"""Data-parallel Objective: 2 gloo processes on unequal shards give the single-process numbers."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from cases import rank_problem
from flatminima import Objective, curvature, distributed
from flatminima.errors import FlatminimaError
from flatminima.models.transformer import TransformerLM, lm_loss, toy_lm_batches

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")

N, SIZES = 100, [35, 65]  # unequal shards; batch_size 32 gives 2 and 3 batches with partial last ones
MEASURES = {
    "lambda_max": {"tol": 1e-6},
    "trace": {"samples": 6},
    "worst_case": {"rho": 0.05, "steps": 3, "restarts": 1},
}


def _problem():
    return rank_problem(N)


def _lm_problem():
    torch.manual_seed(2)
    return TransformerLM(
        vocab_size=12, d_model=8, n_heads=2, n_layers=1, max_len=10
    ).double(), toy_lm_batches(8, 6, 12, batch_size=3, seed=3)


def _numbers(obj: Objective) -> dict:
    """Every quantity compared across process counts, computed with fixed seeds."""
    from flatminima import sharpness

    gen = torch.Generator().manual_seed(5)
    v = torch.randn(obj.dim, generator=gen, dtype=torch.float64)
    thetas = obj.params + 0.1 * torch.randn(5, obj.dim, generator=gen, dtype=torch.float64)
    out = {
        "loss": torch.tensor(obj.loss()),
        "grad": obj.grad(),
        "hvp": obj.hvp(v),
        "batched": obj.loss_batched(thetas, chunk_size=2),
        "eig": curvature.eigenvalues(obj, 2, "both", tol=1e-5).values,
        "trace": torch.tensor(curvature.trace(obj, samples=12, seed=4).value),
    }
    if obj.has_outputs:
        out["ggn"] = obj.ggn_vp(v)
        for name, config in MEASURES.items():
            if name in sharpness.available():
                out[f"measure:{name}"] = torch.tensor(sharpness.measure(obj, name, **config).value)
    return out


# Just above what Lanczos's reserved basis needs: inside eigenvalues the 32-row batches run in 10-row chunks.
BUDGET_MB = 0.115


def _mlp_numbers(rank: int, world: int, memory_mb: float | None) -> dict:
    model, X, y = _problem()
    sizes = (SIZES if memory_mb is None else [0, N]) if world == 2 else None  # budget case: an empty shard
    data = distributed.shard((X, y), rank=rank, world_size=world, sizes=sizes)
    return _numbers(
        Objective(model, "cross_entropy", data, batch_size=32, distributed=world > 1, memory_mb=memory_mb)
    )


def _lm_numbers(rank: int, world: int) -> dict:
    model, batches = _lm_problem()
    mine = distributed.shard_batches(batches, rank=rank, world_size=world)
    return _numbers(Objective(model, loss_fn=lm_loss, data=mine, distributed=world > 1))


def _worker(rank: int, world: int, path: str) -> None:
    assert distributed.rank() == rank and distributed.world_size() == world
    result = {
        "mlp": _mlp_numbers(rank, world, None),
        "mlp_budget": _mlp_numbers(rank, world, BUDGET_MB),
        "lm": _lm_numbers(rank, world),
    }
    torch.save(result, f"{path}/rank{rank}.pt")


@pytest.fixture(scope="module")
def two_process_results(tmp_path_factory):
    path = tmp_path_factory.mktemp("dist")
    distributed.launch(_worker, 2, str(path))
    return [torch.load(path / f"rank{r}.pt") for r in range(2)]


def _compare(got: dict, ref: dict) -> None:
    assert got.keys() == ref.keys()
    for key in ref:
        torch.testing.assert_close(got[key].double(), ref[key].double(), rtol=1e-7, atol=1e-9, msg=key)


@pytest.mark.parametrize("case", ["mlp", "mlp_budget", "lm"])
def test_two_ranks_match_one_process(two_process_results, case):
    ref = _lm_numbers(0, 1) if case == "lm" else _mlp_numbers(0, 1, BUDGET_MB if case == "mlp_budget" else None)
    for r in range(2):  # every rank holds the global numbers, not its shard's
        _compare(two_process_results[r][case], ref)


def test_measures_are_compared(two_process_results):
    # Guard against the comparison silently covering nothing.
    keys = two_process_results[0]["mlp"].keys()
    assert {"loss", "grad", "hvp", "ggn", "eig", "trace", "batched"} <= set(keys)
    assert any(k.startswith("measure:") for k in keys)


def test_shard_covers_data_exactly_once():
    X = torch.arange(10)
    parts = [distributed.shard(X, rank=r, world_size=3) for r in range(3)]
    assert [len(p) for p in parts] == [4, 3, 3]
    assert torch.equal(torch.cat(parts), X)
    d = distributed.shard({"a": X, "b": X * 2}, rank=1, world_size=2, sizes=[3, 7])
    assert torch.equal(d["b"], X[3:] * 2)
    assert distributed.shard_batches(list(range(5)), rank=1, world_size=2) == [1, 3]


def test_shard_bad_input():
    with pytest.raises(FlatminimaError, match="sizes"):
        distributed.shard(torch.arange(10), rank=0, world_size=2, sizes=[3, 3])
    with pytest.raises(FlatminimaError, match="rank"):
        distributed.shard(torch.arange(10), rank=2, world_size=2)
    with pytest.raises(FlatminimaError, match="torchrun"):
        if not dist.is_initialized():
            import os

            saved = {k: os.environ.pop(k) for k in ("RANK", "WORLD_SIZE") if k in os.environ}
            try:
                distributed.init()
            finally:
                os.environ.update(saved)
