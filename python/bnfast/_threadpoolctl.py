"""threadpoolctl support: bnfast's thread pool as a library threadpoolctl
lists (``threadpool_info()``) and limits (``threadpool_limits(n)``, with or
without ``user_api="openmp"``).

threadpoolctl finds libraries among the loaded shared objects by file name
and, from version 3.5, takes controllers of other libraries through
``threadpoolctl.register``. bnfast registers one at import when threadpoolctl
is importable; nothing happens without it (it is not a dependency).
"""

from __future__ import annotations

import importlib
import os
from typing import Any, Optional

from ._threads import MAX_THREADS, Settings


class Count(int):
    """A thread count as bnfast reports it to threadpoolctl, remembering the
    threadpoolctl limit in force when it was read (``limit``, None for none).

    ``threadpool_limits`` saves the count it reads on entry and sets it back on
    exit; given back one of these, the controller restores that limit itself,
    so leaving the block leaves no limit behind where there was none."""

    limit: Optional[int]


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def make_controller(base: Any, settings: Settings, core_path: str, version: str) -> type:
    """The controller class for threadpoolctl's ``LibController`` ``base``."""

    class BnfastController(base):
        """bnfast's thread pool, for threadpoolctl (see :mod:`bnfast._threadpoolctl`)."""

        user_api = "openmp"
        internal_api = "bnfast"
        filename_prefixes = ("_core",)
        # threadpoolctl keeps a controller only if its ``dynlib`` (the loaded
        # file) has one of ``check_symbols``. Every extension module named
        # ``_core`` exports ``PyInit__core``; ``set_additional_attributes``
        # (threadpoolctl's hook at the end of construction) drops the handle
        # of any file that is not bnfast's own ``_core``, so threadpoolctl
        # discards those and other packages' ``_core`` modules are not claimed.
        check_symbols = ("PyInit__core",)

        def set_additional_attributes(self) -> None:
            if not _same_file(str(self.filepath), core_path):
                self.dynlib = None

        def get_num_threads(self) -> Count:
            count = Count(settings.get_num_threads())
            count.limit = settings.get_thread_limit()
            return count

        def set_num_threads(self, num_threads: int) -> None:
            if isinstance(num_threads, Count):
                settings.set_thread_limit(num_threads.limit)
            else:
                settings.set_thread_limit(min(max(int(num_threads), 1), MAX_THREADS))

        def get_version(self) -> str:
            return version

    return BnfastController


def register(settings: Settings, core_path: str, version: str) -> Optional[type]:
    """Register bnfast's controller with threadpoolctl (>= 3.5) if it is
    importable; the class registered, or None."""
    try:
        threadpoolctl: Any = importlib.import_module("threadpoolctl")
    except ImportError:
        return None
    base = getattr(threadpoolctl, "LibController", None)
    register_controller = getattr(threadpoolctl, "register", None)
    if base is None or register_controller is None:  # threadpoolctl < 3.5
        return None
    controller = make_controller(base, settings, core_path, version)
    register_controller(controller)
    return controller
