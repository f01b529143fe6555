# %% [markdown]
# # A study over checkpoints you already have
#
# You trained some networks with your own PyTorch loop and kept their checkpoints. Does flatness predict
# how well they generalise, resist a shift and stay calibrated? Here: 12 small networks on scikit-learn's
# digits (3 widths × 2 learning rates × 2 seeds), trained by a plain loop, saved as state_dicts and listed
# in a CSV manifest; then flatminima measures each checkpoint (no training), evaluates it on the test set
# and on a shifted test set of your own, and writes the report. About half a minute on a laptop CPU.

# %%
import csv
import importlib
import itertools
import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

import flatminima.study as study

# %% [markdown]
# ## Your architecture, in a module of your own
#
# flatminima rebuilds each network from the function that made it (`module:function`), then loads the
# checkpoint into it with `torch.load(..., weights_only=True)`. In your project this module exists
# already; here the example writes it.

# %%
Path("digits_nets.py").write_text('''
from torch import nn

def make(width=32):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.ReLU(), nn.Linear(width, 10))
''')
sys.path.insert(0, str(Path.cwd()))  # a script's folder is importable, the current one is not always
importlib.invalidate_caches()
import digits_nets  # noqa: E402 - the module written above

# %% [markdown]
# ## Your data and your training loop
#
# The data the models were trained on, saved as `.npz` (x_train, y_train, x_test, y_test), and a shifted
# test set of your own (noisier images).

# %%
bunch = load_digits()
x = (bunch.images / 16.0).astype(np.float32)[:, None]
x_tr, x_te, y_tr, y_te = train_test_split(x, bunch.target, test_size=0.25, random_state=0, stratify=bunch.target)
np.savez("digits.npz", x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te)
noisy = np.clip(x_te + np.random.default_rng(0).normal(0, 0.3, x_te.shape), 0, 1).astype(np.float32)
np.savez("digits_noisy.npz", x_test=noisy, y_test=y_te)

X, Y = torch.tensor(x_tr), torch.tensor(y_tr)
Path("checkpoints").mkdir(exist_ok=True)
rows = []
for width, lr, seed in itertools.product([16, 32, 64], [0.05, 0.5], [0, 1]):
    torch.manual_seed(seed)
    model = digits_nets.make(width)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    for _ in range(300):
        i = torch.randint(0, len(X), (32,))
        opt.zero_grad()
        nn.functional.cross_entropy(model(X[i]), Y[i]).backward()
        opt.step()
    name = f"w{width}_lr{lr}_s{seed}.pt"
    torch.save(model.state_dict(), Path("checkpoints") / name)
    rows.append({"path": name, "seed": seed, "width": width, "lr": lr})
with open("checkpoints/manifest.csv", "w", newline="") as fh:
    writer = csv.DictWriter(fh, fieldnames=["path", "seed", "width", "lr"])
    writer.writeheader()
    writer.writerows(rows)
print(len(rows), "checkpoints in checkpoints/manifest.csv")

# %% [markdown]
# ## The study: measure, evaluate, report
#
# The manifest's columns other than `path` and `seed` are the hyperparameters (the factory gets the ones
# its signature names, here `width`). Every checkpoint is checked before any work: it loads safely and
# matches the architecture, parameter by parameter.

# %%
Path("checkpoints.toml").write_text('''
name = "my_checkpoints"
[data]
name = "digits.npz"
[shifts.noisy]
file = "digits_noisy.npz"
[checkpoints]
manifest = "checkpoints/manifest.csv"
model = "digits_nets:make"
[measures.lambda_max]
[measures.trace]
method = "hutchinson"
samples = 10
[measures.param_norm]
''')
done = study.run("checkpoints.toml", out="study-checkpoints", progress=False)
print(done.counts, f"in {done.seconds:.1f} s")

# %% [markdown]
# ## The table and the report
#
# `study.frame` is the study as a pandas DataFrame (one row per checkpoint); the report holds the verdicts,
# effective robustness against the shift and the plots.

# %%
df = study.frame(done.folder)
print(df[["width", "lr", "seed", "lambda_max", "trace", "test_acc", "gap"]].round(3).to_string(index=False))
rep = study.report(done.folder, samples=500, max_samples=2000)
print("report:", rep.html)
for line in rep.summary[:4]:
    print("-", line)
