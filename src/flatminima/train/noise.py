"""Weight-noise injection.

- ``gaussian`` (perturbed gradient): θ̃ = θ + ξ_t, ξ_t ~ N(0, σ²I) i.i.d.; the gradient is taken at θ̃ and
  the step applied to θ (the noise is removed after). In expectation this descends the smoothed loss
  E_ξ L(θ + ξ) ≈ L(θ) + ½σ² tr H(θ), a trace penalty (claim C4; Bisla et al. 2022; Orvieto et al. 2022).
- ``pgd`` (perturbed GD on the iterate): θ_{t+1} = step(θ_t) + ξ_{t+1}: a random walk, variance tσ²
  after t steps.
- ``anticorrelated`` (Anti-PGD, Orvieto et al. 2022, eq. 2): θ_{t+1} = step(θ_t) + (ξ_{t+1} − ξ_t), the
  increments are negatively correlated and their sum telescopes to ξ_T − ξ_0 (bounded variance 2σ²).
  Orvieto et al. note this equals the perturbed gradient above for z_t = θ_t − ξ_t.

The noise comes from its own ``torch.Generator`` (seeded from the recipe), so it is reproducible and its
state is checkpointed.
"""

from __future__ import annotations

import torch
from torch import nn


class WeightNoise:
    """ξ draws for the trainable parameters of ``model`` with standard deviation ``std``."""

    def __init__(self, model: nn.Module, kind: str, std: float, seed: int) -> None:
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.kind, self.std = kind, std
        self.gen = torch.Generator().manual_seed(seed)
        self.previous: list[torch.Tensor] | None = None  # ξ_t for anticorrelated noise

    def draw(self) -> list[torch.Tensor]:
        """One ξ ~ N(0, σ²I) per parameter (drawn on the CPU, so the stream does not depend on the device)."""
        return [(self.std * torch.randn(p.shape, generator=self.gen, dtype=p.dtype)).to(p.device)
                for p in self.params]

    @torch.no_grad()
    def perturb(self) -> list[torch.Tensor] | None:
        """Before the gradient: θ ← θ + ξ for ``gaussian`` noise; returns the clean θ for :meth:`restore`."""
        if self.kind != "gaussian":
            return None
        clean = [p.detach().clone() for p in self.params]
        for p, e in zip(self.params, self.draw(), strict=True):
            p.add_(e)
        return clean

    @torch.no_grad()
    def restore(self, clean: list[torch.Tensor] | None) -> None:
        """After the gradient, before the step: θ back to its clean value exactly (a copy, not θ + ξ − ξ,
        which rounds)."""
        if clean is not None:
            for p, c in zip(self.params, clean, strict=True):
                p.copy_(c)

    @torch.no_grad()
    def after_step(self) -> None:
        """After the step: the iterate noise of ``pgd`` (ξ) and ``anticorrelated`` (ξ_{t+1} − ξ_t)."""
        if self.kind == "pgd":
            for p, e in zip(self.params, self.draw(), strict=True):
                p.add_(e)
        elif self.kind == "anticorrelated":
            if self.previous is None:  # ξ_0, so the first increment is ξ_1 − ξ_0 like every other
                self.previous = self.draw()
            new = self.draw()
            for p, e, e0 in zip(self.params, new, self.previous, strict=True):
                p.add_(e - e0)
            self.previous = new

    def state_dict(self) -> dict:
        return {"gen": self.gen.get_state(), "previous": self.previous}

    def load_state_dict(self, state: dict) -> None:
        self.gen.set_state(state["gen"])
        self.previous = state["previous"]
