"""curvlinops' four problems: Hessian-vector product cost relative to a gradient, time and peak memory.

    python benchmarks/four_problems.py [--repeats 3] [--out docs/benchmarks.md]

Problems (as in curvlinops' benchmark: an MLP, ResNet-18, ResNet-50 and GPT-2 124M), float32, random weights,
random data, no downloads. On CPU the inputs are small: images 3×32×32, batch 8; GPT-2 from ``GPT2Config()``
(124M parameters) on one sequence of 32 tokens. ResNets are written here (torchvision does not import beside
this torch build): the standard BasicBlock / Bottleneck stacks [2,2,2,2] and [3,4,6,3] with a CIFAR stem.

Each (problem, operation) runs in a fresh process: build the Objective, one warm-up call, then ``repeats``
timed calls (the best and the median seconds) and the peak resident memory of one call above the memory
before it (Linux: freed memory returned with malloc_trim, VmHWM reset through /proc/self/clear_refs).
Ratios are HVP / gradient, as curvlinops reports them (1.06, 2.25, 2.78, 2.9 for these problems on its GPU).
The machine's load is written beside the numbers.

``--compiled`` adds, per problem, the gradient of the ``torch.compile``d model as a user's training step
computes it (``loss.backward()`` through the compiled module; compilation in the warm-up, not timed) and
the HVP of an Objective built over that compiled model, which runs on its eager module (compiled graphs
have no second derivatives): the ratio a user of a compiled model sees.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import subprocess
import sys
import time

PROBLEMS = ("mlp", "resnet18", "resnet50", "gpt2")
# Graph reuse off by default: every product rebuilds the forward and the first backward, as curvlinops' do.
# --reuse-graph keeps the gradient graph at θ (the Objective's default for data in memory), so repeated
# products at one θ, as Lanczos, Hutch++ and SLQ make them, cost one second backward each.
REUSE = os.environ.get("FOUR_PROBLEMS_REUSE_GRAPH") == "1"


def _resnet(kind: str):
    import torch
    from torch import nn

    class Basic(nn.Module):
        expansion = 1

        def __init__(self, cin: int, c: int, stride: int):
            super().__init__()
            self.c1, self.b1 = nn.Conv2d(cin, c, 3, stride, 1, bias=False), nn.BatchNorm2d(c)
            self.c2, self.b2 = nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c)
            self.short = nn.Sequential() if stride == 1 and cin == c else nn.Sequential(
                nn.Conv2d(cin, c, 1, stride, bias=False), nn.BatchNorm2d(c))

        def forward(self, x):
            return torch.relu(self.b2(self.c2(torch.relu(self.b1(self.c1(x))))) + self.short(x))

    class Bottleneck(nn.Module):
        expansion = 4

        def __init__(self, cin: int, c: int, stride: int):
            super().__init__()
            out = 4 * c
            self.body = nn.Sequential(
                nn.Conv2d(cin, c, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(),
                nn.Conv2d(c, c, 3, stride, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(),
                nn.Conv2d(c, out, 1, bias=False), nn.BatchNorm2d(out))
            self.short = nn.Sequential() if stride == 1 and cin == out else nn.Sequential(
                nn.Conv2d(cin, out, 1, stride, bias=False), nn.BatchNorm2d(out))

        def forward(self, x):
            return torch.relu(self.body(x) + self.short(x))

    block, counts = (Basic, [2, 2, 2, 2]) if kind == "resnet18" else (Bottleneck, [3, 4, 6, 3])
    layers, cin = [nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU()], 64
    for i, n in enumerate(counts):
        for j in range(n):
            layers.append(block(cin, 64 * 2 ** i, 2 if j == 0 and i > 0 else 1))
            cin = 64 * 2 ** i * block.expansion
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, 10)]
    return nn.Sequential(*layers)


def build(problem: str, compiled: bool = False):
    """(Objective, a random vector, the model, its data) of one problem; ``compiled``: over ``torch.compile(model)``."""
    import torch
    from torch import nn

    from flatminima import Objective

    torch.manual_seed(0)
    if problem == "mlp":
        model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10))
        data = (torch.randn(64, 784), torch.randint(0, 10, (64,)))
        model = torch.compile(model) if compiled else model
        obj = Objective(model, "cross_entropy", data, batch_size=64, reuse_graph=REUSE)
    elif problem in ("resnet18", "resnet50"):
        data = (torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,)))
        model = torch.compile(_resnet(problem).eval()) if compiled else _resnet(problem)
        obj = Objective(model, "cross_entropy", data, batch_size=8, reuse_graph=REUSE)
    else:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import GPT2Config, GPT2LMHeadModel

        from flatminima.models.transformer import lm_loss

        ids = torch.randint(0, 50257, (1, 32))
        model = GPT2LMHeadModel(GPT2Config(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))
        model = torch.compile(model) if compiled else model
        data = {"input_ids": ids}
        obj = Objective(model, loss_fn=lm_loss, data=[data], reuse_graph=REUSE)
    return obj, torch.randn(obj.dim), model, data


def _compiled_gradient(problem: str, model, data):
    """``loss.backward()`` through the compiled model, as a training step computes the gradient."""
    import torch

    if problem == "gpt2":
        from flatminima.models.transformer import lm_loss

        def loss():
            return lm_loss(model, data)[0]  # (mean loss, target tokens)
    else:
        def loss():
            return torch.nn.functional.cross_entropy(model(data[0]), data[1])

    def step():
        model.zero_grad(set_to_none=True)
        loss().backward()
    return step


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


def measure(problem: str, op: str, repeats: int) -> dict:
    """One (problem, operation) in this process: best and median seconds of ``repeats``, one call's peak MiB."""
    compiled = op.endswith("_compiled")
    obj, v, model, data = build(problem, compiled)
    if op == "grad_compiled":
        call = _compiled_gradient(problem, model, data)
    else:
        call = (lambda: obj.grad()) if op == "grad" else (lambda: obj.hvp(v))
    call()  # warm-up (compilation, and the objective's one-off first-use checks)
    # Give the memory the warm-up freed back to the system, or the allocator's cache hides the next call's peak.
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    before = _rss_kib("VmRSS:")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak (VmHWM) to the current resident size
    call()
    peak = _rss_kib("VmHWM:") - before
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    # The best of the repeats: on a shared, loaded machine the minimum is the least disturbed measurement.
    return {"problem": problem, "op": op, "seconds": min(times), "median": statistics.median(times),
            "peak_mib": peak / 1024,
            "params": obj.dim}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=None, help="timed calls (default 30 for the MLP, 3 else)")
    parser.add_argument("--problems", default=",".join(PROBLEMS))
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads per process (OMP_NUM_THREADS); 1 on a loaded machine, where two "
                             "threads waiting on each other made one product 0.013 s in one process, 0.6 s in the next")
    parser.add_argument("--reuse-graph", action="store_true", help="keep the gradient graph between products")
    parser.add_argument("--compiled", action="store_true", help="also the torch.compile'd model (see above)")
    parser.add_argument("--one", nargs=2, metavar=("PROBLEM", "OP"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one[0], args.one[1], args.repeats or 3)))
        return
    load = os.getloadavg()
    rows = []
    for problem in args.problems.split(","):
        got = {}
        for op in ("grad", "hvp") + (("grad_compiled", "hvp_compiled") if args.compiled else ()):
            repeats = args.repeats or (30 if problem == "mlp" else 3)
            env = dict(os.environ, **({"OMP_NUM_THREADS": str(args.threads)} if args.threads else {}),
                       FOUR_PROBLEMS_REUSE_GRAPH="1" if args.reuse_graph else "0")
            out = subprocess.run([sys.executable, __file__, "--one", problem, op, "--repeats", str(repeats)],
                                 capture_output=True, text=True, check=True, env=env).stdout.strip().splitlines()[-1]
            got[op] = json.loads(out)
        rows.append(got)
        g, h = got["grad"], got["hvp"]
        print(f"{problem:9s} {g['params']:>11,d} params  grad {g['seconds']:.3f}s {g['peak_mib']:.0f} MiB  "
              f"hvp {h['seconds']:.3f}s {h['peak_mib']:.0f} MiB  time x{h['seconds'] / g['seconds']:.2f}  "
              f"memory x{h['peak_mib'] / max(g['peak_mib'], 1e-9):.2f}", flush=True)
        if args.compiled:
            gc, hc = got["grad_compiled"], got["hvp_compiled"]
            print(f"{'':9s} compiled: grad {gc['seconds']:.3f}s {gc['peak_mib']:.0f} MiB  hvp {hc['seconds']:.3f}s "
                  f"{hc['peak_mib']:.0f} MiB  time x{hc['seconds'] / gc['seconds']:.2f}", flush=True)
    print(json.dumps({"load_before": load, "load_after": os.getloadavg(), "cpus": os.cpu_count(),
                      "threads": args.threads, "rows": rows}))


if __name__ == "__main__":
    main()
