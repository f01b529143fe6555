"""Sharpness-aware minimisation: SAM (Foret et al. 2021) and adaptive SAM (ASAM, Kwon et al. 2021).

One step on a batch B, split into chunks of m samples for m-sharpness (Foret et al. 2021, sec. 3;
Andriushchenko & Flammarion 2022; one chunk = the whole batch when m is None):

    g_c = ∇L_c(θ),   ε_c = ρ · T² g_c / ‖T g_c‖,   g = Σ_c (|c|/|B|) ∇L_c(θ + ε_c),

with T = I for SAM and, for ASAM, T = diag(|θ| + η) on the parameters named ``weight`` (T = I on biases),
as in the ASAM authors' code. The base optimiser then steps with g from θ. The second forward pass does not
update BatchNorm running statistics (their momentum is set to 0 for it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn


@contextmanager
def frozen_bn_stats(model: nn.Module) -> Iterator[None]:
    """BatchNorm running statistics left unchanged inside the block (momentum 0; batch statistics still
    used)."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, mom in zip(bns, saved, strict=True):
            m.momentum = mom


def perturbation(named: list[tuple[str, torch.Tensor]], grads: list[torch.Tensor], rho: float, adaptive: bool,
                 eta: float) -> list[torch.Tensor]:
    """ε = ρ T² g / ‖T g‖ (T = I for SAM); a zero gradient gives ε = 0."""
    scale = [(p.detach().abs() + eta) if adaptive and "weight" in n else None for n, p in named]
    tg = [g if t is None else t * g for g, t in zip(grads, scale, strict=True)]
    norm = torch.sqrt(sum((x.double() ** 2).sum() for x in tg)).to(grads[0].dtype) + 1e-12
    return [rho * (x if t is None else t * x) / norm for x, t in zip(tg, scale, strict=True)]


def sam_step_gradients(model: nn.Module, loss_fn: Callable, xb: torch.Tensor, yb: torch.Tensor, *, rho: float,
                       adaptive: bool = False, eta: float = 0.01, m: int | None = None) -> torch.Tensor:
    """Set ``p.grad`` to the (A)SAM gradient g above and return the (unperturbed) batch loss L_B(θ)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    n = len(xb)
    chunks = [slice(i, i + m) for i in range(0, n, m)] if m else [slice(0, n)]
    total = [torch.zeros_like(p) for p in params]
    batch_loss = torch.zeros((), dtype=torch.float64)
    for c in chunks:
        xc, yc = xb[c], yb[c]
        weight = len(xc) / n
        loss = loss_fn(model(xc), yc)
        grads = torch.autograd.grad(loss, params)
        eps = perturbation(named, list(grads), rho, adaptive, eta)
        with torch.no_grad():
            for p, e in zip(params, eps, strict=True):
                p.add_(e)
        with frozen_bn_stats(model):
            grads2 = torch.autograd.grad(loss_fn(model(xc), yc), params)
        with torch.no_grad():
            for p, e, t, g in zip(params, eps, total, grads2, strict=True):
                p.sub_(e)
                t.add_(g, alpha=weight)
        batch_loss += loss.detach().double() * weight
    for p, t in zip(params, total, strict=True):
        p.grad = t
    return batch_loss
