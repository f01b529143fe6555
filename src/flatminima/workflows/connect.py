"""Mode connectivity as a workflow: train (or load) two solutions and draw the trained curve between them.

What ``flatminima landscape --mode connect`` runs. The curve itself, its barriers and figures are the
library's :func:`flatminima.landscape.connect`, which takes two parameter vectors and trains no model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import FlatminimaError
from ..landscape import connect
from ..models import build
from ..objective import Objective
from ..train import Recipe, fit, load_checkpoint

__all__ = ["connect_models"]


def connect_models(
    dataset: Any,
    out: str | Path,
    *,
    model: str = "mlp",
    checkpoint: str | None = None,
    checkpoint_b: str | None = None,
    seed: int = 0,
    seed_b: int | None = None,
    epochs: int = 20,
    batch_size: int = 32,
    lr: float = 0.05,
    curve: str = "bezier",
    curve_epochs: int = 20,
    curve_lr: float = 1e-2,
    curve_batch_size: int = 64,
    optimizer: str = "adam",
    steps: int = 41,
    plane_steps: int = 31,
    test: bool = True,
    recompute_bn: bool | str = "auto",
    dtype: Any = None,
    log: bool = False,
    progress: bool = True,
    model_kw: dict | None = None,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """What ``flatminima landscape --mode connect`` does: two solutions (the checkpoints given, or the model
    trained from ``seed`` and ``seed_b``, default ``seed + 1``), the trained curve between them and its
    figures in ``out``. Returns a summary (barriers, files, cost). ``device``: where the two models train (or
    their checkpoints are loaded) and the curve is trained and evaluated (both Objectives are built there).
    ``steps``/``plane_steps``: points along each path and per axis of the plane."""
    model_kw = model_kw or {}
    seed_b = seed + 1 if seed_b is None else seed_b
    if seed_b == seed and not (checkpoint and checkpoint_b):
        raise FlatminimaError(f"seed_b={seed_b} equals seed: the two models would be the same; pick another seed.")

    def get(ckpt: str | None, s: int) -> nn.Module:
        torch.manual_seed(s)
        net = build(model, dataset.input_shape, dataset.num_classes, **model_kw)
        if ckpt:
            load_checkpoint(ckpt, net)  # read onto the CPU (map_location), then moved
            net.to(device)
        else:
            fit(net, dataset.train, Recipe(batch_size=batch_size, epochs=epochs, lr=lr, seed=s), progress=progress,
                device=device)
        return net.eval()

    net_a, net_b = get(checkpoint, seed), get(checkpoint_b, seed_b)
    kw: dict[str, Any] = {"device": device} | ({"dtype": dtype} if dtype is not None else {})
    train = Objective(net_a, "cross_entropy", dataset.train, **kw)
    test_obj = Objective(net_a, "cross_entropy", dataset.test, **kw) if test and dataset.test is not None else None
    sources = {"a": checkpoint or f"trained, seed {seed}", "b": checkpoint_b or f"trained, seed {seed_b}"}
    res = connect(train, train.params, train.replace(model=net_b).params, curve, test=test_obj, epochs=curve_epochs,
                  batch_size=curve_batch_size, optimizer=optimizer, lr=curve_lr, steps=steps, plane_steps=plane_steps,
                  recompute_bn=recompute_bn, seed=seed, progress=progress,
                  meta={"model": model, "data": getattr(dataset, "name", ""), "sources": sources})
    files = res.plot(Path(out) / f"connect_{curve}", log=log)
    return {"files": {f"connect_{curve}": files}, "barrier": {f"curve {k}": v for k, v in res.barrier.items()}
            | {f"line {k}": v for k, v in res.line_barrier.items()}, "cost": res.cost.to_dict(),
            "sources": sources, "result": res}
