"""The distributed demo (``python -m flatminima.workflows.distributed_demo``): curvature of an MLP on MNIST-1D,
data split by rank.

    torchrun --standalone --nproc_per_node=2 -m flatminima.workflows.distributed_demo --samples 4000 --k 3

Every rank loads the same data, keeps its shard (:func:`flatminima.distributed.shard`) and builds an
``Objective(..., distributed=True)``; rank 0 prints the loss, the top eigenvalues and the trace, which are
the same numbers for any number of ranks. The sharding helpers are the library's
(:mod:`flatminima.distributed`); this module only puts them together.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from .. import curvature
from ..data import load_mnist1d
from ..distributed import init, shard
from ..models import mlp
from ..objective import Objective

__all__ = ["main"]


def main(argv: list[str] | None = None) -> None:
    """``torchrun --standalone --nproc_per_node=2 -m flatminima.workflows.distributed_demo``: curvature of an MLP on
    MNIST-1D with the data split across the ranks; prints the same numbers for any number of ranks."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m flatminima.workflows.distributed_demo", description=main.__doc__)
    parser.add_argument("--samples", type=int, default=4000)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--probes", type=int, default=30)
    parser.add_argument("--memory-mb", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    r, size = init()
    data = load_mnist1d(num_samples=args.samples, seed=args.seed)
    torch.manual_seed(args.seed)
    model = mlp(data.x_train.shape[1:], data.num_classes, width=args.width)
    device = f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu"
    obj = Objective(model, "cross_entropy", shard((data.x_train, data.y_train)), device=device,
                    distributed=True, memory_mb=args.memory_mb)
    loss = obj.loss()
    eig = curvature.eigenvalues(obj, args.k, seed=args.seed)
    tr = curvature.trace(obj, samples=args.probes, seed=args.seed)
    if r == 0:
        print(f"ranks={size} samples={int(obj.total_weight)} dim={obj.dim} loss={loss:.6f}")
        print(f"top eigenvalues={[round(float(v), 6) for v in eig.values]} ({eig.cost.hvps} HVPs)")
        print(f"trace={tr.value:.4f} ± {tr.stderr:.4f} ({tr.cost.hvps} HVPs, {tr.cost.seconds:.2f} s)")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
