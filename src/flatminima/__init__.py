"""flatminima: the geometry of loss landscapes, exactly, with error bars and costs."""

from .errors import FlatminimaError, NonFiniteLossError
from .inspection import Inspection, inspect
from .objective import Cost, Objective
from .results import Estimate

__version__ = "0.1.0"
__all__ = ["Cost", "Estimate", "FlatminimaError", "Inspection", "NonFiniteLossError", "Objective", "__version__",
           "inspect"]
