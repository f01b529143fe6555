"""Hessian-vector and Gauss-Newton-vector products over batches, as plain functions.

Each backend maps (batches, terms, θ, v) to (Σ_b H_b·v, Σ_b w_b), H_b the Hessian of batch b's summed
terms s_b, the sum in float64 over several batches and one batch's product as it is (:func:`add`); the
Objective divides by the weight (or not), all-reduces and meters the call. They know nothing of the
Objective, only of two callables:

    batches()              the prepared batches (moved, cast, split into memory chunks): the batch source's
    terms(θ, batch)        (s_b, w_b), s_b differentiable in θ: the loss terms'

and, for the GGN, ``outputs(θ, batch) -> (z, y)`` and ``loss_terms(z, y) -> (s, w)``. So one product's
calls per batch stay within three modules: this one, the batch source (flatminima.objective._batches) and
the loss terms (flatminima.objective._terms).

- ``double_backward``: ∇(∇s_b·v) per batch, the graph rebuilt for every product (measured faster on CPU).
- ``cached``: double backward reusing each batch's gradient graph while θ stays the same (a
  :class:`GraphCache` the Objective owns).
- ``forward_over_reverse``: ``torch.func.jvp`` of the reverse-mode gradient.
- :func:`ggn_terms`: J_bᵀ ∇²_z s_b J_b·v by forward- and reverse-mode products through the model outputs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.func import jacrev, jvp, vjp

from ..errors import FlatminimaError

__all__ = ["HVP_BACKENDS", "GraphCache", "ggn_terms", "no_second_derivative", "second_derivative_error", "zeros64"]

Batches = Callable[[], Iterable[Any]]
Terms = Callable[[torch.Tensor, Any], tuple[torch.Tensor, float]]
Backend = Callable[[Batches, Terms, torch.Tensor, torch.Tensor, "GraphCache | None"], tuple[torch.Tensor, float]]


def zeros64(like: torch.Tensor) -> torch.Tensor:
    """A float64 accumulator shaped like ``like``: a float32 model's sum over many batches stays exact."""
    return torch.zeros(like.shape, dtype=torch.float64, device=like.device)


def add(total: torch.Tensor | None, part: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``total + part`` for the sum over batches of the products ``part``, starting from ``total=None``.

    The first batch's product is kept as it is (in the model's dtype); a second batch turns the sum into a
    float64 accumulator, so sums over several batches stay exact-ish as before (and bitwise the same: the
    first addend is exact in float64). Why: with one batch (in-memory data under the batch size, the common
    case) the float64 accumulator was two float32 vectors, and dividing and casting it back three more, for
    nothing: the one product is already the exact sum (measured at 4M parameters, with the finiteness check's
    temporaries also gone: one ``hvp`` 5.0 -> 2.0 vectors of 4N bytes; benchmarks/objective_memory_4m.py).
    ``Objective.reduce`` divides it without a float64 detour where the weight is exact in its dtype (the same
    bits). A ``part`` that is ``v`` itself (autograd passes a
    gradient through unchanged when the graph is an identity) is copied: the result is the caller's own.
    """
    if total is None:
        return part.clone() if _shares_storage(part, v) else part
    if total.dtype != torch.float64:
        total = total.to(torch.float64)
    return total.add_(part)


def _shares_storage(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.device == b.device and a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


def summed(total: torch.Tensor | None, theta: torch.Tensor) -> torch.Tensor:
    """The sum :func:`add` built, or a float64 zero vector when there was no batch."""
    return zeros64(theta) if total is None else total


def second_backward(theta: torch.Tensor, loss: torch.Tensor | None, v: torch.Tensor, retain: bool,
                    grad: torch.Tensor | None = None) -> torch.Tensor:
    """∇(∇loss·v) at the leaf θ; ``grad`` (∇loss built with ``create_graph``) when already there."""
    if grad is None:
        (grad,) = torch.autograd.grad(loss, theta, create_graph=True, allow_unused=True)
    if grad is None or not grad.requires_grad:  # parameters the loss does not use: zero curvature
        return torch.zeros_like(theta)
    (hv,) = torch.autograd.grad(grad, theta, grad_outputs=v, retain_graph=retain, allow_unused=True)
    return torch.zeros_like(theta) if hv is None else hv


def double_backward(batches: Batches, terms: Terms, theta: torch.Tensor, v: torch.Tensor,
                    cache: GraphCache | None = None) -> tuple[torch.Tensor, float]:
    """Double backward per batch: ∇(∇s_b · v), the graph rebuilt for every product."""
    theta = theta.detach().requires_grad_(True)
    total, weight = None, 0.0
    for batch in batches():
        s, w = terms(theta, batch)
        total = add(total, second_backward(theta, s, v, retain=False), v)
        weight += w
    return summed(total, theta), weight


class GraphCache:
    """Every batch's gradient graph at one θ, kept between products (the ``cached`` backend's state).

    ``clear()`` frees it; the objective clears it whenever its chunks or budget change.
    """

    def __init__(self) -> None:
        self._at: tuple[torch.Tensor, torch.Tensor, list[tuple[torch.Tensor, float]]] | None = None

    def clear(self) -> None:
        self._at = None

    def __getstate__(self) -> dict:
        return {"_at": None}  # autograd graphs do not survive pickling: a copy rebuilds its own

    @property
    def held(self) -> bool:
        return self._at is not None

    def graphs(self, batches: Batches, terms: Terms, theta: torch.Tensor) -> tuple[torch.Tensor, list]:
        """(the leaf θ, [(∇s_b with its graph, w_b)]), built once per θ."""
        at = self._at
        if at is None or at[0].shape != theta.shape or not torch.equal(at[0], theta):
            self._at = None  # free the old graph before building the new one
            # The leaf is a copy (not θ's storage, which in-place writes to the working model would change
            # under the saved graph) and is also the θ the graph was built at: autograd never writes to it,
            # so no second copy is kept for the comparison above (one parameter-sized vector less held).
            leaf = theta.detach().clone().requires_grad_(True)
            grads = []
            for batch in batches():
                s, w = terms(leaf, batch)
                (g,) = torch.autograd.grad(s, leaf, create_graph=True, allow_unused=True)
                grads.append((g, w))
            self._at = at = (leaf.detach(), leaf, grads)
        return at[1], at[2]


def cached(batches: Batches, terms: Terms, theta: torch.Tensor, v: torch.Tensor,
           cache: GraphCache | None = None) -> tuple[torch.Tensor, float]:
    """Double backward reusing each batch's gradient graph while θ stays the same (one build per θ)."""
    if cache is None:
        raise FlatminimaError("the cached backend needs the objective's GraphCache.")
    leaf, grads = cache.graphs(batches, terms, theta)
    total, weight = None, 0.0
    for g, w in grads:
        total = add(total, second_backward(leaf, None, v, retain=True, grad=g), v)
        weight += w
    return summed(total, theta), weight


def forward_over_reverse(batches: Batches, terms: Terms, theta: torch.Tensor, v: torch.Tensor,
                         cache: GraphCache | None = None) -> tuple[torch.Tensor, float]:
    """torch.func forward-over-reverse: jvp of the reverse-mode gradient.

    ``jacrev`` rather than ``grad``: jvp over ``torch.func.grad`` of ``mse_loss`` fails on an immutable
    ZeroTensor inside its backward formula, jvp over ``jacrev`` does not (same numbers elsewhere).
    """
    total, weight = None, 0.0
    for batch in batches():
        w_box: list[float] = []

        def f(t: torch.Tensor, batch: Any = batch, w_box: list = w_box) -> torch.Tensor:
            s, w = terms(t, batch)
            w_box.append(w)
            return s

        _, hv = jvp(jacrev(f), (theta.detach(),), (v,))
        total = add(total, hv.detach(), v)
        weight += w_box[0]
    return summed(total, theta), weight


HVP_BACKENDS: dict[str, Backend] = {
    "double_backward": double_backward,
    "cached": cached,
    "forward_over_reverse": forward_over_reverse,
}


def ggn_terms(batches: Batches, outputs: Callable[[torch.Tensor, Any], tuple[torch.Tensor, torch.Tensor]],
              loss_terms: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, float]],
              theta: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, float]:
    """(Σ_b J_bᵀ ∇²_z s_b J_b·v, Σ_b w_b), z the model outputs and J_b = ∂z/∂θ on batch b (the sum as in
    :func:`add`: one batch's product as it is, several summed in float64)."""
    total, weight = None, 0.0
    for batch in batches():
        targets = batch[-1]

        def f(t: torch.Tensor, batch: Any = batch) -> torch.Tensor:
            return outputs(t, batch)[0]

        try:
            out, jv = jvp(f, (theta,), (v,))
            hjv, w = output_hvp(loss_terms, out, targets, jv)
            _, pullback = vjp(f, theta)
            (gv,) = pullback(hjv)
        except RuntimeError as err:
            if no_second_derivative(err):
                raise second_derivative_error(err) from err
            raise
        total = add(total, gv.detach(), v)
        weight += w
    return summed(total, theta), weight


def output_hvp(loss_terms: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, float]], out: torch.Tensor,
               targets: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, float]:
    """(∇²_z s(z, y)·u, w) by double backward in output space (torch.func's jvp-of-grad trips on mse_loss)."""
    with torch.enable_grad():
        z = out.detach().requires_grad_(True)
        s, w = loss_terms(z, targets)
        (g,) = torch.autograd.grad(s, z, create_graph=True)
        if not g.requires_grad:  # a loss linear in z: zero output curvature
            return torch.zeros_like(u), w
        (hu,) = torch.autograd.grad(g, z, grad_outputs=u)
    return hu, w


def no_second_derivative(err: BaseException) -> bool:
    """Whether ``err`` is autograd's "derivative for ... not implemented" (fused kernels, some custom ops) or a
    custom autograd Function marked ``@once_differentiable`` differentiated twice."""
    msg = str(err)
    return ("derivative for" in msg and "not implemented" in msg) or "once_differentiable" in msg


def second_derivative_error(err: BaseException | None, impl: str | None = None) -> FlatminimaError:
    """The error for a model without second derivatives: the op (or Hugging Face ``impl``) and the ways out."""
    from ._attention import attention_error, second_derivative_message

    return attention_error(impl) if impl else FlatminimaError(second_derivative_message(err))
