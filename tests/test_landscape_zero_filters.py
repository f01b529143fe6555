"""Filter-normalised directions on parameters that are all zero (a LoRA adapter's B at initialisation)."""

import pytest
import torch
from torch import nn

from cases import tiny_mlp
from flatminima import Objective
from flatminima.landscape import directions, slice_1d


class _LoRALinear(nn.Module):
    """y = W x + B A x with W frozen, A random and B = 0 (LoRA at initialisation)."""

    def __init__(self, d_in, d_out, rank):
        super().__init__()
        self.base = nn.Linear(d_in, d_out)
        self.base.requires_grad_(False)
        self.lora_A = nn.Parameter(torch.randn(rank, d_in) / d_in**0.5)
        self.lora_B = nn.Parameter(torch.zeros(d_out, rank))

    def forward(self, x):
        return self.base(x) + x @ self.lora_A.T @ self.lora_B.T


def _objective():
    torch.manual_seed(0)
    model = nn.Sequential(_LoRALinear(8, 6, 2), nn.Tanh(), nn.Linear(6, 3))
    model[2].requires_grad_(False)
    X, y = torch.randn(30, 8), torch.randint(0, 3, (30,))
    return Objective(model, "cross_entropy", (X, y))


@pytest.mark.parametrize("kind", ["filter", "layer"])
def test_zero_filters_get_unit_norm_with_a_warning_naming_them(kind):
    obj = _objective()
    with pytest.warns(UserWarning, match=r"0\.lora_B"):
        d = directions(obj, kind, 1, seed=0)
    parts = obj.unflatten(d.vectors[0])
    b = parts["0.lora_B"]
    assert b.abs().max() > 0
    if kind == "filter":
        torch.testing.assert_close(b.norm(dim=1), torch.ones(6))
        assert d.meta["zero_filters"]["parameters"] == {"0.lora_B": 6}
    else:
        torch.testing.assert_close(b.norm(), torch.tensor(1.0))
    # Non-zero filters keep Li et al.'s normalisation to their own norm.
    a, theta_a = parts["0.lora_A"], obj.unflatten(obj.params)["0.lora_A"]
    own = theta_a.norm(dim=1) if kind == "filter" else theta_a.norm()
    torch.testing.assert_close(a.norm(dim=1) if kind == "filter" else a.norm(), own)


def test_the_default_slice_of_a_lora_model_at_initialisation_is_not_flat():
    obj = _objective()
    with pytest.warns(UserWarning, match="lora_B"):
        surface = slice_1d(obj, steps=5, progress=False, accuracy=False)
    losses = torch.as_tensor(surface.values["train_loss"])
    assert float(losses.max() - losses.min()) > 1e-3


def test_directions_without_zero_filters_do_not_warn():
    import warnings

    model = tiny_mlp(8, 6, 3, dtype=None)
    obj = Objective(model, "cross_entropy", (torch.randn(10, 8), torch.randint(0, 3, (10,))))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        d = directions(obj, "filter", 2)
    assert "zero_filters" not in d.meta
