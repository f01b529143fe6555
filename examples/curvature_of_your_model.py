# %% [markdown]
# # The curvature of your own model
#
# Any `torch.nn.Module` and data set: here a small MLP you define yourself, trained for a few epochs on
# MNIST-1D (generated locally, no download). `Objective` is the loss L(θ) averaged exactly over all the
# data; curvature algorithms and sharpness measures take it and return a value, an error estimate and
# the cost. About 10 s on a laptop CPU.

# %%
import torch
from torch import nn

from flatminima import Objective
from flatminima.curvature import eigenvalues, trace
from flatminima.data import load_mnist1d
from flatminima.sharpness import available, measure

torch.manual_seed(0)
data = load_mnist1d(num_samples=1000, seed=0)  # 800 train / 200 test signals of length 40, 10 classes
X, y = data.train
model = nn.Sequential(nn.Linear(40, 64), nn.ReLU(), nn.Linear(64, 10))  # your model here

opt = torch.optim.Adam(model.parameters(), lr=0.01)
for _ in range(100):  # plain full-batch training loop: yours
    opt.zero_grad()
    loss = nn.functional.cross_entropy(model(X), y)
    loss.backward()
    opt.step()
print(f"train loss after training: {loss.item():.3f}")

# %% [markdown]
# ## The objective and its top eigenvalues
#
# `eigenvalues` runs Lanczos with Hessian-vector products; each eigenvalue comes with its residual
# ‖Hv − λv‖ (a bound on its error) and a `converged` flag.

# %%
obj = Objective(model, "cross_entropy", (X, y))  # or a DataLoader, or loss_fn=f(model, batch)
print(f"L(θ₀) = {obj.loss(obj.params):.4f} over {len(X)} samples, {obj.dim} parameters")
top = eigenvalues(obj, k=3)
for lam, res in zip(top.values, top.residuals, strict=True):
    print(f"λ = {float(lam):9.4f}   residual {float(res):.1e}")
print("converged:", top.converged.tolist(), "| cost:", top.cost)

# %% [markdown]
# ## The trace (Hutch++) and a sharpness measure

# %%
tr = trace(obj, "hutch++", samples=30, seed=0)
print(f"tr(H) = {tr.value:.2f} ± {tr.stderr:.2f}  ({tr.cost.hvps} Hessian-vector products)")

sam = measure(obj, "worst_case", rho=0.05)  # SAM-style worst-case sharpness in a ball of radius 0.05
avg = measure(obj, "average_case", sigma=0.01, samples=32, seed=0)
print(f"worst-case sharpness (rho=0.05): {sam.value:.4f}")
print(f"average-case sharpness (sigma=0.01): {avg.value:.5f} ± {avg.stderr:.5f}")
print("every measure:", ", ".join(available()))
