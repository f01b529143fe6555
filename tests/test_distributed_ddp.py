"""An Objective over a DistributedDataParallel-wrapped model, 2 gloo processes on unequal shards with
distributed=True: top-3 eigenvalues and a Hutch++ trace equal the unwrapped single-process model's, measured on
the wrapper's .module (said in describe())."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from flatminima import Objective, curvature, distributed

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")

N, SIZES = 100, [35, 65]  # unequal shards: 2 and 3 batches of 32 per rank


def _problem():
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(N, 6, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (N,), generator=gen)
    torch.manual_seed(1)
    # BatchNorm (eval mode) gives the model buffers, which DDP's own forward would broadcast at every call
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.BatchNorm1d(8), torch.nn.Tanh(),
                                torch.nn.Linear(8, 3)).double()
    with torch.no_grad():
        model[1].running_mean.uniform_(-0.5, 0.5, generator=gen)
        model[1].running_var.uniform_(0.5, 2.0, generator=gen)
    return model, X, y


def _numbers(obj: Objective) -> dict:
    return {"eig": curvature.eigenvalues(obj, 3, tol=1e-6).values,
            "trace": torch.tensor(curvature.trace(obj, "hutch++", samples=12, seed=4).value),
            "describe": obj.describe()}


def _worker(rank: int, world: int, path: str) -> None:
    model, X, y = _problem()
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    data = distributed.shard((X, y), rank=rank, world_size=world, sizes=SIZES)
    torch.save(_numbers(Objective(ddp, "cross_entropy", data, batch_size=32, distributed=True)),
               f"{path}/rank{rank}.pt")


def test_ddp_wrapped_model_matches_the_unwrapped_single_process_model(tmp_path):
    distributed.launch(_worker, 2, str(tmp_path))
    model, X, y = _problem()
    ref = _numbers(Objective(model, "cross_entropy", (X, y), batch_size=32))
    for r in range(2):
        got = torch.load(tmp_path / f"rank{r}.pt", weights_only=False)
        torch.testing.assert_close(got["eig"], ref["eig"], rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(got["trace"], ref["trace"], rtol=1e-9, atol=1e-12)
        assert got["describe"]["params"] == ref["describe"]["params"]  # the inner module's names
        assert ".module" in got["describe"]["wrapper"] and "wrapper" not in ref["describe"]


def _undistributed_worker(rank: int, world: int, path: str) -> None:
    import warnings

    model, X, y = _problem()
    data = distributed.shard((X, y), rank=rank, world_size=world, sizes=SIZES)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        obj = Objective(torch.nn.parallel.DistributedDataParallel(model), "cross_entropy", data, batch_size=32)
        Objective(model, "cross_entropy", data, batch_size=32)  # once per process
    torch.save({"warnings": [str(w.message) for w in caught if issubclass(w.category, UserWarning)],
                "loss": obj.loss()}, f"{path}/rank{rank}.pt")


def test_ddp_without_distributed_warns_once_naming_the_flag(tmp_path):
    # In a real process group each rank then measures its own shard only: a different number per rank
    distributed.launch(_undistributed_worker, 2, str(tmp_path))
    model, X, y = _problem()
    whole = Objective(model, "cross_entropy", (X, y), batch_size=32).loss()
    got = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    for g in got:
        said = [w for w in g["warnings"] if "distributed=True" in w]
        assert len(said) == 1 and "DistributedDataParallel" in said[0] and "world size 2" in said[0], g["warnings"]
    assert got[0]["loss"] != got[1]["loss"] and whole not in (got[0]["loss"], got[1]["loss"])
