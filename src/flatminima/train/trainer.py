"""``fit``: one reproducible training loop for every recipe, with progress, checkpoints and snapshots.

Per mini-batch: (augment) → gradient [plain | at θ + ξ (Gaussian weight noise) | (A)SAM] → (clip) →
optimiser step → (iterate noise). Per epoch: schedule step (or SWA average + SWALR step), snapshot,
checkpoint; with ``recipe.target_train_loss``, the exact train loss (below) and the stopping test. At the end
of an SWA run the model holds the SWA average with BatchNorm statistics recomputed
(``torch.optim.swa_utils.update_bn``), and ``TrainResult.last_iterate`` the last SGD iterate.

Matched training loss (Keskar et al. 2017; Jiang et al. 2020): with ``recipe.target_train_loss`` set, the
run stops at the first epoch end where the *exact* training loss is at most the target, and ``epochs`` is
only the cap. "Exact" means the recipe's plain loss (cross-entropy or MSE, or the caller's ``loss_fn``;
never label smoothing) of the model in eval mode (no dropout, BatchNorm running statistics) on every
training sample, without augmentation: one extra pass over the training data per epoch, and none when no
target is set. A run that reaches the cap first is kept and flagged (``reached_target=False``), not failed.
SWA runs refuse a target (the test would judge the SGD iterate, not the average the run returns).

Reproducibility: the shuffling, the weight noise, the augmentation and the global RNG (dropout) each have
a generator seeded from ``recipe.seed``; all of them, the optimiser, the schedules and the SWA average are
checkpointed, so a resumed run continues bit for bit like an uninterrupted one (on the CPU). The caller's
global RNG state is left as it was.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import SWALR, AveragedModel, update_bn

from ..errors import FlatminimaError, NonFiniteLossError
from ..progress import progress_bar
from .augment import augment, spatial_dims_of
from .checkpoint import load_checkpoint, save_checkpoint
from .evaluation import evaluate, predict
from .losses import loss_function
from .noise import WeightNoise
from .optim import make_optimizer, make_scheduler
from .recipes import Recipe, make_recipe
from .sam import sam_step_gradients

# Recipe fields that may differ between an interrupted run and its resumption (bookkeeping only).
_RESUMABLE_CHANGES = {"checkpoint_every"}


@dataclass
class TrainResult:
    """The trained model, per-epoch history, parameter snapshots (flat vectors) and cost."""

    model: nn.Module
    history: list[dict] = field(default_factory=list)
    snapshots: list[torch.Tensor] = field(default_factory=list)
    seconds: float = 0.0
    checkpoint: str | None = None
    recipe: Recipe | None = None
    last_iterate: dict | None = None  # SWA runs: state dict of the last SGD iterate
    epochs_run: int = 0  # epochs trained in total, across resumes (fewer than recipe.epochs if the target stopped it)
    snapshot_epochs: list[int] = field(default_factory=list)
    final_train_loss: float | None = None  # exact train loss of the returned model (eval mode, all train data)
    reached_target: bool | None = None  # final_train_loss <= recipe.target_train_loss; None without a target
    epochs_this_call: int = 0  # epochs trained by this call (fewer than epochs_run after a resume)


def flat_params(model: nn.Module) -> torch.Tensor:
    """The trainable parameters as one flat CPU vector (a copy)."""
    return torch.cat([p.detach().reshape(-1).cpu() for p in model.parameters() if p.requires_grad]).clone()


_flat = flat_params  # kept for callers of the first version


@dataclass
class _State:
    """Everything a run carries from epoch to epoch (and through a checkpoint)."""

    opt: torch.optim.Optimizer
    sched: Any
    swa_model: AveragedModel | None
    swa_sched: SWALR | None
    noise: WeightNoise | None
    shuffle: torch.Generator
    aug: torch.Generator

    def to_dict(self) -> dict:
        return {"optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
                "swa_model": self.swa_model.state_dict() if self.swa_model else None,
                "swa_scheduler": self.swa_sched.state_dict() if self.swa_sched else None,
                "noise": self.noise.state_dict() if self.noise else None,
                "shuffle_rng": self.shuffle.get_state(), "augment_rng": self.aug.get_state(),
                "torch_rng": torch.get_rng_state()}

    def load(self, blob: dict) -> None:
        self.opt.load_state_dict(blob["optimizer"])
        self.sched.load_state_dict(blob["scheduler"])
        if self.swa_model:
            self.swa_model.load_state_dict(blob["swa_model"])
        if self.swa_sched:
            self.swa_sched.load_state_dict(blob["swa_scheduler"])
        if self.noise:
            self.noise.load_state_dict(blob["noise"])
        self.shuffle.set_state(blob["shuffle_rng"])
        self.aug.set_state(blob["augment_rng"])
        torch.set_rng_state(blob["torch_rng"])


def materialise(data: Any, what: str = "data") -> tuple[torch.Tensor, torch.Tensor]:
    """``(X, y)`` tensors from a ``torch.utils.data.Dataset`` (items ``(x, y)``) or a ``DataLoader`` (batches
    ``(x, y)``), read once into memory in their order: the trainer shuffles and batches them itself."""
    from torch.utils.data import DataLoader
    from torch.utils.data import Dataset as TorchDataset

    if isinstance(data, DataLoader):
        parts = list(data)
    elif isinstance(data, TorchDataset):
        try:
            parts = [data[i] for i in range(len(data))]  # type: ignore[arg-type]
        except TypeError as err:  # an IterableDataset has no len()
            raise FlatminimaError(f"{what}: a Dataset without len() cannot be read; wrap it in a DataLoader.") \
                from err
        parts = [(torch.as_tensor(x)[None], torch.as_tensor(y).reshape(1)) for x, y in parts]
    else:
        raise FlatminimaError(f"{what} must be (X, y) tensors, a Dataset or a DataLoader, got {type(data).__name__}.")
    if not parts:
        raise FlatminimaError(f"{what} is empty.")
    if not all(isinstance(p, (tuple, list)) and len(p) == 2 for p in parts):
        raise FlatminimaError(f"{what}: every item (or batch) must be a pair (inputs, labels).")
    return (torch.cat([torch.as_tensor(p[0]) for p in parts]),
            torch.cat([torch.as_tensor(p[1]).reshape(-1) for p in parts]))


def _check_data(data: Any) -> tuple[torch.Tensor, torch.Tensor]:
    from torch.utils.data import DataLoader
    from torch.utils.data import Dataset as TorchDataset

    if hasattr(data, "train") and hasattr(data, "x_train"):  # a flatminima Dataset
        data = data.train
    if isinstance(data, (DataLoader, TorchDataset)):
        data = materialise(data, "fit's data")
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        raise FlatminimaError(f"fit needs data=(X, y) tensors, a flatminima Dataset, a torch Dataset or a "
                              f"DataLoader, got {type(data).__name__}.")
    X, y = (torch.as_tensor(t) for t in data)
    if len(X) == 0 or len(X) != len(y):
        raise FlatminimaError(f"fit needs as many labels as inputs (≥ 1), got {len(X)} inputs, "
                              f"{len(y)} labels.")
    return X, y


def _checksum(model: nn.Module) -> list[tuple[int, float]]:
    """Each parameter's version counter and sum: what an in-place change of the weights alters."""
    with torch.no_grad():
        return [(p._version, float(p.detach().double().sum())) for p in model.parameters()]


def preflight(model: nn.Module, X: torch.Tensor, y: torch.Tensor, lossf: Callable, *, device: Any = "cpu",
              labels: bool = False) -> None:
    """Before any training: one forward and one backward pass on two samples (eval mode, the caller's RNG and
    ``.grad`` untouched), so what would fail deep inside torch on the first step is named here instead: class
    labels out of the model's range or not integers (``labels``: the loss is cross-entropy), inputs the model
    cannot take, a model that changes its own parameters in ``forward``, and a loss that is not a finite,
    differentiable floating-point number."""
    if labels:
        if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
            raise FlatminimaError(f"fit: the loss is cross-entropy but the labels have dtype {y.dtype}; class labels "
                                  "must be integers (y.long()), or use loss='mse' for real-valued targets.")
        if y.dim() != 1:
            raise FlatminimaError(f"fit: the loss is cross-entropy but the labels have shape {tuple(y.shape)}; "
                                  "give 1-D class indices (not one-hot: y.argmax(1)).")
    x2, y2 = X[:2].to(device), y[:2].to(device)
    was_training, before = model.training, _checksum(model)
    model.eval()
    try:
        with torch.random.fork_rng(devices=[]):
            try:
                out = model(x2)
            except Exception as err:  # noqa: BLE001 - the model, named with the inputs it was given
                raise FlatminimaError(f"fit: the model cannot take the inputs (two samples of shape "
                                      f"{tuple(x2.shape[1:])}, dtype {x2.dtype}): {type(err).__name__}: "
                                      f"{err}.") from None
            if _checksum(model) != before:
                raise FlatminimaError("fit: the model changes its own parameters in forward (an in-place update of "
                                      "a weight); training and every measure assume forward leaves them as they "
                                      "are: keep running statistics in buffers, not parameters.")
            kept = y[y != -100] if labels else y  # -100: cross-entropy's ignored label
            if labels and isinstance(out, torch.Tensor) and out.dim() >= 1 and len(kept):
                lo, hi = int(kept.min()), int(kept.max())
                if lo < 0 or hi >= out.shape[-1]:
                    raise FlatminimaError(f"fit: class labels run from {lo} to {hi}, but the model gives "
                                          f"{out.shape[-1]} outputs per sample (labels 0..{out.shape[-1] - 1}); "
                                          "build the model with as many outputs as classes, or fix the labels.")
            try:
                value = lossf(out, y2)
            except Exception as err:  # noqa: BLE001 - the loss on the model's outputs
                raise FlatminimaError(f"fit: the loss failed on two samples (outputs {tuple(out.shape)}, targets "
                                      f"{tuple(y2.shape)} {y2.dtype}): {type(err).__name__}: {err}.") from None
            if not isinstance(value, torch.Tensor) or value.numel() != 1 or not value.is_floating_point():
                got = f"{value.dtype} tensor of shape {tuple(value.shape)}" if isinstance(value, torch.Tensor) \
                    else type(value).__name__
                raise FlatminimaError(f"fit: the loss returned a {got}; it must return the batch's mean loss as a "
                                      "floating-point 0-dim tensor (an integer count such as (out.argmax(1) != y)"
                                      ".sum() cannot be differentiated).")
            if not value.requires_grad:
                raise FlatminimaError("fit: the loss does not depend on the model's outputs through autograd (a "
                                      ".detach(), .item() or NumPy step?); training needs a differentiable loss.")
    finally:
        model.train(was_training)


def _build_state(model: nn.Module, r: Recipe) -> _State:
    opt = make_optimizer(model, r)
    sched = make_scheduler(opt, r)
    swa_model = AveragedModel(model) if r.swa else None
    swa_sched = (SWALR(opt, swa_lr=r.swa_lr, anneal_epochs=r.swa_anneal_epochs, anneal_strategy="cos")
                 if r.swa and r.swa_lr else None)
    noise = WeightNoise(model, r.noise, r.noise_std, r.seed + 1) if r.noise != "none" else None
    return _State(opt, sched, swa_model, swa_sched, noise, torch.Generator().manual_seed(r.seed),
                  torch.Generator().manual_seed(r.seed + 2))


def _resume(ckpt: Path, model: nn.Module, r: Recipe, state: _State, result: TrainResult) -> int:
    blob = load_checkpoint(ckpt, model)
    saved = blob.get("recipe", {})
    changed = sorted(k for k in r.model_dump() if k not in _RESUMABLE_CHANGES
                     and _norm(saved.get(k)) != _norm(r.model_dump()[k]))
    if changed:
        raise FlatminimaError(f"checkpoint {str(ckpt)!r} was written by a different recipe (fields {changed} "
                              "differ); use another checkpoint_dir or the same recipe to resume.")
    state.load(blob)
    result.history = list(blob["history"])
    result.snapshots = list(blob["snapshots"].unbind(0)) if blob.get("snapshots") is not None else []
    result.snapshot_epochs = list(blob.get("snapshot_epochs", []))
    return int(blob["epoch"])


def _norm(v: Any) -> Any:
    return list(v) if isinstance(v, (tuple, list)) else v


def _batches(order: torch.Tensor, bs: int) -> list[torch.Tensor]:
    """Mini-batches of ``order``; a last batch of one sample joins the previous (BatchNorm needs two)."""
    parts = list(order.split(bs))
    if len(parts) > 1 and len(parts[-1]) == 1:
        parts[-2:] = [torch.cat(parts[-2:])]
    return parts


def _train_epoch(model: nn.Module, X: torch.Tensor, y: torch.Tensor, r: Recipe, st: _State, loss_fn: Callable,
                 device: Any, epoch: int, on_step: Callable[[], None] | None = None) -> float:
    model.train()
    bs, total, count = r.batch_for(len(X)), 0.0, 0
    dims = spatial_dims_of(tuple(X.shape[1:]))
    for idx in _batches(torch.randperm(len(X), generator=st.shuffle), bs):
        xb, yb = X[idx].to(device), y[idx].to(device)
        if r.augment:
            xb = augment(xb, r.augment, st.aug, shift=r.augment_shift, noise=r.augment_noise,
                         spatial_dims=dims)
        st.opt.zero_grad(set_to_none=True)
        if r.sam != "none":
            loss = sam_step_gradients(model, loss_fn, xb, yb, rho=r.rho, adaptive=r.sam == "asam",
                                      eta=r.asam_eta, m=r.sam_m)
        else:
            xi = st.noise.perturb() if st.noise else None
            loss = loss_fn(model(xb), yb)
            loss.backward()
            if st.noise:
                st.noise.restore(xi)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise NonFiniteLossError(
                f"training loss became {value} at epoch {epoch + 1}; the run was stopped (no NaN model is "
                f"returned). Lower the learning rate "
                f"(now {st.opt.param_groups[0]['lr']:.3g}), add grad_clip, "
                "or check the data for NaN/inf.")
        if r.grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), r.grad_clip)
        st.opt.step()
        if st.noise:
            st.noise.after_step()
        if on_step is not None:
            on_step()
        total, count = total + value * len(idx), count + len(idx)
    if not all(torch.isfinite(p).all() for p in model.parameters()):
        raise NonFiniteLossError(f"the weights became NaN/inf at epoch {epoch + 1}; the run was stopped. "
                                 "Lower the learning rate or add grad_clip.")
    return total / count


def _end_epoch(model: nn.Module, r: Recipe, st: _State, epoch: int) -> None:
    """Schedule step, or (past swa_start) SWA average + SWALR step."""
    if r.swa and epoch + 1 > r.swa_start:
        st.swa_model.update_parameters(model)
        (st.swa_sched or st.sched).step()
    else:
        st.sched.step()


def _finish_swa(model: nn.Module, X: torch.Tensor, r: Recipe, st: _State, device: Any,
                result: TrainResult) -> None:
    """Load the SWA average into ``model`` and recompute its BatchNorm statistics on the training inputs."""
    result.last_iterate = copy.deepcopy(model.state_dict())
    averaged = dict(st.swa_model.module.named_parameters())
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(averaged[name])
    loader = [X[i:i + r.batch_for(len(X))].to(device) for i in range(0, len(X), r.batch_for(len(X)))]
    update_bn(loader, model, device=None)


def exact_train_loss(model: nn.Module, X: torch.Tensor, y: torch.Tensor, loss: str | Callable,
                     device: Any = "cpu") -> float:
    """The plain loss (no label smoothing, no augmentation) of ``model`` in eval mode on all of ``(X, y)``:
    the number the matched-loss stopping test compares with ``recipe.target_train_loss``."""
    return float(loss_function(loss)(predict(model, X, device=device), y))


def fit(model: nn.Module, data: Any, recipe: Recipe | dict | None = None, *,
        checkpoint_dir: str | Path | None = None, progress: bool = True, device: str | torch.device = "cpu",
        eval_data: Any = None, loss_fn: Callable | None = None,
        callback: Callable[[int, dict, nn.Module], None] | None = None,
        step_callback: Callable[[int, nn.Module, torch.optim.Optimizer], None] | None = None) -> TrainResult:
    """Train ``model`` in place on ``data = (X, y)`` with ``recipe``; return a TrainResult.

    ``data`` may also be a flatminima Dataset (its train split), a ``torch.utils.data.Dataset`` of ``(x, y)``
    items or a ``DataLoader`` of ``(x, y)`` batches: read once into memory, then shuffled and batched by the
    recipe (``recipe.batch_size``), like tensors. ``eval_data`` takes the same forms.

    The same seed gives the same weights bit for bit on the CPU. With ``checkpoint_dir``, ``last.pt`` is
    written every ``recipe.checkpoint_every`` epochs and at the end, and a run finding it there resumes
    after the last finished epoch (same recipe required). ``eval_data`` adds test loss/accuracy to each
    epoch's history row; ``loss_fn(outputs, targets)`` replaces the recipe's loss; ``callback(epoch,
    row, model)`` runs after each epoch (after the checkpoint); ``step_callback(step, model, optimizer)``
    after every optimiser step (``step`` counts updates from 1, across resumes; the epoch's schedule step
    comes later, so ``optimizer``'s learning rate is the one that update used), and once with step 0 before
    the first update of a fresh run: the hook :class:`flatminima.dynamics.SharpnessMonitor` uses.

    With ``recipe.target_train_loss`` the run stops at the first epoch end where the exact train loss
    (:func:`exact_train_loss`: the recipe's plain cross-entropy/MSE, never smoothed, in eval mode on all
    training data) is at most the target; ``epochs`` is the cap, and a resumed run that had already stopped
    trains no further. ``TrainResult.epochs_run`` counts every epoch trained (across resumes),
    ``final_train_loss`` is the exact train loss of the returned model (computed for every run) and
    ``reached_target`` says whether it is ≤ the target (None without one).

    Examples:
        >>> import torch
        >>> from flatminima.train import fit
        >>> _ = torch.manual_seed(0)
        >>> X = torch.randn(64, 2)
        >>> y = (X[:, 0] > 0).long()
        >>> model = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
        >>> result = fit(model, (X, y), {"lr": 0.1, "epochs": 5, "batch_size": 16, "seed": 0}, progress=False)
        >>> result.epochs_run, result.final_train_loss < 0.2
        (5, True)
    """
    r = make_recipe(recipe)
    if not isinstance(model, nn.Module):
        raise FlatminimaError(f"fit: model must be a torch.nn.Module, got {type(model).__name__}; wrap a function "
                              "in an nn.Module whose parameters are the weights to train.")
    X, y = _check_data(data)
    if eval_data is not None and not isinstance(eval_data, (tuple, list)):
        eval_data = _check_data(eval_data)
    if not any(p.requires_grad for p in model.parameters()):
        raise FlatminimaError("the model has no trainable parameters (requires_grad=True); nothing to train.")
    model.to(device)
    lossf = loss_function(loss_fn or r.loss, r.label_smoothing)
    preflight(model, X, y, lossf, device=device,
              labels=loss_fn is None and r.loss == "cross_entropy" or loss_fn == "cross_entropy")
    result = TrainResult(model, recipe=r)
    ckpt = Path(checkpoint_dir) / "last.pt" if checkpoint_dir else None
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]):  # dropout's RNG: seeded here, the caller's state restored after
        torch.manual_seed(r.seed + 3)
        st = _build_state(model, r)
        start = _resume(ckpt, model, r, st, result) if ckpt and ckpt.exists() else 0
        target, plain = r.target_train_loss, loss_fn or r.loss
        exact = result.history[-1].get("exact_train_loss") if result.history else None
        done = target is not None and exact is not None and exact <= target  # a resumed run that had stopped
        result.epochs_run = start
        per_epoch = len(_batches(torch.arange(len(X)), r.batch_for(len(X))))
        steps = [start * per_epoch]
        on_step = None
        if step_callback is not None:
            def on_step() -> None:
                steps[0] += 1
                step_callback(steps[0], model, st.opt)
            if start == 0 and not done:
                step_callback(0, model, st.opt)
        with progress_bar(r.epochs - start, "training", enabled=progress and not done) as advance:
            for epoch in range(start, r.epochs if not done else start):
                lr = st.opt.param_groups[0]["lr"]
                train_loss = _train_epoch(model, X, y, r, st, lossf, device, epoch, on_step)
                _end_epoch(model, r, st, epoch)
                row = {"epoch": epoch + 1, "train_loss": train_loss, "lr": lr}
                if target is not None:
                    exact = exact_train_loss(model, X, y, plain, device)
                    done = exact <= target
                    row["exact_train_loss"] = exact
                if eval_data is not None:
                    ev = evaluate(model, eval_data, loss=plain, device=device)
                    row |= {f"test_{k}": v for k, v in ev.items() if k != "n"}
                result.history.append(row)
                if (epoch + 1) % r.snapshot_every == 0:
                    result.snapshots.append(flat_params(model))
                    result.snapshot_epochs.append(epoch + 1)
                last = done or epoch + 1 == r.epochs
                if ckpt and ((epoch + 1) % r.checkpoint_every == 0 or last):
                    _save(ckpt, model, r, st, result, epoch + 1)
                result.epochs_run, result.epochs_this_call = epoch + 1, result.epochs_this_call + 1
                advance(loss=train_loss)
                if callback:
                    callback(epoch + 1, row, model)
                if done:
                    break
        if r.swa:
            _finish_swa(model, X, r, st, device, result)
    if target is not None and exact is not None:
        result.final_train_loss = exact
    else:
        result.final_train_loss = exact_train_loss(model, X, y, plain, device)
    result.reached_target = None if target is None else bool(result.final_train_loss <= target)
    model.eval()
    result.seconds, result.checkpoint = time.perf_counter() - t0, str(ckpt) if ckpt else None
    return result


def _save(ckpt: Path, model: nn.Module, r: Recipe, st: _State, result: TrainResult, epoch: int) -> None:
    snaps = torch.stack(result.snapshots) if result.snapshots else None
    save_checkpoint(ckpt, model, **st.to_dict(), epoch=epoch, history=result.history, recipe=r.model_dump(),
                    snapshots=snaps, snapshot_epochs=result.snapshot_epochs)
