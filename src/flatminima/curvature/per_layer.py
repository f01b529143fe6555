"""Per-layer curvature: the diagonal blocks of the Hessian (or GGN), one per parameter tensor or module.

For a block B of parameters (θ_B, the rest held fixed at θ₀), H_BB = ∂²L/∂θ_B² is the block of the full
Hessian on B's rows and columns. Per block:

    λmax(H_BB)               Lanczos on v ↦ H_BB v (``Objective.replace(params=B)``), with its residual
    tr(H_BB) ± s.e.          Hutchinson (or Hutch++) with Rademacher probes on the block
    share_B = tr(H_BB) / T   T = Σ_B tr(H_BB) = tr(H) when every block is included (the trace of a
                             matrix is the sum of its diagonal blocks' traces, so shares sum to 1);
                             with only some blocks, T is a Hutchinson estimate of tr(H) over the whole
                             objective and the shares need not sum to 1.

Blocks: ``group="parameter"`` (default) gives one block per parameter tensor (``named_parameters``
names, e.g. ``0.weight`` and ``0.bias`` apart); ``group="module"`` merges the tensors owned directly by
one module (``0.weight`` + ``0.bias`` → ``0``). ``blocks=`` (glob patterns or module prefixes, as
``Objective(params=...)``) keeps only the matching tensors.

Note λmax(H_BB) ≤ λmax(H) (Cauchy interlacing): the blocks show where curvature sits, not how the blocks
couple.
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FlatminimaError, require_choice, require_positive_int
from ..jsonable import plain
from ..objective import Cost, Objective
from ..progress import progress_bar
from ..results import Estimate
from ..validate import check_seed
from .lanczos import eigenvalues
from .trace import METHODS, trace

__all__ = ["GROUPS", "LayerCurvature", "PerLayerResult", "blocks_of", "per_layer"]

GROUPS = ("parameter", "module")


@dataclass
class LayerCurvature:
    """One block: its parameter tensors, size, λmax (with the Lanczos true residual) and trace ± s.e."""

    name: str
    params: list[str]
    size: int
    lambda_max: float
    residual: float
    converged: bool
    trace: float
    trace_stderr: float
    share: float = float("nan")
    share_stderr: float = float("nan")
    cost: Cost = field(default_factory=Cost)

    def to_dict(self) -> dict[str, Any]:
        return plain({k: getattr(self, k) for k in ("name", "params", "size", "lambda_max", "residual",
                                                     "converged", "trace", "trace_stderr", "share",
                                                     "share_stderr")} | {"cost": self.cost.to_dict()})


@dataclass
class PerLayerResult:
    """Per-block curvature; ``total_trace`` is T of the module doc, ``complete`` whether all blocks are in."""

    layers: list[LayerCurvature]
    total_trace: float
    total_trace_stderr: float
    complete: bool
    group: str
    operator: str
    method: str
    samples: int
    seed: int
    mode: str
    cost: Cost = field(default_factory=Cost)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def estimate(self) -> Estimate:
        """The total trace with its standard error (normal 95% interval)."""
        return Estimate.from_stderr(self.total_trace, self.total_trace_stderr)

    def to_dict(self) -> dict[str, Any]:
        return plain({"estimate": self.estimate.to_dict(), "layers": [x.to_dict() for x in self.layers],
                      "total_trace": self.total_trace,
                      "total_trace_stderr": self.total_trace_stderr, "complete": self.complete,
                      "group": self.group, "operator": self.operator, "method": self.method,
                      "samples": self.samples, "seed": self.seed, "mode": self.mode, "meta": self.meta,
                      "cost": self.cost.to_dict()})

    def table(self) -> dict[str, list]:
        """Columns (block, size, lambda_max, residual, trace, trace_stderr, share, share_stderr)."""
        return {"block": [x.name for x in self.layers], "size": [x.size for x in self.layers],
                "lambda_max": [x.lambda_max for x in self.layers], "residual": [x.residual for x in self.layers],
                "trace": [x.trace for x in self.layers], "trace_stderr": [x.trace_stderr for x in self.layers],
                "share": [x.share for x in self.layers], "share_stderr": [x.share_stderr for x in self.layers]}

    def plot(self, path: str | Path, *, title: str | None = None) -> list[str]:
        """Bar charts of λmax and of the trace share per block (PNG + SVG) with the table as CSV."""
        from ..plotting import plt, save_figure, save_table

        names = [x.name for x in self.layers]
        y = np.arange(len(names))
        fig, axes = plt.subplots(1, 2, figsize=(10, 0.35 * len(names) + 1.6), sharey=True)
        lam = np.array([x.lambda_max for x in self.layers])
        axes[0].barh(y, lam, color="tab:blue")
        axes[0].set_xlabel(f"λmax of the block's {self.operator}")
        share = np.array([x.share for x in self.layers])
        err = np.array([x.share_stderr for x in self.layers])
        axes[1].barh(y, share, xerr=np.where(np.isfinite(err), err, 0.0), color="tab:orange", capsize=2)
        axes[1].set_xlabel(f"share of tr({self.operator}) (± s.e., {self.method}, {self.samples} probes)")
        axes[1].axvline(0, color="grey", lw=0.5)
        axes[0].set_yticks(y, names, fontsize=7)
        axes[0].invert_yaxis()
        model = self.meta.get("model", "model")
        fig.suptitle(title or f"{model}: per-{self.group} curvature ({self.mode} mode); "
                              f"total trace {self.total_trace:.4g} ± {self.total_trace_stderr:.2g}", fontsize=9)
        paths = save_figure(fig, path)
        stem = Path(paths[0]).with_suffix("")
        paths.append(save_table(str(stem) + ".csv", self.table()))
        return paths


def _matches(name: str, patterns: list[str]) -> bool:
    """The rule of ``Objective(params=...)``: a glob, the exact name, or a module prefix."""
    return any(fnmatch.fnmatchcase(name, p) or name == p or name.startswith(p + ".") for p in patterns)


def blocks_of(obj: Objective, group: str = "parameter", blocks: Any = None) -> dict[str, list[str]]:
    """Block name → parameter-tensor names (in ``obj.param_names`` order); see the module doc."""
    require_choice("group", group, GROUPS)
    names = list(obj.param_names)
    if blocks is not None:
        patterns = [blocks] if isinstance(blocks, str) else list(blocks)
        names = [n for n in names if _matches(n, patterns)]
        if not names:
            raise FlatminimaError(f"blocks={patterns} matches no parameter of the objective; available: "
                                  f"{list(obj.param_names)}.")
    out: dict[str, list[str]] = {}
    for n in names:
        key = n if group == "parameter" else (n.rsplit(".", 1)[0] if "." in n else "(root)")
        out.setdefault(key, []).append(n)
    return out


def per_layer(
    obj: Objective,
    *,
    group: str = "parameter",
    blocks: Any = None,
    samples: int = 30,
    method: str = "hutchinson",
    operator: str = "hessian",
    tol: float = 1e-3,
    max_iter: int | None = None,
    seed: int = 0,
    progress: bool = True,
    meta: dict | None = None,
) -> PerLayerResult:
    """λmax, trace ± s.e. and trace share of every parameter block of ``obj`` (module doc).

    ``group``: ``"parameter"`` (one block per tensor) or ``"module"``; ``blocks``: patterns selecting
    tensors (default all of ``obj``'s). ``samples``/``method``: the trace estimator per block
    (``"hutchinson"`` or ``"hutch++"``); ``tol``/``max_iter``: Lanczos per block. Every block uses the
    same ``seed``. ``obj.replace(params=...)`` restricts the objective to a block, so any model the
    Objective accepts (built-in, user, Hugging Face) works.

    Examples:
        >>> import torch
        >>> from flatminima import Objective
        >>> from flatminima.curvature import per_layer
        >>> _ = torch.manual_seed(0)
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
        >>> x, y = torch.randn(16, 3), torch.randint(0, 2, (16,))
        >>> res = per_layer(Objective(model, "cross_entropy", (x, y)), samples=6, seed=0, progress=False)
        >>> [(layer.name, layer.size) for layer in res.layers]
        [('0.weight', 12), ('0.bias', 4), ('2.weight', 8), ('2.bias', 2)]
        >>> round(sum(layer.share for layer in res.layers), 6)  # the blocks' shares of the total trace
        1.0
    """
    if not isinstance(obj, Objective) or not obj.has_model:
        raise FlatminimaError(f"per_layer needs an Objective of a network (its blocks are parameter tensors), got "
                              f"{'an analytic Objective' if isinstance(obj, Objective) else type(obj).__name__}; "
                              "for a matrix use eigenvalues / trace on the matrix itself.")
    probes = samples
    require_choice("method", method, METHODS)
    require_positive_int("samples", probes)
    check_seed("seed", seed)
    if probes < 2:
        raise FlatminimaError(f"samples must be >= 2 to estimate a standard error, got {probes}.")
    groups = blocks_of(obj, group, blocks)
    complete = sum(len(v) for v in groups.values()) == len(obj.param_names)
    layers: list[LayerCurvature] = []
    total_cost = Cost()
    with progress_bar(len(groups), f"per-{group} curvature", enabled=progress) as advance:
        for name, params in groups.items():
            # The block's objective: the model at θ₀ (model_at), only these tensors free.
            sub = obj.replace(params=params)
            if sub.dim == 0:
                continue
            with sub.meter() as cost:
                eig = eigenvalues(sub, 1, "largest", tol=tol, max_iter=max_iter, operator=operator, seed=seed)
                m = min(probes, 3 * sub.dim) if method == "hutch++" else probes
                if method == "hutch++" and m < 6:
                    m = 6
                tr = trace(sub, method, m, operator=operator, seed=seed)
            total_cost = total_cost + cost
            layers.append(LayerCurvature(name=name, params=params, size=sub.dim, lambda_max=float(eig.values[0]),
                                         residual=float(eig.residuals[0]), converged=bool(eig.converged[0]),
                                         trace=tr.value, trace_stderr=tr.stderr, cost=cost))
            advance(1)
    if complete:
        total = sum(x.trace for x in layers)
        total_se = math.sqrt(sum(x.trace_stderr**2 for x in layers))
    else:
        with obj.meter() as cost:
            tr = trace(obj, "hutchinson", probes, operator=operator, seed=seed)
        total_cost = total_cost + cost
        total, total_se = tr.value, tr.stderr
    for x in layers:
        x.share = x.trace / total if total else float("nan")
        # First-order error of a ratio of estimates; with all blocks in, the covariance with the total is
        # counted through the block's own term (the total contains it).
        if complete and total:
            rest_var = max(total_se**2 - x.trace_stderr**2, 0.0)
            x.share_stderr = math.sqrt((1 - x.share) ** 2 * x.trace_stderr**2 + x.share**2 * rest_var) / abs(total)
        elif total:
            x.share_stderr = abs(x.share) * math.sqrt((x.trace_stderr / x.trace) ** 2 + (total_se / total) ** 2) \
                if x.trace else x.trace_stderr / abs(total)
    info = {"model": type(obj.model_at()).__name__, "dim": obj.dim} | (meta or {})
    return PerLayerResult(layers=layers, total_trace=float(total), total_trace_stderr=float(total_se),
                          complete=complete, group=group, operator=operator, method=method, samples=probes,
                          seed=seed, mode=obj.mode, cost=total_cost, meta=info)
