"""What an Objective's Hessian products rest on, checked before the first one is trusted.

:class:`ProductChecks` runs every Hessian-vector product of an Objective (the backends of
flatminima.objective._products, or central differences from flatminima.objective._finite_difference) and
keeps what it learned about them, which ``describe()`` and every curvature result report (:meth:`notes`):

- ``forward_over_reverse`` is checked at its first use: one product with it and one by double backward, on
  the first batch at θ with a seeded random probe u, must agree,

      ‖H_for u − H_db u‖ ≤ √ε_mach · ‖H_db u‖,

  or the Objective refuses with the measured difference. Why: torch's forward-mode derivatives are wrong for
  some operations. Measured (torch 2.13, float64): ``torch.func.jvp`` over ``jacrev`` of ``F.layer_norm``
  differs from the dense Hessian by 29% in the block of the LayerNorm weight, and forward-over-reverse
  products of whole models with LayerNorm (transformers, GPT-2, BERT, an MLP with one LayerNorm) by 1.6–6%.
  Double backward is exact there. A product that may be silently wrong is never returned.
- before the first analytic product the autograd graph of the first batch's loss is searched for custom
  autograd Functions whose backward is ``@once_differentiable``: double backward does not fail through them,
  it treats their second derivatives as zero (measured: 76% off on an MLP with such a tanh), so they are
  refused with the two ways out (a differentiable implementation, or ``hvp_method="finite_difference"``).
- ``finite_difference`` measures its error on its first product (Richardson, see
  flatminima.objective._finite_difference) and carries it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from ..errors import FlatminimaError
from ._finite_difference import FINITE_DIFFERENCE, central_difference, with_error
from ._products import HVP_BACKENDS, GraphCache, double_backward, forward_over_reverse

__all__ = ["ProductChecks"]

Batches = Callable[[], Iterable[Any]]
Terms = Callable[[torch.Tensor, Any], tuple[torch.Tensor, float]]
PROBE_SEED = 20240531  # the probe vector's seed: the check is the same at every run


class ProductChecks:
    """Runs an Objective's Hessian products and keeps the checks of their methods (see the module)."""

    def __init__(self) -> None:
        self.for_check: dict[str, Any] | None = None  # forward-over-reverse vs double backward on the probe
        self.fd_error: dict[str, Any] | None = None  # the finite differences' step and error estimate
        self.passes = 1.0  # passes over the data of the latest product (the meter records them)
        self.graph_checked = False  # the graph searched for functions without second derivatives
        self.fixed: dict[str, Any] = {}  # notes that hold for every product (attention backend, compiled model)

    def product(self, backend: str, batches: Batches, terms: Terms, theta: torch.Tensor, v: torch.Tensor,
                cache: GraphCache | None) -> tuple[torch.Tensor, float]:
        """(Σ_b H_b v in float64, Σ_b w_b) by ``backend``, after its check (see the module)."""
        self.passes = 1.0
        if backend == FINITE_DIFFERENCE:
            if self.fd_error is None:
                total, weight, self.fd_error = with_error(batches, terms, theta, v)
                self.passes = 4.0  # gradients at θ ± hv and θ ± 2hv
                return total, weight
            self.passes = 2.0
            return central_difference(batches, terms, theta, v)
        if not self.graph_checked:
            self.graph_checked = True
            once_differentiable(batches, terms, theta)
        if backend == "forward_over_reverse":
            self._check_forward_over_reverse(batches, terms, theta)
        return HVP_BACKENDS[backend](batches, terms, theta, v, cache)

    def _check_forward_over_reverse(self, batches: Batches, terms: Terms, theta: torch.Tensor) -> None:
        if self.for_check is None:
            self.for_check = self._compare(batches, terms, theta)
        if self.for_check["agrees"]:
            return
        diff = self.for_check["relative_difference"]
        raise FlatminimaError(
            f"hvp_method='forward_over_reverse' disagrees with double backward by {diff:.3g} (relative, on a "
            f"random probe on the first batch at θ; float tolerance {self.for_check['tolerance']:.1g}), so its "
            "products would be silently wrong: torch's forward-mode derivatives of some operations are wrong "
            "(measured: layer_norm's second derivatives in its weight, in every model with LayerNorm). Use "
            "hvp_method='double_backward' (exact; the default).")

    @staticmethod
    def _compare(batches: Batches, terms: Terms, theta: torch.Tensor) -> dict[str, Any]:
        first = next(iter(batches()), None)
        if first is None:
            return {"agrees": True, "relative_difference": 0.0, "tolerance": 0.0}

        def one() -> Iterable[Any]:
            return iter([first])

        gen = torch.Generator().manual_seed(PROBE_SEED)
        u = torch.randn(theta.shape, generator=gen, dtype=torch.float64).to(device=theta.device, dtype=theta.dtype)
        exact, _ = double_backward(one, terms, theta, u)
        forward, _ = forward_over_reverse(one, terms, theta, u)
        exact, forward = exact.to(torch.float64), forward.to(torch.float64)  # one batch: in θ's dtype
        scale = float(exact.norm())
        diff = float((forward - exact).norm()) / scale if scale > 0 else float((forward - exact).norm())
        tol = torch.finfo(theta.dtype).eps ** 0.5
        return {"agrees": bool(diff <= tol), "relative_difference": diff, "tolerance": tol}

    def notes(self, method: str) -> dict[str, Any]:
        """What the products of ``method`` rest on, for ``describe()`` and curvature results."""
        if method == FINITE_DIFFERENCE:
            return {"hvp_error": dict(self.fd_error) if self.fd_error is not None else
                    "estimated at the first product (none yet)"}
        if method == "forward_over_reverse" and self.for_check is not None:
            verdict = "agrees with" if self.for_check["agrees"] else "refused: differs from"
            return {"hvp_check": f"{verdict} double backward by {self.for_check['relative_difference']:.2g} "
                                 "on a probe"}
        return {}


def once_differentiable(batches: Batches, terms: Terms, theta: torch.Tensor) -> None:
    """Refuse a loss whose graph holds an autograd Function with a ``@once_differentiable`` backward (see the
    module): its second derivatives would be silently zero. One forward on the first batch, a graph walk."""
    first = next(iter(batches()), None)
    if first is None:
        return
    with torch.enable_grad():
        s, _ = terms(theta.detach().requires_grad_(True), first)
    seen, stack, found = set(), [s.grad_fn], []
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        backward = getattr(getattr(node, "_forward_cls", None), "backward", None)
        code = getattr(backward, "__code__", None)
        if code is not None and "once_differentiable" in getattr(code, "co_qualname", ""):
            found.append(node._forward_cls.__name__)
        stack.extend(fn for fn, _ in node.next_functions)
    if found:
        raise FlatminimaError(
            f"Hessian products need second derivatives, and the model uses {', '.join(sorted(set(found)))}, a custom "
            "autograd Function whose backward is marked @once_differentiable: double backward would treat its "
            "second derivatives as zero, a silently wrong product. Two ways out: implement it with "
            "differentiable operations (or a backward that is itself differentiable), or use "
            "hvp_method=\"finite_difference\" (central differences of exact gradients, with a stated error).")
