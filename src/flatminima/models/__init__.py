"""Small model zoo and the ``module:factory`` path for a user's own model."""

from .zoo import build, cnn1d, from_factory, mlp

__all__ = ["build", "cnn1d", "from_factory", "mlp"]
