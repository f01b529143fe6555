"""A PyTorch Lightning callback that records flatminima measures every N optimizer steps.

    trainer = lightning.Trainer(callbacks=[FlatminimaCallback(probe_data, loss="cross_entropy",
                                                              measures=["loss", "lambda_max"], every=50)])

A :class:`flatminima.dynamics.SharpnessMonitor` (``FlatminimaCallback(tracker=SharpnessMonitor(...))``)
gets the trainer's first optimiser at every step, so its stability threshold follows Lightning's schedulers.
The tracker is built on the LightningModule at ``on_fit_start`` (or pass ``tracker=`` built by hand, e.g.
on an inner network) and called after every training batch with ``trainer.global_step``. With
``loss=``, the module's ``forward`` must map inputs to outputs; otherwise pass ``loss_fn(module, batch)``.

Every recorded value also goes through the trainer's own loggers (``trainer.loggers``: TensorBoardLogger,
CSVLogger, WandbLogger, ...) as ``flatminima/<run>/<measure>`` at ``trainer.global_step``; pass
``log_to_trainer=False`` to keep them only in the tracker (and its ``store=``).
"""

from __future__ import annotations

from typing import Any

from ..dynamics import SharpnessMonitor
from ..errors import FlatminimaError
from ..track import Tracker

try:
    import lightning.pytorch as pl
except ImportError:  # the older package name
    try:
        import pytorch_lightning as pl
    except ImportError as err:
        raise ImportError("flatminima.integrations.lightning needs PyTorch Lightning: "
                          "pip install lightning") from err

__all__ = ["FlatminimaCallback"]


class FlatminimaCallback(pl.Callback):
    """Runs ``Tracker.step(trainer.global_step)`` after each training batch."""

    def __init__(self, data: Any = None, *, tracker: Tracker | None = None, log_to_trainer: bool = True,
                 **tracker_kwargs: Any):
        super().__init__()
        if tracker is None and data is None:
            raise FlatminimaError("pass the probe `data` (and loss/measures/every) or a ready `tracker=`.")
        self.tracker, self._data, self._kwargs = tracker, data, tracker_kwargs
        self.log_to_trainer = log_to_trainer
        self._last_step: int | None = None

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        if self.tracker is None:
            self.tracker = Tracker(pl_module, self._data, **self._kwargs)
        if self.log_to_trainer:  # every value also goes to the trainer's own loggers (TensorBoard, CSV, W&B, ...)
            for logger in getattr(trainer, "loggers", None) or []:
                if logger not in getattr(self.tracker, "_loggers", []):
                    self.tracker.add_logger(logger)

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = int(trainer.global_step)
        if step != self._last_step:  # with gradient accumulation several batches share one step
            self._last_step = step
            if isinstance(self.tracker, SharpnessMonitor) and trainer.optimizers:
                # the optimiser as Lightning built it: its learning rate and state give the threshold
                self.tracker.step(step, optimizer=trainer.optimizers[0])
            else:
                self.tracker.step(step)

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        if self.tracker is not None:
            self.tracker.close()

