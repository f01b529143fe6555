"""Convolutional models for 1-D signals (length,) / (C, length) and images (H, W) / (C, H, W):
a plain 2-D CNN, a small ResNet with BatchNorm (He et al. 2016) and a VGG-style net
(Simonyan & Zisserman 2015).

The ResNet and VGG nets pick 1-D or 2-D layers from the input shape, so they run on every built-in data set.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from ..errors import FlatminimaError, require_in_range, require_positive_int


def _layers(input_shape: Sequence[int]) -> tuple[int, int, type, type, type, list[nn.Module]]:
    """(in_channels, spatial dims, Conv, BatchNorm, MaxPool, leading reshape) for ``input_shape``."""
    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 1:  # (length,) -> (1, length)
        return 1, 1, nn.Conv1d, nn.BatchNorm1d, nn.MaxPool1d, [nn.Unflatten(1, (1, shape[0]))]
    if len(shape) == 2 and shape[0] <= 4:  # (C, length) with few channels: a multichannel signal
        return shape[0], 1, nn.Conv1d, nn.BatchNorm1d, nn.MaxPool1d, []
    if len(shape) == 2:  # (H, W) -> (1, H, W)
        return 1, 2, nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d, [nn.Unflatten(1, (1, shape[0]))]
    if len(shape) == 3:
        return shape[0], 2, nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d, []
    raise FlatminimaError(f"convolutional models take inputs of shape (L,), (C, L), (H, W) or (C, H, W); "
                          f"got input_shape {shape}.")


def _check(width: int, depth: int, dropout: float) -> None:
    require_positive_int("width", width)
    require_positive_int("depth", depth)
    require_in_range("dropout", dropout, 0.0, 1.0, inclusive=True)
    if dropout == 1.0:
        raise FlatminimaError("dropout must be below 1 (1 drops every unit), got 1.0.")


def _head(channels: int, num_classes: int, dims: int, dropout: float) -> list[nn.Module]:
    pool = nn.AdaptiveAvgPool1d(1) if dims == 1 else nn.AdaptiveAvgPool2d(1)
    drop = [nn.Dropout(dropout)] if dropout > 0 else []
    return [pool, nn.Flatten(), *drop, nn.Linear(channels, num_classes)]


def cnn2d(input_shape: Sequence[int], num_classes: int, *, channels: int = 16, depth: int = 2,
          dropout: float = 0.0, batchnorm: bool = False) -> nn.Module:
    """A 2-D CNN: ``depth`` blocks of conv3x3 (+BatchNorm) + ReLU, max-pooling while the image is ≥ 2 px."""
    _check(channels, depth, dropout)
    in_ch, dims, _conv, _bn, _pool, pre = _layers(input_shape)
    if dims != 2:
        raise FlatminimaError(f"cnn2d takes images (H, W) or (C, H, W); got input_shape {tuple(input_shape)} "
                              "(use cnn1d for signals).")
    size = min(input_shape[-2:])
    layers: list[nn.Module] = list(pre)
    for _ in range(depth):
        layers.append(nn.Conv2d(in_ch, channels, 3, padding=1))
        layers += [nn.BatchNorm2d(channels)] if batchnorm else []
        layers.append(nn.ReLU())
        if size >= 2:
            layers.append(nn.MaxPool2d(2))
            size //= 2
        in_ch = channels
    return nn.Sequential(*layers, *_head(channels, num_classes, 2, dropout))


class BasicBlock(nn.Module):
    """out = ReLU(BN(conv(ReLU(BN(conv(x))))) + shortcut(x)), shortcut a 1x1 conv + BN when shapes change."""

    def __init__(self, conv: type, bn: type, c_in: int, c_out: int, stride: int, batchnorm: bool) -> None:
        super().__init__()
        norm = (lambda c: bn(c)) if batchnorm else (lambda c: nn.Identity())
        bias = not batchnorm  # a bias before BatchNorm is redundant
        self.body = nn.Sequential(conv(c_in, c_out, 3, stride=stride, padding=1, bias=bias), norm(c_out),
                                  nn.ReLU(), conv(c_out, c_out, 3, padding=1, bias=bias), norm(c_out))
        self.shortcut = (nn.Identity() if stride == 1 and c_in == c_out else
                         nn.Sequential(conv(c_in, c_out, 1, stride=stride, bias=not batchnorm), norm(c_out)))
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(self.body(x) + self.shortcut(x))


def resnet(input_shape: Sequence[int], num_classes: int, *, width: int = 16, depth: int = 1, stages: int = 3,
           dropout: float = 0.0, batchnorm: bool = True) -> nn.Module:
    """A small ResNet: a conv stem, ``stages`` stages of ``depth`` basic blocks with ``width·2^i`` channels
    (stride 2 from the second stage), global average pooling and a linear head (He et al. 2016)."""
    _check(width, depth, dropout)
    require_positive_int("stages", stages)
    in_ch, dims, conv, bn, _pool, pre = _layers(input_shape)
    layers: list[nn.Module] = [*pre, conv(in_ch, width, 3, padding=1, bias=not batchnorm),
                               bn(width) if batchnorm else nn.Identity(), nn.ReLU()]
    c = width
    for i in range(stages):
        for j in range(depth):
            c_out = width * 2 ** i
            layers.append(BasicBlock(conv, bn, c, c_out, 2 if (i > 0 and j == 0) else 1, batchnorm))
            c = c_out
    return nn.Sequential(*layers, *_head(c, num_classes, dims, dropout))


def vgg(input_shape: Sequence[int], num_classes: int, *, width: int = 16, depth: int = 2, stages: int = 3,
        dropout: float = 0.0, batchnorm: bool = False, hidden: int = 64) -> nn.Module:
    """VGG-style: ``stages`` stages of ``depth`` conv3 (+BN) + ReLU with ``width·2^i`` channels, each stage
    ending in max-pooling while the input is ≥ 2 long, then a two-layer classifier with dropout
    (Simonyan & Zisserman 2015)."""
    _check(width, depth, dropout)
    require_positive_int("stages", stages)
    require_positive_int("hidden", hidden)
    in_ch, dims, conv, bn, pool, pre = _layers(input_shape)
    size = min(input_shape[-dims:]) if len(input_shape) > 1 else input_shape[0]
    layers: list[nn.Module] = list(pre)
    for i in range(stages):
        for _ in range(depth):
            c = width * 2 ** i
            layers += [conv(in_ch, c, 3, padding=1), *([bn(c)] if batchnorm else []), nn.ReLU()]
            in_ch = width * 2 ** i
        if size >= 2:
            layers.append(pool(2))
            size //= 2
    gap = nn.AdaptiveAvgPool1d(1) if dims == 1 else nn.AdaptiveAvgPool2d(1)
    drop = [nn.Dropout(dropout)] if dropout > 0 else []
    return nn.Sequential(*layers, gap, nn.Flatten(), nn.Linear(in_ch, hidden), nn.ReLU(), *drop,
                         nn.Linear(hidden, num_classes))
