"""Two-class synthetic data whose class separation is a parameter (Mason-Williams et al. 2026, claim C14:
close classes need a sharper solution than far-apart ones, at the same 100% accuracy).

Class c ∈ {0, 1} has first coordinate x₁ = ±(separation/2 + spread·|z|), z ~ N(0, 1), and the remaining
coordinates N(0, spread²): the classes are linearly separable with a gap (margin band) of exactly
``separation`` along x₁, whatever the spread, so 100% accuracy is always reachable.
"""

from __future__ import annotations

import numpy as np

from ..errors import FlatminimaError, require_nonnegative, require_positive, require_positive_int


def two_class_arrays(num_samples: int = 1000, separation: float = 1.0, *, dim: int = 2, spread: float = 1.0,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``num_samples`` points (half per class) in ``dim`` dimensions, and their 0/1 labels, shuffled."""
    require_positive_int("num_samples", num_samples)
    require_positive_int("dim", dim)
    require_nonnegative("separation", separation)
    require_positive("spread", spread)
    if num_samples < 2:
        raise FlatminimaError(f"num_samples must be at least 2 (one per class), got {num_samples}.")
    rng = np.random.default_rng(seed)
    y = np.arange(num_samples) % 2
    x = spread * rng.standard_normal((num_samples, dim))
    sign = np.where(y == 1, 1.0, -1.0)
    x[:, 0] = sign * (separation / 2 + np.abs(x[:, 0]))
    order = rng.permutation(num_samples)
    return x[order].astype(np.float32), y[order].astype(np.int64)
