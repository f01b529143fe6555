"""Peak memory of Hutchinson's trace through an Objective at 4,001,000 parameters, in a fresh process.

The model of hessian-eigenthings' large-N test as a network (``Linear(4000, 1000)``, 8 samples,
cross-entropy; benchmarks/objective_memory_4m.py, docs/benchmarks.md). The high-water mark (``VmHWM``) is reset
after the Objective is built and one warm-up product has run; the peak less the resident set there, in vectors
of 4N bytes, measured (CPU, glibc with a fixed mmap threshold): a plain autograd product ``grad(g·v, params)``
2.0; one ``obj.hvp(v)`` 5.0 before its single-batch product stopped going through a float64 accumulator (and its
finiteness check through ``isfinite``'s temporaries), 2.0 after; Hutchinson with 10 probes 6.0 before, 3.0
after (one product and the probe). Bound: 5, the bound of the same algorithm on a plain operator
(tests/test_curvature_memory.py): the Objective's product now costs no more than a plain one, with two
vectors' margin for allocator and BLAS variation; the float64 accumulator's return would put it at 6.
"""

import json
import os
import subprocess
import sys

import pytest

SCRIPT = """
import json, resource, torch
from flatminima import Objective
from flatminima.curvature import trace

torch.manual_seed(0)
model = torch.nn.Linear(4000, 1000)
X, y = torch.randn(8, 4000), torch.randint(0, 1000, (8,))
obj = Objective(model, "cross_entropy", (X, y))
obj.hvp(torch.randn(obj.dim))  # warm-up: the cached graph is built, lazily loaded code is in
trace(torch.diag(torch.linspace(1.0, 2.0, 100)), "hutchinson", samples=10)
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
with open("/proc/self/statm") as f:
    base = int(f.read().split()[1]) * resource.getpagesize()
r = trace(obj, "hutchinson", samples=10)
with open("/proc/self/status") as f:
    peak = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
print(json.dumps({"vectors": (peak - base) / (4 * obj.dim), "value": r.value, "dim": obj.dim}))
"""

BOUND = 5  # vectors of 4N bytes; see the module


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status and statm")
def test_hutchinson_through_an_objective_at_four_million_parameters_stays_within_bound():
    env = dict(os.environ, OMP_NUM_THREADS="1", MALLOC_MMAP_THRESHOLD_="65536")
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["dim"] == 4_001_000
    assert got["vectors"] <= BOUND, f"Hutchinson, Objective: {got['vectors']:.1f} vectors of 4N bytes > {BOUND}"
    assert got["value"] > 0  # the work was done: tr(H) of a cross-entropy at random weights is positive
