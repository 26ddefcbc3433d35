"""Backend selection: the native C++ kernels (at a CPU capability) or the
pure-NumPy twin, plus the thread count. All environment variables are read
here, once, at import:

- ``BNFAST_BACKEND=native|numpy``
- ``BNFAST_CPU_CAPABILITY=scalar|avx2|avx512``
- ``BNFAST_NUM_THREADS=n``
- ``BNFAST_DEBUG_HIDE_CAPABILITIES=avx512[,avx2]`` (testing aid: behave as on
  a CPU without those levels)

The thread count and the active capability live in ``_core`` (the C++
globals the kernels read) whenever the compiled module is importable; only
without it does Python keep its own thread count. The list of capabilities
is ``_core.all_capabilities()``, the one list CMake and the dispatcher share.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from types import ModuleType
from typing import Optional

from . import _twin

_core: Optional[ModuleType]
_core_import_error: Optional[ImportError]
try:
    from . import _core
except ImportError as exc:  # not compiled (e.g. a source checkout): NumPy only
    _core = None
    _core_import_error = exc
else:
    _core_import_error = None

# Every capability the build system knows, lowest first (empty without _core).
CAPABILITIES: tuple[str, ...] = tuple(_core.all_capabilities()) if _core is not None else ()
MAX_THREADS = 1024  # far above any sensible count; guards OpenMP from absurd requests

_hidden_capabilities = frozenset(
    c.strip().lower()
    for c in os.environ.get("BNFAST_DEBUG_HIDE_CAPABILITIES", "").split(",")
    if c.strip() and c.strip().lower() != "scalar"
)

_lock = threading.RLock()


class _State:
    __slots__ = ("impl", "name", "num_threads")

    def __init__(self) -> None:
        self.impl: ModuleType = _twin
        self.name = "numpy"
        self.num_threads = 1  # used only without _core (which owns the count otherwise)


_state = _State()


def impl() -> ModuleType:
    """The active backend module (``bnfast._core`` or ``bnfast._twin``): both
    have the same kernel names, called as ``impl().NAME(...)``."""
    return _state.impl


def native_active() -> bool:
    """Whether the native backend is active (the C++ fast paths may run)."""
    return _state.impl is not _twin


def core() -> ModuleType:
    """The compiled module (only valid while :func:`native_active`)."""
    return _state.impl


def backend_name() -> str:
    """``"native"`` or ``"numpy"``."""
    return _state.name


def _require_core(what: str) -> ModuleType:
    if _core is None:
        raise ImportError(
            f"{what} needs the compiled module bnfast._core, which could not be "
            f"imported: {_core_import_error}"
        )
    return _core


def set_backend(name: str, capability: Optional[str] = None) -> None:
    """Switch to ``"numpy"`` or ``"native"`` (optionally at a CPU capability)."""
    with _lock:
        if name == "numpy":
            _state.impl, _state.name = _twin, "numpy"
        elif name == "native":
            core = _require_core("the native backend")
            if capability is not None:
                _set_capability(core, capability)
            _state.impl, _state.name = core, "native"
        else:
            raise ValueError(f"backend must be 'native' or 'numpy', got {name!r}")


def _set_capability(core: ModuleType, capability: str) -> None:
    if capability not in CAPABILITIES:
        raise ValueError(
            f"unknown CPU capability {capability!r}; expected one of: {', '.join(CAPABILITIES)}"
        )
    supported = supported_capabilities()
    if capability not in supported:
        raise RuntimeError(
            f"CPU capability {capability!r} is not available: this build and CPU "
            f"support only: {', '.join(supported)}"
        )
    core.set_capability(capability)


def capability() -> Optional[str]:
    """The native capability in use, or None under the NumPy backend."""
    if _state.name != "native" or _core is None:
        return None
    name: str = _core.capability()
    return name


def compiled_capabilities() -> list[str]:
    """The capabilities this build has kernels for (empty without _core)."""
    return list(_core.compiled_capabilities()) if _core is not None else []


def supported_capabilities() -> list[str]:
    """The compiled capabilities this CPU runs, minus the hidden ones."""
    if _core is None:
        return []
    return [c for c in _core.supported_capabilities() if c not in _hidden_capabilities]


def choices() -> list[str]:
    """Every backend/capability this build and CPU can run (for tests)."""
    return ["numpy", *supported_capabilities()]


@contextlib.contextmanager
def using(choice: str) -> Iterator[None]:
    """Run a block under ``"numpy"`` or a native capability name."""
    with _lock:
        saved_name = _state.name
        saved_cap = _core.capability() if _core is not None else None
        if choice == "numpy":
            set_backend("numpy")
        else:
            set_backend("native", choice)
    try:
        yield
    finally:
        with _lock:
            if _core is not None and saved_cap is not None:
                _core.set_capability(saved_cap)
            set_backend(saved_name)


def set_num_threads(n: int) -> None:
    """Validate ``n`` and make it the thread count (in ``_core`` when it exists)."""
    if isinstance(n, bool) or not isinstance(n, int) and not hasattr(n, "__index__"):
        raise TypeError(f"number of threads must be an integer, got {type(n).__name__}")
    n = int(n.__index__())
    if not 1 <= n <= MAX_THREADS:
        raise ValueError(f"number of threads must be between 1 and {MAX_THREADS}, got {n}")
    with _lock:
        if _core is not None:
            _core.set_num_threads(n)
        else:
            _state.num_threads = n


def get_num_threads() -> int:
    """The thread count (read from ``_core`` when it exists)."""
    if _core is not None:
        n: int = _core.get_num_threads()
        return n
    return _state.num_threads


def _init_from_environment() -> None:
    backend = os.environ.get("BNFAST_BACKEND", "").strip().lower()
    cap = os.environ.get("BNFAST_CPU_CAPABILITY", "").strip().lower()
    threads = os.environ.get("BNFAST_NUM_THREADS", "").strip()

    if backend not in ("", "native", "numpy"):
        raise ValueError(f"BNFAST_BACKEND must be 'native' or 'numpy', got {backend!r}")
    if cap:
        core = _require_core(f"BNFAST_CPU_CAPABILITY={cap}")
        try:
            _set_capability(core, cap)
        except (ValueError, RuntimeError) as exc:
            raise type(exc)(f"BNFAST_CPU_CAPABILITY: {exc}") from None
    elif _core is not None and _core.capability() not in supported_capabilities():
        _core.set_capability(supported_capabilities()[-1])  # best one not hidden
    if backend == "numpy" or (backend == "" and _core is None):
        set_backend("numpy")
    else:
        set_backend("native")

    if threads:
        try:
            n = int(threads)
        except ValueError:
            raise ValueError(
                f"BNFAST_NUM_THREADS must be a positive integer, got {threads!r}"
            ) from None
        if not 1 <= n <= MAX_THREADS:
            raise ValueError(
                f"BNFAST_NUM_THREADS must be an integer between 1 and {MAX_THREADS}, got {threads!r}"
            )
        set_num_threads(n)
    else:
        default = _core.default_num_threads() if _core is not None else (os.cpu_count() or 1)
        set_num_threads(default)


_init_from_environment()
