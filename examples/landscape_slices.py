# %% [markdown]
# # A loss landscape: 1-D and 2-D slices, interpolation between two solutions
#
# Two small MLPs trained from the same initialisation on MNIST-1D, one with a small batch and one with a
# large batch. We draw the loss along a filter-normalised random direction (Li et al. 2018) around each,
# a 2-D slice around one, and the loss along the straight line between them. Figures are written as PNG
# + SVG (with their data as CSV/NPZ/JSON) into `landscape-example/`; in a notebook they are also shown.
# About 15 s on a laptop CPU.

# %%
import matplotlib.pyplot as plt
import torch

from flatminima import Objective
from flatminima.data import load_mnist1d
from flatminima.landscape import directions, interpolate, plot_curves, slice_1d, slice_2d
from flatminima.models import mlp
from flatminima.train import Recipe, fit

data = load_mnist1d(num_samples=1000, seed=0)
nets = {}
for name, batch in (("small-batch", 16), ("large-batch", 400)):
    torch.manual_seed(0)  # the same initial weights: only the batch size differs
    net = mlp(data.input_shape, data.num_classes, width=32)
    nets[name] = fit(net, data.train, Recipe(batch_size=batch, epochs=8, lr=0.05), progress=False).model
train = {name: Objective(net, "cross_entropy", data.train) for name, net in nets.items()}
test = {name: Objective(net, "cross_entropy", data.test) for name, net in nets.items()}
for name, obj in train.items():
    print(f"{name}: train loss {obj.loss(obj.params):.3f}")  # not matched: both trained 8 epochs

# %% [markdown]
# ## 1-D slices: L(θ₀ + α·d) around each solution

# %%
curves = [
    slice_1d(train[n], directions(train[n], "filter", 1, seed=0), steps=21, test=test[n], progress=False,
             label=f"{n} (train loss {train[n].loss(train[n].params):.2f})")
    for n in nets
]
print(plot_curves(curves, "landscape-example/slice1d"))
fig, ax = plt.subplots(figsize=(5, 3.5))
for c in curves:
    ax.plot(c.axes[0], c.values["train_loss"], label=c.label)
ax.set_xlabel("α (filter-normalised direction)")
ax.set_ylabel("train loss")
ax.legend()

# %% [markdown]
# ## A 2-D slice around the small-batch solution

# %%
plane = slice_2d(train["small-batch"], directions(train["small-batch"], "filter", 2, seed=0), steps=15,
                 progress=False, label="small-batch MLP")
print(plane.plot("landscape-example/slice2d", kind="contour"))
fig, ax = plt.subplots(figsize=(4.5, 3.8))
cs = ax.contourf(plane.axes[0], plane.axes[1], plane.values["train_loss"].T, levels=20)
fig.colorbar(cs, ax=ax, label="train loss")
ax.set_title("small-batch MLP")

# %% [markdown]
# ## Linear interpolation large-batch → small-batch, with its barrier

# %%
line = interpolate(train["small-batch"], train["large-batch"].params, train["small-batch"].params,
                   steps=21, span=(-0.25, 1.25), progress=False, label="large-batch → small-batch")
print("train-loss barrier:", line.meta["barrier"]["train_loss"])
print(line.plot("landscape-example/interpolation"))
