"""Built-in data sets (generated locally or shipped inside packages; nothing is downloaded).

A data set is a :class:`Dataset` of tensors: train and test splits, plus named distribution shifts of the
test split (``shifts[name][severity]``) when the generator offers them.
"""

from .datasets import Dataset, load, load_file, load_mnist1d

__all__ = ["Dataset", "load", "load_file", "load_mnist1d"]
