"""Linear interpolation between two solutions θ_a, θ_b (Goodfellow et al. 2015; mode connectivity):

    θ(t) = (1 − t)·θ_a + t·θ_b,        L(t) = L(θ(t))

Barrier height (Frankle et al. 2020, "Linear Mode Connectivity and the Lottery Ticket Hypothesis"; the
same form as Entezari et al. 2022), over the grid points with 0 ≤ t ≤ 1:

    B = max_t [ L(t) − ((1 − t)·L(0) + t·L(1)) ]

i.e. the largest rise of the loss above the straight line joining the end values (0 when the path is
convex-like, > 0 for a barrier). The same is reported for the error 1 − accuracy, the quantity Frankle
et al. use.

BatchNorm: the running statistics of θ_a or θ_b do not fit the weights θ(t), so interpolated networks
with BatchNorm look much worse than they are. With ``recompute_bn=True`` each point's statistics are
recomputed as in Garipov et al. 2018 / Frankle et al. 2020: reset the running statistics, set
``momentum=None`` (a cumulative average over batches), run the model in train mode over the training data,
then evaluate in eval mode.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import FlatminimaError
from ..objective import Cost, Objective
from ..progress import progress_bar
from .directions import directions
from .grid_losses import has_outputs
from .slices import Grid, evaluate_directions, make_grid, surface_meta
from .surface import Surface

__all__ = ["barrier", "interpolate"]


def barrier(t: np.ndarray, values: np.ndarray) -> tuple[float, float]:
    """B = max_{0≤t≤1} [v(t) − ((1−t)·v(0) + t·v(1))] and the t where it is reached (t must hold 0 and 1)."""
    t, values = np.asarray(t, dtype=float), np.asarray(values, dtype=float)
    inside = (t >= 0) & (t <= 1)
    v0, v1 = values[np.isclose(t, 0.0)][0], values[np.isclose(t, 1.0)][0]
    rise = values[inside] - ((1 - t[inside]) * v0 + t[inside] * v1)
    i = int(np.argmax(rise))
    return float(rise[i]), float(t[inside][i])


def interpolate(
    obj: Objective,
    theta_a: Any,
    theta_b: Any,
    *,
    steps: Grid = 51,
    span: tuple[float, float] = (0.0, 1.0),
    test: Objective | None = None,
    recompute_bn: bool = False,
    memory_mb: float = 512.0,
    progress: bool = True,
    label: str = "",
    meta: dict | None = None,
) -> Surface:
    """L(t) (and accuracy) along θ(t) = (1 − t)·θ_a + t·θ_b; see the module doc for the barrier.

    ``steps`` points over ``span`` (an int, evenly spaced, or a sequence of the t themselves; extend
    ``span``, e.g. (−0.5, 1.5), to see beyond the ends); t = 0 and t = 1 are always included.
    ``recompute_bn``: recompute BatchNorm statistics at every point on the training data of ``obj`` (the
    model must have BatchNorm layers). The barrier heights are in ``meta["barrier"]``.

    Examples:
        The straight line from the minimum θ_a = 0 to θ_b = (1, 1, 1) rises monotonically: no barrier.

        >>> import torch
        >>> from flatminima import Objective
        >>> A = torch.diag(torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64))
        >>> obj = Objective.from_function(lambda x: 0.5 * x @ A @ x, torch.ones(3, dtype=torch.float64))
        >>> from flatminima.landscape import interpolate
        >>> line = interpolate(obj, torch.zeros(3, dtype=torch.float64), obj.params, steps=3, progress=False)
        >>> line.axes[0].tolist(), line.values["train_loss"].tolist()
        ([0.0, 0.5, 1.0], [0.0, 0.75, 3.0])
        >>> line.meta["barrier"]["train_loss"]["height"]
        0.0
    """
    dirs = directions(obj, "line", theta_a=theta_a, theta_b=theta_b)
    t = np.union1d(make_grid(steps, span, "steps"), [0.0, 1.0])
    if recompute_bn:
        values, info, cost = _run_bn(obj, test, dirs.origin, dirs.vectors[0], t, progress)
    else:
        values, info, cost = evaluate_directions(obj, test, dirs, t[:, None], memory_mb, progress, "interpolation")
    bars: dict[str, dict[str, float]] = {}
    for key, v in values.items():
        name = key.replace("accuracy", "error")
        height, where = barrier(t, 1.0 - v if key.endswith("accuracy") else v)
        bars[name] = {"height": height, "t": where}
    extra = {
        "axis_names": ["t"],
        "recompute_bn": recompute_bn,
        "barrier": bars,
        "barrier_definition": "max_{0<=t<=1} [L(t) - ((1-t) L(0) + t L(1))] (Frankle et al. 2020)",
    }
    return Surface([t], values, surface_meta(obj, test, dirs, info, meta) | extra, cost=cost, label=label)


def _bn_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _run_bn(
    obj: Objective, test: Objective | None, a: torch.Tensor, d: torch.Tensor, t: np.ndarray, progress: bool
) -> tuple[dict[str, np.ndarray], dict[str, Any], Cost]:
    if not has_outputs(obj):
        raise FlatminimaError(
            "recompute_bn needs an Objective built with `loss=` (batches (inputs, targets))."
        )
    if not _bn_layers(obj.model_at()):
        raise FlatminimaError("recompute_bn=True but the model has no BatchNorm layers; leave it off.")
    values: dict[str, list[float]] = {}
    start = (obj.cost, test.cost if test is not None else Cost())
    with progress_bar(len(t), "interpolation (BN recomputed)", enabled=progress) as advance:
        for ti in t:
            theta = a + float(ti) * d
            buffers = _recomputed_buffers(obj, theta)
            for split, o in (("train", obj), ("test", test)):
                if o is None:
                    continue
                # Same objective, BatchNorm buffers replaced (the view shares the cost counter).
                view = o.with_fixed(buffers)
                loss, acc = view.values_at(theta[None], ["loss", "accuracy"], chunk_size=1)
                values.setdefault(f"{split}_loss", []).append(float(loss[0]))
                values.setdefault(f"{split}_accuracy", []).append(float(acc[0]))
            advance()
    cost = (obj.cost - start[0]) + ((test.cost - start[1]) if test is not None else Cost())
    info = {"chunk_size": 1, "bn_passes": len(t), "bn_statistics": "cumulative average over training batches"}
    return {k: np.asarray(v) for k, v in values.items()}, info, cost


def _recomputed_buffers(obj: Objective, theta: torch.Tensor) -> dict[str, torch.Tensor]:
    """BatchNorm running statistics of the network at θ, re-estimated on the objective's training batches."""
    model = obj.model_at(theta)
    for bn in _bn_layers(model):
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average: every batch weighs the same
    model.train()
    with torch.no_grad():
        for batch in obj.batches():  # the objective's own data, on its device and dtype
            model(*batch[:-1])
    model.eval()
    obj.record(None, passes=1.0)  # the statistics pass is paid for like any other pass over the data
    return dict(model.named_buffers())
