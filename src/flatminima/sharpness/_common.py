"""Helpers shared by the measures: random perturbations, derived objectives, model outputs.

Everything here goes through the Objective's public protocol (``batches``, ``outputs``,
``loss_function``, ``has_outputs``, ``replace``); only ``tensor_data`` still reads the raw batches.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import torch

from ..errors import FlatminimaError, NonFiniteLossError, require_positive_int
from ..objective import Cost, Objective, ShardedObjective


def generator(seed: int) -> torch.Generator:
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise FlatminimaError(f"seed must be an integer, got {seed!r}.")
    return torch.Generator().manual_seed(seed)


def gaussian_rows(n: int, obj: Objective, gen: torch.Generator) -> torch.Tensor:
    """n reproducible N(0, I) rows drawn on the CPU in float64 (same numbers on every device).

    Row by row, so the j-th draw does not depend on how many rows are drawn at once (``chunk_size``):
    torch's CPU sampler takes a different path for different tensor sizes.
    """
    rows = torch.stack([torch.randn(obj.dim, generator=gen, dtype=torch.float64) for _ in range(n)])
    return rows.to(device=obj.device, dtype=obj.dtype)


def rademacher(obj: Objective, gen: torch.Generator) -> torch.Tensor:
    z = torch.randint(0, 2, (obj.dim,), generator=gen).to(torch.float64) * 2 - 1
    return z.to(device=obj.device, dtype=obj.dtype)


def mean_stderr(samples: torch.Tensor) -> tuple[float, float]:
    s = samples.to(torch.float64)
    if s.numel() < 2:
        return float(s.mean()), math.nan
    return float(s.mean()), float(s.std(unbiased=True) / math.sqrt(s.numel()))


def perturbed_rises(obj: Objective, std: torch.Tensor | float, samples: int, seed: int, *,
                    antithetic: bool = True, chunk_size: int = 32, metric: str = "loss",
                    base: float | None = None) -> torch.Tensor:
    """Rises L(θ+δ_j) − L(θ), δ_j = std ∘ z_j, z_j ~ N(0, I), one value per sample (seeded).

    With ``antithetic`` each sample is the mean over the pair ±δ_j: still unbiased for E[L(θ+δ)] − L(θ)
    (δ and −δ have the same law), and the odd (gradient) terms cancel pair by pair, which removes the
    first-order noise away from a minimum. The same seed gives the same z_j for every ``std``: common
    random numbers, so the rise is a smooth function of σ for the PAC-Bayes bisection.
    """
    require_positive_int("chunk_size", chunk_size)
    theta = obj.params
    gen = generator(seed)
    base = _value(obj, theta[None], metric, chunk_size)[0] if base is None else base
    rises = []
    for start in range(0, samples, chunk_size):
        z = gaussian_rows(min(chunk_size, samples - start), obj, gen)
        delta = std * z
        up = _value(obj, theta + delta, metric, chunk_size)
        if antithetic:
            up = 0.5 * (up + _value(obj, theta - delta, metric, chunk_size))
        rises.append(up - base)
    return torch.cat(rises).to(torch.float64)


def _value(obj: Objective, thetas: torch.Tensor, metric: str, chunk_size: int = 32) -> torch.Tensor:
    if metric == "loss":
        return losses_at(obj, thetas, chunk_size)
    return 1.0 - obj.metric_batched(thetas, "accuracy", chunk_size=chunk_size)


def losses_at(obj: Objective, thetas: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """L at every row of ``thetas``: ``chunk_size`` per data pass, or one ``obj.loss`` at a time with 1."""
    if chunk_size == 1:
        values = [_finite_or_inf(obj, t) for t in thetas]
        return torch.tensor(values, dtype=torch.float64, device=thetas.device)
    return obj.loss_batched(thetas, chunk_size=chunk_size)


def _finite_or_inf(obj: Objective, theta: torch.Tensor) -> float:
    try:
        return obj.loss(theta)
    except NonFiniteLossError:
        return math.inf  # as loss_batched, which returns non-finite values instead of raising


def hutchinson(matvec: Callable[[torch.Tensor], torch.Tensor], obj: Objective, samples: int,
               seed: int) -> tuple[float, float]:
    """tr(M) ≈ mean of zᵀMz over Rademacher z (Hutchinson 1989), with its standard error."""
    gen = generator(seed)
    vals = []
    for _ in range(samples):
        z = rademacher(obj, gen)
        vals.append(float(torch.dot(z, matvec(z))))
    return mean_stderr(torch.tensor(vals, dtype=torch.float64))


# ----------------------------------------------------------------------------- model outputs
def require_outputs(obj: Objective, what: str) -> None:
    if isinstance(obj, ShardedObjective):  # it runs the model's own forward and backward, never outputs at θ
        raise FlatminimaError(
            f"{what} needs the model's outputs at any θ, which an Objective over an FSDP2-sharded model does not "
            "give (it runs the model's own forward and backward). Measure it on the model gathered into one "
            "process; the curvature and perturbation measures (lambda_max, top_eigenvalues, trace, frobenius, "
            "average_case, worst_case, keskar, pac_bayes, grad_norm, param_norm) run on the sharded model.")
    if not getattr(obj, "has_outputs", False):
        raise FlatminimaError(
            f"{what} needs the model outputs: build the Objective as Objective(model, loss, data) with "
            "`loss=` (not `loss_fn=`, not Objective.from_function).")


def output_batches(obj: Objective) -> Iterator[tuple[Callable[[torch.Tensor], torch.Tensor], Any, Callable]]:
    """For every batch: (θ ↦ model outputs on it, targets, ℓ(outputs, targets)).

    ℓ is the batch's summed loss divided by its rows, so ``ℓ · rows`` is the sum of the per-sample
    losses whatever the loss's reduction (a ``reduction="sum"`` module included).
    """
    terms = obj.loss_terms

    def per_row(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        rows = targets.shape[0] if targets.dim() > 0 else 1
        return terms(outputs, targets)[0] / rows

    for batch in obj.batches():
        def f(t: torch.Tensor, batch: Any = batch) -> torch.Tensor:
            return obj.outputs(t, batch)[0]
        yield f, batch[-1], per_row


def tensor_data(obj: Objective, what: str) -> tuple[torch.Tensor, ...]:
    """The objective's data as one tuple of tensors (inputs..., targets), for splitting into batches."""
    require_outputs(obj, what)
    batches = list(obj.stored_batches)
    if not batches or not all(isinstance(b, (tuple, list)) and all(isinstance(t, torch.Tensor) for t in b)
                              for b in batches):
        raise FlatminimaError(f"{what} needs data made of (inputs, targets) tensor batches to split it.")
    return tuple(torch.cat([b[i] for b in batches]) for i in range(len(batches[0])))


def derived(obj: Objective, *, data: Any = None, loss: Callable | None = None) -> Objective:
    """The same objective (every setting, see ``Objective.replace``) with other data and/or another loss."""
    require_outputs(obj, "this variant")
    changes: dict[str, Any] = {}
    if data is not None:
        changes["data"] = data
    if loss is not None:
        changes["loss"] = loss
    return obj.replace(**changes)


def logit_normalized_objective(obj: Objective) -> Objective:
    """The objective of the loss of z/‖z‖₂ instead of z (same model, data and parameters)."""
    require_outputs(obj, "logit_normalize=True")
    return derived(obj, loss=logit_normalized(obj.loss_function))


def logit_normalized(loss: Callable) -> Callable:
    """loss(z/‖z‖₂, y): the logit normalisation of Andriushchenko et al. 2023 (removes the logit scale)."""
    def normalized(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return loss(outputs / outputs.norm(dim=-1, keepdim=True).clamp_min(1e-12), targets)
    return normalized


def scaled_cost(cost: Cost, fraction: float) -> Cost:
    """A derived objective's cost, its data passes counted in passes over the full data."""
    out = Cost(**cost.to_dict())
    out.data_passes *= fraction
    out.seconds = 0.0  # wall time is already in the registry's meter
    return out
