"""Backend selection: the native C++ kernels (at a CPU capability) or the
pure-NumPy twin, plus the thread settings. All environment variables are
read here, once, at import:

- ``BNFAST_BACKEND=native|numpy``
- ``BNFAST_CPU_CAPABILITY=scalar|avx2|avx512``
- ``BNFAST_NUM_THREADS=n``, ``OMP_NUM_THREADS=n``, ``OMP_THREAD_LIMIT=n``
  (:mod:`bnfast._threads`)
- ``BNFAST_DEBUG_HIDE_CAPABILITIES=avx512[,avx2]`` (testing aid: behave as on
  a CPU without those levels)

A bad value is never an import error (a program may import bnfast without
knowing it): it gives a ``RuntimeWarning`` naming the variable and what is
used instead, the default.

The thread settings and the active capability live in ``_core`` (the C++
state the kernels read) whenever the compiled module is importable; only
without it does Python keep the thread settings (``_threads.PySettings``).
The list of capabilities is ``_core.all_capabilities()``, the one list CMake
and the dispatcher share.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import warnings
from collections.abc import Iterator, Mapping
from types import FrameType, ModuleType
from typing import Optional

from . import _threadpoolctl, _threads, _twin
from ._version import __version__

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
MAX_THREADS = _threads.MAX_THREADS

_hidden_capabilities = frozenset(
    c.strip().lower()
    for c in os.environ.get("BNFAST_DEBUG_HIDE_CAPABILITIES", "").split(",")
    if c.strip() and c.strip().lower() != "scalar"
)

_lock = threading.RLock()


class _State:
    __slots__ = ("impl", "name")

    def __init__(self) -> None:
        self.impl: ModuleType = _twin
        self.name = "numpy"


_state = _State()

# The thread settings: _core's (the C++ state the kernels read), or Python's
# own copy of the same settings without the compiled module.
settings: _threads.Settings = _core if _core is not None else _threads.PySettings()


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


def set_num_threads(n: object) -> None:
    """Validate ``n`` and make it the process setting of the thread count."""
    settings.set_num_threads(_threads.check_count(n))


def get_num_threads() -> int:
    """The count the next native call on this OS thread will use."""
    return settings.get_num_threads()


def threads(n: object) -> contextlib.AbstractContextManager[None]:
    """A ``with`` block in which this OS thread requests ``n`` threads."""
    return _threads.scoped(settings, n)


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity)."""
    return settings.usable_cores()


def thread_limit() -> Optional[int]:
    """threadpoolctl's limit on the thread count (None: no limit)."""
    return settings.get_thread_limit()


def hard_thread_limit() -> Optional[int]:
    """``OMP_THREAD_LIMIT`` as read at import (None: not set or not valid)."""
    return settings.get_hard_thread_limit()


def threading_name() -> str:
    """What runs the native kernels' threads: ``"bnfast pool"`` (bnfast's own
    thread pool), ``"openmp"`` in a build on OpenMP, ``"none"`` without
    ``_core``."""
    if _core is None:
        return "none"
    return "openmp" if _core.openmp() else "bnfast pool"


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def _is_import_machinery(frame: FrameType) -> bool:
    # The frames ``warnings`` skips when it counts stack levels.
    name = frame.f_code.co_filename
    return "importlib" in name and "_bootstrap" in name


def _warn(message: str) -> None:
    """A RuntimeWarning pointing at the first frame outside bnfast (the
    ``import`` that got here), so it reads as the importer's."""
    level = 1
    frame: Optional[FrameType] = sys._getframe(0)
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame = frame.f_back
        while frame is not None and _is_import_machinery(frame):
            frame = frame.f_back
        level += 1
    warnings.warn(message, RuntimeWarning, stacklevel=level)


def _backend_from(environ: Mapping[str, str]) -> str:
    """``"native"`` or ``"numpy"``, from ``BNFAST_BACKEND`` and whether
    ``_core`` was imported."""
    default = "native" if _core is not None else "numpy"
    raw = environ.get("BNFAST_BACKEND", "").strip()
    backend = raw.lower() or default
    if backend not in ("native", "numpy"):
        _warn(
            f"bnfast: BNFAST_BACKEND={raw!r} is not 'native' or 'numpy'; using {default!r} instead"
        )
        return default
    if backend == "native" and _core is None:
        _warn(
            f"bnfast: BNFAST_BACKEND='native', but the compiled module bnfast._core "
            f"could not be imported ({_core_import_error}); using 'numpy' instead"
        )
        return "numpy"
    return backend


def _capability_from(environ: Mapping[str, str]) -> None:
    """Set ``_core``'s capability from ``BNFAST_CPU_CAPABILITY``, or the best
    one this CPU supports (minus the hidden ones)."""
    raw = environ.get("BNFAST_CPU_CAPABILITY", "").strip()
    cap = raw.lower()
    if _core is None:
        if cap:
            _warn(
                f"bnfast: BNFAST_CPU_CAPABILITY={raw!r} is ignored: the compiled module "
                f"bnfast._core could not be imported ({_core_import_error})"
            )
        return
    best = supported_capabilities()[-1]
    if cap:
        try:
            _set_capability(_core, cap)
            return
        except (ValueError, RuntimeError) as exc:
            _warn(f"bnfast: BNFAST_CPU_CAPABILITY={raw!r}: {exc}; using {best!r} instead")
    if _core.capability() != best:
        _core.set_capability(best)


def _init_from_environment(environ: Mapping[str, str]) -> None:
    _capability_from(environ)
    set_backend(_backend_from(environ))
    count, hard_limit, messages = _threads.from_environment(environ, settings.usable_cores())
    for message in messages:
        _warn(message)
    settings.set_hard_thread_limit(hard_limit)
    settings.set_num_threads(count)


def _register_with_threadpoolctl() -> None:
    if _core is None or not _core.__file__:
        return  # without the native module there is no pool to limit
    try:
        _threadpoolctl.register(settings, _core.__file__, __version__)
    except Exception as exc:  # a threadpoolctl we do not understand: never an import error
        _warn(
            f"bnfast: could not register with threadpoolctl ({exc!r}); "
            f"threadpool_limits will not limit bnfast"
        )


_init_from_environment(os.environ)
_register_with_threadpoolctl()
