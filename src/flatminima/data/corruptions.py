"""Image corruptions at 5 severities in the spirit of Hendrycks & Dietterich 2019 (ImageNet-C), for small
grey images in [0, 1] of shape (N, C, H, W), written with NumPy and SciPy.

Every corruption draws its randomness (noise, rotation sign, shift direction, occluder position) from a
``seed`` *independently of the severity*, so the corrupted images at severities 1..5 are the same random
corruption made stronger: the distance to the clean image grows with the severity.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage

from ..errors import FlatminimaError

# Severity s (1..5) -> strength, per corruption (pixel units for 8x8 images).
LEVELS: dict[str, tuple[float, ...]] = {
    "gaussian_noise": (0.04, 0.08, 0.12, 0.18, 0.26),  # noise standard deviation
    "blur": (0.4, 0.6, 0.8, 1.0, 1.3),  # Gaussian blur sigma (pixels)
    "contrast": (0.75, 0.6, 0.45, 0.3, 0.15),  # factor on the deviation from the image mean
    "rotation": (8.0, 16.0, 24.0, 32.0, 40.0),  # degrees, sign drawn per image
    "translation": (0.5, 1.0, 1.5, 2.0, 2.5),  # shift length (pixels), direction drawn per image
    "occlusion": (2, 3, 4, 5, 6),  # side of the square set to 0, centre drawn per image
}


def gaussian_noise(x: np.ndarray, level: float, rng: np.random.Generator) -> np.ndarray:
    return np.clip(x + level * rng.standard_normal(x.shape), 0.0, 1.0)


def blur(x: np.ndarray, level: float, rng: np.random.Generator) -> np.ndarray:
    return ndimage.gaussian_filter(x, sigma=(0, 0, level, level), mode="constant")


def contrast(x: np.ndarray, level: float, rng: np.random.Generator) -> np.ndarray:
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    return (x - mean) * level + mean


def rotation(x: np.ndarray, level: float, rng: np.random.Generator) -> np.ndarray:
    signs = rng.choice([-1.0, 1.0], size=len(x))
    return np.stack([ndimage.rotate(img, s * level, axes=(1, 2), reshape=False, order=1, mode="constant")
                     for img, s in zip(x, signs, strict=False)])


def translation(x: np.ndarray, level: float, rng: np.random.Generator) -> np.ndarray:
    angles = rng.uniform(0, 2 * np.pi, size=len(x))
    return np.stack([ndimage.shift(img, (0, level * np.sin(a), level * np.cos(a)), order=1, mode="constant")
                     for img, a in zip(x, angles, strict=False)])


def occlusion(x: np.ndarray, level: float, rng: np.random.Generator) -> np.ndarray:
    h, w = x.shape[-2:]
    centres = rng.uniform(0, 1, size=(len(x), 2)) * np.array([h, w])
    out = x.copy()
    half = level / 2
    for img, (ci, cj) in zip(out, centres, strict=False):
        # nested squares around a fixed centre: a larger severity hides a superset of pixels
        i0, i1 = int(np.clip(np.floor(ci - half), 0, h)), int(np.clip(np.floor(ci + half), 0, h))
        j0, j1 = int(np.clip(np.floor(cj - half), 0, w)), int(np.clip(np.floor(cj + half), 0, w))
        img[..., i0:i1, j0:j1] = 0.0
    return out


CORRUPTIONS: dict[str, Callable[[np.ndarray, float, np.random.Generator], np.ndarray]] = {
    "gaussian_noise": gaussian_noise, "blur": blur, "contrast": contrast, "rotation": rotation,
    "translation": translation, "occlusion": occlusion,
}


def corrupt(x: np.ndarray, name: str, severity: int, seed: int = 0) -> np.ndarray:
    """``x`` (N, C, H, W) in [0, 1] with corruption ``name`` at ``severity`` in 1..5."""
    if name not in CORRUPTIONS:
        raise FlatminimaError(f"unknown corruption {name!r}; allowed: {sorted(CORRUPTIONS)}.")
    if severity not in range(1, 6):
        raise FlatminimaError(f"severity must be an integer in 1..5, got {severity!r}.")
    if x.ndim != 4:
        raise FlatminimaError(f"corruptions take images of shape (N, C, H, W), got shape {x.shape}.")
    return CORRUPTIONS[name](np.asarray(x, dtype=np.float64), LEVELS[name][severity - 1],
                             np.random.default_rng(seed)).astype(np.float32)
