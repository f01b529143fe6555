"""Mode connectivity: a trained low-loss curve between two solutions (Garipov et al. 2018).

Two solutions θ_a, θ_b found from different seeds usually have a loss barrier on the straight line
between them, yet they can be joined by a simple curve along which the loss stays low (Garipov et al.
2018, "Loss surfaces, mode connectivity, and fast ensembling of DNNs"; Draxler et al. 2018 find such
paths with a nudged elastic band instead). Two curves with one control point θ_c:

    bezier     φ(t) = (1 − t)²·θ_a + 2t(1 − t)·θ_c + t²·θ_b                      (quadratic Bézier)
    polychain  φ(t) = θ_a + 2t·(θ_c − θ_a)            for t ≤ ½,
               φ(t) = θ_c + (2t − 1)·(θ_b − θ_c)      for t > ½                (one bend at θ_c)

θ_c is trained by SGD or Adam on E_{t ~ U(0,1)} L(φ(t)): at every step one t is drawn and a mini-batch
gradient of L(φ(t)) with respect to θ_c is taken (through ``Objective.outputs``, i.e. ``torch.func
.functional_call`` on the flat θ: any ``nn.Module``, nothing rewritten). θ_c starts at the midpoint
(θ_a + θ_b)/2, where both curves ARE the straight line, so every improvement is the training's.

Barrier heights, for the curve and for the straight line alike, over the grid of t in [0, 1]:

    barrier      B   = max_t [ L(t) − ((1 − t)·L(0) + t·L(1)) ]   (the definition of ``interpolate``,
                                                                   Frankle et al. 2020)
    barrier_max  B_m = max_t L(t) − max(L(0), L(1))               (the height above the higher end)

and the same for the error 1 − accuracy. Both are ≈ 0 on a connecting path.

BatchNorm: the running statistics of θ_a do not fit φ(t). Where the model has BatchNorm, θ_c is trained
in train mode (batch statistics, as Garipov et al.) and every evaluated point gets its statistics
recomputed on the training data (reset, cumulative average over all training batches in train mode,
then eval mode), the procedure of ``interpolate(..., recompute_bn=True)``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import FlatminimaError, require_choice, require_positive, require_positive_int
from ..jsonable import json_default
from ..objective import Cost, Objective
from ..plotting import plt, save_figure, save_table
from ..progress import progress_bar
from .grid_losses import evaluate_points
from .interpolation import barrier, interpolate
from .surface import Surface

__all__ = ["CURVES", "Connection", "connect", "curve_point", "curve_weights"]

CURVES = ("bezier", "polychain")
OPTIMIZERS = ("adam", "sgd")
BARRIER_DEFINITION = ("barrier: max_{0<=t<=1} [L(t) - ((1-t) L(0) + t L(1))] (Frankle et al. 2020, as interpolate); "
                      "barrier_max: max_t L(t) - max(L(0), L(1))")


def curve_weights(t: float | torch.Tensor, curve: str = "bezier") -> tuple[Any, Any, Any]:
    """(w_a, w_c, w_b) with φ(t) = w_a·θ_a + w_c·θ_c + w_b·θ_b (they sum to 1)."""
    require_choice("curve", curve, CURVES)
    if curve == "bezier":
        return (1 - t) ** 2, 2 * t * (1 - t), t**2
    if float(t) <= 0.5:
        return 1 - 2 * t, 2 * t, 0 * t
    return 0 * t, 2 - 2 * t, 2 * t - 1


def curve_point(theta_a: torch.Tensor, theta_c: torch.Tensor, theta_b: torch.Tensor, t: float,
                curve: str = "bezier") -> torch.Tensor:
    """φ(t) on the curve with control point θ_c (see the module doc)."""
    wa, wc, wb = curve_weights(t, curve)
    return wa * theta_a + wc * theta_c + wb * theta_b


def _barriers(t: np.ndarray, values: Mapping[str, np.ndarray]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for key, v in values.items():
        name = key.replace("accuracy", "error")
        v = 1.0 - np.asarray(v) if key.endswith("accuracy") else np.asarray(v)
        height, where = barrier(t, v)
        inside = (t >= 0) & (t <= 1)
        v0, v1 = v[np.isclose(t, 0.0)][0], v[np.isclose(t, 1.0)][0]
        out[name] = {"height": height, "t": where, "max_height": float(v[inside].max() - max(v0, v1))}
    return out


@dataclass
class Connection:
    """A trained curve between θ_a and θ_b, the straight line for comparison, and the plane of (θ_a, θ_b, θ_c).

    ``t``: the grid along both paths. ``values``: the curve's ``train_loss``, ``train_accuracy`` (and
    ``test_*``) at ``t``. ``line``: the straight line (a :class:`Surface` from ``interpolate``).
    ``barrier`` / ``line_barrier``: per quantity ``{"height", "t", "max_height"}`` (module doc).
    ``plane``: ``x``, ``y`` (coordinates in the plane, distances in parameter space), ``loss``
    (len(x) × len(y)), ``points`` (θ_a, θ_b, θ_c) and ``curve`` / ``line`` path coordinates.
    ``history``: the mean training loss of each epoch of θ_c's training. ``theta_c``: the control point.
    """

    t: np.ndarray
    values: dict[str, np.ndarray]
    line: Surface
    barrier: dict[str, dict[str, float]]
    line_barrier: dict[str, dict[str, float]]
    theta_c: torch.Tensor
    curve: str
    plane: dict[str, Any] | None = None
    history: list[float] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    cost: Cost = field(default_factory=Cost)

    def to_dict(self) -> dict[str, Any]:
        """Everything but the parameter vectors, as plain JSON-able values."""
        plane = None
        if self.plane is not None:
            plane = {k: np.asarray(v).tolist() for k, v in self.plane.items()}
        return {
            "curve": self.curve,
            "t": self.t.tolist(),
            "values": {k: np.asarray(v).tolist() for k, v in self.values.items()},
            "line_values": {k: np.asarray(v).tolist() for k, v in self.line.values.items()},
            "barrier": self.barrier,
            "line_barrier": self.line_barrier,
            "barrier_definition": BARRIER_DEFINITION,
            "history": list(self.history),
            "plane": plane,
            "meta": self.meta,
            "cost": self.cost.to_dict(),
        }

    def summary(self) -> dict[str, Any]:
        """The headline numbers: barriers of the curve and of the line (train loss first)."""
        return {"curve": self.curve, "barrier": self.barrier, "line_barrier": self.line_barrier,
                "cost": self.cost.to_dict()}

    def plot(self, path: str | Path, *, log: bool = False, title: str | None = None) -> list[str]:
        """Write ``<path>_paths`` (loss and accuracy vs t, line vs curve) and ``<path>_plane`` (contour of
        the plane through θ_a, θ_b, θ_c with both paths) as PNG + SVG, with ``<path>_paths.csv``,
        ``<path>_plane.csv`` and ``<path>.json`` behind them. Returns the paths written."""
        stem = Path(path)
        if stem.suffix.lower() in {".png", ".svg", ".json", ".csv"}:
            stem = stem.with_suffix("")
        stem.parent.mkdir(parents=True, exist_ok=True)
        name = title or self.meta.get("model", "model")
        files = self._plot_paths(stem, name, log)
        if self.plane is not None:
            files += self._plot_plane(stem, name)
        json_path = stem.parent / f"{stem.name}.json"
        json_path.write_text(json.dumps(self.to_dict(), indent=1, default=json_default))
        files.append(str(json_path))
        return files

    def _plot_paths(self, stem: Path, name: str, log: bool) -> list[str]:
        splits = [k[: -len("_loss")] for k in self.values if k.endswith("_loss")]
        has_acc = any(k.endswith("_accuracy") for k in self.values)
        fig, axes = plt.subplots(1, 2 if has_acc else 1, figsize=(10 if has_acc else 5.5, 3.8), squeeze=False)
        styles = {"train": "-", "test": "--"}
        lt = self.line.axes[0]
        for col, metric in enumerate(["loss", "accuracy"] if has_acc else ["loss"]):
            ax = axes[0, col]
            for split in splits:
                key = f"{split}_{metric}"
                ls = styles.get(split, ":")
                ax.plot(lt, self.line.values[key], ls, color="tab:red", lw=1.3, label=f"straight line ({split})")
                ax.plot(self.t, self.values[key], ls, color="tab:blue", lw=1.3, label=f"{self.curve} curve ({split})")
            ax.set_xlabel("t")
            ax.set_ylabel(metric)
            if metric == "loss" and log:
                ax.set_yscale("log")
            ax.axvline(0, color="grey", lw=0.5, ls=":")
            ax.axvline(1, color="grey", lw=0.5, ls=":")
        axes[0, 0].legend(fontsize=7)
        b, lb = self.barrier.get("train_loss", {}), self.line_barrier.get("train_loss", {})
        fig.suptitle(f"{name}: straight line vs trained {self.curve} curve — train-loss barrier "
                     f"{lb.get('height', float('nan')):.3g} (line) vs {b.get('height', float('nan')):.3g} (curve)",
                     fontsize=9)
        files = save_figure(fig, stem.parent / f"{stem.name}_paths")
        cols: dict[str, Any] = {"t": self.t}
        for key, v in self.values.items():
            cols[f"curve_{key}"] = v
        same_t = len(lt) == len(self.t) and np.allclose(lt, self.t)
        if same_t:
            for key, v in self.line.values.items():
                cols[f"line_{key}"] = v
        files.append(save_table(stem.parent / f"{stem.name}_paths.csv", cols))
        if not same_t:
            line_cols = {"t": lt} | {f"line_{k}": v for k, v in self.line.values.items()}
            files.append(save_table(stem.parent / f"{stem.name}_line.csv", line_cols))
        return files

    def _plot_plane(self, stem: Path, name: str) -> list[str]:
        p = self.plane
        x, y, loss = np.asarray(p["x"]), np.asarray(p["y"]), np.asarray(p["loss"], dtype=float)
        fig, ax = plt.subplots(figsize=(6.2, 5))
        z = np.log10(np.clip(loss, 1e-12, None))
        finite = z[np.isfinite(z)]
        levels = np.linspace(finite.min(), finite.max(), 30) if finite.size else 30
        cs = ax.contourf(x, y, z.T, levels=levels, cmap="viridis")
        ax.contour(x, y, z.T, levels=levels, colors="k", linewidths=0.2)
        fig.colorbar(cs, ax=ax, label="log10 train loss")
        line, curve = np.asarray(p["line"]), np.asarray(p["curve"])
        ax.plot(line[:, 0], line[:, 1], color="tab:red", lw=1.8, label="straight line")
        ax.plot(curve[:, 0], curve[:, 1], color="white", lw=1.8, label=f"{self.curve} curve")
        pts = np.asarray(p["points"])
        for (px, py), lab in zip(pts, ["θ_a", "θ_b", "θ_c"], strict=True):
            ax.plot(px, py, "o", color="k" if lab != "θ_c" else "tab:orange", ms=6)
            ax.annotate(lab, (px, py), textcoords="offset points", xytext=(5, 5), color="w", fontsize=9)
        ax.set_xlabel("along θ_b − θ_a")
        ax.set_ylabel("along θ_c − θ_a (orthogonalised)")
        ax.set_aspect("equal", adjustable="box")
        ax.legend(fontsize=7, loc="upper right")
        ax.set_title(f"{name}: train loss in the plane of θ_a, θ_b, θ_c", fontsize=9)
        files = save_figure(fig, stem.parent / f"{stem.name}_plane")
        xx, yy = np.meshgrid(x, y, indexing="ij")
        files.append(save_table(stem.parent / f"{stem.name}_plane.csv",
                                {"x": xx.ravel(), "y": yy.ravel(), "train_loss": loss.ravel()}))
        return files


# --------------------------------------------------------------------------------------------- helpers
def _bn_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _has_dropout(model: nn.Module) -> bool:
    kinds = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)
    return any(isinstance(m, kinds) and getattr(m, "p", 0.0) > 0 for m in model.modules())


def _vector(obj: Objective, theta: Any, name: str) -> torch.Tensor:
    if isinstance(theta, nn.Module):
        theta = obj.replace(model=theta).params
    theta = torch.as_tensor(theta).detach()
    if theta.shape != (obj.dim,):
        raise FlatminimaError(f"{name} must be a flat vector of the objective's {obj.dim} parameters (obj.params "
                              f"layout) or an nn.Module of the same architecture, got shape {tuple(theta.shape)}.")
    if not torch.isfinite(theta).all():
        raise FlatminimaError(f"{name} holds NaN or inf entries; pass trained, finite weights.")
    return theta.to(device=obj.params.device, dtype=obj.params.dtype)


def _minibatches(obj: Objective, batch_size: int, gen: torch.Generator) -> list[Any]:
    """One epoch of shuffled mini-batches from the objective's own (prepared) data."""
    batches = list(obj.batches())
    tensor_tuples = all(isinstance(b, (tuple, list)) and all(isinstance(x, torch.Tensor) for x in b) for b in batches)
    if not tensor_tuples:  # mappings or other structures: keep the objective's batches, in a shuffled order
        order = torch.randperm(len(batches), generator=gen).tolist()
        return [batches[i] for i in order]
    cols = [torch.cat([b[i] for b in batches]) for i in range(len(batches[0]))]
    n = cols[0].shape[0]
    perm = torch.randperm(n, generator=gen).to(cols[0].device)
    return [tuple(c[perm[i:i + batch_size]] for c in cols) for i in range(0, n, batch_size)]


def _rows(batch: Any) -> int:
    if isinstance(batch, (tuple, list)):
        return int(batch[-1].shape[0])
    if isinstance(batch, Mapping):
        first = next(iter(batch.values()))
        return int(first.shape[0])
    return int(batch.shape[0])


def _recomputed_model(obj: Objective, theta: torch.Tensor) -> nn.Module:
    """The model at θ with BatchNorm statistics re-estimated on the objective's training batches."""
    model = obj.model_at(theta)
    for bn in _bn_layers(model):
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average: every batch weighs the same
    model.train()
    start = time.perf_counter()
    with torch.no_grad():
        for batch in obj.batches():
            if isinstance(batch, Mapping):
                model(**{k: v for k, v in batch.items() if k != "labels"})
            else:
                model(*batch[:-1])
    model.eval()
    obj.record("losses", 0, 1.0, time.perf_counter() - start)  # the statistics pass is one pass over the data
    return model


class _Evaluator:
    """Loss and accuracy at many θ on train (and test), with BatchNorm recomputed per point when asked."""

    def __init__(self, obj: Objective, test: Objective | None, recompute_bn: bool, memory_mb: float):
        self.obj, self.test, self.bn, self.memory_mb = obj, test, recompute_bn, memory_mb
        self.extra = Cost()

    def curve(self, thetas: torch.Tensor, progress: bool, what: str) -> dict[str, np.ndarray]:
        metrics = ["loss", "accuracy"]
        out: dict[str, list] = {}
        splits = [("train", self.obj), ("test", self.test)]
        if not self.bn:
            for split, o in splits:
                if o is None:
                    continue
                with progress_bar(len(thetas), f"{what} ({split})", enabled=progress) as advance:
                    vals = o.values_at(thetas, metrics, memory_mb=self.memory_mb)
                    advance(len(thetas))
                for m, v in zip(metrics, vals, strict=True):
                    out[f"{split}_{m}"] = v.detach().cpu().double().numpy()
            return out
        with progress_bar(len(thetas), f"{what} (BN recomputed)", enabled=progress) as advance:
            for theta in thetas:
                model = _recomputed_model(self.obj, theta)
                for split, o in splits:
                    if o is None:
                        continue
                    view = o.replace(model=model)
                    loss, acc = view.values_at(view.params[None], metrics, chunk_size=1)
                    self.extra = self.extra + view.cost
                    out.setdefault(f"{split}_loss", []).append(float(loss[0]))
                    out.setdefault(f"{split}_accuracy", []).append(float(acc[0]))
                advance()
        return {k: np.asarray(v, dtype=float) for k, v in out.items()}

    def plane(self, origin: torch.Tensor, vectors: torch.Tensor, coefs: np.ndarray, progress: bool) -> np.ndarray:
        if not self.bn:
            vals, _ = evaluate_points(self.obj, origin, vectors, coefs, accuracy=False, memory_mb=self.memory_mb,
                                      progress=progress, description="plane")
            return vals["loss"]
        losses = []
        with progress_bar(len(coefs), "plane (BN recomputed)", enabled=progress) as advance:
            for c in coefs:
                theta = origin + torch.as_tensor(c, dtype=vectors.dtype, device=vectors.device) @ vectors
                view = self.obj.replace(model=_recomputed_model(self.obj, theta))
                losses.append(float(view.values_at(view.params[None], ["loss"], chunk_size=1)[0][0]))
                self.extra = self.extra + view.cost
                advance()
        return np.asarray(losses)


# --------------------------------------------------------------------------------------------- the call
def connect(
    obj: Objective,
    theta_a: Any,
    theta_b: Any,
    curve: str = "bezier",
    *,
    test: Objective | None = None,
    epochs: int = 20,
    batch_size: int = 64,
    optimizer: str = "adam",
    lr: float = 1e-2,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    steps: int = 41,
    plane_steps: int = 31,
    plane_margin: float = 0.25,
    recompute_bn: bool | str = "auto",
    theta_c: Any = None,
    memory_mb: float = 512.0,
    seed: int = 0,
    progress: bool = True,
    meta: dict | None = None,
) -> Connection:
    """Train the control point θ_c of a ``curve`` (``"bezier"`` or ``"polychain"``) from θ_a to θ_b and
    measure loss and accuracy along it, next to the straight line (module doc for the curves, the training
    objective and both barrier definitions).

    ``obj``: the training objective (built with ``loss=``: its data are the training data, its model any
    ``nn.Module``); ``theta_a``/``theta_b``: flat vectors in ``obj.params`` layout, or models of the same
    architecture. ``test``: an optional Objective on held-out data, evaluated along both paths.
    Training: ``epochs`` passes over ``obj``'s data in shuffled mini-batches of ``batch_size`` rows, one
    t ~ U(0, 1) per step, ``optimizer`` ``"adam"`` or ``"sgd"`` (with ``momentum``) at ``lr``, constant.
    ``theta_c``: the starting control point (default the midpoint, i.e. the straight line).
    ``steps``: points in t ∈ [0, 1] along each path; ``plane_steps``: points per axis of the plane
    (0 skips the plane), which extends ``plane_margin`` × ‖θ_b − θ_a‖ beyond the three points.
    ``recompute_bn``: ``"auto"`` (when the model has BatchNorm), True or False. ``seed`` fixes the
    mini-batch order and the t drawn. The cost is that of every objective involved.
    """
    require_choice("curve", curve, CURVES)
    require_choice("optimizer", optimizer, OPTIMIZERS)
    require_positive_int("epochs", epochs)
    require_positive_int("batch_size", batch_size)
    require_positive("lr", lr)
    require_positive_int("steps", steps)
    if steps < 3:
        raise FlatminimaError(f"steps must be >= 3 points along t (0, something inside, 1), got {steps}.")
    if isinstance(plane_steps, bool) or not isinstance(plane_steps, int) or plane_steps < 0 or plane_steps == 1:
        raise FlatminimaError(f"plane_steps must be 0 (no plane) or an int >= 2, got {plane_steps!r}.")
    if not obj.has_outputs:
        raise FlatminimaError("connect needs an Objective built with `loss=` (batches (inputs, targets)): the "
                              "curve is trained on model outputs and accuracy is reported along it.")
    a, b = _vector(obj, theta_a, "theta_a"), _vector(obj, theta_b, "theta_b")
    if torch.equal(a, b):
        raise FlatminimaError("theta_a and theta_b are the same point; there is nothing to connect.")
    base = obj.model_at()
    has_bn = bool(_bn_layers(base))
    if recompute_bn == "auto":
        recompute_bn = has_bn
    elif recompute_bn and not has_bn:
        raise FlatminimaError("recompute_bn=True but the model has no BatchNorm layers; leave it 'auto' or off.")
    recompute_bn = bool(recompute_bn)
    info = {"model": type(base).__name__} | (meta or {})
    start_cost = (obj.cost, test.cost if test is not None else Cost())
    start_time = time.perf_counter()

    # ------------------------------------------------------------------ train θ_c
    # BatchNorm: train with batch statistics (the running ones belong to θ_a); dropout stays off (eval).
    train_obj = obj.replace(mode="train", fixed_mask=_has_dropout(base)) if has_bn else obj
    c = _vector(obj, theta_c, "theta_c") if theta_c is not None else (a + b) / 2
    c = c.clone().requires_grad_(True)
    opt = (torch.optim.Adam([c], lr=lr, weight_decay=weight_decay) if optimizer == "adam"
           else torch.optim.SGD([c], lr=lr, momentum=momentum, weight_decay=weight_decay))
    gen = torch.Generator().manual_seed(seed)
    loss_fn = train_obj.loss_function
    total_rows = sum(_rows(bt) for bt in train_obj.batches())
    history: list[float] = []
    steps_per_epoch = math.ceil(total_rows / batch_size)
    with progress_bar(epochs * steps_per_epoch, f"training the {curve} curve", enabled=progress) as advance:
        for _ in range(epochs):
            run, seen = 0.0, 0
            for batch in _minibatches(train_obj, batch_size, gen):
                t0 = time.perf_counter()
                t = float(torch.rand((), generator=gen))
                phi = curve_point(a, c, b, t, curve)
                out, y = train_obj.outputs(phi, batch)
                loss = loss_fn(out, y)
                if not torch.isfinite(loss):
                    raise FlatminimaError(f"the curve's training loss became {float(loss)} at t={t:.3f}; lower lr "
                                          f"(now {lr}) or use optimizer='adam'.")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                rows = _rows(batch)
                train_obj.record("grads", 1, rows / total_rows, time.perf_counter() - t0)
                run, seen = run + float(loss.detach()) * rows, seen + rows
                advance(loss=float(loss.detach()))
            history.append(run / seen)
    c = c.detach()

    # ------------------------------------------------------------------ evaluate both paths
    line = interpolate(obj, a, b, steps=steps, test=test, recompute_bn=recompute_bn, memory_mb=memory_mb,
                       progress=progress, label="straight line", meta=info)
    t_grid = np.asarray(line.axes[0], dtype=float)
    ev = _Evaluator(obj, test, recompute_bn, memory_mb)
    thetas = torch.stack([curve_point(a, c, b, float(t), curve) for t in t_grid])
    values = ev.curve(thetas, progress, f"{curve} curve")

    # ------------------------------------------------------------------ the plane through θ_a, θ_b, θ_c
    plane = None
    if plane_steps:
        plane = _plane(ev, a, b, c, thetas, t_grid, plane_steps, plane_margin, seed, progress)

    cost = (obj.cost - start_cost[0]) + ev.extra + (train_obj.cost if train_obj is not obj else Cost())
    if test is not None:
        cost = cost + (test.cost - start_cost[1])
    cost.seconds = time.perf_counter() - start_time
    info |= {"recompute_bn": recompute_bn, "train_mode_batchnorm": has_bn, "epochs": epochs,
             "batch_size": batch_size, "optimizer": optimizer, "lr": lr, "seed": seed, "steps": steps,
             "distance_ab": float(torch.linalg.vector_norm(b - a)),
             "distance_c_to_midpoint": float(torch.linalg.vector_norm(c - (a + b) / 2)),
             "barrier_definition": BARRIER_DEFINITION}
    return Connection(t=t_grid, values=values, line=line, barrier=_barriers(t_grid, values),
                      line_barrier=_barriers(t_grid, line.values), theta_c=c, curve=curve, plane=plane,
                      history=history, meta=info, cost=cost)


def _plane(ev: _Evaluator, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, curve_thetas: torch.Tensor,
           t_grid: np.ndarray, n: int, margin: float, seed: int, progress: bool) -> dict[str, Any]:
    """Orthonormal axes e1 ∝ θ_b − θ_a, e2 ∝ the part of θ_c − θ_a orthogonal to e1; losses on a grid."""
    d64 = (b - a).double()
    length = float(torch.linalg.vector_norm(d64))
    e1 = d64 / length
    w = (c - a).double()
    e2 = w - (w @ e1) * e1
    if float(torch.linalg.vector_norm(e2)) < 1e-9 * length:  # θ_c on the line: any orthogonal direction
        g = torch.randn(a.numel(), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        e2 = g.to(a.device) - (g.to(a.device) @ e1) * e1
    e2 = e2 / torch.linalg.vector_norm(e2)
    basis = torch.stack([e1, e2])

    def coords(thetas: torch.Tensor) -> np.ndarray:
        return ((thetas.double() - a.double()) @ basis.T).cpu().numpy()

    pts = coords(torch.stack([a, b, c]))
    curve_xy = coords(curve_thetas)
    line_xy = np.stack([t_grid * length, np.zeros_like(t_grid)], 1)
    lo, hi = np.minimum(pts.min(0), curve_xy.min(0)), np.maximum(pts.max(0), curve_xy.max(0))
    hi[1] = max(hi[1], 0.3 * length)  # a flat curve still gets a visible band around the line
    lo[1] = min(lo[1], -0.3 * length)
    x = np.linspace(lo[0] - margin * length, hi[0] + margin * length, n)
    y = np.linspace(lo[1] - margin * length, hi[1] + margin * length, n)
    coefs = np.stack(np.meshgrid(x, y, indexing="ij"), -1).reshape(-1, 2)
    loss = ev.plane(a, basis.to(a.dtype), coefs, progress).reshape(n, n)
    return {"x": x, "y": y, "loss": loss, "points": pts, "curve": curve_xy, "line": line_xy}

