"""Turn results (tensors, NumPy values, costs, dtypes) into JSON-ready Python values, in one place."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .objective import Cost
from .results import Estimate


def plain(x: Any) -> Any:
    """Tensors, arrays, NumPy scalars, costs and dtypes as plain Python values; containers recursively."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().tolist()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (np.floating, np.integer, np.bool_)):
        return x.item()
    if isinstance(x, (Cost, Estimate)):
        return x.to_dict()
    if isinstance(x, dict):
        return {str(k): plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [plain(v) for v in x]
    if isinstance(x, torch.dtype):
        return str(x).replace("torch.", "")
    return x


def json_default(x: Any) -> Any:
    """A ``json.dumps(default=...)`` hook: plain values where possible, else the object's string."""
    out = plain(x)
    return str(x) if out is x else out
