"""Resident memory an Objective adds, building it and at rest: is there a second copy of the model?

    python benchmarks/memory_at_rest.py                  # 4 x Linear(3500, 3500), 49.0M float32 parameters
    python benchmarks/memory_at_rest.py --width 2000     # smaller

One fresh process (glibc's mmap threshold fixed, so freed tensors leave the resident set): the resident set
before the Objective, the high-water mark while it is built (VmHWM, reset just before), the resident set
after it is built and after one loss, in model sizes (the parameters' bytes). One model size is θ₀, the flat
parameter vector every product starts from; the Objective's model copy holds no parameters of its own.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
from pathlib import Path


def _mb(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(key)


def measure(width: int, layers: int) -> dict:
    import torch

    from flatminima import Objective

    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Linear(width, width) for _ in range(layers)])
    X, y = torch.randn(64, width), torch.randn(64, width)
    size = sum(p.numel() for p in model.parameters()) * 4 / 2**20
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")
    base = _mb("VmRSS")
    obj = Objective(model, "mse", (X, y))
    gc.collect()
    built_peak, rest = _mb("VmHWM") - base, _mb("VmRSS") - base
    obj.loss()
    gc.collect()
    return {"parameters": sum(p.numel() for p in model.parameters()), "model_mib": round(size, 1),
            "build_peak_model_sizes": round(built_peak / size, 2), "at_rest_model_sizes": round(rest / size, 2),
            "after_one_loss_model_sizes": round((_mb("VmRSS") - base) / size, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=3500)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        print(json.dumps(measure(args.width, args.layers)))
        return
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    out = subprocess.run([sys.executable, __file__, "--inner", "--width", str(args.width), "--layers",
                          str(args.layers)], env=env, capture_output=True, text=True, check=True)
    print(out.stdout.strip())


if __name__ == "__main__":
    main()
