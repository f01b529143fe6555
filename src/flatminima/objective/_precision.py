"""The precision an Objective computes in: decided once, stated, never drifted into.

Three ways a number can be less precise than the Objective's ``dtype`` says, and what is done about each:

- **Half-precision weights.** A float16 / bfloat16 model is evaluated in a float32 copy by default (the
  user's model is untouched; ``dtype=`` picks float32 or float64). Second derivatives in half precision
  overflow float16's range (65504) or keep 8 bits of mantissa (bfloat16): NaN or 1% errors, not curvature.
  Asking for a half dtype explicitly is refused.
- **An active ``torch.autocast`` region** around a call: autocast would run the forward *and* the
  ``create_graph`` backward of a Hessian product in bfloat16 / float16 (measured: 0.4% off on a small MLP
  with the forward alone kept in float32). Every pass of the Objective runs with autocast disabled
  (:func:`own_precision`), once warned, and ``describe()`` says so.
- **A model that computes part of its forward in a lower precision than the Objective's dtype** (Llama's
  RMSNorm upcasts to float32 inside a float64 model; an ``autocast`` inside ``forward``). Found once, at
  first use, by one forward on one row with a function mode that records the dtype of every floating
  result that depends on θ (:func:`arithmetic_dtype`): the lowest-precision one is the model's own
  arithmetic precision. Error bounds (the Lanczos rounding floor) use its unit roundoff instead of the
  Objective dtype's, so a bound is never tighter than what the model's arithmetic can resolve.

Why a scan of dtypes rather than comparing the model's loss with a float64 evaluation: a model that
hard-codes ``.to(torch.float32)`` computes the same float32 step in its "float64" copy, so a float64 re-run
of the same model cannot show the difference; the dtypes of its intermediate results can.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch.overrides import TorchFunctionMode

from ..errors import FlatminimaError

__all__ = ["HALF", "Precision", "arithmetic_dtype", "evaluation_dtype", "no_autocast", "own_precision",
           "scan_objective"]

HALF = (torch.float16, torch.bfloat16)
AUTOCAST_DEVICES = ("cpu", "cuda", "mps", "xpu")

F = TypeVar("F", bound=Callable[..., Any])


def name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def evaluation_dtype(requested: torch.dtype | None, model_dtype: torch.dtype | None) -> torch.dtype | None:
    """The dtype an Objective evaluates in: ``requested`` (float32 / float64), else the model's own, but
    float32 for a float16 / bfloat16 model (a float32 copy; the user's model untouched)."""
    if requested is not None and requested in HALF:
        raise FlatminimaError(
            f"dtype={name(requested)} is too coarse for Hessian products (float16 overflows past 65504 and "
            "bfloat16 keeps 8 bits of mantissa: NaN or percent-level errors); pass dtype='float32' or 'float64'. "
            "A half-precision model is evaluated in a float32 copy by default.")
    if requested is not None:
        return requested
    if model_dtype in HALF:
        return torch.float32
    return model_dtype


@dataclass
class Precision:
    """What an Objective's numbers are computed in (``describe()["precision"]``).

    ``dtype``: the Objective's evaluation dtype; ``weights``: the dtype of the model's parameters as given
    (None for an analytic f); ``arithmetic``: the lowest-precision dtype of any θ-dependent intermediate
    result of the forward (None until measured; :func:`arithmetic_dtype`); ``autocast``: the active
    autocast regions found around calls (disabled in every pass), empty if none.
    """

    dtype: torch.dtype
    weights: torch.dtype | None = None
    arithmetic: torch.dtype | None = None
    autocast: tuple[str, ...] = ()
    scanned: bool = False  # whether ``arithmetic`` was measured (it stays None where nothing depends on θ)

    @property
    def bound_dtype(self) -> torch.dtype:
        """The dtype whose unit roundoff error bounds must use: the coarser of ``dtype`` and ``arithmetic``."""
        if self.arithmetic is None:
            return self.dtype
        return max((self.dtype, self.arithmetic), key=lambda d: torch.finfo(d).eps)

    def describe(self) -> dict[str, Any]:
        lower = self.arithmetic is not None and self.bound_dtype != self.dtype
        return {
            "dtype": name(self.dtype),
            "weights": None if self.weights is None else name(self.weights),
            "weights_cast": self.weights is not None and self.weights != self.dtype,
            "arithmetic": None if self.arithmetic is None else name(self.arithmetic),
            "error_bounds_in": name(self.bound_dtype),
            "note": (f"the model computes part of its forward in {name(self.bound_dtype)}: errors are bounded "
                     f"by {name(self.bound_dtype)}'s rounding, not {name(self.dtype)}'s") if lower else "",
            "autocast": ("disabled in every pass of the objective (an active region was found: "
                         f"{', '.join(self.autocast)})") if self.autocast else "off in every pass of the objective",
        }

    def nonfinite_hint(self) -> str:
        """What a non-finite value most likely means, given this precision."""
        coarse = self.bound_dtype
        if coarse in HALF:
            return (f" The model computes part of its forward in {name(coarse)}, whose range or mantissa is too "
                    "small for second derivatives (float16 overflows past 65504): remove the cast or autocast "
                    "inside the model's forward.")
        return ""


def active_autocast() -> list[tuple[str, torch.dtype]]:
    """The device types with an active autocast region in this thread, with their autocast dtypes."""
    found = []
    for device in AUTOCAST_DEVICES:
        try:
            if torch.is_autocast_enabled(device):
                found.append((device, torch.get_autocast_dtype(device)))
        except (RuntimeError, TypeError, AttributeError):  # a device type this build does not know
            continue
    return found


@contextmanager
def no_autocast(precision: Precision | None = None) -> Iterator[None]:
    """Disable every active autocast region for the block (forward and backward passes inside it); the
    first time one is found on ``precision``, warn and record it there."""
    active = active_autocast()
    if not active:
        yield
        return
    if precision is not None:
        found = tuple(f"{device}, {name(dtype)}" for device, dtype in active)
        new = [f for f in found if f not in precision.autocast]
        if new:
            precision.autocast = tuple(precision.autocast) + tuple(new)
            warnings.warn(
                f"the Objective was called inside torch.autocast ({'; '.join(new)}); its passes run with "
                f"autocast disabled, in {name(precision.dtype)} (describe()['precision'] says so). Call it "
                "outside the autocast region to silence this.", UserWarning, stacklevel=4)
    with ExitStack() as stack:
        for device, _ in active:
            stack.enter_context(torch.autocast(device, enabled=False))
        yield


def own_precision(method: F) -> F:
    """Run an Objective method with autocast disabled (see :func:`no_autocast`), recorded on its precision."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        with no_autocast(getattr(self, "precision_state", None)):
            return method(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


class _DtypeScan(TorchFunctionMode):
    """Records the dtype of every floating result that requires grad (depends on θ) in the block."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[torch.dtype] = set()

    def __torch_function__(self, func: Callable, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.is_floating_point() and t.requires_grad:
                self.seen.add(t.dtype)
        return out


def arithmetic_dtype(evaluate: Callable[[torch.Tensor], Any], theta: torch.Tensor) -> torch.dtype | None:
    """The lowest-precision dtype among the θ-dependent floating results of ``evaluate(θ)`` (one forward,
    θ a leaf that requires grad), or None when nothing depends on θ."""
    leaf = theta.detach().clone().requires_grad_(True)
    scan = _DtypeScan()
    with torch.enable_grad(), no_autocast(), scan:
        evaluate(leaf)
    if not scan.seen:
        return None
    return max(scan.seen, key=lambda d: torch.finfo(d).eps)


def scan_objective(obj: Any) -> torch.dtype | None:
    """:func:`arithmetic_dtype` of an Objective's terms at θ₀ on one row of its first stored batch (an
    analytic f on its one batch, ``None``); None when there is no batch or nothing depends on θ."""
    from ._batches import iter_row_chunks, move_batch

    first = next(iter(obj.stored_batches), None)
    if first is not None:
        first = next(iter_row_chunks(move_batch(first, obj.device, obj.dtype), 1))
    elif obj.has_model:
        return None
    try:
        return arithmetic_dtype(lambda t: obj.terms(t, first), obj.params.to(device=obj.device))
    except FlatminimaError:
        return None  # a forward that fails says so itself, on the first real evaluation
