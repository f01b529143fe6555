"""Record curvature every N steps inside your own PyTorch training loop (a few added lines).

    python examples/track_plain_pytorch.py --steps 200 --every 50 --out runs/track

Trains a small MLP on MNIST-1D with plain SGD and records the loss, the largest Hessian eigenvalue and
the Hessian trace on a fixed probe set of 512 training samples every ``--every`` steps, into
``<out>/track.sqlite`` (and TensorBoard under ``<out>/tb`` when the package is installed).
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import torch

import flatminima.track
from flatminima.data import load_mnist1d
from flatminima.models import mlp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--out", default="runs/track")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    data = load_mnist1d(num_samples=2000, seed=args.seed)
    X, y = torch.as_tensor(data.x_train, dtype=torch.float32), torch.as_tensor(data.y_train)
    model = mlp(X.shape[1:], data.num_classes, width=64)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    # --- the flatminima lines: a fixed probe set, the measures, how often, where to log ---
    out = Path(args.out)
    tb = str(out / "tb") if importlib.util.find_spec("tensorboard") else None
    tracker = flatminima.track.track(
        model,
        (X[:512], y[:512]),
        loss="cross_entropy",
        every=args.every,
        measures={"loss": {}, "lambda_max": {"tol": 1e-3}, "trace": {"samples": 30}},
        store=out / "track.sqlite",
        tensorboard=tb,
        run=f"sgd-seed{args.seed}",
    )

    gen = torch.Generator().manual_seed(args.seed)
    for step in range(args.steps + 1):
        idx = torch.randint(0, len(X), (64,), generator=gen)
        loss = torch.nn.functional.cross_entropy(model(X[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        for row in tracker.step(step):  # <- one line in the loop
            print(f"step {row['step']:5d}  {row['measure']:>10s} = {row['value']:.4g}")
    tracker.close()
    print(f"rows in {out / 'track.sqlite'} (flatminima.track.load(path) reads them)")


if __name__ == "__main__":
    main()
