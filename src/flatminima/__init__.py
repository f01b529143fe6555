"""flatminima: the geometry of loss landscapes, exactly, with error bars and costs."""

from .errors import FlatminimaError, NonFiniteLossError
from .objective import Cost, Objective

__version__ = "0.1.0"
__all__ = ["Cost", "FlatminimaError", "NonFiniteLossError", "Objective", "__version__"]
