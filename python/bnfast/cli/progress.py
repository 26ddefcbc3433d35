"""The progress bar of the data commands (tqdm on stderr, when installed)."""

from __future__ import annotations

import sys
from typing import Any

# Seconds before the tqdm bar appears (quick runs show nothing).  A module
# constant so that tests can make the bar appear at once.
PROGRESS_DELAY = 1.0


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def progress(total: int, desc: str, enabled: bool) -> Any:
    """A context manager whose ``update(n)`` advances a bar of ``total`` bytes."""
    if not enabled:
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:  # progress is a nicety
        return _NoBar()
    return tqdm(
        total=total,
        desc=desc,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        delay=PROGRESS_DELAY,
        file=sys.stderr,
        dynamic_ncols=True,
    )
