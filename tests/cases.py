"""Small named test cases several test modules share (imported as ``from cases import tiny_mlp, ...``).

Every builder is deterministic and draws in a fixed order, so a module that switches to one of these gets
bit-for-bit the model, data or matrix it built itself before:

* :func:`tiny_mlp` seeds the global RNG (``torch.manual_seed``) and then creates its layers front to back;
* :func:`tiny_data`, :func:`tiny_problem`, :func:`random_symmetric`, :func:`spiked_wishart` and
  :func:`with_eigenvalues` draw from their own ``torch.Generator``, never from the global RNG.
"""

from __future__ import annotations

import torch
from torch import nn

DT = torch.float64


def tiny_mlp(*sizes: int, act: type[nn.Module] = nn.Tanh, norm: type[nn.Module] | None = None, bias: bool = True,
             seed: int | None = 0, dtype: torch.dtype | None = DT) -> nn.Sequential:
    """``Linear(sizes[0], sizes[1]), [norm(sizes[1])], act(), ..., Linear(sizes[-2], sizes[-1])``.

    ``torch.manual_seed(seed)`` first (``seed=None``: draw from the global RNG as it stands), then the layers
    in order; ``norm`` (e.g. ``nn.BatchNorm1d``, ``nn.LayerNorm``) goes after each hidden ``Linear``, before
    the activation. ``dtype=None`` keeps the default dtype the layers were created in; otherwise the model is
    converted with ``.to(dtype)`` after initialisation (as ``.double()`` does).
    """
    if len(sizes) < 2:
        raise ValueError("tiny_mlp needs at least an input and an output size")
    if seed is not None:
        torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b, bias=bias))
        if i < len(sizes) - 2:
            if norm is not None:
                layers.append(norm(b))
            layers.append(act())
    model = nn.Sequential(*layers)
    return model if dtype is None else model.to(dtype)


def tiny_data(n: int = 40, d: int | tuple[int, ...] = 4, classes: int = 3, seed: int = 0,
              dtype: torch.dtype = DT) -> tuple[torch.Tensor, torch.Tensor]:
    """Classification data from ``torch.Generator().manual_seed(seed)``: ``X ~ N(0, 1)`` of shape ``(n, d)``
    (``d`` may be a shape tuple) drawn first, then labels ``y`` uniform in ``[0, classes)`` of shape ``(n,)``."""
    g = torch.Generator().manual_seed(seed)
    shape = (d,) if isinstance(d, int) else tuple(d)
    X = torch.randn(n, *shape, generator=g, dtype=dtype)
    y = torch.randint(0, classes, (n,), generator=g)
    return X, y


def tiny_problem(*sizes: int, n: int = 40, seed: int = 0, data_seed: int | None = None, act: type[nn.Module] = nn.Tanh,
                 dtype: torch.dtype = DT) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """``(model, X, y)``: ``tiny_mlp(*sizes, act=act, seed=seed, dtype=dtype)`` and
    ``tiny_data(n, sizes[0], sizes[-1], data_seed (default: seed), dtype)`` — a classifier and its data."""
    model = tiny_mlp(*sizes, act=act, seed=seed, dtype=dtype)
    X, y = tiny_data(n, sizes[0], sizes[-1], seed if data_seed is None else data_seed, dtype=dtype)
    return model, X, y


def with_eigenvalues(eigs, seed: int = 0, *, generator: torch.Generator | None = None,
                     dtype: torch.dtype | None = DT) -> torch.Tensor:
    """``A = Q diag(eigs) Qᵀ`` with ``Q`` the QR factor of an ``n × n`` Gaussian from ``generator`` (default: a
    fresh one seeded ``seed``); pass a generator to keep drawing from it afterwards. ``dtype=None``: the default
    dtype."""
    g = torch.Generator().manual_seed(seed) if generator is None else generator
    n = len(eigs)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=dtype))
    return Q @ torch.diag(torch.tensor(eigs, dtype=dtype)) @ Q.T


def random_symmetric(n: int, seed: int = 0) -> torch.Tensor:
    """``(B + Bᵀ)/2`` for an ``n × n`` float64 Gaussian ``B``: an indefinite symmetric matrix."""
    g = torch.Generator().manual_seed(seed)
    B = torch.randn(n, n, generator=g, dtype=torch.float64)
    return (B + B.T) / 2


def spiked_wishart(n: int = 200, samples: int = 400, spikes=(25.0, 12.0), seed: int = 1) -> torch.Tensor:
    """XᵀX/samples + Σ s·uuᵀ: a Marchenko-Pastur bulk with outliers (the shape of a trained net's Hessian)."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(samples, n, generator=g, dtype=torch.float64)
    A = X.T @ X / samples
    U, _ = torch.linalg.qr(torch.randn(n, len(spikes), generator=g, dtype=torch.float64))
    for s, u in zip(spikes, U.T, strict=True):
        A += s * torch.outer(u, u)
    return (A + A.T) / 2


def rank_problem(n: int = 100) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """The multi-process tests' problem: ``n`` samples of 6 float64 features and 3 classes (a generator seeded
    0), and a float64 ``Linear(6, 8)-Tanh-Linear(8, 3)`` drawn after ``torch.manual_seed(1)``."""
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(n, 6, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (n,), generator=gen)
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    return model, X, y
