"""Small assertions several test modules share (imported as ``from helpers import refused``)."""

from __future__ import annotations

import pytest

from flatminima.errors import FlatminimaError


def refused(fn, *fragments: str) -> str:
    """Call ``fn``; it must raise a FlatminimaError whose message contains every fragment. Returns the message."""
    with pytest.raises(FlatminimaError) as err:
        fn()
    for f in fragments:
        assert f in str(err.value), str(err.value)
    return str(err.value)
