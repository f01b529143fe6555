"""A noise-based statistical test: is this flat point a minimum or a saddle? (claim C6)

Idea (perturbed gradient descent, Jin et al. 2017, "How to escape saddle points efficiently", ICML): add
Gaussian noise δ_i ~ N(0, σ²I) to θ and run a few steps of gradient descent from θ + δ_i and, as a paired
control,
from θ itself. Let d_i = L(GDᵏ(θ + δ_i)) − L(GDᵏ(θ)).
- At a local minimum, both runs settle in the same basin, so d_i ≥ 0 (up to evaluation noise): the median of
  d_i is ≥ 0.
- At a saddle (strict or flat), the perturbed runs leave along a descent direction and d_i < 0 for most i.
The test is a one-sided sign test of H₀ "θ is a minimum" (median d_i ≥ 0): with K = #{d_i < −tol},
p = P(Binomial(n, ½) ≥ K). It is exact and distribution-free, so its false-alarm rate on minima is ≤ α
whatever
the (symmetric or not) evaluation noise, provided median d_i ≥ 0. Unlike the sign of the smallest Hessian
eigenvalue it also sees degenerate saddles (½x² − ¼y⁴) whose Hessian is positive semi-definite.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from scipy.stats import binom

from ..errors import require_in_range, require_nonnegative, require_positive, require_positive_int
from ..objective import Objective


@dataclass
class SaddleTestResult:
    """Outcome: 'saddle' if p < α else 'minimum'; d = paired loss differences; cost in gradients."""

    p_value: float
    verdict: str
    negatives: int
    n: int
    alpha: float
    d: torch.Tensor
    gradient_evaluations: int

    def to_dict(self) -> dict:
        return {
            "p_value": self.p_value,
            "verdict": self.verdict,
            "negatives": self.negatives,
            "n": self.n,
            "alpha": self.alpha,
            "median_d": float(self.d.median()),
            "gradient_evaluations": self.gradient_evaluations,
        }


def _descend(loss_grad: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, lr: float, steps: int):
    for _ in range(steps):
        x = x - lr * loss_grad(x)
    return x


def _batched_grad(f):
    def g(x):
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            (out,) = torch.autograd.grad(f(x).sum(), x)
        return out.detach()

    return g


def _descend_batched(f, x: torch.Tensor, lr: float, steps: int) -> torch.Tensor:
    """GD on every row; a row whose value has fallen 1 + |f(θ)| below the start has escaped and is frozen
    there
    (on unbounded saddles such as x³ − 3xy² it would otherwise overflow to −∞ − ∞ = NaN)."""
    grad = _batched_grad(f)
    with torch.no_grad():
        floor = float(f(x[:1])[0]) - 1.0 - abs(float(f(x[:1])[0]))
        active = torch.ones(len(x), dtype=torch.bool)
        for _ in range(steps):
            x = torch.where(active[:, None], x - lr * grad(x), x)
            active &= f(x) > floor
        return f(x)


def saddle_test(
    obj: Objective | Callable[[torch.Tensor], torch.Tensor],
    theta: torch.Tensor | None = None,
    *,
    sigma: float = 1e-2,
    n: int = 20,
    steps: int = 50,
    lr: float = 0.1,
    alpha: float = 0.05,
    loss_noise: float = 0.0,
    tol: float = 0.0,
    seed: int = 0,
) -> SaddleTestResult:
    """Sign test of 'minimum' against 'saddle' at θ by noise + short gradient descent (see module docstring).

    ``obj`` is an Objective (a network or ``Objective.from_function``) or a plain batched f: (..., d) → (...)
    (every toy landscape is), whose n runs then descend together as one tensor;
    ``loss_noise`` adds N(0, loss_noise²) to each loss evaluation (to emulate mini-batch noise in tests).
    """
    require_positive("sigma", sigma)
    require_positive_int("n", n)
    require_positive_int("steps", steps)
    require_positive("lr", lr)
    require_in_range("alpha", alpha, 0.0, 1.0, inclusive=False)
    require_nonnegative("loss_noise", loss_noise)
    require_nonnegative("tol", tol)
    if isinstance(obj, Objective):
        theta = obj.params if theta is None else theta
        loss, grad = obj.loss, obj.grad
    else:
        if theta is None:
            raise ValueError("theta is required when obj is a plain function")
        f = obj

        def loss(x):
            return float(f(x))

        def grad(x):
            x = x.detach().requires_grad_(True)
            with torch.enable_grad():
                (g,) = torch.autograd.grad(f(x), x)
            return g.detach()

    theta = torch.as_tensor(theta).detach().reshape(-1)
    gen = torch.Generator().manual_seed(seed)
    deltas = sigma * torch.randn((n, theta.numel()), generator=gen, dtype=theta.dtype)
    noise = loss_noise * torch.randn((n, 2), generator=gen, dtype=torch.float64)
    if isinstance(obj, Objective):
        base = loss(_descend(grad, theta.clone(), lr, steps))
        ends = torch.tensor(
            [loss(_descend(grad, theta + dl, lr, steps)) for dl in deltas], dtype=torch.float64
        )
    else:  # a batched analytic f: all n perturbed runs (and the control) descend as one tensor
        starts = torch.cat([theta[None], theta[None] + deltas])
        vals = _descend_batched(f, starts, lr, steps).to(torch.float64)
        base, ends = float(vals[0]), vals[1:]
    d = (ends + noise[:, 0]) - (base + noise[:, 1])
    k = int((d < -tol).sum())
    p = float(binom.sf(k - 1, n, 0.5))  # P(Bin(n, ½) ≥ k)
    return SaddleTestResult(p, "saddle" if p < alpha else "minimum", k, n, alpha, d, (n + 1) * steps)
