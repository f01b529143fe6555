"""A Hugging Face ``transformers`` Trainer callback that records flatminima measures every N steps.

    tracker = Tracker(model, probe_batches, loss_fn=lm_loss, measures=["loss", "lambda_max"], every=50)
    trainer = Trainer(model=model, ..., callbacks=[FlatminimaTrainerCallback(tracker)])

A :class:`flatminima.dynamics.SharpnessMonitor` gets the Trainer's optimiser at every step, so its
stability threshold follows the Trainer's learning-rate schedule.

The Trainer needs ``accelerate`` (in the ``integrations`` extra). To send the values to your own logger
(TensorBoard, W&B), give the tracker ``logger=`` (see :class:`flatminima.track.Tracker`).

Probe batches are dicts ``{"input_ids", "attention_mask", "labels"}``; the losses in
:mod:`flatminima.models.transformer` call ``model(input_ids=..., attention_mask=...)`` and read ``.logits``.
"""

from __future__ import annotations

from typing import Any

from ..dynamics import SharpnessMonitor
from ..errors import FlatminimaError
from ..track import Tracker

try:
    from transformers import TrainerCallback
except ImportError as err:
    raise ImportError("flatminima.integrations.huggingface needs transformers: "
                      "pip install transformers") from err

__all__ = ["FlatminimaTrainerCallback"]


class FlatminimaTrainerCallback(TrainerCallback):
    """Calls ``tracker.step(state.global_step)`` at the end of every optimizer step (and at step 0)."""

    def __init__(self, tracker: Tracker):
        if not isinstance(tracker, Tracker):
            raise FlatminimaError(f"tracker must be a flatminima Tracker, got {type(tracker).__name__}.")
        self.tracker = tracker

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.tracker.step(int(state.global_step))

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        optimizer = kwargs.get("optimizer")
        if isinstance(self.tracker, SharpnessMonitor) and optimizer is not None:
            # the Trainer's optimiser (the monitor unwraps accelerate's wrapper): its lr and state give the threshold
            self.tracker.step(int(state.global_step), optimizer=optimizer)
        else:
            self.tracker.step(int(state.global_step))

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.tracker.close()
