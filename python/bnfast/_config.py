"""Configuration report and thread control."""

from __future__ import annotations

import contextlib
import platform
import sys
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
    threading: str
    num_threads: int
    usable_cores: int
    thread_limit: Optional[int]
    hard_thread_limit: Optional[int]
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
        (bool: whether the kernels run on OpenMP; False, they run on
        bnfast's own pool); ``threading`` (what runs the kernels' threads:
        ``"bnfast pool"``, or ``"none"`` without the native module);
        ``num_threads`` (what the next native call on this thread uses,
        :func:`get_num_threads`); ``usable_cores`` (the cores this process
        may run on); ``thread_limit`` (threadpoolctl's limit) and
        ``hard_thread_limit`` (``OMP_THREAD_LIMIT``), None when unset;
        ``compiler`` (None without the native module); ``numpy``,
        ``python`` and ``machine`` (versions and architecture).

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
        "threading": _runtime.threading_name(),
        "num_threads": _runtime.get_num_threads(),
        "usable_cores": _runtime.usable_cores(),
        "thread_limit": _runtime.thread_limit(),
        "hard_thread_limit": _runtime.hard_thread_limit(),
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
    """Set the process's thread count for the native kernels.

    Results do not depend on the count. Every thread without a
    :func:`threads` block of its own uses it, within the limits of
    threadpoolctl's ``threadpool_limits`` and ``OMP_THREAD_LIMIT``: see the
    precedence table in the README's "Threads" section.

    Parameters
    ----------
    n : int
        Between 1 and 1024. The default is ``BNFAST_NUM_THREADS``, else
        ``OMP_NUM_THREADS``, else the number of cores this process may run on.

    Raises
    ------
    TypeError
        If ``n`` is not an integer.
    ValueError
        If ``n`` is out of range.

    See Also
    --------
    threads : A count for a block of code, on the calling thread only.
    get_num_threads : The count the next call will use.

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
    """The number of threads the next native call on this thread will use.

    That is the count of the innermost :func:`threads` block open on this
    thread, else the process's (:func:`set_num_threads`), capped by
    threadpoolctl's ``threadpool_limits`` and ``OMP_THREAD_LIMIT`` (see the
    README's "Threads" section). A call runs on at most as many cores as the
    process may use, fewer while other bnfast calls are running.

    Returns
    -------
    int
        Between 1 and 1024 (the NumPy backend runs on the calling thread
        whatever it is).

    See Also
    --------
    set_num_threads : The process's count.
    threads : A count for a block of code, on the calling thread only.

    Examples
    --------
    >>> import bnfast
    >>> bnfast.get_num_threads() >= 1
    True
    """
    return _runtime.get_num_threads()


def threads(n: int) -> contextlib.AbstractContextManager[None]:
    """Use ``n`` threads on the calling thread inside a ``with`` block.

    Only the calling (Python/OS) thread is affected, and leaving the block
    restores exactly what it replaced, even when blocks end out of order.
    threadpoolctl's ``threadpool_limits`` and ``OMP_THREAD_LIMIT`` still cap
    the count; see the precedence table in the README's "Threads" section.
    The setting belongs to the OS thread, not to an asyncio task: tasks that
    share a thread share it.

    Parameters
    ----------
    n : int
        Between 1 and 1024, as for :func:`set_num_threads`.

    Returns
    -------
    context manager
        Inside its ``with`` block, the calling thread requests ``n`` threads.

    Raises
    ------
    TypeError
        If ``n`` is not an integer (on entering the block).
    ValueError
        If ``n`` is out of range (on entering the block).

    See Also
    --------
    set_num_threads : The count of every thread without a block.

    Examples
    --------
    >>> import bnfast
    >>> with bnfast.threads(1):
    ...     bnfast.get_num_threads()
    1
    """
    return _runtime.threads(n)
