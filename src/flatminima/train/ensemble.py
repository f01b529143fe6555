"""Deep ensembles (Lakshminarayanan et al. 2017) evaluated as one predictor.

The ensemble's output is log p̄(y|x) with p̄ = (1/M) Σ_m softmax(f_m(x)): a log-probability, so
``cross_entropy`` on it is the ensemble's NLL (log_softmax leaves a normalised log-probability unchanged),
and it plugs into ``evaluate`` and ``Objective`` like any classifier.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from ..errors import require_positive_int
from .recipes import Recipe, make_recipe


class Ensemble(nn.Module):
    """Averages the members' predicted probabilities; ``forward`` returns log of the mean probability."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logp = torch.stack([torch.log_softmax(m(x), dim=-1) for m in self.members])
        return torch.logsumexp(logp, dim=0) - math.log(len(self.members))


def train_ensemble(make_model: Callable[[], nn.Module], data: tuple[torch.Tensor, torch.Tensor],
                   recipe: Recipe | dict | None = None, *, members: int = 5,
                   seeds: Sequence[int] | None = None,
                   checkpoint_dir: str | Path | None = None, **fit_kw) -> tuple[Ensemble, list]:
    """Train ``members`` models (each initialised under ``torch.manual_seed(seed)`` and trained with that
    recipe seed) and return the :class:`Ensemble` and the members' ``TrainResult``s."""
    from .trainer import fit

    require_positive_int("members", members)
    recipe = make_recipe(recipe)
    seeds = list(seeds) if seeds is not None else [recipe.seed + i for i in range(members)]
    results = []
    for i, seed in enumerate(seeds):
        torch.manual_seed(seed)
        model = make_model()
        ckpt = Path(checkpoint_dir) / f"member{i}" if checkpoint_dir else None
        results.append(fit(model, data, make_recipe(recipe, seed=seed), checkpoint_dir=ckpt, **fit_kw))
    return Ensemble([r.model for r in results]).eval(), results
