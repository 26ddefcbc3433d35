"""Configuration report and thread control."""

from __future__ import annotations

import contextlib
import platform
import sys
from collections.abc import Iterator
from typing import Optional, TypedDict

import numpy as np

from . import _runtime
from ._version import __version__


class Config(TypedDict):
    """The dict :func:`config` returns (a plain dict at run time)."""

    version: str
    backend: str
    capability: Optional[str]
    compiled_capabilities: list[str]
    supported_capabilities: list[str]
    openmp: bool
    num_threads: int
    compiler: Optional[str]
    numpy: str
    python: str
    machine: str


def config() -> Config:
    """The build and runtime configuration.

    Returns
    -------
    dict
        ``version``; ``backend`` (``"native"`` or ``"numpy"``);
        ``capability`` (the CPU level the native kernels run at:
        ``"scalar"``, ``"avx2"`` or ``"avx512"``; None under the NumPy
        backend); ``compiled_capabilities`` and ``supported_capabilities``
        (lists of levels this build has and this CPU runs); ``openmp``
        (bool); ``num_threads``; ``compiler`` (None without the native
        module); ``numpy``, ``python`` and ``machine`` (versions and
        architecture).

    See Also
    --------
    show_config : The same, printed as a table.

    Examples
    --------
    >>> import bnfast
    >>> cfg = bnfast.config()
    >>> cfg["backend"] in ("native", "numpy")
    True
    >>> cfg["num_threads"] == bnfast.get_num_threads()
    True
    """
    core = _runtime._core
    compiler: Optional[str] = core.compiler if core is not None else None
    return {
        "version": __version__,
        "backend": _runtime.backend_name(),
        "capability": _runtime.capability(),
        "compiled_capabilities": _runtime.compiled_capabilities(),
        "supported_capabilities": _runtime.supported_capabilities(),
        "openmp": bool(core.openmp()) if core is not None else False,
        "num_threads": _runtime.get_num_threads(),
        "compiler": compiler,
        "numpy": np.__version__,
        "python": sys.version.split()[0],
        "machine": platform.machine(),
    }


def show_config() -> None:
    """Print :func:`config` as an aligned table.

    Without the native module, the reason it could not be imported is
    printed too.

    Examples
    --------
    >>> import bnfast
    >>> bnfast.show_config()  # doctest: +ELLIPSIS
    version ...
    backend ...
    """
    cfg: dict[str, object] = dict(config())
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
    """Use ``n`` threads in the native kernels (results do not depend on it).

    Parameters
    ----------
    n : int
        Between 1 and 1024. The default is ``BNFAST_NUM_THREADS`` or, without
        it, OpenMP's maximum thread count (1 without OpenMP).

    Raises
    ------
    TypeError
        If ``n`` is not an integer.
    ValueError
        If ``n`` is out of range.

    See Also
    --------
    threads : The same for a block of code.

    Examples
    --------
    >>> import bnfast
    >>> previous = bnfast.get_num_threads()
    >>> bnfast.set_num_threads(1)
    >>> bnfast.get_num_threads()
    1
    >>> bnfast.set_num_threads(previous)
    """
    _runtime.set_num_threads(n)


def get_num_threads() -> int:
    """The number of threads the native kernels use.

    Returns
    -------
    int
        Between 1 and 1024 (the NumPy backend ignores it).

    Examples
    --------
    >>> import bnfast
    >>> bnfast.get_num_threads() >= 1
    True
    """
    return _runtime.get_num_threads()


@contextlib.contextmanager
def threads(n: int) -> Iterator[None]:
    """Use ``n`` threads inside a ``with`` block, then restore the count.

    Parameters
    ----------
    n : int
        Between 1 and 1024, as for :func:`set_num_threads`.

    Yields
    ------
    None
        The block runs with ``n`` threads.

    Raises
    ------
    TypeError
        If ``n`` is not an integer.
    ValueError
        If ``n`` is out of range.

    Examples
    --------
    >>> import bnfast
    >>> with bnfast.threads(1):
    ...     bnfast.get_num_threads()
    1
    """
    previous = get_num_threads()
    set_num_threads(n)
    try:
        yield
    finally:
        set_num_threads(previous)
