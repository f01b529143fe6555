"""Input augmentation with torch, drawn from its own generator (reproducible, checkpointed).

- ``shift``: each sample moved by an integer offset in [−k, k] along each spatial axis (signals: the
  last axis; images: the last two), zero-filled (MNIST-1D is a translation task; small shifts for digits).
- ``noise``: x + N(0, σ²).
- ``flip``: a horizontal (last-axis) flip with probability ½ (images; for digits this changes the class
  semantics of some digits, so it is opt-in).
"""

from __future__ import annotations

import torch


def _shift_axis(x: torch.Tensor, offsets: torch.Tensor, axis: int) -> torch.Tensor:
    """x shifted by ``offsets[i]`` along ``axis`` (a negative axis), zero-filled: out[j] = x[j − offset]."""
    length = x.shape[axis]
    src = torch.arange(length, device=x.device)[None, :] - offsets[:, None].to(x.device)  # (N, L)
    valid = (src >= 0) & (src < length)
    shape = [x.shape[0]] + [1] * (x.dim() - 1)
    shape[axis] = length
    idx = src.clamp(0, length - 1).reshape(shape).expand_as(x)
    return torch.gather(x, axis, idx) * valid.reshape(shape).to(x.dtype)


def augment(x: torch.Tensor, kinds: list[str], gen: torch.Generator, *, shift: int = 2, noise: float = 0.05,
            spatial_dims: int = 1) -> torch.Tensor:
    """A randomly augmented copy of the batch ``x`` (N, ...) with ``spatial_dims`` trailing spatial axes."""
    n = x.shape[0]
    for kind in kinds:
        if kind == "shift" and shift > 0:
            for axis in range(-spatial_dims, 0):
                offsets = torch.randint(-shift, shift + 1, (n,), generator=gen)
                x = _shift_axis(x, offsets, axis)
        elif kind == "noise" and noise > 0:
            x = x + noise * torch.randn(x.shape, generator=gen, dtype=x.dtype).to(x.device)
        elif kind == "flip":
            flip = (torch.rand(n, generator=gen) < 0.5).to(x.device)
            x = torch.where(flip.reshape([n] + [1] * (x.dim() - 1)), x.flip(-1), x)
    return x


def spatial_dims_of(input_shape: tuple[int, ...]) -> int:
    """Trailing spatial axes: 2 for images (C, H, W) or (H, W) with H, W > 4, else 1 (signals, vectors)."""
    if len(input_shape) == 3 or (len(input_shape) == 2 and input_shape[0] > 4):
        return 2
    return 1
