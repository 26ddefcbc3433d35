"""Thread settings of the native kernels: where the count comes from.

The count a native call uses is decided in C++ (``_core``) on every call::

    threads_for_call = max(1, min(requested, limit, hard_limit))

``requested`` is the calling OS thread's override (a ``bnfast.threads(n)``
block) or else the process setting (``bnfast.set_num_threads``, initially
``BNFAST_NUM_THREADS`` > ``OMP_NUM_THREADS`` > the usable cores); ``limit``
is threadpoolctl's cap and ``hard_limit`` ``OMP_THREAD_LIMIT``. The README's
"Threads" section has the table.

This module reads those variables (once, at import, from
:mod:`bnfast._runtime`), validates counts, keeps each thread's stack of
``threads()`` blocks, and keeps the same settings in Python
(:class:`PySettings`) for a build without ``_core``.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator, Mapping
from typing import Optional, Protocol

MAX_THREADS = 1024  # far above any sensible count; guards the pool from absurd requests


class Settings(Protocol):
    """The thread settings ``_core`` exposes (and :class:`PySettings` mirrors)."""

    def set_num_threads(self, n: int) -> None: ...
    def get_num_threads(self) -> int: ...
    def set_thread_num_threads(self, n: Optional[int]) -> None: ...
    def get_thread_num_threads(self) -> Optional[int]: ...
    def set_thread_limit(self, n: Optional[int]) -> None: ...
    def get_thread_limit(self) -> Optional[int]: ...
    def set_hard_thread_limit(self, n: Optional[int]) -> None: ...
    def get_hard_thread_limit(self) -> Optional[int]: ...
    def usable_cores(self) -> int: ...


def affinity_cores() -> int:
    """The cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


class PySettings:
    """The thread settings of ``_core``, kept in Python when the compiled
    module is missing (the NumPy backend then runs on the calling thread;
    the settings are still kept and reported the same way)."""

    def __init__(self) -> None:
        self._process = 1
        self._limit: Optional[int] = None
        self._hard: Optional[int] = None
        self._local = threading.local()

    def set_num_threads(self, n: int) -> None:
        self._process = n

    def get_num_threads(self) -> int:
        requested = self.get_thread_num_threads()
        counts = [self._process if requested is None else requested]
        counts += [c for c in (self._limit, self._hard) if c is not None]
        return max(1, min(counts))

    def set_thread_num_threads(self, n: Optional[int]) -> None:
        self._local.n = n

    def get_thread_num_threads(self) -> Optional[int]:
        n: Optional[int] = getattr(self._local, "n", None)
        return n

    def set_thread_limit(self, n: Optional[int]) -> None:
        self._limit = n

    def get_thread_limit(self) -> Optional[int]:
        return self._limit

    def set_hard_thread_limit(self, n: Optional[int]) -> None:
        self._hard = n

    def get_hard_thread_limit(self) -> Optional[int]:
        return self._hard

    def usable_cores(self) -> int:
        return affinity_cores()


def check_count(n: object) -> int:
    """``n`` as a thread count: an integer between 1 and :data:`MAX_THREADS`.

    Raises TypeError for a non-integer (bool included), ValueError out of
    range."""
    if isinstance(n, bool) or not hasattr(n, "__index__"):
        raise TypeError(f"number of threads must be an integer, got {type(n).__name__}")
    value = int(n.__index__())
    if not 1 <= value <= MAX_THREADS:
        raise ValueError(f"number of threads must be between 1 and {MAX_THREADS}, got {value}")
    return value


# ---------------------------------------------------------------------------
# The environment


def _parse_count(text: str) -> Optional[int]:
    """A thread count from an environment value, or None if it is not one."""
    try:
        n = int(text.strip(), 10)
    except ValueError:
        return None
    return n if 1 <= n <= MAX_THREADS else None


def from_environment(
    environ: Mapping[str, str], cores: int
) -> tuple[int, Optional[int], list[str]]:
    """The process thread count, the hard limit (None: none) and a warning
    message for each bad value, from ``BNFAST_NUM_THREADS`` >
    ``OMP_NUM_THREADS`` > ``cores``, capped by ``OMP_THREAD_LIMIT``.

    A bad value (not an integer between 1 and :data:`MAX_THREADS`) is skipped
    for the next source; empty or unset variables are not looked at. Of
    ``OMP_NUM_THREADS`` (OpenMP's per-level list, e.g. ``"4,2"``) the first
    level counts."""
    bad: list[str] = []
    count, source = cores, "the usable cores"
    for name in ("BNFAST_NUM_THREADS", "OMP_NUM_THREADS"):
        raw = environ.get(name, "").strip()
        if not raw:
            continue
        n = _parse_count(raw.split(",")[0] if name == "OMP_NUM_THREADS" else raw)
        if n is not None:
            count, source = n, name
            break
        bad.append(f"{name}={raw!r}")
    messages = [
        f"bnfast: {what} is not a thread count (an integer from 1 to {MAX_THREADS}); "
        f"using {count} ({source}) instead"
        for what in bad
    ]
    hard: Optional[int] = None
    raw_limit = environ.get("OMP_THREAD_LIMIT", "").strip()
    if raw_limit:
        hard = _parse_count(raw_limit)
        if hard is None:
            messages.append(
                f"bnfast: OMP_THREAD_LIMIT={raw_limit!r} is not a thread count (an integer "
                f"from 1 to {MAX_THREADS}); using no limit instead"
            )
    return count, hard, messages


# ---------------------------------------------------------------------------
# threads(n) blocks: a stack per OS thread


class _Blocks(threading.local):
    """This OS thread's open ``threads()`` blocks, innermost last, and the
    override in force before the first of them."""

    def __init__(self) -> None:
        self.open: list[list[int]] = []  # one list per block: identity is the token
        self.base: Optional[int] = None


_blocks = _Blocks()


@contextlib.contextmanager
def scoped(settings: Settings, n: object) -> Iterator[None]:
    """Override the calling OS thread's count for a ``with`` block.

    Each block removes exactly itself when it ends, even if blocks of this
    thread end out of order (interleaved generators): the override is then
    that of the innermost block still open, or what it was before the first
    one. Other threads are never affected."""
    count = check_count(n)
    token = [count]
    if not _blocks.open:
        _blocks.base = settings.get_thread_num_threads()
    _blocks.open.append(token)
    settings.set_thread_num_threads(count)
    try:
        yield
    finally:
        open_blocks = _blocks.open
        for i in range(len(open_blocks) - 1, -1, -1):
            if open_blocks[i] is token:
                del open_blocks[i]
                break
        settings.set_thread_num_threads(open_blocks[-1][0] if open_blocks else _blocks.base)
