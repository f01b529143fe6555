"""Analytic landscapes where every flat/sharp mechanism can be checked exactly.

Each landscape is a :class:`Landscape`: a function ``f`` that maps a point ``x`` (shape ``(..., d)``) to a
value
(shape ``(...)``), so the same code evaluates one point or a whole batch of walkers, plus its known critical
points. ``Landscape.objective()`` wraps it with ``Objective.from_function`` so the curvature code (Lanczos,
Hutch++) works on it unchanged; :func:`grad` and :func:`hessian` give exact derivatives through autograd.

References: Rosenbrock (1960) Comput. J. 3:175; Bray & Dean (2007) PRL 98:150201 (critical points of Gaussian
fields, index rising with energy); Dauphin et al. (2014) NeurIPS (saddles in high dimensions).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import FlatminimaError, require_nonnegative, require_positive, require_positive_int
from ..objective import Objective

Fn = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Landscape:
    """An analytic f: Rᵈ → R, batched over leading dimensions, with its known critical points."""

    name: str
    f: Fn
    x0: torch.Tensor
    critical: dict[str, list[list[float]]] = field(default_factory=dict)
    info: str = ""

    @property
    def dim(self) -> int:
        return int(self.x0.numel())

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.f(torch.as_tensor(x, dtype=torch.float64))

    def objective(self, x0=None) -> Objective:
        """The landscape as an Objective (float64) so ``flatminima.curvature`` runs on it."""
        start = self.x0 if x0 is None else torch.as_tensor(x0, dtype=torch.float64)
        return Objective.from_function(self.f, start, dtype=torch.float64, name=self.name)

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        return grad(self.f, x)

    def hessian(self, x: torch.Tensor) -> torch.Tensor:
        return hessian(self.f, x)


def grad(f: Fn, x: torch.Tensor) -> torch.Tensor:
    """∇f at every row of ``x`` (rows are independent, so the gradient of the sum is the row gradients)."""
    x = torch.as_tensor(x, dtype=torch.float64).detach().requires_grad_(True)
    with torch.enable_grad():
        (g,) = torch.autograd.grad(f(x).sum(), x)
    return g.detach()


def hessian(f: Fn, x: torch.Tensor) -> torch.Tensor:
    """Exact dense Hessian ∇²f(x) at one point (torch.func, float64)."""
    x = torch.as_tensor(x, dtype=torch.float64).reshape(-1)
    return torch.func.hessian(f)(x).detach()


def _rest(x: torch.Tensor, start: int) -> torch.Tensor:
    """½ Σ x_j² over the extra coordinates: lets a 1-D or 2-D shape live in any dimension."""
    return 0.5 * (x[..., start:] ** 2).sum(-1)


def sphere(dim: int = 2) -> Landscape:
    """f(x) = ½‖x‖²: Hessian = I everywhere, the flattest well-conditioned bowl."""
    require_positive_int("dim", dim)
    x0 = torch.full((dim,), 1.5, dtype=torch.float64)
    return Landscape("sphere", lambda x: 0.5 * (x**2).sum(-1), x0, {"minimum": [[0.0] * dim]}, "f = ½‖x‖²")


def rosenbrock(dim: int = 2) -> Landscape:
    """f(x) = Σ 100(x_{i+1} − x_i²)² + (1 − x_i)² (Rosenbrock 1960); minimum at 1, λ_max ≈ 1001.6 in 2-D."""
    if not isinstance(dim, int) or dim < 2:
        raise FlatminimaError(f"dim must be an integer ≥ 2 for rosenbrock, got {dim!r}.")

    def f(x):
        return (100 * (x[..., 1:] - x[..., :-1] ** 2) ** 2 + (1 - x[..., :-1]) ** 2).sum(-1)

    x0 = torch.tensor([-1.2] + [1.0] * (dim - 1), dtype=torch.float64)
    return Landscape("rosenbrock", f, x0, {"minimum": [[1.0] * dim]}, "f = Σ 100(x_{i+1}−x_i²)² + (1−x_i)²")


def double_well(c: float = 0.9, s: float = 1.0, dim: int = 1) -> Landscape:
    """Two minima of exactly equal depth, one sharp and one flat.

    f(x) = (x₀² − 1)² · (1 + c·tanh(x₀/s)) + ½ Σ_{j≥1} x_j². Both minima x₀ = ±1 have f = 0 (the first factor
    vanishes doubly there), and f″(±1) = 8(1 ± c·tanh(1/s)): the minimum at +1 is sharp, at −1 flat. Barrier
    f(0) = 1. Requires 0 ≤ c < 1 so that the second factor stays positive (no other minima).
    """
    if not isinstance(c, (int, float)) or not 0 <= c < 1:
        raise FlatminimaError(f"c must be in [0, 1) so both minima stay at equal depth, got {c!r}.")
    require_positive("s", s)
    require_positive_int("dim", dim)

    def f(x):
        return (x[..., 0] ** 2 - 1) ** 2 * (1 + c * torch.tanh(x[..., 0] / s)) + _rest(x, 1)

    x0 = torch.zeros(dim, dtype=torch.float64)
    x0[0] = 0.1
    pts = [[1.0] + [0.0] * (dim - 1), [-1.0] + [0.0] * (dim - 1)]
    return Landscape(
        "double_well",
        f,
        x0,
        {"minimum": pts},
        f"sharp f''={8 * (1 + c * math.tanh(1 / s)):.3g} at +1,"
        f" flat f''={8 * (1 - c * math.tanh(1 / s)):.3g} at −1, equal depth 0",
    )


def golf_course(
    dim: int = 2, holes: int = 1, depth: float = 1.0, width: float = 0.05, seed: int = 0
) -> Landscape:
    """A flat plateau (f = 0, zero gradient) in the box [−1, 1]ᵈ with narrow deep Gaussian holes.

    f(x) = −Σ_k depth_k · exp(−‖x − c_k‖²/(2w²)) + 10 Σ_i relu(|x_i| − 1)²; the first hole is the deepest.
    Random search finds a hole with probability ~ (w/2)ᵈ per try: the entropic barrier of a golf course.
    """
    require_positive_int("dim", dim)
    require_positive_int("holes", holes)
    require_positive("depth", depth)
    require_positive("width", width)
    rng = np.random.default_rng(seed)
    centres = torch.as_tensor(rng.uniform(-0.7, 0.7, size=(holes, dim)), dtype=torch.float64)
    depths = torch.as_tensor([depth] + [depth * 0.5] * (holes - 1), dtype=torch.float64)

    def f(x):
        d2 = ((x[..., None, :] - centres) ** 2).sum(-1)
        wall = 10 * (torch.relu(x.abs() - 1) ** 2).sum(-1)
        return -(depths * torch.exp(-d2 / (2 * width**2))).sum(-1) + wall

    x0 = torch.full((dim,), -0.9, dtype=torch.float64)
    return Landscape("golf_course", f, x0, {"minimum": centres.tolist()}, f"{holes} holes of width {width}")


def _saddle_at_origin(name: str, f: Fn, start: list[float], info: str) -> Landscape:
    """A 2-D landscape whose known critical point is one saddle at the origin, started at ``start``."""
    return Landscape(name, f, torch.tensor(start, dtype=torch.float64), {"saddle": [[0.0, 0.0]]}, info)


def saddle() -> Landscape:
    """Strict saddle f = ½(x² − y²): Hessian diag(1, −1)."""
    return _saddle_at_origin("saddle", lambda x: 0.5 * (x[..., 0] ** 2 - x[..., 1] ** 2), [1.0, 1e-3], "½(x² − y²)")


def degenerate_saddle() -> Landscape:
    """Flat saddle f = ½x² − ¼y⁴: Hessian diag(1, 0) is PSD, yet a saddle (the second-order test fails)."""
    return _saddle_at_origin(
        "degenerate_saddle", lambda x: 0.5 * x[..., 0] ** 2 - 0.25 * x[..., 1] ** 4, [1.0, 1e-2], "½x² − ¼y⁴"
    )


def monkey_saddle() -> Landscape:
    """Monkey saddle f = x³ − 3xy²: Hessian is zero at the origin, three descending valleys."""
    return _saddle_at_origin(
        "monkey_saddle", lambda x: x[..., 0] ** 3 - 3 * x[..., 0] * x[..., 1] ** 2, [0.1, 0.1], "x³ − 3xy²"
    )


def quartic(dim: int = 1) -> Landscape:
    """Degenerate minimum f = Σ x⁴: zero Hessian at the minimum, every curvature measure says 'flat'."""
    require_positive_int("dim", dim)
    return Landscape(
        "quartic",
        lambda x: (x**4).sum(-1),
        torch.full((dim,), 1.0, dtype=torch.float64),
        {"minimum": [[0.0] * dim]},
        "Σ x⁴",
    )


def plateau(centre: float = 4.0, width: float = 1.0, dim: int = 2) -> Landscape:
    """A plateau before a descent: f = 1 − exp(−(x₀ − c)²/(2w²)) + ½ Σ_{j≥1} x_j².

    From x₀ = 0 the gradient is (c/w²)·exp(−c²/(2w²)) ≈ 1.3·10⁻³ for c = 4, w = 1: GD barely moves, while
    momentum accumulates and Adam normalises the gradient away.
    """
    require_positive("width", width)
    require_positive_int("dim", dim)

    def f(x):
        return 1 - torch.exp(-((x[..., 0] - centre) ** 2) / (2 * width**2)) + _rest(x, 1)

    x0 = torch.zeros(dim, dtype=torch.float64)
    return Landscape(
        "plateau", f, x0, {"minimum": [[centre] + [0.0] * (dim - 1)]}, "plateau then Gaussian descent"
    )


def random_field(
    dim: int = 8, features: int = 64, confinement: float = 0.3, scale: float = 1.0, seed: int = 0
) -> Landscape:
    """A random Gaussian field in Rᵈ with a quadratic confinement (Bray & Dean 2007, random-feature version).

    f(x) = ½μ‖x‖² + √(2/K) Σ_k a · cos(w_k·x + φ_k), w_k ~ N(0, I/ℓ²), φ_k ~ U[0, 2π): a stationary Gaussian
    field with squared-exponential covariance (Rahimi & Recht 2007) as K grows. Its critical points can be
    found with :func:`find_critical_points` and their index counted.
    """
    require_positive_int("dim", dim)
    require_positive_int("features", features)
    require_nonnegative("confinement", confinement)
    require_positive("scale", scale)
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(features, dim, generator=gen, dtype=torch.float64) / scale
    phi = 2 * math.pi * torch.rand(features, generator=gen, dtype=torch.float64)
    amp = math.sqrt(2.0 / features)

    def f(x):
        return 0.5 * confinement * (x**2).sum(-1) + amp * torch.cos(x @ w.T + phi).sum(-1)

    x0 = torch.randn(dim, generator=gen, dtype=torch.float64)
    return Landscape(
        "random_field", f, x0, {}, f"Gaussian random field, d={dim}, K={features}, μ={confinement}"
    )


@dataclass
class CriticalPoint:
    x: np.ndarray
    value: float
    grad_norm: float
    eigenvalues: np.ndarray

    @property
    def index(self) -> int:
        """Number of negative Hessian eigenvalues (Morse index)."""
        return int((self.eigenvalues < 0).sum())

    @property
    def index_fraction(self) -> float:
        return self.index / len(self.eigenvalues)


def find_critical_points(
    land: Landscape,
    starts: int = 200,
    *,
    radius: float = 3.0,
    iters: int = 60,
    gtol: float = 1e-9,
    max_step: float = 0.3,
    descend: float = 0.25,
    seed: int = 0,
) -> list[CriticalPoint]:
    """Critical points of any index by Newton's method on ∇f = 0 from many random starts at once.

    Newton's root finding x ← x − H⁻¹∇f is attracted to critical points of every index alike (which is why
    Dauphin et al. 2014 warn against it as an optimiser), so it samples saddles as well as minima. Steps are
    clipped to ``max_step`` for robustness; points with ‖∇f‖ < gtol are kept, deduplicated, and their exact
    Hessian eigenvalues give the index. A fraction ``descend`` of the starts first runs gradient descent so
    the
    minima are represented too (Newton from uniform starts rarely lands on them).
    """
    require_positive_int("starts", starts)
    require_positive_int("iters", iters)
    gen = torch.Generator().manual_seed(seed)
    x = (2 * torch.rand(starts, land.dim, generator=gen, dtype=torch.float64) - 1) * radius
    g1 = torch.func.grad(land.f)
    hess = torch.func.vmap(torch.func.hessian(land.f))
    gb = torch.func.vmap(g1)
    n_desc = int(descend * starts)
    for _ in range(300 if n_desc else 0):
        x[:n_desc] = x[:n_desc] - 0.1 * gb(x[:n_desc])
    for _ in range(iters):
        g, H = gb(x), hess(x)
        step = torch.linalg.lstsq(H, g[..., None]).solution[..., 0]
        norm = step.norm(dim=-1, keepdim=True).clamp(min=1e-300)
        x = x - step * torch.clamp(max_step / norm, max=1.0)
    g, H = gb(x), hess(x)
    gn = g.norm(dim=-1)
    found: list[CriticalPoint] = []
    for i in torch.argsort(land.f(x)).tolist():
        if not bool(torch.isfinite(gn[i])) or float(gn[i]) >= gtol:
            continue
        xi = x[i].numpy()
        if any(np.linalg.norm(c.x - xi) < 1e-5 for c in found):
            continue
        found.append(CriticalPoint(xi, float(land.f(x[i])), float(gn[i]), np.linalg.eigvalsh(H[i].numpy())))
    return found


LANDSCAPES: dict[str, Callable[..., Landscape]] = {
    "sphere": sphere,
    "rosenbrock": rosenbrock,
    "double_well": double_well,
    "golf_course": golf_course,
    "saddle": saddle,
    "degenerate_saddle": degenerate_saddle,
    "monkey_saddle": monkey_saddle,
    "quartic": quartic,
    "plateau": plateau,
    "random_field": random_field,
}


def get(name: str, **kwargs) -> Landscape:
    """A landscape by name; an unknown name lists the known ones."""
    if name not in LANDSCAPES:
        raise FlatminimaError(f"landscape must be one of {sorted(LANDSCAPES)}, got {name!r}.")
    return LANDSCAPES[name](**kwargs)
