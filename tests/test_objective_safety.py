"""An Objective recovers from failures and says what precision and data it measures.

Failed products leave no cached state behind; half-precision weights, autocast regions and a model's own
lower-precision arithmetic are decided and stated; a process group without ``distributed=True`` is named.
References are exact: a fresh Objective, float64 twins of the models, dense Hessians.
"""

import torch
from torch import nn

from flatminima import Objective

# ----------------------------------------------------------------------------- failed products


class _Square(torch.autograd.Function):
    """x² whose backward is differentiable only while ``twice`` is on (a fused kernel that is switched off)."""

    twice = False

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        if _Square.twice:
            return 2 * x * g
        return _Once.apply(x, g)


class _Once(torch.autograd.Function):
    """2·x·g with no derivative of its own, as a fused attention backward."""

    @staticmethod
    def forward(ctx, x, g):
        return 2 * x * g

    @staticmethod
    def backward(ctx, _):
        raise RuntimeError("derivative for aten::_fused_square_backward is not implemented")


class _SquareNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 6), nn.Linear(6, 3)

    def forward(self, x):
        return self.b(_Square.apply(self.a(x)))


def test_a_failed_product_leaves_no_cached_graph_behind():
    torch.manual_seed(0)
    X, y = torch.randn(12, 4, dtype=torch.float64), torch.randint(0, 3, (12,))
    model = _SquareNet().double()
    obj = Objective(model, "cross_entropy", (X, y), reuse_graph=True)
    v = torch.randn(obj.dim, dtype=torch.float64)
    _Square.twice = False
    try:
        try:
            obj.hvp(v)
        except Exception as err:  # noqa: BLE001 - the failure itself is not what is tested
            assert "second derivative" in str(err)
        else:
            raise AssertionError("the product should fail without a second derivative")
        _Square.twice = True  # the cause fixed: the same objective works, no replace()
        fresh = Objective(model, "cross_entropy", (X, y), reuse_graph=True)
        torch.testing.assert_close(obj.hvp(v), fresh.hvp(v), rtol=1e-12, atol=1e-14)
    finally:
        _Square.twice = False
