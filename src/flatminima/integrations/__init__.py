"""Callbacks that run a :class:`flatminima.track.Tracker` inside other training engines (optional extras).

- ``flatminima.integrations.lightning.FlatminimaCallback`` for PyTorch Lightning (``pip install lightning``)
- ``flatminima.integrations.huggingface.FlatminimaTrainerCallback`` for the Hugging Face ``Trainer``
  (``pip install transformers``)

Each module imports its engine on import and raises a clear error when it is missing.
"""
