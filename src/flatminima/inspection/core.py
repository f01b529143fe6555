"""``flatminima.inspect``: the geometry of one trained model on one page.

Every number comes from one public library call on one :class:`~flatminima.Objective` (the model's loss over
the given data, exact full-data means), with that call's error estimate and cost:

    top-k eigenvalues, λmin     :func:`flatminima.curvature.eigenvalues` (Lanczos, certified residuals)
    trace                       :func:`flatminima.curvature.trace` (Hutch++; Meyer et al. 2021)
    spectral density            :func:`flatminima.curvature.spectral_density` (SLQ; Lin, Saad & Yang 2016)
    per-layer λmax / trace      :func:`flatminima.curvature.per_layer` (one block per module)
    sharpness measures          :func:`flatminima.sharpness.measure` at their defaults
    1-D slice                   :func:`flatminima.landscape.slice_1d` along the top eigenvector v₁, beside the
                                quadratic model L(θ₀) + ½λ₁α²
    2-D slice                   :func:`flatminima.landscape.slice_2d`, filter-normalised (Li et al. 2018)
    stability threshold         :func:`flatminima.dynamics.stability_threshold`: 2/η (GD), (2+2β)/η (heavy
                                ball), (2+2β₁)/((1−β₁)η) against λmax(P⁻¹H) for Adam (Cohen et al. 2021, 2022)
    compared models             :func:`flatminima.landscape.interpolate` barriers (Frankle et al. 2020) and
                                the overlap ‖UᵢᵀUⱼ‖²_F / k of the top-k eigenspaces (1: the same subspace,
                                k/dim expected for random ones; Gur-Ari et al. 2018)

The work is bounded by a budget of Hessian-vector products (:mod:`flatminima.inspection.budget`), the warnings
follow stated rules (:mod:`flatminima.inspection.rules`), and the page is written by
:mod:`flatminima.inspection.page`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import FlatminimaError, NonFiniteLossError
from ..jsonable import plain
from ..objective import Cost, Objective
from ..progress import progress_bar
from . import rules
from .budget import Plan, lanczos_bound, plan_budget

__all__ = ["OPTIMIZERS", "Inspection", "check_compatible", "check_optimizer", "inspect", "objective", "sharpness_names"]

OPTIMIZERS = ("sgd", "momentum", "adam")
TOL = 1e-4  # Lanczos tolerance on the relative residual (as `flatminima curvature`)


@dataclass
class Inspection:
    """Everything on the page: the library results (each with its error and cost), the warnings, the plan.

    ``html`` is the page (``None`` until written), ``folder`` the folder holding it with ``inspection.json``,
    the CSVs and the figures. :meth:`to_dict` is what ``inspection.json`` holds."""

    name: str
    objective: dict[str, Any]
    loss: float
    accuracy: float | None
    plan: Plan
    top: Any = None
    bottom: Any = None
    trace: Any = None
    density: Any = None
    per_layer: Any = None
    sharpness: dict[str, Any] = field(default_factory=dict)
    sharpness_omitted: dict[str, str] = field(default_factory=dict)
    slice_1d: Any = None
    slice_2d: Any = None
    stability: dict[str, Any] | None = None
    compare: dict[str, Any] | None = None
    warnings: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    cost: Cost = field(default_factory=Cost)
    seconds: float = 0.0
    estimated_seconds: float = float("nan")
    settings: dict[str, Any] = field(default_factory=dict)
    folder: Path | None = None
    html: Path | None = None
    files: list[str] = field(default_factory=list)

    @property
    def lambda_max(self) -> float:
        return float(self.top.values[0])

    @property
    def saddle(self) -> bool:
        return any(w["kind"] == "saddle" for w in self.warnings)

    def to_dict(self) -> dict[str, Any]:
        def d(x: Any) -> Any:
            return x.to_dict() if hasattr(x, "to_dict") else x

        out = {"name": self.name, "objective": self.objective, "loss": self.loss, "accuracy": self.accuracy,
               "plan": self.plan.to_dict(), "warnings": self.warnings, "notes": self.notes,
               "skipped": self.skipped, "cost": self.cost.to_dict(), "seconds": self.seconds,
               "estimated_seconds": self.estimated_seconds, "settings": self.settings,
               "top": d(self.top), "bottom": d(self.bottom), "trace": d(self.trace),
               "per_layer": d(self.per_layer),
               "sharpness": {k: m.to_dict() for k, m in self.sharpness.items()},
               "sharpness_omitted": self.sharpness_omitted, "stability": self.stability,
               "html": str(self.html) if self.html else None, "files": self.files}
        if self.density is not None:
            dens = self.density
            out["density"] = {"negative_mass": dens.negative_mass, "negative_mass_stderr": dens.negative_mass_stderr,
                              "bulk_edge": dens.bulk_edge, "outliers": dens.outliers, "samples": dens.samples,
                              "steps": dens.steps, "sigma": dens.sigma, "cost": dens.cost.to_dict()}
        for key in ("slice_1d", "slice_2d"):
            s = getattr(self, key)
            out[key] = None if s is None else {"axes": [a.tolist() for a in s.axes], "loss": s.loss.tolist(),
                                               "directions": s.meta.get("directions"), "cost": s.cost.to_dict()}
        if self.compare is not None:
            c = dict(self.compare)
            c.pop("surfaces", None)
            out["compare"] = c
        return plain(out)


# ---------------------------------------------------------------------------------------------- inputs
def _data(data: Any) -> Any:
    """What the Objective takes: a flatminima Dataset's train split, (X, y), a DataLoader or batches."""
    from ..data import Dataset

    if isinstance(data, Dataset):
        return data.train
    if torch.is_tensor(data) or isinstance(data, np.ndarray):
        raise FlatminimaError("data has no labels: give (inputs, targets), a DataLoader of (inputs, targets) "
                              "batches or a flatminima Dataset; the loss needs the targets.")
    if isinstance(data, (tuple, list)) and len(data) == 1:
        raise FlatminimaError("data has no labels: a 1-tuple holds only the inputs; give (inputs, targets).")
    return data


def objective(model: nn.Module, data: Any, loss: Any = "cross_entropy", *, dtype: Any = None,
              device: Any = None) -> Objective:
    """The Objective :func:`inspect` measures: ``model``'s mean loss over ``data``, the loss resolved by
    :func:`flatminima.train.loss_function` (``"cross_entropy"``, ``"mse"``, a callable or
    ``"module:function"``). Build it this way to reproduce any number of the page."""
    from ..train.losses import loss_function

    return Objective(model, loss_function(loss), _data(data), dtype=dtype, device=device)


def _loss_at(obj: Objective, what: str) -> float:
    try:
        return obj.loss()
    except NonFiniteLossError as err:
        raise FlatminimaError(f"the loss of {what} is not finite ({err}); its geometry is undefined. Check the "
                              "checkpoint (diverged training?), the data and the loss.") from None


def _state(other: Any) -> dict[str, torch.Tensor]:
    from ..train import load_checkpoint

    if isinstance(other, nn.Module):
        return other.state_dict()
    if isinstance(other, (str, Path)):
        return load_checkpoint(other)["model"]
    if isinstance(other, dict):
        return other
    raise FlatminimaError(f"a compared model must be an nn.Module, a state dict or a checkpoint path, got "
                          f"{type(other).__name__}.")


def check_compatible(model: nn.Module, state: dict[str, torch.Tensor], name: str) -> None:
    """Refuse ``state`` unless it has exactly ``model``'s tensors with the same shapes (naming the first
    parameter that differs)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    if missing or extra:
        raise FlatminimaError(f"{name} is not the same architecture: "
                              + (f"parameter {missing[0]!r} is missing" if missing else "")
                              + (", " if missing and extra else "")
                              + (f"it has parameter {extra[0]!r} the model lacks" if extra else "")
                              + f" ({len(missing)} missing, {len(extra)} extra). Compare checkpoints of one model.")
    for k, v in own.items():
        shape = tuple(getattr(state[k], "shape", ()))
        if tuple(v.shape) != shape:
            raise FlatminimaError(f"{name} is not the same architecture: parameter {k!r} has shape {shape} there "
                                  f"and {tuple(v.shape)} in the model. Compare checkpoints of one model.")


def _others(model: nn.Module, others: Sequence[Any], names: Sequence[str] | None) -> list[tuple[str, nn.Module]]:
    names = list(names) if names is not None else [
        Path(o).name if isinstance(o, (str, Path)) else f"model {i + 2}" for i, o in enumerate(others)]
    if len(names) != len(others):
        raise FlatminimaError(f"names has {len(names)} entries for {len(others)} compared models.")
    out = []
    for other, name in zip(others, names, strict=True):
        state = _state(other)
        check_compatible(model, state, repr(name))
        m = copy.deepcopy(model)
        m.load_state_dict(state)
        out.append((name, m.eval()))
    return out


def check_optimizer(optimizer: Any, lr: float | None, momentum: float = 0.9, beta1: float = 0.9) -> None:
    """Refuse an optimiser without a learning rate, a learning rate without an optimiser, an unknown name
    or hyperparameters out of range (before any work)."""
    if (optimizer is None and lr is None) or isinstance(optimizer, torch.optim.Optimizer):
        return
    if lr is None:
        raise FlatminimaError(f"optimizer={optimizer!r} without a learning rate: give lr (--lr) to get its "
                              "stability threshold.")
    if optimizer is None:
        raise FlatminimaError(f"lr={lr} without an optimiser: name one of {list(OPTIMIZERS)} (--optimizer); the "
                              "stability threshold depends on it (2/η for sgd, (2+2β)/η for momentum, "
                              "(2+2β₁)/((1−β₁)η) for adam).")
    if optimizer not in OPTIMIZERS:
        raise FlatminimaError(f"optimizer must be one of {list(OPTIMIZERS)} or a torch optimiser, got {optimizer!r}.")
    if not (isinstance(lr, (int, float)) and not isinstance(lr, bool) and lr > 0 and math.isfinite(lr)):
        raise FlatminimaError(f"lr must be a positive number, got {lr!r}.")
    if not 0 <= momentum < 1 or not 0 <= beta1 < 1:
        raise FlatminimaError(f"momentum and beta1 must be in [0, 1), got {momentum} and {beta1}.")


def _optimizer(optimizer: Any, lr: float | None, momentum: float, beta1: float, params: list[torch.Tensor]
               ) -> torch.optim.Optimizer | None:
    """A torch optimiser standing for the named one (its threshold depends only on the hyperparameters)."""
    check_optimizer(optimizer, lr, momentum, beta1)
    if optimizer is None and lr is None:
        return None
    if isinstance(optimizer, torch.optim.Optimizer):
        return optimizer
    if optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, betas=(beta1, 0.999))
    return torch.optim.SGD(params, lr=lr, momentum=momentum if optimizer == "momentum" else 0.0)


def sharpness_names() -> tuple[list[str], dict[str, str]]:
    """The registered measures the page computes at their defaults, and those left out with the reason."""
    from ..sharpness import available, entry

    names, left = [], {}
    for name in available():
        d = entry(name).defaults()
        if "init" in d and d["init"] is None:
            left[name] = "needs the initial weights (init=), which a checkpoint does not hold"
        else:
            names.append(name)
    return names, left


# ---------------------------------------------------------------------------------------------- the call
def inspect(
    model: nn.Module,
    data: Any,
    loss: str | Callable = "cross_entropy",
    *,
    others: Sequence[Any] | None = None,
    names: Sequence[str] | None = None,
    lr: float | None = None,
    optimizer: str | torch.optim.Optimizer | None = None,
    momentum: float = 0.9,
    beta1: float = 0.9,
    optimizer_state: dict | None = None,
    budget: str | int = "standard",
    seed: int = 0,
    out: str | Path | None = None,
    progress: bool = True,
    dtype: Any = None,
    device: Any = None,
    title: str | None = None,
    say: Callable[[str], None] | None = None,
) -> Inspection:
    """Measure the geometry of ``model`` at its weights on ``data`` and write one page (module doc).

    Args:
        model: the trained ``nn.Module`` (copied, never changed).
        data: ``(inputs, targets)``, a DataLoader of such batches, or a flatminima ``Dataset`` (its train split).
        loss: ``"cross_entropy"``, ``"mse"``, a callable ``(outputs, targets) -> mean`` or ``"module:function"``.
        others: models of the same architecture to compare (modules, state dicts or checkpoint paths), named by
            ``names`` (default: file names, or "model 2", ...). The inspected model is "this".
        lr, optimizer: the learning rate and ``"sgd"``, ``"momentum"`` (heavy ball, β = ``momentum``) or
            ``"adam"`` (β₁ = ``beta1``), or a torch optimiser; gives the stability threshold. For Adam the
            preconditioner P comes from ``optimizer_state`` (the optimiser's state dict, e.g. a flatminima
            checkpoint's ``"optimizer"``) or the torch optimiser's state; without one λmax(P⁻¹H) is skipped.
        budget: ``"fast"``, ``"standard"``, ``"full"`` or a number of Hessian-vector products
            (:mod:`flatminima.inspection.budget`).
        seed: seeds every random probe (the same seed gives the same page).
        out: the folder for page.html, inspection.json, CSVs and figures (default
            ``flatminima-out/inspect/<name>-<hash>``).
        progress: a progress bar over the parts (and the plan printed up front through ``say``).
        dtype, device: as for the Objective.
        say: where the plan and the skipped parts are told (default: stderr when ``progress``).
    """
    t0 = time.perf_counter()
    if say is None:
        say = (lambda text: print(text, file=sys.stderr, flush=True)) if progress else (lambda text: None)
    if not isinstance(model, nn.Module):
        raise FlatminimaError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise FlatminimaError(f"seed must be an integer, got {seed!r}.")
    from .budget import budget_settings

    budget_settings(budget)  # a bad budget name is refused before any work
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = _optimizer(optimizer, lr, momentum, beta1, [p.detach().clone().requires_grad_() for p in trainable]
                     if not isinstance(optimizer, torch.optim.Optimizer) else trainable)
    compared = _others(model, list(others or []), names)
    name = title or type(model).__name__

    obj = objective(model, data, loss, dtype=dtype, device=device)
    loss0 = _loss_at(obj, f"{name} at its weights")
    objs = [(n, objective(m, data, loss, dtype=dtype, device=device)) for n, m in compared]
    for n, o in objs:
        _loss_at(o, f"compared model {n!r}")
    from ..curvature import blocks_of
    from ..curvature.operators import random_vector

    blocks = blocks_of(obj, "module")
    measures, omitted = sharpness_names()
    plan = plan_budget(obj, budget, blocks=len(blocks), others=len(objs), measures=measures)
    if opt is not None:
        from ..dynamics import stability_threshold

        if stability_threshold(opt).preconditioned:  # λmax(P⁻¹H): one more Lanczos run of the top's size
            plan.caps["stability"] = lanczos_bound(plan.settings["top_iter"], 1)
    # Time one product and one loss first: the estimate up front is built from them.
    with obj.meter() as probe_cost:
        v = random_vector(obj.dim, torch.Generator().manual_seed(seed), obj.params)
        obj.hvp(v)  # the first product builds what later ones reuse: time the second
        start = time.perf_counter()
        obj.hvp(v)
        plan.seconds_per_hvp = time.perf_counter() - start
        start = time.perf_counter()
        obj.loss()
        plan.seconds_per_loss = time.perf_counter() - start
    s = plan.settings
    grid = s["slice_1d"] + s["slice_2d"] ** 2 + math.comb(len(objs) + 1, 2) * s["interpolation"]
    fixed = 300 + 40 * len(plan.measures)  # the measures' losses/gradients at their defaults, in passes (rough)
    ins = Inspection(name=name, objective=obj.describe(), loss=loss0, accuracy=_accuracy(obj), plan=plan,
                     sharpness_omitted=dict(omitted) | plan.measures_skipped, skipped=dict(plan.skipped),
                     estimated_seconds=plan.estimated_seconds(grid, fixed))
    ins.settings = {"budget": plan.budget, "seed": seed, "tol": TOL, "lr": lr,
                    "optimizer": optimizer if not isinstance(optimizer, torch.optim.Optimizer) else
                    type(optimizer).__name__, "momentum": momentum, "beta1": beta1,
                    "loss": loss if isinstance(loss, str) else getattr(loss, "__name__", "callable"),
                    "others": [n for n, _ in objs]}
    say(f"inspect {name}: {obj.dim} parameters, loss {loss0:.5g}; budget {plan.budget}: at most {plan.cap} "
        f"Hessian-vector products ({', '.join(f'{k} {v}' for k, v in plan.caps.items())}); one product "
        f"{plan.seconds_per_hvp * 1e3:.3g} ms, so at most ~{ins.estimated_seconds:.0f} s")
    for part, why in plan.skipped.items():
        say(f"skipped {part}: {why}")

    parts = ["eigenvalues", "smallest", "trace", "density", "per_layer", "sharpness", "slices", "stability",
             "compare"]
    with obj.meter() as total, progress_bar(len(parts), "inspect", enabled=progress) as advance:
        _curvature(ins, obj, seed)
        advance(4)
        _per_layer(ins, obj, seed)
        advance(1)
        _sharpness(ins, obj, seed)
        advance(1)
        _slices(ins, obj, seed)
        advance(1)
        _stability(ins, obj, opt, optimizer_state, seed)
        advance(1)
        compare_cost = _compare(ins, obj, objs, seed) if objs else Cost()
        advance(1)
    ins.cost = total + compare_cost + probe_cost
    ins.warnings = _warnings(ins, obj)
    ins.seconds = time.perf_counter() - t0
    folder = Path(out) if out is not None else Path("flatminima-out") / "inspect" / _run_name(name, ins.settings)
    from .page import write

    write(ins, folder)
    ins.seconds = time.perf_counter() - t0
    (folder / "inspection.json").write_text(json.dumps(ins.to_dict(), indent=2, default=float))
    return ins


def _run_name(name: str, settings: dict) -> str:
    digest = hashlib.sha1(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:6]
    return f"{name}-{digest}"


def _accuracy(obj: Objective) -> float | None:
    try:
        return float(obj.metric_batched(obj.params[None], "accuracy")[0])
    except Exception:  # noqa: BLE001 - regression targets or a loss_fn objective: no accuracy to show
        return None


# ---------------------------------------------------------------------------------------------- the parts
def _curvature(ins: Inspection, obj: Objective, seed: int) -> None:
    from ..curvature import eigenvalues, spectral_density, trace

    s, caps = ins.plan.settings, ins.plan.caps
    ins.top = eigenvalues(obj, s["k"], "largest", tol=TOL, max_iter=s["top_iter"], seed=seed, return_vectors=True)
    if "smallest" in caps:
        ins.bottom = eigenvalues(obj, 1, "smallest", tol=TOL, max_iter=s["bottom_iter"], seed=seed)
    if "trace" in caps:
        ins.trace = trace(obj, "hutch++", s["trace"], seed=seed)
    if "density" in caps:
        probes, steps = s["slq"]
        ins.density = spectral_density(obj, probes, steps, seed=seed)


def _per_layer(ins: Inspection, obj: Objective, seed: int) -> None:
    from ..curvature import per_layer

    p = ins.plan.per_layer
    if p:
        ins.per_layer = per_layer(obj, group="module", samples=p["samples"], max_iter=p["max_iter"], seed=seed,
                                  progress=False)


def _sharpness(ins: Inspection, obj: Objective, seed: int) -> None:
    from ..sharpness import measure

    for name in ins.plan.measures:
        try:
            ins.sharpness[name] = measure(obj, name, seed=seed)
        except FlatminimaError as err:
            ins.sharpness_omitted[name] = f"refused on this model: {err}"


def _slices(ins: Inspection, obj: Objective, seed: int) -> None:
    from ..landscape import Directions, directions, slice_1d, slice_2d

    s = ins.plan.settings
    lam = ins.lambda_max
    v1 = ins.top.vectors[:, 0].detach().clone()
    # Wide enough that the quadratic model ½λ₁α² reaches 4× the loss (or 0.2) at the ends.
    half = math.sqrt(8 * max(ins.loss, 0.05) / lam) if lam > 0 else 1.0
    d1 = Directions(v1[None], obj.params, "hessian", {"seed": seed, "eigenvalue": lam, "normalisation": "unit"})
    ins.slice_1d = slice_1d(obj, d1, steps=s["slice_1d"], span=(-half, half), progress=False,
                            label=f"{ins.name}: along v₁ (λ₁ = {lam:.4g})")
    dirs = directions(obj, "filter", 2, seed=seed)
    if float(dirs.vectors.norm(dim=1).min()) == 0.0:
        ins.skipped["slice_2d"] = ("the filter-normalised directions are zero: every weight row has zero norm, so "
                                   "Li et al.'s scaling gives no direction (the model sits at θ = 0)")
        return
    ins.slice_2d = slice_2d(obj, dirs, steps=s["slice_2d"], progress=False,
                            label=f"{ins.name}: filter-normalised plane")


def _stability(ins: Inspection, obj: Objective, opt: torch.optim.Optimizer | None, state: dict | None,
               seed: int) -> None:
    from ..curvature import eigenvalues
    from ..dynamics import Scaled, preconditioner, stability_threshold

    if opt is None:
        ins.skipped["stability"] = "no learning rate and optimiser given (lr=, optimizer=; --lr, --optimizer)"
        return
    th = stability_threshold(opt)
    st: dict[str, Any] = {"threshold": th.value, "lr": th.lr, "kind": th.kind, "formula": th.formula,
                          "preconditioned": th.preconditioned}
    if not th.preconditioned:
        st |= {"sharpness": ins.lambda_max, "bound": float(ins.top.error_bounds[0]), "what": "λmax(H)",
               "cost": ins.top.cost.to_dict(), "ratio": ins.lambda_max / th.value}
        ins.stability = st
        return
    params = [p for g in opt.param_groups for p in g["params"]]
    if state is not None:
        try:
            opt.load_state_dict(state)
        except (ValueError, KeyError, RuntimeError) as err:
            st["note"] = f"the optimiser state does not fit this model's parameters ({err})"
            state = None
    P = preconditioner(opt, params) if ("note" not in st) else None
    if P is None or P.numel() != obj.dim:
        st.setdefault("note", "no Adam state (second moments v_t) for these weights: λmax(P⁻¹H) needs the "
                              "optimiser's state (a flatminima checkpoint holds it; a bare state dict does not)")
        st |= {"sharpness": None, "what": "λmax(P⁻¹H)"}
        ins.stability = st
        ins.skipped["stability"] = st["note"]
        ins.plan.caps.pop("stability", None)
        return
    scaled = Scaled(obj, P.rsqrt())
    res = eigenvalues(scaled, 1, "largest", tol=TOL, max_iter=ins.plan.settings["top_iter"], seed=seed)
    st |= {"sharpness": float(res.values[0]), "bound": float(res.error_bounds[0]), "what": "λmax(P⁻¹H)",
           "cost": res.cost.to_dict(), "ratio": float(res.values[0]) / th.value, "converged": bool(res.converged[0])}
    ins.stability = st


def _compare(ins: Inspection, obj: Objective, objs: list[tuple[str, Objective]], seed: int) -> Cost:
    from ..curvature import eigenvalues, trace
    from ..landscape import interpolate

    s = ins.plan.settings
    names = ["this"] + [n for n, _ in objs]
    thetas = [obj.params] + [o.params for _, o in objs]
    losses = [ins.loss] + [o.loss() for _, o in objs]
    accs = [ins.accuracy] + [_accuracy(o) for _, o in objs]
    cost = Cost()
    eig = [ins.top]
    traces = [ins.trace]
    if "compare" in ins.plan.caps:
        for _, o in objs:
            with o.meter() as c:
                eig.append(eigenvalues(o, s["k"], "largest", tol=TOL, max_iter=s["compare_iter"], seed=seed,
                                       return_vectors=True))
                traces.append(trace(o, "hutch++", s["compare_trace"], seed=seed))
            cost = cost + c
    n = len(names)
    overlap = None
    if len(eig) == n:
        U = [e.vectors.to(torch.float64) for e in eig]
        k = min(u.shape[1] for u in U)
        overlap = [[float((U[i][:, :k].T @ U[j][:, :k]).pow(2).sum()) / k for j in range(n)] for i in range(n)]
    bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in obj.model_at().modules())
    barrier = [[0.0] * n for _ in range(n)]
    where = [[0.0] * n for _ in range(n)]
    noise = [[0.0] * n for _ in range(n)]
    surfaces = {}
    eps = float(torch.finfo(obj.dtype).eps)
    samples = int(ins.objective.get("samples", 1) or 1)
    for i in range(n):
        for j in range(i + 1, n):
            surf = interpolate(obj, thetas[i], thetas[j], steps=s["interpolation"], recompute_bn=bn, progress=False,
                               label=f"{names[i]} → {names[j]}")
            b = surf.meta["barrier"]["train_loss"]
            barrier[i][j] = barrier[j][i] = float(b["height"])
            where[i][j], where[j][i] = float(b["t"]), 1 - float(b["t"])
            noise[i][j] = noise[j][i] = rules.barrier_noise(surf.loss, samples, eps)
            surfaces[(i, j)] = surf
    rows = []
    for i, nm in enumerate(names):
        e = eig[i] if i < len(eig) else None
        t = traces[i] if i < len(traces) else None
        rows.append({"model": nm, "loss": losses[i], "accuracy": accs[i],
                     "lambda_max": float(e.values[0]) if e is not None else None,
                     "lambda_max_bound": float(e.error_bounds[0]) if e is not None else None,
                     "lambda_k": float(e.values[-1]) if e is not None else None,
                     "converged": bool(e.all_converged) if e is not None else None,
                     "trace": t.value if t is not None else None, "trace_stderr": t.stderr if t is not None else None,
                     "hvps": (e.cost.hvps if e is not None else 0) + (t.cost.hvps if t is not None else 0)})
    ins.compare = {"names": names, "losses": losses, "barrier": barrier, "barrier_t": where, "noise": noise,
                   "overlap": overlap, "k": s["k"], "rows": rows, "surfaces": surfaces, "recompute_bn": bn,
                   "interpolation_points": s["interpolation"],
                   "interpolation_cost": sum((x.cost for x in surfaces.values()), Cost()).to_dict()}
    return cost


def _warnings(ins: Inspection, obj: Objective) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if ins.bottom is not None:
        w = rules.saddle(float(ins.bottom.values[0]), float(ins.bottom.residuals[0]), ins.lambda_max)
        if w:
            out.append(w)
    st = ins.stability
    if st and st.get("sharpness") is not None:
        w = rules.stability(st["sharpness"], st["bound"], st["threshold"], st["formula"], st["what"])
        if w:
            out.append(w)
    c = ins.compare
    if c:
        n = len(c["names"])
        for i in range(n):
            for j in range(i + 1, n):
                w = rules.barrier(c["names"][i], c["names"][j], c["barrier"][i][j], c["losses"][i], c["losses"][j],
                                  c["noise"][i][j])
                if w:
                    out.append(w)
    for label, res in (("λ", ins.top), ("λmin", ins.bottom)):
        if res is None:
            continue
        for i in range(len(res.values)):
            nm = f"λ{i + 1}" if label == "λ" else "λmin"
            w = rules.not_converged(nm, float(res.values[i]), float(res.residuals[i]), res.tol, res.floor)
            if w:
                out.append(w)
    return out
