"""One vocabulary for random draws and grid points: ``samples`` and ``steps`` everywhere.

For each rename: the new name works, the old one still works for a release with a DeprecationWarning
naming the new name and gives the identical result, and passing both (with different values) is an error.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from flatminima import Objective

DT = torch.float64


def _no_deprecation():
    """A context in which a DeprecationWarning fails the test (the new names must not warn)."""
    ctx = warnings.catch_warnings()
    ctx.__enter__()
    warnings.simplefilter("error", DeprecationWarning)
    return ctx


@pytest.fixture(scope="module")
def classifier():
    """A small trained 2-8-2 tanh net and a second solution (another seed)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 2, generator=g, dtype=DT)
    y = (x[:, 0] + 0.3 * x[:, 1] > 0).long()
    nets = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        net = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 2)).double()
        opt = torch.optim.Adam(net.parameters(), lr=0.05)
        for _ in range(60):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
        nets.append(net)
    obj = Objective(nets[0], "cross_entropy", (x, y))
    return obj, obj.params, obj.replace(model=nets[1]).params


# ---- landscape: interpolate(steps=), connect(steps=, plane_steps=) ----------------------------------------
def test_interpolate_steps_and_its_old_name_grid(classifier):
    from flatminima.landscape import interpolate

    obj, a, b = classifier
    ctx = _no_deprecation()
    new = interpolate(obj, a, b, steps=7, span=(-0.5, 1.5), progress=False)
    ctx.__exit__(None, None, None)
    with pytest.warns(DeprecationWarning, match="'grid' is deprecated; use 'steps'"):
        old = interpolate(obj, a, b, grid=7, span=(-0.5, 1.5), progress=False)
    assert np.array_equal(new.axes[0], old.axes[0])
    assert np.array_equal(new.values["train_loss"], old.values["train_loss"])
    assert new.meta["barrier"] == old.meta["barrier"]
    with pytest.raises(TypeError, match="both"):
        interpolate(obj, a, b, steps=9, grid=7, progress=False)
    with pytest.raises(TypeError, match="unexpected"):
        interpolate(obj, a, b, stepz=7, progress=False)


def test_connect_steps_plane_steps_and_their_old_names(classifier):
    from flatminima.landscape import connect

    obj, a, b = classifier
    kw = dict(epochs=2, batch_size=30, progress=False, seed=3)
    ctx = _no_deprecation()
    new = connect(obj, a, b, "polychain", steps=5, plane_steps=3, **kw)
    ctx.__exit__(None, None, None)
    with pytest.warns(DeprecationWarning) as record:
        old = connect(obj, a, b, "polychain", grid=5, plane_grid=3, **kw)
    messages = [str(w.message) for w in record if w.category is DeprecationWarning]
    assert any("'grid' is deprecated; use 'steps'" in m for m in messages)
    assert any("'plane_grid' is deprecated; use 'plane_steps'" in m for m in messages)
    assert np.array_equal(new.t, old.t) and len(new.t) == 5
    assert np.array_equal(new.values["train_loss"], old.values["train_loss"])
    assert torch.equal(new.theta_c, old.theta_c)
    assert np.array_equal(new.plane["loss"], old.plane["loss"]) and new.plane["loss"].shape == (3, 3)
    assert new.meta["steps"] == 5 and "grid" not in new.meta
    with pytest.raises(TypeError, match="both"):
        connect(obj, a, b, steps=7, grid=5, **kw)
    with pytest.raises(TypeError, match="both"):
        connect(obj, a, b, plane_steps=0, plane_grid=3, **kw)
