"""An Objective over a model sharded with FSDP2 (fully_shard, DTensor parameters), 2 gloo processes on CPU on
unequal shards with distributed=True: top-3 eigenvalues and a Hutch++ trace equal the unsharded single-process
model's, the Hessian products being central differences of FSDP2's own gradient (said in describe(), with the
error estimate carried)."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from cases import rank_problem
from flatminima import FlatminimaError, Objective, curvature, distributed, sharpness


def _fsdp2_available() -> bool:
    if not dist.is_available():
        return False
    try:
        from torch.distributed.fsdp import fully_shard  # noqa: F401
    except ImportError:
        return False
    return True


pytestmark = pytest.mark.skipif(not _fsdp2_available(), reason="torch.distributed or FSDP2's fully_shard missing")

N, SIZES = 100, [35, 65]  # unequal shards: 2 and 3 batches of 32 per rank
# Central differences in float64 with h = cbrt(eps)·max(1, ‖θ‖)/‖v‖ ≈ 1e-5: truncation O(h²) and rounding
# O(eps/h) are both ~1e-11 relative to ‖Hv‖ (measured estimate, describe()["hvp_error"]: 7.6e-11); it must stay
# below FD_BOUND = 1e-9. A product error ‖E‖ ≤ 1e-9·‖H‖ moves each eigenvalue by at most ‖E‖ (Weyl), i.e. by
# 1e-9·λ₁/λ₃ ≈ 2e-9 relative for the third (λ₁/λ₃ ≈ 1.9 here), and the trace's quadratic forms likewise, so
# RTOL = 1e-8 holds with margin (measured: 1.7e-11 for the eigenvalues, 4e-11 for the trace).
RTOL, FD_BOUND = 1e-8, 1e-9


def _problem():
    return rank_problem(N)


def _numbers(obj: Objective) -> dict:
    eig = curvature.eigenvalues(obj, 3, tol=1e-6)
    v = torch.randn(obj.dim, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    return {"eig": eig.values, "eig_product": eig.product,
            "trace": torch.tensor(curvature.trace(obj, "hutch++", samples=12, seed=4).value, dtype=torch.float64),
            "loss": obj.loss(), "grad": obj.grad(), "hvp": obj.hvp(v), "describe": obj.describe()}


def _measures(obj: Objective) -> dict:
    """Perturbation measures: the loss at other θ (written into the shards) on the sharded model."""
    return {name: sharpness.measure(obj, name, seed=0).value for name in ("average_case", "worst_case", "keskar")}


def _worker(rank: int, world: int, path: str) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    model, X, y = _problem()
    mesh = init_device_mesh("cpu", (world,))
    fully_shard(model[0], mesh=mesh)  # the first layer alone; the root holds the last layer's parameters itself
    fully_shard(model, mesh=mesh)
    before = {n: p.detach().to_local().clone() for n, p in model.named_parameters()}
    data = distributed.shard((X, y), rank=rank, world_size=world, sizes=SIZES)
    obj = Objective(model, "cross_entropy", data, batch_size=32, distributed=True)
    out = _numbers(obj)
    out["restored"] = all(torch.equal(p.detach().to_local(), before[n]) and p.grad is None
                          for n, p in model.named_parameters())
    out["training"] = model.training
    with pytest.raises(FlatminimaError, match="FSDP2"):
        obj.values_at(torch.zeros(2, obj.dim, dtype=torch.float64))
    with pytest.raises(FlatminimaError, match="FSDP2"):
        obj.model_at()
    out["measures"] = _measures(obj)
    with pytest.raises(FlatminimaError, match="fisher_rao needs the model's outputs.*FSDP2-sharded"):
        sharpness.measure(obj, "fisher_rao")
    # Every layer sharded on its own and the root too (which then holds no parameters): the same products
    layered = _problem()[0]
    for layer in (layered[0], layered[2], layered):
        fully_shard(layer, mesh=mesh)
    again = Objective(layered, "cross_entropy", data, batch_size=32, distributed=True)
    out["layered_hvp"] = again.hvp(torch.randn(obj.dim, generator=torch.Generator().manual_seed(7),
                                               dtype=torch.float64))
    torch.save(out, f"{path}/rank{rank}.pt")


def test_fsdp2_sharded_model_matches_the_unsharded_single_process_model(tmp_path):
    distributed.launch(_worker, 2, str(tmp_path))
    model, X, y = _problem()
    single = Objective(model, "cross_entropy", (X, y), batch_size=32)
    ref, ref_measures = _numbers(single), _measures(single)
    for r in range(2):
        got = torch.load(tmp_path / f"rank{r}.pt", weights_only=False)
        torch.testing.assert_close(got["loss"], ref["loss"], rtol=1e-12, atol=0)
        torch.testing.assert_close(got["grad"], ref["grad"], rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(got["eig"], ref["eig"], rtol=RTOL, atol=0)
        torch.testing.assert_close(got["trace"], ref["trace"], rtol=RTOL, atol=0)
        for name, value in ref_measures.items():  # losses at perturbed θ: exact up to float rounding
            assert got["measures"][name] == pytest.approx(value, rel=1e-9), name
        hvp_tol = dict(rtol=0, atol=FD_BOUND * float(ref["hvp"].norm()))
        torch.testing.assert_close(got["hvp"], ref["hvp"], **hvp_tol)
        torch.testing.assert_close(got["layered_hvp"], ref["hvp"], **hvp_tol)
        assert "FSDP2" in got["eig_product"]["sharded"] and "relative_error" in got["eig_product"]["hvp_error"]
        described = got["describe"]
        assert described["hvp_method"] == "finite_difference" and "FSDP2" in described["sharded"]
        assert 0 < described["hvp_error"]["relative_error"] < FD_BOUND
        assert described["params"] == ref["describe"]["params"]
        assert got["restored"] and got["training"]  # shards, .grad and train flag as the user left them
