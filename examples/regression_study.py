# %% [markdown]
# # A regression study: flatness of MSE minima
#
# The same study on a regression task: float targets make the data a regression task, the runs train
# and every measure is computed on the mean squared error (the runs' own loss), and the targets are the
# test MSE and the MSE gap (test − train). 6 learning rates × 2 seeds of a small MLP on synthetic data.
# About 20 s on a laptop CPU.

# %%
import numpy as np

import flatminima.study as study

rng = np.random.default_rng(0)
x = rng.normal(size=(600, 8)).astype(np.float32)
y = (np.sin(x @ rng.normal(size=8)) + 0.1 * rng.normal(size=600)).astype(np.float32)  # float: regression
np.savez("regression.npz", x_train=x[:400], y_train=y[:400], x_test=x[400:], y_test=y[400:])

spec = {
    "name": "regression",
    "seeds": 2,
    "data": {"name": "regression.npz"},
    "models": {"mlp": {"width": 16}},
    "recipe": {"loss": "mse", "lr": [0.01, 0.02, 0.05, 0.1, 0.2, 0.3], "epochs": 4},
    "measures": {"lambda_max": {}, "trace": {"method": "hutchinson", "samples": 8}, "param_norm": {}},
}
done = study.run(spec, out="study-regression", progress=False)
print(done.counts, f"in {done.seconds:.1f} s")

# %% [markdown]
# ## Results

# %%
df = study.frame(done.folder)
print(df[["lr", "seed", "lambda_max", "trace", "test_mse", "mse_gap", "loss"]].round(4).to_string(index=False))
rep = study.report(done.folder, samples=500, max_samples=2000)
print("report:", rep.html)
for line in rep.summary:
    print("-", line)
