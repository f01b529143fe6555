"""Model zoo: every built-in model on every input kind it accepts, its size options, and clear refusals."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from flatminima.errors import FlatminimaError
from flatminima.models import MODELS, build, register_model


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


ACCEPTS = {"mlp": [(40,), (1, 8, 8), (3,)], "cnn1d": [(40,), (2, 40)], "cnn2d": [(1, 8, 8), (8, 8)],
           "resnet": [(40,), (1, 8, 8)], "vgg": [(40,), (1, 8, 8)]}


@pytest.mark.parametrize("name", sorted(ACCEPTS))
def test_forward_shapes_and_batchnorm_dropout(name):
    for shape in ACCEPTS[name]:
        for kw in ({}, {"dropout": 0.3, "batchnorm": True}):
            torch.manual_seed(0)
            m = build(name, shape, 7, **kw)
            out = m(torch.randn(5, *shape))
            assert out.shape == (5, 7)
            assert any(isinstance(x, nn.Dropout) for x in m.modules()) == ("dropout" in kw)
            has_bn = any(isinstance(x, nn.modules.batchnorm._BatchNorm) for x in m.modules())
            assert has_bn == ("batchnorm" in kw or name == "resnet")


def test_mlp_size_formula():
    d, w, k = 40, 32, 10
    for depth in (1, 2, 3):
        expected = (d * w + w) + (depth - 1) * (w * w + w) + (w * k + k)
        assert n_params(build("mlp", (d,), k, width=w, depth=depth)) == expected


@pytest.mark.parametrize("name,size", [("resnet", "width"), ("vgg", "width"), ("cnn2d", "channels")])
def test_width_and_depth_grow_the_model(name, size):
    shape = (1, 8, 8)
    base = n_params(build(name, shape, 10, **{size: 8}))
    assert n_params(build(name, shape, 10, **{size: 16})) > base
    assert n_params(build(name, shape, 10, **{size: 8}, depth=3)) > base


def test_resnet_blocks_have_residual_connections():
    torch.manual_seed(0)
    m = build("resnet", (1, 8, 8), 10, width=4, depth=1, stages=1)
    block = next(x for x in m.modules() if x.__class__.__name__ == "BasicBlock")
    x = torch.randn(3, 4, 8, 8)
    assert torch.allclose(block(x), torch.relu(block.body(x) + x))


def test_refusals_name_the_problem():
    with pytest.raises(FlatminimaError, match="cnn1d takes signals"):
        build("cnn1d", (1, 8, 8), 10)
    with pytest.raises(FlatminimaError, match="cnn2d takes images"):
        build("cnn2d", (40,), 10)
    with pytest.raises(FlatminimaError, match="dropout"):
        build("mlp", (4,), 2, dropout=1.5)
    with pytest.raises(FlatminimaError, match="width"):
        build("vgg", (40,), 2, width=0)
    with pytest.raises(FlatminimaError, match="its options are"):
        build("resnet", (40,), 2, widht=8)
    with pytest.raises(FlatminimaError, match="unknown model"):
        build("transformerx", (40,), 2)


def test_user_factory_and_registration():
    m = build("torch.nn:Linear", (4,), 2, in_features=4, out_features=2)
    assert isinstance(m, nn.Linear)
    with pytest.raises(FlatminimaError, match="not a torch.nn.Module"):
        build("builtins:dict", (4,), 2, x=4.0)
    with pytest.raises(FlatminimaError, match="refused its arguments"):
        build("torch.nn:Linear", (4,), 2, widht=3)
    register_model("_tiny_test", lambda shape, k: nn.Linear(math.prod(shape), k))
    try:
        assert build("_tiny_test", (3,), 2).out_features == 2
    finally:
        MODELS.pop("_tiny_test")
