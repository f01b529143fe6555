"""A Hugging Face ``transformers`` Trainer callback that records flatminima measures every N steps.

    tracker = Tracker(model, probe_batches, loss_fn=lm_loss, measures=["loss", "lambda_max"], every=50)
    trainer = Trainer(model=model, args=TrainingArguments(..., report_to=["tensorboard"]), ...)
    FlatminimaTrainerCallback(tracker).attach(trainer)   # first in the Trainer's callbacks
    trainer.train()

A :class:`flatminima.dynamics.SharpnessMonitor` gets the Trainer's optimiser at every step, so its
stability threshold follows the Trainer's learning-rate schedule.

Every recorded value also goes through the Trainer's own logging: at a record step the callback asks the
Trainer to log (``control.should_log``), and when the Trainer calls ``on_log`` it adds the values to that
log's dict as ``flatminima/<run>/<measure>`` (the tags of :mod:`flatminima.integrations.lightning`) and
to that step's ``trainer.state.log_history`` entry. Whatever ``report_to`` names (TensorBoard, W&B, MLflow,
...) then reports them with the Trainer's own values of that step; the TensorBoard and W&B integrations
prefix ``train/``, so a TensorBoard tag reads ``train/flatminima/run/lambda_max``. The values stay in the
tracker's ``history`` and its ``store=`` as well; ``log_to_trainer=False`` keeps them there only.

The Trainer calls its callbacks in order, and the reporting integrations are placed before the callbacks
passed to ``Trainer(callbacks=[...])``: a callback passed that way adds its values after the reporters
have run, so they reach ``log_history`` and later callbacks only. :meth:`FlatminimaTrainerCallback.attach`
puts the callback first (also when it was passed in ``callbacks=``), and lets it log the record at the start
of training (step 0), at which the Trainer itself never logs. Asking the Trainer to log at a record step
also logs its training loss there, averaged since its previous log.

The Trainer needs ``accelerate`` (in the ``integrations`` extra). A tracker's own ``logger=`` still works
besides (see :class:`flatminima.track.Tracker`).

Probe batches are dicts ``{"input_ids", "attention_mask", "labels"}``; the losses in
:mod:`flatminima.models.transformer` call ``model(input_ids=..., attention_mask=...)`` and read ``.logits``.
"""

from __future__ import annotations

import warnings
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
    """Calls ``tracker.step(state.global_step)`` at the start of training and at the end of every optimizer
    step, and hands each record's values to the Trainer's loggers (see the module doc).

    Args:
        tracker: a :class:`~flatminima.track.Tracker` or :class:`~flatminima.dynamics.SharpnessMonitor`.
        log_to_trainer: add the values to the Trainer's logs (``False``: only the tracker's own sinks).
    """

    def __init__(self, tracker: Tracker, *, log_to_trainer: bool = True):
        if not isinstance(tracker, Tracker):
            raise FlatminimaError(f"tracker must be a flatminima Tracker, got {type(tracker).__name__}.")
        self.tracker = tracker
        self.log_to_trainer = log_to_trainer
        self._pending: dict[int, dict[str, float]] = {}  # step -> tagged values not yet in a Trainer log
        self._trainer: Any = None
        self._warned = False

    def attach(self, trainer: Any) -> FlatminimaTrainerCallback:
        """Put this callback first in ``trainer``'s callbacks and return it.

        First, so that its values are in a log's dict before the reporting integrations (TensorBoard, W&B,
        ...) read it; the Trainer itself places those before any callback given to ``Trainer(callbacks=)``.
        Knowing the trainer also lets the record at the start of training be logged at its own step.
        """
        callbacks = getattr(getattr(trainer, "callback_handler", None), "callbacks", None)
        if not isinstance(callbacks, list):
            raise FlatminimaError(f"attach needs a transformers Trainer (with callback_handler.callbacks), got "
                                  f"{type(trainer).__name__}.")
        callbacks[:] = [cb for cb in callbacks if cb is not self]
        callbacks.insert(0, self)
        self._trainer = trainer
        return self

    # ----------------------------------------------------------------------------------- events
    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._record(state, control, kwargs.get("optimizer"), ask_to_log=False)

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        # The record made at on_train_begin: the Trainer never logs at that step by itself, and the reporters
        # are only set up once every on_train_begin has run, so it is logged here, before the first update.
        step = int(state.global_step)
        if self._trainer is not None and step in self._pending:
            self._trainer.log({})
        for old in [s for s in self._pending if s <= step]:  # no Trainer log will come at these steps
            del self._pending[old]

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._record(state, control, kwargs.get("optimizer"), ask_to_log=True)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None,
               **kwargs: Any) -> None:
        step = int(state.global_step)
        if logs is None or step not in self._pending:
            return
        metrics = self._pending.pop(step)
        if self._trainer is None and getattr(args, "report_to", None) and not self._warned:
            self._warned = True
            warnings.warn("FlatminimaTrainerCallback was not attached, so the Trainer's reporting integrations "
                          f"({args.report_to}) ran before it and miss its values; call "
                          "callback.attach(trainer) before trainer.train().", stacklevel=2)
        logs.update(metrics)  # the same dict goes on to every later callback
        history = getattr(state, "log_history", None)
        if history and history[-1].get("step") == step:  # Trainer.log stored a copy of logs before on_log
            history[-1].update(metrics)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._pending.clear()
        self.tracker.close()

    # ----------------------------------------------------------------------------------- helpers
    def _record(self, state: Any, control: Any, optimizer: Any, ask_to_log: bool) -> None:
        step = int(state.global_step)
        if isinstance(self.tracker, SharpnessMonitor) and optimizer is not None:
            # the Trainer's optimiser (the monitor unwraps accelerate's wrapper): its lr and state give the threshold
            rows = self.tracker.step(step, optimizer=optimizer)
        else:
            rows = self.tracker.step(step)
        if not rows or not self.log_to_trainer:
            return
        self._pending.setdefault(step, {}).update({self.tracker.tag(r["measure"]): r["value"] for r in rows})
        if ask_to_log and control is not None:
            control.should_log = True
