"""Configuration report and thread control."""

from __future__ import annotations

import contextlib
import platform
import sys
from collections.abc import Iterator

import numpy as np

from . import _runtime
from ._version import __version__


def config() -> dict:
    """The build and runtime configuration as a dict."""
    core = _runtime._core
    return {
        "version": __version__,
        "backend": _runtime.backend_name(),
        "capability": _runtime.capability(),
        "compiled_capabilities": _runtime.compiled_capabilities(),
        "supported_capabilities": _runtime.supported_capabilities(),
        "openmp": bool(core.openmp()) if core is not None else False,
        "num_threads": _runtime.get_num_threads(),
        "compiler": core.compiler if core is not None else None,
        "numpy": np.__version__,
        "python": sys.version.split()[0],
        "machine": platform.machine(),
    }


def show_config() -> None:
    """Print :func:`config` as an aligned table."""
    cfg = config()
    if _runtime._core is None:
        cfg["native_import_error"] = str(_runtime._core_import_error)
    width = max(len(k) for k in cfg)
    for key, value in cfg.items():
        if isinstance(value, list):
            value = ", ".join(value) or "-"
        elif value is None:
            value = "-"
        print(f"{key:<{width}}  {value}")


def set_num_threads(n: int) -> None:
    """Use ``n`` threads in the native kernels (results do not depend on it)."""
    _runtime.set_num_threads(n)


def get_num_threads() -> int:
    """The number of threads the native kernels use."""
    return _runtime.get_num_threads()


@contextlib.contextmanager
def threads(n: int) -> Iterator[None]:
    """Context manager: use ``n`` threads inside the block, then restore."""
    previous = get_num_threads()
    set_num_threads(n)
    try:
        yield
    finally:
        set_num_threads(previous)
