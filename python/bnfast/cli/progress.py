"""The progress display of the data commands on stderr: a tqdm bar when tqdm
is installed (``pip install "bnfast[progress]"``), else a plain text line."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

# Seconds before the display appears (quick runs show nothing).  A module
# constant so that tests can make it appear at once.
PROGRESS_DELAY = 1.0
# Seconds between two refreshes of the plain display on a terminal.
PLAIN_REFRESH = 0.25


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def _mib(n: float) -> str:
    return f"{n / 1048576:.1f} MiB"


class PlainProgress:
    """The display without tqdm: ``desc: 42% (1.0 MiB of 2.4 MiB)``.

    On a terminal one line redrawn in place (at most every
    ``PLAIN_REFRESH`` seconds); elsewhere (a log file) one line per tenth of
    the work, so a log does not fill with redraws.  Nothing is written during
    the first ``delay`` seconds, nor at all for a run shorter than that.
    """

    def __init__(self, total: int, desc: str, stream: TextIO, delay: float) -> None:
        self.total = max(int(total), 0)
        self.desc = desc
        self.stream = stream
        self.delay = delay
        self.done = 0
        self._start = time.monotonic()
        self._last_time = float("-inf")
        self._last_step = -1  # tenths written (non-terminal)
        self._shown = False
        try:
            self._tty = bool(stream.isatty())
        except (AttributeError, ValueError):  # closed or not a real file
            self._tty = False

    def _percent(self) -> int:
        if self.total == 0:
            return 100
        return min(100, self.done * 100 // self.total)

    def _line(self) -> str:
        return (
            f"{self.desc}: {self._percent():3d}% ({_mib(min(self.done, self.total))} "
            f"of {_mib(self.total)})"
        )

    def _write(self, final: bool) -> None:
        now = time.monotonic()
        if not final and now - self._start < self.delay:
            return
        if self._tty:
            if final or now - self._last_time >= PLAIN_REFRESH:
                self.stream.write("\r" + self._line())
                self._last_time = now
                self._shown = True
        else:
            step = self._percent() // 10
            if step > self._last_step:
                self.stream.write(self._line() + "\n")
                self._last_step = step
                self._shown = True
        self.stream.flush()

    def update(self, n: int = 1) -> None:
        """Count ``n`` more bytes done and refresh the display if due."""
        self.done += n
        self._write(final=False)

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        # A run that showed something ends on its final state.
        if self._shown:
            self._write(final=True)
            if self._tty:
                self.stream.write("\n")
                self.stream.flush()


def progress(total: int, desc: str, enabled: bool) -> Any:
    """A context manager whose ``update(n)`` advances a display of ``total`` bytes."""
    if not enabled:
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is optional (the "progress" extra)
        return PlainProgress(total, desc, sys.stderr, PROGRESS_DELAY)
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
