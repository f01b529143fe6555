"""Attention with second derivatives: every forward pass an Objective runs uses PyTorch's math SDPA backend.

``torch.nn.functional.scaled_dot_product_attention`` dispatches to fused kernels (flash attention on CPU and
CUDA, memory-efficient attention, cuDNN) whose backward has no derivative of its own, so a Hessian-vector
product through them fails with "derivative for aten::_scaled_dot_product_flash_attention_for_cpu_backward
is not implemented". The math backend computes the same function,

    softmax(Q Kᵀ / √d + mask) V,

from differentiable primitives (matmul, softmax), so double backward and forward-mode AD go through it. The
Objective therefore runs every operation inside :func:`second_order_attention` (loss, gradient, products,
values at many θ, and the per-batch terms and outputs it hands out alike, so that all of them are derivatives
of one and the same function; entered once per operation by :func:`second_order`, not per batch), which

- restricts SDPA to ``SDPBackend.MATH`` (``torch.nn.attention.sdpa_kernel``): user code calling
  ``F.scaled_dot_product_attention``, ``nn.MultiheadAttention``, ``nn.TransformerEncoder`` and Hugging
  Face models with ``attn_implementation="sdpa"`` (their default) all take the math path;
- turns off ``nn.MultiheadAttention``'s / ``nn.TransformerEncoderLayer``'s inference "fast path"
  (``torch.backends.mha.set_fastpath_enabled(False)``): without gradients (the loss under ``no_grad``)
  an eval-mode encoder would otherwise run a fused kernel, with nested tensors that zero padded positions,
  a different function from the one the gradient and the products differentiate.

Attention implementations that cannot be switched this way (Hugging Face ``"flash_attention_2"``,
``"flex_attention"``...) are refused before any work, with the two ways out: an implementation with second
derivatives (``"eager"`` or ``"sdpa"``), or ``hvp_method="finite_difference"`` (central differences of exact
gradients, which need first derivatives only).
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import torch
from torch import nn

from ..errors import FlatminimaError

__all__ = ["ATTENTION_NOTE", "SECOND_ORDER_ATTENTION", "attention_error", "check_attention",
           "second_derivative_message", "second_order", "second_order_attention"]

F = TypeVar("F", bound=Callable[..., Any])

# Hugging Face attention implementations whose second derivatives exist under second_order_attention.
SECOND_ORDER_ATTENTION = ("eager", "sdpa")
# What describe() and the curvature results say about it.
ATTENTION_NOTE = "math SDPA backend (sdpa_kernel(SDPBackend.MATH), MHA fast path off) for every evaluation"


@contextlib.contextmanager
def second_order_attention() -> Iterator[None]:
    """The block's attention runs on the math SDPA backend, without the MHA fast path (see the module)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    fast = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with sdpa_kernel([SDPBackend.MATH]):
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fast)


def second_order(method: F) -> F:
    """Run an Objective method inside :func:`second_order_attention`: entered once per operation, not per batch."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with second_order_attention():
            return method(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def hf_attention(model: nn.Module) -> list[str]:
    """The Hugging Face attention implementations of ``model`` and its submodules (their configs' names)."""
    found = []
    for m in model.modules():
        impl = getattr(getattr(m, "config", None), "_attn_implementation", None)
        if isinstance(impl, str) and impl not in found:
            found.append(impl)
    return found


def check_attention(model: nn.Module) -> None:
    """Refuse, before any work, attention that :func:`second_order_attention` cannot give second derivatives."""
    for impl in hf_attention(model):
        if impl not in SECOND_ORDER_ATTENTION:
            raise attention_error(impl)


def attention_error(impl: str) -> FlatminimaError:
    """The error for a Hugging Face attention implementation without second derivatives."""
    return FlatminimaError(
        f"Hessian products need second derivatives, and the model uses attn_implementation={impl!r}, a fused "
        "kernel that has none (flatminima switches only PyTorch SDPA to its math backend). Two ways out: build "
        "the model with attn_implementation=\"sdpa\" or \"eager\" (from_pretrained(..., attn_implementation="
        "\"eager\"), or config._attn_implementation = \"eager\" before constructing it from a config); or use "
        "hvp_method=\"finite_difference\" (central differences of exact gradients, first derivatives only, "
        "with a stated error).")


_OP = re.compile(r"derivative for (\S+) is not implemented")


def second_derivative_message(err: BaseException | None) -> str:
    """The message for an operation autograd cannot differentiate twice, naming the op and the ways out."""
    found = _OP.search(str(err)) if err is not None else None
    op = found.group(1) if found else f"an operation ({err})"
    if op.endswith("_backward"):  # autograd names the backward kernel; the user wrote its forward
        op = f"{op[:-len('_backward')]} (its backward {op} has no derivative)"
    return (
        f"Hessian products need second derivatives, and the model uses {op}, which PyTorch cannot "
        "differentiate twice (a fused or custom kernel; PyTorch SDPA is already switched to its math backend "
        "here). Two ways out: run the model on a path with second derivatives (an eager/math implementation "
        "of that operation; for a Hugging Face model attn_implementation=\"eager\"), or use "
        "hvp_method=\"finite_difference\" (central differences of exact gradients, first derivatives only, "
        "with a stated error).")
