"""The busy-neighbour measurement: how much slower a call at the default
thread count is than the same call on one thread, while another process keeps
the cores busy.

``python -m bnfast bench --neighbour spin|bnfast|none`` runs it. The
neighbour is a child process: ``spin`` is a plain Python busy loop,
``bnfast`` calls ``bnfast.batch_norm`` in a loop at its default thread count,
``none`` measures the quiet machine (where the ratio is the thread scaling).
Calls at 1 thread and at the default count are interleaved in rounds so both
see the same neighbour; each figure is the median of at least 100 calls with
its 10th-90th percentile spread.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

import bnfast

# The neighbour checks that its parent is alive, so it never outlives the run.
_NEIGHBOURS = {
    "spin": "import os\nppid = os.getppid()\nwhile os.getppid() == ppid:\n"
    "    for _ in range(100000): pass\n",
    "bnfast": "import os\nimport numpy as np\nimport bnfast\nppid = os.getppid()\n"
    "x = np.random.default_rng(1).standard_normal((32, 64, 28, 28), dtype=np.float32)\n"
    "y = np.empty_like(x)\n"
    "while os.getppid() == ppid:\n"
    "    bnfast.batch_norm(x, training=True, out=y)\n",
}

# (label, shape) of NCHW float32 inputs from 1e5 to 1e7 elements.
SHAPES = (
    ("1e5", (8, 32, 20, 20)),
    ("1e6", (16, 64, 32, 32)),
    ("1e7", (64, 64, 48, 52)),
)


@dataclass
class NeighbourRow:
    """One op and size: medians (ms) at 1 thread and at the default count."""

    op: str
    size: str
    one_thread: tuple[float, float, float]  # median, p10, p90
    default: tuple[float, float, float]

    @property
    def ratio(self) -> float:
        """Default-thread median over the 1-thread median."""
        return self.default[0] / self.one_thread[0]


def _calls(x: np.ndarray) -> dict[str, Callable[[], object]]:
    y = np.empty_like(x)
    tokens = x.reshape(-1, 256)  # rows of a typical hidden size
    out_rows = np.empty_like(tokens)
    return {
        "batch_norm train": lambda: bnfast.batch_norm(x, training=True, out=y),
        "mean_var": lambda: bnfast.mean_var(x, axis=(0, 2, 3)),
        "layer_norm": lambda: bnfast.layer_norm(tokens, out=out_rows),
    }


def _stats(times: list[float]) -> tuple[float, float, float]:
    a = np.array(times) * 1e3
    return float(np.median(a)), float(np.percentile(a, 10)), float(np.percentile(a, 90))


def measure(
    neighbour: str, calls: int = 100, rounds: int = 10, threads: int | None = None
) -> tuple[list[NeighbourRow], str]:
    """Time every op and size beside ``neighbour``; returns the rows and the load."""
    if neighbour not in ("none", *_NEIGHBOURS):
        raise ValueError(f"neighbour must be 'none', 'spin' or 'bnfast', got {neighbour!r}")
    default = threads if threads is not None else bnfast.get_num_threads()
    child = None
    if neighbour != "none":
        child = subprocess.Popen([sys.executable, "-c", _NEIGHBOURS[neighbour]])
        time.sleep(1.0)  # let it import and start its loop
    rows = []
    try:
        rng = np.random.default_rng(0)
        per_round = max(1, calls // rounds)
        for size, shape in SHAPES:
            x = rng.standard_normal(shape, dtype=np.float32)
            for op, fn in _calls(x).items():
                fn()  # warm up
                one: list[float] = []
                many: list[float] = []
                for _ in range(rounds):
                    for count, sink in ((1, one), (default, many)):
                        with bnfast.threads(count):
                            for _ in range(per_round):
                                t0 = time.perf_counter()
                                fn()
                                sink.append(time.perf_counter() - t0)
                rows.append(NeighbourRow(op, size, _stats(one), _stats(many)))
        load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    finally:
        if child is not None:
            child.kill()
            child.wait()
    return rows, load


def table(rows: list[NeighbourRow], neighbour: str, threads: int, load: str) -> str:
    """The rows as text, with the neighbour, the thread count and the load."""
    lines = [
        f"neighbour: {neighbour}; default threads: {threads}; load average: {load}",
        f"{'op':<18} {'size':>5} {'1 thread ms (p10-p90)':>26} "
        f"{'default ms (p10-p90)':>26} {'default/1':>9}",
    ]
    for r in rows:
        one = f"{r.one_thread[0]:.3f} ({r.one_thread[1]:.3f}-{r.one_thread[2]:.3f})"
        many = f"{r.default[0]:.3f} ({r.default[1]:.3f}-{r.default[2]:.3f})"
        lines.append(f"{r.op:<18} {r.size:>5} {one:>26} {many:>26} {r.ratio:>8.2f}x")
    return "\n".join(lines)


def run(neighbour: str, calls: int = 100, threads: int | None = None) -> int:
    """Measure and print; the exit status of ``bench --neighbour``."""
    if threads is not None:
        bnfast.set_num_threads(threads)
    rows, load = measure(neighbour, calls=calls)
    print(table(rows, neighbour, bnfast.get_num_threads(), load))
    return 0
