"""Built-in data sets (generated locally or shipped inside packages; nothing is downloaded) and user files.

A data set is a :class:`Dataset` of tensors: train and test splits, plus named distribution shifts of the
test split (``shifts[name][severity] = (x, y)``, severities 1..5) when asked for with ``shifts=True``.
"""

from .corruptions import CORRUPTIONS, corrupt
from .datasets import LOADERS, Dataset, load, load_digits, load_file, load_mnist1d, load_two_class
from .mnist1d_shifts import SHIFTS as MNIST1D_SHIFTS
from .mnist1d_shifts import mnist1d_arrays

__all__ = ["CORRUPTIONS", "Dataset", "LOADERS", "MNIST1D_SHIFTS", "corrupt", "load", "load_digits",
           "load_file",            "load_mnist1d", "load_two_class", "mnist1d_arrays"]
