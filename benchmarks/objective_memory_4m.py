"""Peak memory of Hessian products and curvature algorithms through an Objective at 4,001,000 parameters.

    python benchmarks/objective_memory_4m.py                    # every case, one fresh process each (~1 min)
    python benchmarks/objective_memory_4m.py --cases hvp hutchinson

The model of hessian-eigenthings' large-N test as a network: ``Linear(4000, 1000)`` (4,001,000 float32
parameters), 8 samples, cross-entropy, the Objective's defaults (one batch; graph reuse for in-memory data).
Each case runs in a fresh process with glibc's mmap threshold fixed at 64 KiB (``MALLOC_MMAP_THRESHOLD_``:
freed tensors leave the resident set) and ``OMP_NUM_THREADS=1``. The Objective is built and one warm-up product
run (and the algorithms warmed up on a small matrix: lazily loaded code is not their memory); then the
high-water mark is reset (``/proc/self/clear_refs``) and the case runs. Reported: the peak (``VmHWM``) less the
resident set at the reset, in vectors of 4N bytes (16 MB); and, as ``held``, the anonymous resident memory
(``RssAnon``, no code pages) the warm-up left above the Objective's build, at the reset: the cached
gradient graph with its leaf copy of θ, and ~2.2 vectors that torch's first flat-θ double backward leaves
resident and reuses (a script of plain autograd on a flat θ leaves the same), which the peak does not include.

Cases: ``plain``, the textbook autograd product on the same model and data (``g = grad(loss, params,
create_graph=True)``, then ``grad(g·v, params)``), the reference; ``hvp``, one ``obj.hvp(v)``; and the
settings ``tests/test_curvature_memory.py`` uses on a plain 4M-dim operator: ``hutchinson`` 10 probes,
``lanczos`` top-5 with 15 steps, ``hutch++`` 30 products, ``slq`` 2 probes of 15 steps.

``--src DIR`` runs the cases against another copy of the package (``git archive HEAD src | tar -x -C DIR``
for the committed one), for before/after figures from the same script.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

CASES = ("plain", "hvp", "hutchinson", "lanczos", "hutch++", "slq")

SCRIPT = textwrap.dedent("""
    import json, resource, sys
    import torch
    from flatminima import Objective
    from flatminima.curvature import eigenvalues, spectral_density, trace

    which = sys.argv[1]
    torch.manual_seed(0)
    model = torch.nn.Linear(4000, 1000)
    X, y = torch.randn(8, 4000), torch.randint(0, 1000, (8,))
    n = sum(p.numel() for p in model.parameters())
    v = torch.randn(n)

    def reset():
        with open("/proc/self/clear_refs", "w") as f:  # the high-water mark back to the resident set
            f.write("5")
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize()

    def anonymous():
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("RssAnon:"))

    def peak():
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))

    if which == "plain":
        params = list(model.parameters())
        vs = [part.view_as(p) for part, p in zip(torch.split(v, [p.numel() for p in params]), params)]

        def product():
            loss = torch.nn.functional.cross_entropy(model(X), y)
            g = torch.autograd.grad(loss, params, create_graph=True)
            dot = sum((gi * vi).sum() for gi, vi in zip(g, vs))
            return torch.autograd.grad(dot, params)

        built = anonymous()
        product()  # warm-up
        rest, base = anonymous(), reset()
        value = sum(float(h.norm()) ** 2 for h in product()) ** 0.5
    else:
        obj = Objective(model, "cross_entropy", (X, y))
        built = anonymous()
        obj.hvp(v)  # warm-up (builds the cached graph where graph reuse is on)
        small = torch.diag(torch.linspace(1.0, 2.0, 100))
        eigenvalues(small, k=5, max_iter=15), trace(small, "hutch++", samples=30), spectral_density(small, 2, 15)
        trace(small, "hutchinson", samples=10)
        rest, base = anonymous(), reset()
        if which == "hvp":
            value = float(obj.hvp(v).norm())
        elif which == "hutchinson":
            value = trace(obj, "hutchinson", samples=10).value
        elif which == "lanczos":
            value = eigenvalues(obj, k=5, max_iter=15).values.tolist()
        elif which == "hutch++":
            value = trace(obj, "hutch++", samples=30).value
        else:
            value = float(spectral_density(obj, samples=2, steps=15).nodes.max())
    print(json.dumps({"case": which, "n": n, "added": peak() - base, "vectors": (peak() - base) / (4 * n),
                      "held": (rest - built) / (4 * n), "value": value}))
""")


def measure(case: str, src: str | None = None, timeout: float = 300) -> dict:
    """One case in a fresh process (see the module); ``src``: another copy of the package's ``src``."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MALLOC_MMAP_THRESHOLD_="65536")
    if src is not None:
        env["PYTHONPATH"] = str(Path(src).resolve()) + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-c", SCRIPT, case], capture_output=True, text=True, env=env,
                         timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"{case}: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    parser.add_argument("--src", help="a copy of the package's src directory to measure instead")
    parser.add_argument("--repeat", type=int, default=1, help="runs per case (fresh process each)")
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args()
    if not sys.platform.startswith("linux"):
        sys.exit("reads /proc/self/status and statm: Linux only")
    results = []
    for case in args.cases:
        runs = [measure(case, args.src) for _ in range(args.repeat)]
        vectors = [r["vectors"] for r in runs]
        results.append({"case": case, "vectors": vectors, "held": runs[-1]["held"], "value": runs[-1]["value"]})
        print(f"{case:11s} peak " + " ".join(f"{x:5.1f}" for x in vectors) + " vectors of 4N bytes above the "
              f"reset; held after the warm-up {runs[-1]['held']:4.1f}", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
