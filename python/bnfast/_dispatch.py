"""Recognise Dask arrays at the public boundary without importing Dask.

Each public function that accepts a ``dask.array.Array`` starts with one
line: ``if is_dask(x): return dask_ops().<op>(...)``. The check looks only
at the type's module name, so importing bnfast (or calling it on NumPy
data) never imports dask; :func:`dask_ops` imports :mod:`bnfast._dask`
(and with it dask) only when a Dask array actually arrives.
"""

from __future__ import annotations

import importlib
from types import ModuleType


def is_dask(*arrays: object) -> bool:
    """Whether any of ``arrays`` is a ``dask.array.Array`` (checked by type
    name and module: no import)."""
    for a in arrays:
        t = type(a)
        if t.__name__ == "Array" and t.__module__.startswith("dask."):
            return True
    return False


def dask_ops() -> ModuleType:
    """:mod:`bnfast._dask`, imported on first use."""
    return importlib.import_module("bnfast._dask")
