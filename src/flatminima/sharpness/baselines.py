"""Complexity measures that are not about flatness: the baselines of Jiang et al. 2020's comparison.

Jiang, Neyshabur, Mobahi, Krishnan & Bengio (2020), "Fantastic Generalization Measures and Where to
Find Them", ICLR, Appendix C. Every value is oriented "higher = more complex" (predicts a larger
generalisation gap), as in the paper:

    param_norm           Σ_layers ‖W_l‖²_F                      (Jiang et al. "params": squared Frobenius norms)
    distance_from_init   ‖θ − θ₀‖₂                               (Jiang et al. "dist.l2"; Nagarajan & Kolter 2019)
    output_margin        1/γ²,  γ = 10th percentile over the training set of f_y(x) − max_{j≠y} f_j(x)
                                                                  (Jiang et al. "1/margin")
    path_norm            Σ_i f_{θ²}(1)_i: the outputs of the network with every parameter squared on an
                         all-ones input                          (Neyshabur, Tomioka & Srebro 2015;
                                                                  Jiang et al. "path.norm")

"Weights" are the parameters not named ``bias`` (``biases=True`` counts them too); the parameters are
the objective's selected ones (``obj.params``), in its order.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import FlatminimaError, require_in_range
from ..objective import Objective
from ._common import output_batches, require_outputs, tensor_data
from .fisher_rao import weight_mask
from .registry import register
from .result import Measure

BASELINES = ("param_norm", "distance_from_init", "output_margin", "path_norm")


def _bool(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise FlatminimaError(f"{name} must be True or False, got {value!r}.")


@register("param_norm", "Jiang et al.'s parameter norm Σ‖W_l‖²_F (weights, not biases); not a flatness measure")
def param_norm(obj: Objective, *, biases: bool = False) -> Measure:
    """Σ_l ‖W_l‖²_F = ‖w‖²₂ over the weights (Jiang et al. 2020, eq. for μ_param-norm); exact."""
    _bool("biases", biases)
    w = obj.params * weight_mask(obj, biases)
    value = float(w.to(torch.float64).pow(2).sum())
    what = "all parameters" if biases else "weights only (biases excluded)"
    return Measure("param_norm", value, None, config={"variant": f"Σ_l ‖W_l‖²_F (squared ℓ2 norm), {what}"},
                   extra={"entries": int(weight_mask(obj, biases).sum())})


@register("distance_from_init", "Jiang et al.'s distance to the initial weights ‖θ − θ₀‖₂; needs init=")
def distance_from_init(obj: Objective, *, init: torch.Tensor | None = None, biases: bool = False) -> Measure:
    """‖w − w₀‖₂ (Jiang et al. 2020, μ_dist-l2; Nagarajan & Kolter 2019), ``init`` the flat initial
    parameter vector in ``obj.params`` order (what ``obj.params`` was before training); exact."""
    _bool("biases", biases)
    if init is None:
        raise FlatminimaError(
            "distance_from_init needs init=: the flat vector of the initial parameters, in the objective's "
            f"parameter order ({obj.dim} entries; e.g. Objective(initial_model, ...).params).")
    init = torch.as_tensor(init)
    if init.shape != (obj.dim,):
        raise FlatminimaError(f"distance_from_init: init has shape {tuple(init.shape)}, but the objective has "
                              f"{obj.dim} parameters; pass the flat initial vector in obj.params order.")
    if not torch.isfinite(init).all():
        raise FlatminimaError("distance_from_init: init holds non-finite values.")
    diff = (obj.params.to(torch.float64) - init.to(device=obj.device, dtype=torch.float64))
    diff = diff * weight_mask(obj, biases).to(torch.float64)
    what = "all parameters" if biases else "weights only (biases excluded)"
    return Measure("distance_from_init", float(diff.norm()), None,
                   config={"init": f"<{obj.dim} values>", "variant": f"‖θ − θ₀‖₂ (not squared), {what}"})


@register("output_margin", "Jiang et al.'s 1/γ², γ the 10th percentile of the output margin; not flatness")
def output_margin(obj: Objective, *, percentile: float = 10.0) -> Measure:
    """1/γ² with γ the ``percentile``-th percentile (10 in Jiang et al. 2020) over the objective's data of
    the margin f_y(x) − max_{j≠y} f_j(x) (linear interpolation between order statistics, torch.quantile).

    Needs class outputs and integer labels. Where γ <= 0 (more than ``percentile``% of the samples
    misclassified) 1/γ² is no longer a complexity, and the value is +inf (``extra["gamma"]`` holds γ).
    """
    require_outputs(obj, "output_margin")
    require_in_range("percentile", percentile, 0.0, 100.0)
    margins = []
    with torch.no_grad():
        for f, targets, _ in output_batches(obj):
            out = f(obj.params)
            if out.dim() != 2 or targets.dim() != 1 or targets.dtype.is_floating_point:
                raise FlatminimaError("output_margin needs class outputs (n × C) and integer class targets.")
            if out.shape[1] < 2:
                raise FlatminimaError("output_margin needs at least two classes (outputs n × C, C >= 2).")
            true = out.gather(1, targets[:, None])[:, 0]
            others = out.scatter(1, targets[:, None], -math.inf).max(1).values
            margins.append((true - others).to(torch.float64))
    m = torch.cat(margins)
    obj.record(None, passes=1.0)  # one forward pass outside the Objective's metered calls
    gamma = float(torch.quantile(m, percentile / 100.0))
    value = 1.0 / gamma ** 2 if gamma > 0 else math.inf
    return Measure("output_margin", value, None, config={
        "variant": f"1/γ², γ = {percentile:g}th percentile of f_y(x) − max_(j≠y) f_j(x) (linear interpolation)"},
        extra={"gamma": gamma, "samples": int(m.numel()), "misclassified": float((m <= 0).double().mean())})


_NORMS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm,
          nn.LocalResponseNorm)


@register("path_norm", "Jiang et al.'s path norm Σ f_{θ²}(1) (every parameter squared, ones input); not flatness")
def path_norm(obj: Objective) -> Measure:
    """Σ_i f_{θ∘θ}(1)_i (Neyshabur et al. 2015, ℓ2 path norm squared; Jiang et al. 2020, μ_path-norm).

    Every parameter of the model is squared, biases included (a bias is the weight of a path from a
    constant-1 unit, Neyshabur et al.'s convention, as in Jiang et al.'s suite), and the network is run on
    one all-ones input of the data's shape, in eval mode. For ReLU networks (MLPs, conv nets) this is
    the sum over all input-output paths of the products of the squared weights. Models with normalisation
    layers are refused (Jiang et al. first fold them away; squaring their statistics is meaningless).
    """
    require_outputs(obj, "path_norm")
    model = obj.model_at(obj.params)
    norms = [n for n, mod in model.named_modules() if isinstance(mod, _NORMS)]
    if norms:
        raise FlatminimaError(f"path_norm is defined for networks without normalisation layers; this model has "
                              f"{norms}. Fold them into the neighbouring layers first.")
    data = tensor_data(obj, "path_norm")
    ones = [torch.ones((1, *t.shape[1:]), dtype=obj.dtype if t.is_floating_point() else t.dtype,
                       device=obj.device) for t in data[:-1]]
    model.eval()
    with torch.no_grad():
        for p in model.parameters():
            p.pow_(2)
        out = model(*ones)
    obj.record(None, passes=1.0 / max(1, data[0].shape[0]))  # one sample's forward pass
    return Measure("path_norm", float(out.to(torch.float64).sum()), None, config={
        "variant": "Σ_i f_{θ²}(1)_i, every parameter squared (biases included), all-ones input, eval mode"},
        extra={"input_shape": [list(t.shape[1:]) for t in data[:-1]]})
