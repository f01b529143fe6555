"""Training dynamics: progressive sharpening, the edge of stability and batch sharpness, tracked cheaply.

    opt = torch.optim.SGD(model.parameters(), lr=0.02)
    monitor = SharpnessMonitor(model, (X, y), loss="mse", optimizer=opt, every=10, store="runs/track.sqlite")
    for step in range(1, 2001):
        ...  # the user's forward, backward, opt.step(), scheduler.step()
        monitor.step(step)
    plot_dynamics(monitor.history, "runs/sharpness")   # PNG, SVG and the CSV behind it

A step of size η on a quadratic with curvature λ is stable only while λ stays below the optimiser's
threshold (each exact on a quadratic; tests/test_dynamics.py checks that the step diverges just above it
and converges just below):

    gradient descent              λmax(H)       < 2/η
    heavy ball (SGD momentum β)   λmax(H)       < (2 + 2β)/η
    Nesterov (torch's form)       λmax(H)       < (2 + 2β)/((1 + 2β)η)
    Adam / AdamW (β₁)             λmax(P⁻¹H)    < (2 + 2β₁)/((1 − β₁)η)       (38/η at β₁ = 0.9)
    RMSprop (momentum β)          λmax(P⁻¹H)    < (2 + 2β)/η                   (2/η without momentum)
    Adagrad                       λmax(P⁻¹H)    < 2/η_t,  η_t = η/(1 + (t − 1)·lr_decay)

with SGD dampening d replacing η by (1 − d)η. The Nesterov bound follows from the characteristic
polynomial z² − (1 + β)(1 − ηλ)z + β(1 − ηλ) of torch's update on a quadratic (its root at −1 is at
ηλ = (2 + 2β)/(1 + 2β)); Cohen et al. 2021 (appendix) give the same. The preconditioner of Adam is the one
of Cohen et al. 2022 ("Adaptive gradient methods at the edge of stability", eq. 2), bias-corrected:
P = (1 − β₁ᵗ)·diag(√(v_t/(1 − β₂ᵗ)) + ε), so the update is θ ← θ − η P⁻¹m_t, heavy ball with an
exponential average on P⁻¹H. λmax(P⁻¹H) is computed as λmax(P^(−1/2) H P^(−1/2)), the symmetric matrix
with the same eigenvalues. P and t are read from the optimiser's state (the latest update's), η from its
``param_groups`` when the row is recorded (so a schedule moves the threshold with it).

Cohen et al. 2021 ("Gradient descent on neural networks typically occurs at the edge of stability")
found that full-batch training sharpens until λmax reaches the threshold and then hovers there. For
mini-batch SGD the quantity that sits at 2/η is the *batch sharpness*
E_B[g_Bᵀ H_B g_B / ‖g_B‖²], the curvature of each mini-batch loss along its own gradient, measured
here on ``batch_samples`` mini-batches of ``batch_sharpness`` samples drawn (seeded) from the probe data.

Every value is one row of the tracking store of :mod:`flatminima.track` (measures ``loss``,
``lambda_max``, ``preconditioned_sharpness``, ``batch_sharpness``, ``threshold``, ``lr`` and
``edge_ratio`` = sharpness / threshold, the sharpness being the preconditioned one for adaptive
optimisers). λmax is that of the Hessian of the loss over the probe data (pass the full training set for
the full-data Hessian, or a fixed subset, which the row does not know: say so where you report it).
Each update of λmax is a Lanczos run warm-started from the previous top eigenvector, so it costs a few
Hessian-vector products instead of a cold run's tens (``benchmarks/dynamics.py``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import FlatminimaError, require_nonnegative, require_positive, require_positive_int
from .objective import Objective, Operator
from .track import Tracker

__all__ = ["DYNAMICS_MEASURES", "SharpnessMonitor", "Threshold", "edge_onset", "monitor", "plot_dynamics",
           "preconditioner", "stability_threshold", "summarize"]

DYNAMICS_MEASURES = ("loss", "lambda_max", "preconditioned_sharpness", "batch_sharpness", "threshold", "lr",
                     "edge_ratio")


@dataclass(frozen=True)
class Threshold:
    """The largest sharpness a step of the optimiser is stable at, on a quadratic."""

    value: float
    lr: float
    kind: str  # "gd", "heavy_ball", "nesterov", "adam", "rmsprop", "adagrad"
    preconditioned: bool  # compare with λmax(P⁻¹H) (adaptive optimisers) rather than λmax(H)
    formula: str


def stability_threshold(optimizer: torch.optim.Optimizer, group: int = 0) -> Threshold:
    """The stability threshold of ``optimizer``'s next step for parameter group ``group`` (see module doc)."""
    optimizer = _unwrap(optimizer)
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise FlatminimaError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}.")
    g = optimizer.param_groups[group]
    lr = float(g["lr"])
    if not lr > 0:
        raise FlatminimaError(f"the learning rate is {lr}; a stability threshold needs lr > 0.")
    if isinstance(optimizer, torch.optim.SGD):
        beta, damp = float(g.get("momentum", 0.0)), float(g.get("dampening", 0.0))
        if beta == 0:
            return Threshold(2 / lr, lr, "gd", False, "2/η")
        eta = lr * (1 - damp)
        if g.get("nesterov", False):
            return Threshold((2 + 2 * beta) / ((1 + 2 * beta) * eta), lr, "nesterov", False,
                             "(2+2β)/((1+2β)(1-d)η)")
        return Threshold((2 + 2 * beta) / eta, lr, "heavy_ball", False, "(2+2β)/((1-d)η)")
    if isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW)):
        b1 = float(g["betas"][0])
        return Threshold((2 + 2 * b1) / ((1 - b1) * lr), lr, "adam", True, "(2+2β₁)/((1-β₁)η)")
    if isinstance(optimizer, torch.optim.RMSprop):
        beta = float(g.get("momentum", 0.0))
        return Threshold((2 + 2 * beta) / lr, lr, "rmsprop", True, "(2+2β)/η")
    if isinstance(optimizer, torch.optim.Adagrad):
        t = max(_steps(optimizer, group), 1)
        eta = lr / (1 + (t - 1) * float(g.get("lr_decay", 0.0)))
        return Threshold(2 / eta, lr, "adagrad", True, "2/η_t")
    raise FlatminimaError(f"no stability threshold known for {type(optimizer).__name__}; supported: SGD (with or "
                          "without momentum/Nesterov), Adam, AdamW, RMSprop, Adagrad.")


def _unwrap(optimizer: Any) -> Any:
    """The torch optimiser inside an engine's wrapper (Lightning's ``LightningOptimizer``, accelerate's
    ``AcceleratedOptimizer``), whose class decides the threshold."""
    while optimizer is not None and isinstance(getattr(optimizer, "optimizer", None), torch.optim.Optimizer):
        optimizer = optimizer.optimizer
    return optimizer


def _steps(optimizer: torch.optim.Optimizer, group: int) -> int:
    for p in optimizer.param_groups[group]["params"]:
        st = optimizer.state.get(p)
        if st and "step" in st:
            return int(st["step"])
    return 0


def preconditioner(optimizer: torch.optim.Optimizer, params: Sequence[torch.Tensor]) -> torch.Tensor | None:
    """The diagonal P of an adaptive optimiser's latest update, flat in the order of ``params``.

    Adam/AdamW: (1 − β₁ᵗ)(√(v_t/(1 − β₂ᵗ)) + ε) (Cohen et al. 2022; with amsgrad the running maximum of v);
    RMSprop: √v + ε (centred: √(v − ḡ²) + ε); Adagrad: √(Σg²) + ε. ``None`` before the first update (no
    state yet) or for SGD, whose P is the identity.
    """
    optimizer = _unwrap(optimizer)
    if not isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW, torch.optim.RMSprop, torch.optim.Adagrad)):
        return None
    groups = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    parts = []
    for p in params:
        st, g = optimizer.state.get(p), groups.get(id(p))
        if g is None:
            raise FlatminimaError("a tracked parameter is not in the optimiser's param_groups; track the "
                                  "parameters the optimiser trains (params=None tracks every trainable one).")
        if not st or "step" not in st:
            return None
        eps = float(g["eps"])
        if isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW)):
            t = float(st["step"])
            b1, b2 = (float(b) for b in g["betas"])
            v = st["max_exp_avg_sq"] if g.get("amsgrad") else st["exp_avg_sq"]
            d = (1 - b1 ** t) * ((v / (1 - b2 ** t)).sqrt() + eps)
        elif isinstance(optimizer, torch.optim.RMSprop):
            v = st["square_avg"]
            if g.get("centered"):
                v = v - st["grad_avg"] ** 2
            d = v.sqrt() + eps
        else:
            d = st["sum"].sqrt() + eps
        parts.append(d.detach().reshape(-1).to(torch.float64))
    return torch.cat(parts)


def Scaled(obj: Objective, d: torch.Tensor) -> Operator:  # noqa: N802 - the old class's name, kept for callers
    """D H D with D = diag(d) (d = P^(−1/2)): symmetric, with the eigenvalues of P⁻¹H; an operator view of
    ``obj``'s Hessian, metered by ``obj`` and reserving inside its memory budget."""
    return obj.hessian.conjugated(d, kind="preconditioned hessian")


class SharpnessMonitor(Tracker):
    """Records λmax (warm-started Lanczos), the optimiser's stability threshold, the preconditioned and the
    batch sharpness and the loss every ``every`` steps; a :class:`~flatminima.track.Tracker` (same store,
    same ``step``/``record``/``series``/``close``, usable as a context manager and in the Lightning and
    Hugging Face callbacks of :mod:`flatminima.integrations`).

    Args:
        model: the user's model (read, never changed).
        data: the probe data, as for :class:`~flatminima.Objective`: the full training set gives the
            full-data Hessian (what the edge-of-stability results are about); a fixed subset is cheaper.
        optimizer: the optimiser in use (or pass it to :meth:`step` later); without it no threshold,
            ``lr``, ``edge_ratio`` or preconditioned rows are written, and at a step where its learning
            rate is 0 (a schedule's end) only the ``lr`` row.
        loss, loss_fn, params, mode, dtype, batch_size, memory_mb, distributed: as for the Objective.
        every, store, tensorboard, run, logger: as for the Tracker (every row also goes to ``logger``).
        tol: Lanczos' relative tolerance for λmax: with ``stop="gap"`` (default) on the gap-refined eigenvalue
            error bound min(r, r²/δ), with ``stop="residual"`` on the residual ‖Hv − λv‖ (see
            :func:`flatminima.curvature.eigenvalues`); the bound is each row's ``stderr``.
        max_iter: cap on the products of one λmax update (default Lanczos' own, 140).
        warm: start each Lanczos run from the previous top eigenvector (``False``: a cold, seeded start).
            A warm run converges to the eigenvalue of the vector it starts from: when another eigenvalue
            overtakes it (at the edge the top ones cross often) it can follow the old one for a while.
        refresh: every ``refresh``-th record starts cold (0: never), catching up with a crossing.
        extrapolate: start a warm run from v_t + (v_t − v_{t−1}) (the last two top eigenvectors, signs
            aligned) instead of v_t, following the eigenvector's drift along the trajectory; each run is still
            certified by its own residual, only its start changes (saves products when recording often:
            ``benchmarks/dynamics.py``). Off by default.
        batch_sharpness: mini-batch size B at which to measure E_B[g_Bᵀ H_B g_B/‖g_B‖²] (``None``: off);
            data must then be a tuple ``(X, y)`` of tensors (or a list of batches, each used as one).
        batch_samples: mini-batches averaged per record (its standard error is the row's ``stderr``).
        seed: seeds the cold starts and the mini-batch draws (the global RNG is never touched).
    """

    def __init__(self, model: nn.Module, data: Any, *, optimizer: torch.optim.Optimizer | None = None,
                 loss: Any = None, loss_fn: Any = None, every: int = 1, store: str | Path | None = None,
                 tensorboard: str | Path | None = None, run: str = "run", tol: float = 1e-3,
                 max_iter: int | None = None, stop: str = "gap", warm: bool = True,
                 refresh: int = 10, extrapolate: bool = False, batch_sharpness: int | None = None,
                 batch_samples: int = 8, seed: int = 0, params: Any = None, mode: str = "eval",
                 dtype: torch.dtype | None = None, batch_size: int = 1024, memory_mb: float | None = None,
                 distributed: bool = False, logger: Any = None):
        super().__init__(model, data, loss=loss, loss_fn=loss_fn, measures=("loss",), every=every, store=store,
                         tensorboard=tensorboard, run=run, params=params, mode=mode, dtype=dtype,
                         batch_size=batch_size, memory_mb=memory_mb, distributed=distributed, logger=logger)
        require_positive("tol", tol)
        require_positive_int("batch_samples", batch_samples)
        if batch_sharpness is not None:
            require_positive_int("batch_sharpness", batch_sharpness)
            if not (isinstance(data, (tuple, list)) and data):
                raise FlatminimaError("batch_sharpness needs data=(X, y) tensors or a list of batches to draw "
                                      "mini-batches from.")
        optimizer = _unwrap(optimizer)
        if optimizer is not None:
            stability_threshold(optimizer)  # refuse an unsupported optimiser now, not at step N
        self.optimizer, self.tol, self.max_iter, self.warm = optimizer, tol, max_iter, warm
        require_nonnegative("refresh", refresh)
        self.stop, self.refresh, self._records = stop, refresh, 0
        self.batch_sharpness, self.batch_samples, self.seed = batch_sharpness, batch_samples, seed
        self.threshold: Threshold | None = None
        self.extrapolate = extrapolate
        self._v0: torch.Tensor | None = None
        self._v_prev: torch.Tensor | None = None
        self._u0: torch.Tensor | None = None

    def step(self, step: int | None = None, optimizer: torch.optim.Optimizer | None = None
             ) -> list[dict[str, Any]]:
        """As :meth:`Tracker.step`; ``optimizer`` sets (or replaces) the optimiser whose threshold is used."""
        if optimizer is not None:
            self.optimizer = _unwrap(optimizer)
        return super().step(step)

    def record(self, step: int) -> list[dict[str, Any]]:
        from .curvature import eigenvalues

        obj = Objective(self.model, **self._objective_kw)
        rows: list[dict[str, Any]] = []

        def add(measure: str, value: float, cost: Any = None, start: float | None = None,
                stderr: float | None = None, converged: bool | None = None) -> None:
            rows.append({"run": self.run, "step": step, "measure": measure, "value": float(value),
                         "stderr": stderr, "hvps": cost.hvps if cost is not None else 0,
                         "data_passes": cost.data_passes if cost is not None else 0.0,
                         "seconds": time.perf_counter() - start if start is not None else 0.0,
                         "wall": time.time(), "converged": converged})

        start = time.perf_counter()
        with obj.meter() as cost:
            value = obj.loss()
        add("loss", value, cost, start)

        start = time.perf_counter()
        res = eigenvalues(obj, 1, tol=self.tol, max_iter=self.max_iter, seed=self.seed, return_vectors=True,
                          stop=self.stop, v0=self._start())
        new = res.vectors[:, 0].detach().clone()
        old = self._v0
        # the previous vector, sign-aligned with the new one, while both follow the same eigenvector
        cos = 0.0 if old is None else float(old @ new)
        self._v_prev = None if cos * cos < 0.5 else old * math.copysign(1.0, cos)
        self._v0 = new
        lam = float(res.values[0])
        add("lambda_max", lam, res.cost, start, float(res.error_bounds[0]), bool(res.converged[0]))
        sharpness = lam

        opt = self.optimizer
        if opt is not None and not float(opt.param_groups[0]["lr"]) > 0:
            # a schedule at its end (the Trainer's default decays linearly to 0): no step to be stable for,
            # so no threshold; the lr row says why
            add("lr", float(opt.param_groups[0]["lr"]))
        elif opt is not None:
            th = stability_threshold(opt)
            self.threshold = th
            if th.preconditioned:
                p = preconditioner(opt, self._tracked(obj))
                sharpness = None
                if p is not None:
                    start = time.perf_counter()
                    scaled = Scaled(obj, p.rsqrt())
                    pres = eigenvalues(scaled, 1, tol=self.tol, max_iter=self.max_iter, seed=self.seed,
                                       return_vectors=True, stop=self.stop,
                                       v0=None if self._start() is None else self._u0)
                    self._u0 = pres.vectors[:, 0].detach().clone()
                    sharpness = float(pres.values[0])
                    add("preconditioned_sharpness", sharpness, pres.cost, start, float(pres.error_bounds[0]),
                        bool(pres.converged[0]))
            add("threshold", th.value)
            add("lr", th.lr)
            if sharpness is not None:
                add("edge_ratio", sharpness / th.value)

        if self.batch_sharpness is not None:
            start = time.perf_counter()
            mean, err, cost = self._batch_sharpness(step)
            add("batch_sharpness", mean, cost, start, err)
        self._records += 1
        self._log(rows)
        return rows

    def _start(self) -> torch.Tensor | None:
        """The previous top eigenvector, or None (a cold start) at the first record and every ``refresh``."""
        cold = not self.warm or self._v0 is None or (self.refresh and self._records % self.refresh == 0)
        if cold:
            return None
        if self.extrapolate and self._v_prev is not None:
            return 2 * self._v0 - self._v_prev
        return self._v0

    def _tracked(self, obj: Objective) -> list[torch.Tensor]:
        named = dict(self.model.named_parameters())
        return [named[n] for n in obj.param_names]

    def _batch_sharpness(self, step: int) -> tuple[float, float | None, Any]:
        data = self._objective_kw["data"]
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + int(step))
        if isinstance(data, tuple) and all(isinstance(t, torch.Tensor) for t in data):
            n = data[0].shape[0]
            b = min(self.batch_sharpness, n)
            picks = [tuple(t[idx] for t in data) for idx in
                     (torch.randperm(n, generator=gen)[:b] for _ in range(self.batch_samples))]
        else:
            batches = list(data)
            order = torch.randint(len(batches), (self.batch_samples,), generator=gen).tolist()
            picks = [batches[i] for i in order]
        values, total = [], None
        for batch in picks:
            obj = Objective(self.model, **{**self._objective_kw, "data": [batch]})
            with obj.meter() as cost:
                g = obj.grad()
                norm2 = float(g.dot(g))
                if norm2 > 0:
                    values.append(float(g.dot(obj.hvp(g))) / norm2)
            total = cost if total is None else total + cost
        if not values:
            return math.nan, None, total
        mean = sum(values) / len(values)
        if len(values) < 2:
            return mean, None, total
        var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
        return mean, math.sqrt(var / len(values)), total


def monitor(model: nn.Module, data: Any, **kwargs: Any) -> SharpnessMonitor:
    """A :class:`SharpnessMonitor` for ``model`` on the probe ``data``; call ``.step(step)`` after each update."""
    return SharpnessMonitor(model, data, **kwargs)


# ------------------------------------------------------------------------------------------- analysis
def _table(rows: Iterable[Mapping[str, Any]], run: str | None = None) -> dict[str, list[float]]:
    rows = [r for r in rows if run is None or r.get("run") == run]
    steps = sorted({int(r["step"]) for r in rows})
    index = {s: i for i, s in enumerate(steps)}
    cols: dict[str, list[float]] = {"step": [float(s) for s in steps]}
    for name in DYNAMICS_MEASURES:
        cols[name] = [math.nan] * len(steps)
    for r in rows:
        if r["measure"] in cols and r["measure"] != "step":
            cols[r["measure"]][index[int(r["step"])]] = float(r["value"]) if r["value"] is not None else math.nan
    return cols


def edge_onset(steps: Sequence[float], sharpness: Sequence[float], threshold: Sequence[float],
               fraction: float = 0.9) -> float | None:
    """The first step where sharpness ≥ ``fraction``·threshold (the edge-of-stability phase starts), or None."""
    for s, lam, th in zip(steps, sharpness, threshold, strict=True):
        if math.isfinite(lam) and math.isfinite(th) and lam >= fraction * th:
            return s
    return None


def summarize(rows: Iterable[Mapping[str, Any]], *, run: str | None = None, fraction: float = 0.9
              ) -> dict[str, Any]:
    """How a tracked run met its edge: the onset step, and the sharpness/threshold ratio from then on
    (median, min, max), the sharpness being the preconditioned one where recorded, and λmax's products per
    update (median over warm updates)."""
    cols = _table(rows, run)
    sharp = _sharpness_column(cols)
    onset = edge_onset(cols["step"], sharp, cols["threshold"], fraction)
    after = [lam / th for s, lam, th in zip(cols["step"], sharp, cols["threshold"], strict=True)
             if onset is not None and s >= onset and math.isfinite(lam) and math.isfinite(th)]
    after.sort()
    out: dict[str, Any] = {"onset": onset, "records": len(cols["step"]),
                           "initial_ratio": next((lam / th for lam, th in zip(sharp, cols["threshold"], strict=True)
                                                  if math.isfinite(lam) and math.isfinite(th)), None)}
    if after:
        out |= {"ratio_median": after[len(after) // 2], "ratio_min": after[0], "ratio_max": after[-1]}
    return out


def _sharpness_column(cols: Mapping[str, list[float]]) -> list[float]:
    pre = cols["preconditioned_sharpness"]
    return pre if any(math.isfinite(v) for v in pre) else cols["lambda_max"]


def plot_dynamics(rows: Iterable[Mapping[str, Any]] | Tracker, stem: str | Path, *, run: str | None = None,
                  fraction: float = 0.9, title: str | None = None) -> list[str]:
    """λmax (or the preconditioned sharpness), the batch sharpness and the threshold against the step on a log
    scale, the loss below, the edge-of-stability phase (from the first step where the sharpness reaches
    ``fraction``·threshold) shaded; writes ``stem.png``, ``stem.svg`` and ``stem.csv`` and returns the paths."""
    from .plotting import plt, save_figure, save_table

    if isinstance(rows, Tracker):
        rows = rows.history
    cols = _table(rows, run)
    if not cols["step"]:
        raise FlatminimaError("no tracked rows to plot; record some steps first.")
    steps, sharp = cols["step"], _sharpness_column(cols)
    pre = sharp is cols["preconditioned_sharpness"]
    onset = edge_onset(steps, sharp, cols["threshold"], fraction)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 5.5), sharex=True, height_ratios=(2, 1))

    def finite(ys):
        pts = [(s, v) for s, v in zip(steps, ys, strict=True) if math.isfinite(v) and v > 0]
        return [p[0] for p in pts], [p[1] for p in pts]

    top.plot(*finite(sharp), color="C0", label="λmax(P⁻¹H)" if pre else "λmax(H)")
    if pre:
        top.plot(*finite(cols["lambda_max"]), color="C0", alpha=0.35, lw=1, label="λmax(H)")
    if any(math.isfinite(v) for v in cols["batch_sharpness"]):
        top.plot(*finite(cols["batch_sharpness"]), color="C2", label="batch sharpness")
    if any(math.isfinite(v) for v in cols["threshold"]):
        top.plot(*finite(cols["threshold"]), color="C3", ls="--", label="stability threshold")
    top.set_yscale("log")
    top.set_ylabel("sharpness")
    bottom.plot(*finite(cols["loss"]), color="k")
    bottom.set_yscale("log")
    bottom.set_ylabel("loss")
    bottom.set_xlabel("step")
    if onset is not None:
        for ax in (top, bottom):
            ax.axvspan(onset, steps[-1], color="C1", alpha=0.12, lw=0)
        top.axvline(onset, color="C1", lw=1, label=f"edge of stability (≥ {fraction:g}·threshold)")
    top.legend(fontsize=8, loc="lower right")
    if title:
        top.set_title(title)
    paths = save_figure(fig, stem)
    csv = Path(stem)
    csv = csv.with_suffix("") if csv.suffix.lower() in {".png", ".svg", ".pdf", ".csv"} else csv
    paths.append(save_table(csv.with_suffix(".csv"), cols))
    return paths
