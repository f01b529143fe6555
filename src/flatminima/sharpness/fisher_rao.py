"""Reparametrisation-invariant flatness: the Fisher-Rao norm and relative flatness.

Fisher-Rao norm (Liang, Poggio, Rakhlin & Stokes 2019, "Fisher-Rao Metric, Geometry, and Complexity of
Neural Networks", AISTATS, Definition 2):

    ‖θ‖²_fr = ⟨θ, I(θ) θ⟩,   I(θ) = E_x E_{y ~ p_θ(·|x)} [∇_θ ℓ(f_θ(x), y) ∇_θ ℓ(f_θ(x), y)ᵀ]
            = E_x Σ_y p_θ(y|x) ⟨θ, ∇_θ ℓ(f_θ(x), y)⟩²

I(θ) is the Fisher information of the model's conditional distribution p_θ(y|x) = softmax(f_θ(x))_y
(labels drawn from the model, summed exactly over the classes; x over the objective's data). The
empirical Fisher (labels from the data, ``labels="data"``) replaces the inner sum by ⟨θ, ∇ℓ(f(x_i), y_i)⟩².
For a bias-free ReLU network of depth L, ⟨θ, ∇_θ ℓ⟩ = (L+1)⟨∂ℓ/∂f, f_θ(x)⟩ (their Lemma 2.1), so
‖θ‖_fr = (L+1)·sqrt(E⟨∂ℓ/∂f, f⟩²). Each ⟨θ, ∇_θ ℓ_i⟩ is the derivative of ℓ_i along θ itself: one
Jacobian-vector product J θ per batch gives every sample's ⟨J_i θ, ∂ℓ/∂f_i⟩, and with the cross-entropy
∂ℓ(f, y)/∂f = p − e_y, so the sum over classes costs nothing more. It is invariant to rescaling a ReLU
layer (and its bias) by α and the next by 1/α: each layer's ⟨W, ∇_W ℓ⟩ is.

Relative flatness (Petzka, Kamp, Adilova, Sminchisescu & Boley 2021, "Relative Flatness and
Generalization", NeurIPS, Def. 3), for one layer with weight matrix W (d × m in torch's nn.Linear layout;
w_s = W[s, :], the s-th ROW, is neuron s's incoming weight vector from the m features φ(x)):

    κ_Tr(W) = Σ_{s,s'} ⟨w_s, w_s'⟩ · Tr(H_{s,s'}),   H_{s,s'} = ∂²L/∂w_s∂w_s'   (an m × m block)
            = Σ_{s,s',i} G_{ss'} H_W[(s,i),(s',i)],   G = W Wᵀ  (d × d)

Two exact computations:

* ``method="output"`` (the layer whose output is the model's output, Petzka et al.'s penultimate-feature
  layer): z = W h + b, so H_W = (1/n) Σ_n ∇²_z ℓ_n ⊗ h_n h_nᵀ and
  κ = (1/n) Σ_n ‖h_n‖² ⟨G, ∇²_z ℓ_n⟩, one forward pass plus rank(G) products in output space per batch.
* ``method="hvp"`` (any 2-D weight): G = Σ_r u_r u_rᵀ (u_r = s_r U[:, r] from W's SVD) and
  κ = Σ_r Σ_i (u_r ⊗ e_i)ᵀ H_W (u_r ⊗ e_i): rank(W) · m Hessian-vector products.

``method="auto"`` uses the first when the layer's module output is the model's output (checked with a
forward hook, eval mode, tensor data), else the second. κ is invariant to the layer-wise rescaling
h → αh, W → W/α that a ReLU layer before it allows (Dinh et al. 2017): G scales by 1/α², H_W by α².
Pairing columns instead of rows (⟨W[:, s], W[:, s']⟩) is a different quantity, not Petzka et al.'s.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.func import jvp

from ..errors import FlatminimaError, require_choice
from ..objective import Objective
from ._common import output_batches, require_outputs, tensor_data
from .registry import register
from .result import Measure


def is_bias(name: str) -> bool:
    """A parameter named ``bias`` (``nn.Linear``, ``nn.Conv*``, normalisation layers' shifts)."""
    return name.rsplit(".", 1)[-1] == "bias"


def weight_mask(obj: Objective, biases: bool) -> torch.Tensor:
    """1 on the entries of ``obj.params`` counted, 0 on the biases when ``biases`` is False."""
    parts = [torch.full((math.prod(shape),), 1.0 if biases or not is_bias(name) else 0.0, dtype=obj.dtype,
                        device=obj.device) for name, shape in zip(obj.param_names, obj.param_shapes, strict=True)]
    return torch.cat(parts)


@register("fisher_rao", "Fisher-Rao norm sqrt(θᵀI(θ)θ), I the model's Fisher (Liang et al. 2019), rescaling-invariant")
def fisher_rao(obj: Objective, *, squared: bool = False, labels: str = "model", biases: bool = False) -> Measure:
    """Liang et al.'s Fisher-Rao norm ‖θ‖_fr = sqrt(⟨θ, I(θ)θ⟩) over the objective's data, exact.

    Defaults are the paper's definition: the norm (``squared=False``; ``True`` gives ‖θ‖²_fr), the Fisher
    information of the model's p_θ(y|x) (``labels="model"``, exact sum over the classes, needs the
    softmax cross-entropy loss; ``"data"``: the empirical Fisher with the data's labels, any loss), and θ
    the weights of the network (``biases=False``: Liang et al.'s networks have no biases, and their
    identity ⟨θ, ∇ℓ⟩ = (L+1)⟨∂ℓ/∂f, f⟩ needs bias-free θ; ``True`` puts the biases in θ). One JVP per
    batch; ``stderr`` None.
    """
    require_outputs(obj, "fisher_rao")
    require_choice("labels", labels, ["model", "data"])
    if not isinstance(squared, bool) or not isinstance(biases, bool):
        raise FlatminimaError(f"squared and biases must be True or False, got {squared!r}, {biases!r}.")
    theta = obj.params
    tangent = theta * weight_mask(obj, biases)
    total, count = 0.0, 0
    for f, targets, loss in output_batches(obj):
        out, dout = jvp(f, (theta,), (tangent,))
        out, dout = out.detach(), dout.detach()
        n = out.shape[0]
        if labels == "data":
            z = out.clone().requires_grad_(True)
            with torch.enable_grad():
                (dl,) = torch.autograd.grad(loss(z, targets) * n, z)  # ∂ℓ_i/∂f_i for every sample i
            s = (dl * dout).reshape(n, -1).sum(1).to(torch.float64)
            total += float(s.pow(2).sum())
        else:
            _require_cross_entropy(out, targets, loss)
            p = torch.softmax(out.to(torch.float64), dim=1)
            d = dout.to(torch.float64)
            # ⟨J θ, p − e_c⟩ for every class c, weighted by p_c: Σ_c p_c (⟨Jθ, p⟩ − (Jθ)_c)².
            s = (d * p).sum(1, keepdim=True) - d
            total += float((p * s.pow(2)).sum())
        count += n
    # The outputs were computed outside the Objective's metered calls: count the pass (a JVP and a
    # backward per batch, about one gradient's work) so the cost is not hidden.
    obj.record("grads", 1, 1.0)
    sq = total / count
    fisher = ("Fisher of p_θ(y|x) (labels from the model, exact sum over classes)" if labels == "model"
              else "empirical Fisher (labels from the data)")
    variant = (f"{'‖θ‖²_fr = θᵀIθ' if squared else '‖θ‖_fr = sqrt(θᵀIθ)'}, I = {fisher}, "
               f"θ = {'all parameters' if biases else 'weights only (biases excluded)'}")
    return Measure("fisher_rao", sq if squared else math.sqrt(sq), None,
                   config={"variant": variant},
                   extra={"samples": count, "labels": labels, "squared_norm": sq, "mode": obj.mode})


def _require_cross_entropy(out: torch.Tensor, targets: torch.Tensor, loss) -> None:
    if out.dim() != 2 or targets.dim() != 1 or targets.dtype.is_floating_point:
        raise FlatminimaError(
            "fisher_rao labels='model' needs class logits (n × C outputs) and integer class targets: the "
            "Fisher of p_θ(y|x) = softmax(f(x)). For regression or other losses use labels='data'.")
    ce = nn.functional.cross_entropy(out, targets)
    if not torch.allclose(loss(out, targets), ce, rtol=1e-5, atol=1e-7):
        raise FlatminimaError(
            "fisher_rao labels='model' needs the softmax cross-entropy loss (it takes p_θ(y|x) = softmax of "
            "the outputs); this objective's loss differs. Use labels='data' (the empirical Fisher).")


@register("relative_flatness",
          "Petzka et al.'s relative flatness Σ⟨w_s,w_s'⟩Tr(H_ss'), w_s a neuron's incoming weights, exact")
def relative_flatness(obj: Objective, *, layer: str | None = None, method: str = "auto") -> Measure:
    """κ_Tr of the weight matrix ``layer`` (default: the last 2-D parameter, the classifier layer), exact.

    w_s are the rows of the weight (neurons' incoming weights). ``method``: ``"output"`` (closed form for
    the layer producing the model output, one pass), ``"hvp"`` (rank(W)·m Hessian-vector products, any
    layer) or ``"auto"`` (``"output"`` where it applies).
    """
    require_outputs(obj, "relative_flatness")
    require_choice("method", method, ["auto", "output", "hvp"])
    name = layer or last_matrix(obj)
    if name not in obj.param_names:
        raise FlatminimaError(f"layer={name!r} is not a parameter of the objective; choose one of "
                              f"{_matrices(obj)}.")
    W = obj.unflatten(obj.params)[name]
    if W.dim() != 2:
        raise FlatminimaError(f"layer={name!r} has shape {tuple(W.shape)}; relative flatness needs a "
                              "2-D weight.")
    W = W.detach().clone()
    U, S, _ = torch.linalg.svd(W.to(torch.float64), full_matrices=False)
    keep = S > S.max() * max(W.shape) * torch.finfo(W.dtype).eps if S.numel() else S > 0
    factors = (U[:, keep] * S[keep]).T.to(obj.dtype)  # rows u_r, Σ_r u_r u_rᵀ = W Wᵀ
    parts = output_layer_parts(obj, name) if method in ("auto", "output") else None
    if method == "output" and parts is None:
        raise FlatminimaError(
            f"relative_flatness method='output' needs {name!r} to belong to an nn.Linear whose output is the "
            "model's output (2-D), tensor data and mode='eval'; use method='hvp' (exact for any layer).")
    if parts is not None:
        total, used = _kappa_output(obj, parts, factors), "output"
    else:
        total, used = _kappa_hvp(obj, name, factors, W.shape[1]), "hvp"
    variant = ("κ_Tr = Σ_{s,s'} ⟨w_s,w_s'⟩ Tr(H_ss'), w_s = rows of the weight (incoming weights); "
               + ("closed form (1/n)Σ_n ‖h_n‖²⟨WWᵀ, ∇²_z ℓ_n⟩ for the output layer" if used == "output"
                  else f"exact from rank(W)·m = {factors.shape[0]}·{W.shape[1]} Hessian-vector products"))
    return Measure("relative_flatness", total, None, config={"layer": name, "method": used, "variant": variant},
                   extra={"layer": name, "shape": list(W.shape), "rank": int(factors.shape[0]),
                          "method": used, "mode": obj.mode})


def _kappa_hvp(obj: Objective, name: str, factors: torch.Tensor, m: int) -> float:
    total = 0.0
    for u in factors:
        for i in range(m):
            v = torch.zeros(obj.dim, dtype=obj.dtype, device=obj.device)
            obj.unflatten(v)[name][:, i] = u
            total += float(torch.dot(v, obj.hvp(v)))
    return total


def output_layer_parts(obj: Objective, name: str):
    """(model, module, inputs..., targets, loss) when ``name`` is the weight of the nn.Linear producing the
    model's output; None where the closed form does not apply (then the HVP route is used)."""
    if obj.mode != "eval" or not name.endswith("weight"):
        return None
    model = obj.model_at(obj.params)
    prefix = name[: -len("weight")].rstrip(".")
    try:
        module = model.get_submodule(prefix)
    except AttributeError:
        return None
    if not isinstance(module, nn.Linear):
        return None
    try:
        data = tensor_data(obj, "relative_flatness")
    except FlatminimaError:
        return None
    loss = next(output_batches(obj))[2]
    data = tuple(t.to(device=obj.device, dtype=obj.dtype) if t.is_floating_point() else t.to(obj.device)
                 for t in data)
    seen: dict[str, torch.Tensor] = {}
    hook = module.register_forward_hook(lambda mod, args, out: seen.update(h=args[0], z=out))
    try:
        with torch.no_grad():
            out = model(*(t[:2] for t in data[:-1]))
    finally:
        hook.remove()
    if seen.get("z") is not out or out.dim() != 2 or seen["h"].dim() != 2:
        return None
    return model, module, data, loss


def _kappa_output(obj: Objective, parts, factors: torch.Tensor, rows: int = 1024) -> float:
    model, module, data, loss = parts
    n = data[0].shape[0]
    seen: dict[str, torch.Tensor] = {}
    hook = module.register_forward_hook(lambda mod, args, out: seen.update(h=args[0]))
    total = 0.0
    try:
        for start in range(0, n, rows):
            batch = [t[start:start + rows] for t in data]
            with torch.no_grad():
                out = model(*batch[:-1])
            h2 = seen["h"].pow(2).sum(1, keepdim=True)  # ‖h_n‖²
            z = out.detach().clone().requires_grad_(True)
            with torch.enable_grad():
                (g,) = torch.autograd.grad(loss(z, batch[-1]) * z.shape[0], z, create_graph=True)
                for u in factors:
                    # Σ_n ‖h_n‖² u_rᵀ ∇²_z ℓ_n u_r: second derivative along V_n = ‖h_n‖ u_r
                    V = h2.sqrt() * u[None, :]
                    (hv,) = torch.autograd.grad(g, z, grad_outputs=V, retain_graph=True)
                    total += float((V * hv).sum())
    finally:
        hook.remove()
    obj.record(None, passes=1.0)  # one forward pass outside the Objective's metered calls
    return total / n


def _matrices(obj: Objective) -> list[str]:
    return [n for n, s in zip(obj.param_names, obj.param_shapes, strict=True) if len(s) == 2]


def last_matrix(obj: Objective) -> str:
    mats = _matrices(obj)
    if not mats:
        raise FlatminimaError("relative_flatness needs a 2-D weight matrix (a Linear layer) among the "
                              "parameters.")
    return mats[-1]
