"""Callbacks that run a :class:`flatminima.track.Tracker` inside other training engines (optional extras).

- ``flatminima.integrations.lightning.FlatminimaCallback`` for PyTorch Lightning (``pip install lightning``)
- ``flatminima.integrations.huggingface.FlatminimaTrainerCallback`` for the Hugging Face ``Trainer``
  (``pip install transformers``)

Both send every recorded value through the engine's own loggers as ``flatminima/<run>/<measure>``
(Lightning's ``trainer.loggers``; the Trainer's ``report_to`` integrations and ``state.log_history``, with
``FlatminimaTrainerCallback(tracker).attach(trainer)`` placing it before the reporters). Each module imports
its engine on import and raises a clear error when it is missing.
"""
