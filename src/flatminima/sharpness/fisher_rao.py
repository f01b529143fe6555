"""Reparametrisation-invariant flatness: the Fisher-Rao norm and relative flatness.

Fisher-Rao norm (Liang, Poggio, Rakhlin & Stokes 2019), with the empirical Fisher (true labels):

    ‖θ‖²_fr = θᵀ F θ = (1/n) Σ_i ⟨θ, ∇_θ ℓ(f_θ(x_i), y_i)⟩²

For a bias-free ReLU net of depth D this equals (D+1)²·(1/n)Σ_i ⟨∂ℓ/∂f, f(x_i)⟩² (their Theorem 2.1);
the general form above is what we compute. Each ⟨θ, ∇_θ ℓ_i⟩ is the derivative of ℓ_i along θ itself,
so one Jacobian-vector product J_i θ per batch gives all of them: ⟨∂ℓ_i/∂f, J_i θ⟩. It is invariant to
rescaling a layer (and its bias) by α and the next by 1/α: each layer's ⟨W, ∇_W ℓ⟩ is.

Relative flatness (Petzka, Kamp, Adilova, Sminchisescu & Boley 2021, Def. 3), for one layer W (m × d,
torch layout, w_s = W[:, s] the weights leaving feature s):

    κ_Tr(W) = Σ_{s,s'} ⟨w_s, w_s'⟩ · Tr(H_{s,s'}),   H_{s,s'} = ∂²L/∂w_s∂w_s'   (an m × m block)
            = Σ_{j,k} (e_j ⊗ W[k,:])ᵀ H_W (e_j ⊗ W[k,:])

which is computed exactly from m² Hessian-vector products (m = the layer's output size; 100 for a
10-class last layer). It is invariant to rescaling the layer (H_W scales by 1/α²) and to rescaling the
features feeding it neuron by neuron.
"""

from __future__ import annotations

import torch
from torch.func import jvp

from ..errors import FlatminimaError
from ..objective import Objective
from ._common import output_batches, require_outputs
from .registry import register
from .result import Measure


@register("fisher_rao", "Fisher-Rao norm θᵀFθ = mean ⟨θ, ∇ℓ_i⟩² (Liang et al. 2019), rescaling-invariant")
def fisher_rao(obj: Objective) -> Measure:
    """(1/n) Σ_i ⟨θ, ∇_θ ℓ_i⟩² over the objective's data, exact (one JVP per batch); ``stderr`` None."""
    require_outputs(obj, "fisher_rao")
    theta = obj.params
    total, count = 0.0, 0
    for f, targets, loss in output_batches(obj):
        out, dout = jvp(f, (theta,), (theta,))
        out = out.detach().requires_grad_(True)
        # ∂ℓ_i/∂f_i for every sample i: the batch-mean loss times its size, differentiated once.
        (dl,) = torch.autograd.grad(loss(out, targets) * out.shape[0], out)
        s = (dl * dout).reshape(out.shape[0], -1).sum(1).to(torch.float64)
        total, count = total + float(s.pow(2).sum()), count + out.shape[0]
    # The outputs were computed outside the Objective's metered calls: count the pass (a JVP and a
    # backward per batch, about one gradient's work) so the cost is not hidden.
    obj._counter.data_passes += 1.0
    obj._counter.grads += 1
    return Measure("fisher_rao", total / count, None, extra={"samples": count, "labels": "true",
                                                                    "mode": obj.mode})


@register("relative_flatness", "Petzka et al.'s relative flatness Σ⟨w_s,w_s'⟩Tr(H_ss') of one layer, exact")
def relative_flatness(obj: Objective, *, layer: str | None = None) -> Measure:
    """κ_Tr of the weight matrix ``layer`` (default: the last 2-D parameter, the classifier layer).

    Exact from m² Hessian-vector products, m the layer's number of rows (outputs).
    """
    require_outputs(obj, "relative_flatness")
    name = layer or _last_matrix(obj)
    if name not in obj.param_names:
        raise FlatminimaError(f"layer={name!r} is not a parameter of the objective; choose one of "
                              f"{_matrices(obj)}.")
    W = obj.unflatten(obj.params)[name]
    if W.dim() != 2:
        raise FlatminimaError(f"layer={name!r} has shape {tuple(W.shape)}; relative flatness needs a "
                              "2-D weight.")
    W = W.detach().clone()
    total = 0.0
    for j in range(W.shape[0]):
        for k in range(W.shape[0]):
            v = torch.zeros(obj.dim, dtype=obj.dtype, device=obj.device)
            obj.unflatten(v)[name][j] = W[k]
            total += float(torch.dot(v, obj.hvp(v)))
    return Measure("relative_flatness", total, None, extra={"layer": name, "shape": list(W.shape),
                                                            "mode": obj.mode})


def _matrices(obj: Objective) -> list[str]:
    return [n for n, s in zip(obj.param_names, obj.param_shapes, strict=True) if len(s) == 2]


def _last_matrix(obj: Objective) -> str:
    mats = _matrices(obj)
    if not mats:
        raise FlatminimaError("relative_flatness needs a 2-D weight matrix (a Linear layer) among the "
                              "parameters.")
    return mats[-1]
