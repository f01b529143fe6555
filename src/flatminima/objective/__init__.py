"""The Objective L(θ): exact full-data loss, gradient, Hessian- and GGN-vector products, a cost meter.

One package of private modules, composed (flatminima.objective._objective says how):

    _batches     the batch source: data, chunks, device, fixed dropout masks, the memory plan
    _memory      the memory model behind the plan (MemoryPlan, plan)
    _terms       the loss terms: the named losses, (θ, batch) -> (s_b, w_b) for a network or f(θ)
    _meter       Cost and the Meter every piece of work is recorded on (and observers subscribe to)
    _products    Hessian-/GGN-vector products as plain functions of (batches, terms, θ, v)
    _checks      runs the Hessian products and checks their method first (forward-over-reverse against double
                 backward, @once_differentiable functions in the graph, the finite differences' error)
    _finite_difference   Hessian products by central differences of the exact gradient, with a stated error
    _attention   every operation on PyTorch SDPA's math backend (second derivatives); the errors for ops without
    _compiled    a torch.compile'd model measured on its eager module
    _storage     the model copy's parameters as views of θ₀ (the parameters held once at rest)
    _operators   Operator: a matrix as v ↦ M v (obj.hessian, obj.ggn), what curvature algorithms take
    _objective   Objective and FunctionObjective (the same Objective with a one-batch source)
    _pointwise   values at many θ at once (landscape grids, perturbation probes)
    _sharded     the Objective over an FSDP2-sharded model (a variant Objective builds for such a model)

Everything other code needs is named here; the private modules are imported only inside this package.
"""

from ._batches import iter_row_chunks, leaf_tensors, move_batch, name_matches, row_count
from ._memory import MemoryPlan
from ._meter import Cost, Meter
from ._objective import FunctionObjective, Objective
from ._operators import Operator
from ._pointwise import LOOP_CHUNK, MERGE_ROWS, Span, activation_bytes, default_engine, values_at
from ._products import HVP_BACKENDS
from ._sharded import ShardedObjective  # registers the FSDP2 variant of Objective
from ._terms import ELEMENTWISE_LOSSES, LOSSES, LossTerms, check_class_labels

__all__ = [
    "ELEMENTWISE_LOSSES", "HVP_BACKENDS", "LOOP_CHUNK", "LOSSES", "MERGE_ROWS", "Cost", "FunctionObjective",
    "LossTerms", "MemoryPlan", "Meter", "Objective", "Operator", "ShardedObjective", "Span",
    "activation_bytes", "check_class_labels", "default_engine", "iter_row_chunks", "leaf_tensors", "move_batch",
    "name_matches", "row_count", "values_at",
]
