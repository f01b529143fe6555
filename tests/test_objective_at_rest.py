"""Building an Objective holds the selected parameters once: θ₀ is concatenated from the user's model and the
model copy is made around empty stand-ins re-pointed at views of θ₀, so neither the build's peak nor the idle
Objective holds a second copy (before: the deep copy and θ₀ side by side, 2.0 model sizes at the build's peak).
The user's model is never touched; tied weights stay tied."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import torch
from torch import nn

from flatminima import Objective

PROBE = textwrap.dedent("""
    import gc, json, torch
    from pathlib import Path
    from flatminima import Objective

    def mb(key):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(2000, 2000), torch.nn.Tanh(), torch.nn.Linear(2000, 2000))
    X, y = torch.randn(16, 2000), torch.randn(16, 2000)
    size = sum(p.numel() for p in model.parameters()) * 4 / 2**20
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")
    base = mb("VmRSS")
    obj = Objective(model, "mse", (X, y))
    gc.collect()
    print(json.dumps({"size": size, "peak": (mb("VmHWM") - base) / size, "rest": (mb("VmRSS") - base) / size}))
""")


def test_building_an_objective_never_holds_the_parameters_twice():
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    import json

    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["size"] > 30  # 8M float32 parameters: well above the allocator's noise
    assert got["peak"] < 1.3, got  # θ₀ once (1.0); the old deep copy beside θ₀ peaked at 2.0
    assert got["rest"] < 1.2, got


def test_the_users_model_is_untouched_and_tied_weights_stay_tied():
    torch.manual_seed(0)
    emb = nn.Embedding(7, 4)
    head = nn.Linear(4, 7, bias=False)
    head.weight = emb.weight  # tied, as in GPT-2's wte / lm_head
    model = nn.Sequential(emb, nn.Flatten(), head).double()
    before = {n: (p.data_ptr(), p.detach().clone()) for n, p in model.named_parameters()}
    x = torch.randint(0, 7, (5, 1))
    y = torch.randint(0, 7, (5,))
    obj = Objective(model, "cross_entropy", (x, y))
    assert obj.dim == 7 * 4  # the tied matrix counts once
    for n, p in model.named_parameters():
        assert p.data_ptr() == before[n][0] and torch.equal(p, before[n][1])  # the user's storage and values
    # the copy still ties the two uses: a Hessian product matches the dense Hessian of the tied loss
    def loss(w):
        return nn.functional.cross_entropy(nn.functional.embedding(x[:, 0], w) @ w.T, y)

    dense = torch.func.hessian(loss)(emb.weight.detach()).reshape(28, 28)
    v = torch.randn(28, dtype=torch.float64)
    torch.testing.assert_close(obj.hvp(v), dense @ v, rtol=1e-10, atol=1e-12)
