"""``python -m bnfast bench``: a self-check, then every benchmark case of
the registry (:mod:`.cases`) timed beside its memory floor and baselines.

The floor is what the bytes the case's algorithm must move cost on this
machine at the run's thread count: bnfast's own read pass and read +
streaming-write pass (``_core.memory_floor``) over the same numbers of bytes
(:meth:`.cases.CaseSpec.floor_passes` says which passes). The baselines are
``np.copyto`` of the input (one thread, plain stores: familiar, not the
floor), the plain NumPy expression, PyTorch (in a child process, see
:mod:`.peers`) and scikit-learn's StandardScaler for dataset statistics.
bnfast's time is given as min, median and p90 of repeated runs; a row whose
p90 exceeds its min by more than :data:`BUSY_SPREAD` is flagged: the machine
was busy while it ran. The ratios are what to read.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

import bnfast

from ..._files import atomic_write
from ..._table import format_table
from .cases import EPS, Case, make_cases

# The peers script is a plain module with no bnfast imports: one timer for both.
from .peers import median_ms as _median_ms
from .peers import sample_ms as _sample_ms

# A row whose p90 is this many times its min ran on a busy machine: its
# median may be off by as much (quiet runs here spread by 2-10%).
BUSY_SPREAD = 1.3


def cache_bytes() -> int:
    """One core's L2 cache as the kernels see it (``_core.l2_cache_bytes``),
    512 KiB where the OS does not say: the slab size below which an op's
    statistics and output pass share the bytes."""
    from ..._runtime import _core

    return (_core.l2_cache_bytes() if _core is not None else 0) or 512 << 10


def floor_label(passes: tuple[tuple[int, int], ...], nbytes: int) -> str:
    """``read``, ``read+write``, ``read, read+write``, ``2 reads+write``...:
    the floor's passes in units of the input array."""

    def one(r: int, w: int) -> str:
        k = r // nbytes if nbytes else 1
        reads = "read" if k == 1 else f"{k} reads"
        return reads + ("+write" if w else "")

    return ", ".join(one(r, w) for r, w in passes)


class FloorTimer:
    """Median times of ``_core.memory_floor`` passes (cached per size), on
    buffers kept between cases and touched before timing."""

    def __init__(self, repeats: int) -> None:
        self.repeats = repeats
        self.src = np.ones(0, np.uint8)
        self.dst = np.ones(0, np.uint8)
        self.cache: dict[tuple[int, int], float] = {}

    def _buffer(self, current: np.ndarray, n: int) -> np.ndarray:
        return current if current.size >= n else np.ones(n, np.uint8)

    def pass_ms(self, read: int, write: int) -> Optional[float]:
        from ..._runtime import _core

        if _core is None:
            return None
        if (read, write) not in self.cache:
            self.src = self._buffer(self.src, read)
            self.dst = self._buffer(self.dst, write)
            src, dst = self.src[:read], self.dst[:write]
            self.cache[read, write] = _median_ms(lambda: _core.memory_floor(src, dst), self.repeats)
        return self.cache[read, write]

    def floor_ms(self, passes: tuple[tuple[int, int], ...]) -> Optional[float]:
        times = [self.pass_ms(r, w) for r, w in passes]
        return None if any(t is None for t in times) else sum(t for t in times if t)

    def release(self) -> None:
        self.src = self.dst = np.ones(0, np.uint8)


@dataclass
class Row:
    op: str
    shape: str
    layout: str
    dtype: str
    bnfast_ms: float  # median
    bnfast_min_ms: float
    bnfast_p90_ms: float
    floor_ms: Optional[float]  # None without the native module
    floor: str  # which passes the floor times (floor_label)
    copy_ms: float
    numpy_ms: Optional[float]
    torch_ms: Optional[float]
    sklearn_ms: Optional[float]

    def ratio(self, peer: Optional[float]) -> Optional[float]:
        return None if peer is None else peer / self.bnfast_ms

    @property
    def over_floor(self) -> Optional[float]:
        return None if not self.floor_ms else self.bnfast_ms / self.floor_ms

    @property
    def busy(self) -> bool:
        return self.bnfast_p90_ms > BUSY_SPREAD * self.bnfast_min_ms


def torch_times(
    cases: list[Case], threads: int, repeats: int
) -> tuple[Optional[str], dict[str, float]]:
    """Time the PyTorch peers in a child process: (torch version, {id: ms})."""
    script = Path(__file__).with_name("peers.py")
    request = {
        "threads": threads,
        "repeats": repeats,
        "cases": [c.spec.peer_request(c.id) for c in cases],
    }
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    proc = subprocess.run(
        [sys.executable, str(script)],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        env=env,
    )
    if proc.returncode != 0:
        print(
            f"note: PyTorch peers failed: {proc.stderr.strip().splitlines()[-1:]}", file=sys.stderr
        )
        return None, {}
    out = json.loads(proc.stdout)
    return out["torch"], out["times"]


def self_check(rng: np.random.Generator) -> list[str]:
    """Compare bnfast with float64 NumPy on awkward data; returns failures."""
    failures = []
    x = (1e4 + rng.standard_normal((257, 33, 17))).astype(np.float32)
    x[:, 5, :] = 1e4  # a constant channel
    ref = x.astype(np.float64)
    mean, var = bnfast.mean_var(x, axis=(0, 2))
    ref_mean, ref_var = ref.mean(axis=(0, 2)), ref.var(axis=(0, 2))
    if not np.allclose(var, ref_var, rtol=1e-5, atol=0):
        failures.append("mean_var variance of offset float32 data")
    if not np.allclose(mean, ref_mean, rtol=1e-6, atol=0):
        failures.append("mean_var mean of offset float32 data")
    if var[5] != 0:
        failures.append("constant channel variance is not exactly 0")
    y = bnfast.batch_norm(x, training=True, bias=np.full(33, 0.5, np.float32))
    y_ref = (ref - ref_mean[None, :, None]) / np.sqrt(ref_var[None, :, None] + EPS) + 0.5
    if not np.allclose(y, y_ref, rtol=1e-4, atol=1e-4):
        failures.append("batch_norm training output")
    if not np.all(y[:, 5, :] == 0.5):
        failures.append("constant channel does not normalize to exactly beta")
    rows = (100 + 0.01 * rng.standard_normal((64, 4096))).astype(np.float32)
    _, _, rstd = bnfast.layer_norm(rows, return_stats=True)
    ln_var = 1 / rstd.astype(np.float64) ** 2 - EPS
    if not np.allclose(ln_var, rows.astype(np.float64).var(axis=1), rtol=1e-3):
        failures.append("layer_norm variance of offset rows")
    with bnfast.threads(1):
        one = bnfast.mean_var(x, axis=(0, 2))[1]
    with bnfast.threads(3):
        three = bnfast.mean_var(x, axis=(0, 2))[1]
    if not np.array_equal(one, three):
        failures.append("results depend on the thread count")
    return failures


def _fmt(v: Optional[float], kind: str = "ms") -> str:
    if v is None:
        return "-"
    if kind == "x":
        return f"{v:.2f}x" if v < 10 else f"{v:.1f}x"
    return f"{v:.3f}" if v < 10 else f"{v:.1f}"


def table(rows: list[Row]) -> str:
    head = [
        "op",
        "shape",
        "layout",
        "dtype",
        "bnfast ms",
        "min",
        "p90",
        "floor ms",
        "floor",
        "bnfast/floor",
        "copy ms",
        "numpy/bnfast",
        "torch/bnfast",
        "sklearn/bnfast",
        "busy",
    ]
    body = []
    for r in rows:
        body.append(
            [
                r.op,
                r.shape,
                r.layout,
                r.dtype,
                _fmt(r.bnfast_ms),
                _fmt(r.bnfast_min_ms),
                _fmt(r.bnfast_p90_ms),
                _fmt(r.floor_ms),
                r.floor,
                _fmt(r.over_floor, "x"),
                _fmt(r.copy_ms),
                _fmt(r.ratio(r.numpy_ms), "x"),
                _fmt(r.ratio(r.torch_ms), "x"),
                _fmt(r.ratio(r.sklearn_ms), "x"),
                "busy" if r.busy else "",
            ]
        )
    return format_table(
        head,
        body,
        "<" * 4 + ">" * 4 + "<" + ">" * (len(head) - 10) + "<",
        header_align="<" * len(head),
        sep=" | ",
        rule="-+-",
        strip=False,
    )


FAMILIES = (
    ("batch norm", ("batch_norm",)),
    ("layer and RMS norm", ("layer_norm", "rms_norm")),
    ("group and instance norm", ("group_norm", "instance_norm")),
    ("statistics and Standardizer", ("mean_var", "Standardizer")),
)


def plot(rows: list[Row], path: str, env: dict[str, Any]) -> None:
    """One panel per family: each row's time over its memory floor (log
    scale; 1 = the floor) for bnfast and its peers. Tiny calls, whose
    floor is a few nanoseconds, are left to the table."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("note: --plot needs matplotlib (pip install 'bnfast[bench]')", file=sys.stderr)
        return
    panels = []
    for title, prefixes in FAMILIES:
        mine = [r for r in rows if r.op.startswith(prefixes) and r.layout != "tiny" and r.floor_ms]
        if mine:
            panels.append((title, mine))
    if not panels:
        print("note: no rows with a measured floor to plot", file=sys.stderr)
        return
    series = (
        ("bnfast", lambda r: r.bnfast_ms, "tab:blue"),
        ("PyTorch", lambda r: r.torch_ms, "tab:orange"),
        ("NumPy", lambda r: r.numpy_ms, "tab:green"),
        ("scikit-learn", lambda r: r.sklearn_ms, "tab:red"),
    )
    heights = [0.34 * len(mine) + 1.0 for _, mine in panels]
    fig, axes = plt.subplots(
        len(panels), 1, figsize=(10, sum(heights)), gridspec_kw={"height_ratios": heights}
    )
    axes = np.atleast_1d(axes)
    bar = 0.2
    for ax, (title, mine) in zip(axes, panels):
        idx = np.arange(len(mine))
        for k, (name, time_of, color) in enumerate(series):
            values = [(time_of(r) or np.nan) / (r.floor_ms or np.nan) for r in mine]
            if not np.all(np.isnan(values)):
                ax.barh(idx + (k - 1.5) * bar, values, bar, label=name, color=color)
        ax.axvline(1.0, color="k", linewidth=0.8, linestyle="--", label="memory floor")
        ax.set_xscale("log")
        ax.set_ylim(len(mine) - 0.5, -0.5)  # first row on top; one row keeps thin bars
        ax.set_yticks(idx)
        ax.set_yticklabels(
            [
                f"{r.op} {r.shape} {r.layout} {r.dtype}" + (" (busy)" if r.busy else "")
                for r in mine
            ],
            fontsize=8,
        )
        ax.set_title(title, fontsize=10, loc="left")
        ax.grid(axis="x", which="both", alpha=0.3)
    axes[0].legend(fontsize=8, loc="lower right")
    axes[-1].set_xlabel("time / memory floor of the bytes moved (median; 1 = the floor, log scale)")
    fig.suptitle(
        f"{env['cpu']}, {env['capability']}, {env['threads']} threads: "
        "bnfast and peers over the memory floor",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.985))
    fmt = os.path.splitext(path)[1][1:].lower() or "png"
    with atomic_write(path, "--plot") as fh:
        fig.savefig(fh, format=fmt, dpi=110)
    print(f"plot written to {path}")


def environment(threads: int, torch_version: Optional[str]) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    cfg = bnfast.config()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": threads,
        "l2_cache_bytes": cache_bytes(),
        "compiler": cfg["compiler"],
        "capability": cfg["capability"],
        "bnfast": cfg["version"],
        "numpy": np.__version__,
        "torch": torch_version,
        "python": platform.python_version(),
    }


def copy_time(nbytes: int, repeats: int) -> float:
    """Median ms of ``np.copyto`` of ``nbytes`` bytes: the memory floor."""
    src = np.ones(nbytes, dtype=np.uint8)
    dst = np.empty_like(src)
    return _median_ms(lambda: np.copyto(dst, src), repeats)


def run(
    quick: bool = False,
    threads: Optional[int] = None,
    json_path: Optional[str] = None,
    plot_path: Optional[str] = None,
    peers: bool = True,
) -> int:
    rng = np.random.default_rng(0)
    if threads is not None:
        bnfast.set_num_threads(threads)
    threads = bnfast.get_num_threads()
    failures = self_check(rng)
    print("self-check:", "passed" if not failures else "FAILED: " + "; ".join(failures))
    repeats = 3 if quick else 7
    cases = make_cases("quick" if quick else "full", rng)
    torch_version, ttimes = torch_times(cases, threads, repeats) if peers else (None, {})
    env = environment(threads, torch_version)
    print(" ".join(f"{k}={v}" for k, v in env.items()))
    rows = []
    floors = FloorTimer(repeats)
    l2 = cache_bytes()
    for case in cases:
        spec = case.spec
        copy_ms = copy_time(spec.nbytes, repeats)
        passes = spec.floor_passes(l2)
        floor_ms = floors.floor_ms(passes)
        samples = _sample_ms(case.bnfast, repeats)
        np_ms = _median_ms(case.numpy, max(2, repeats // 3)) if case.numpy else None
        sk_ms = _median_ms(case.sklearn, max(2, repeats // 3)) if case.sklearn else None
        case.release()
        rows.append(
            Row(
                spec.op,
                "x".join(map(str, spec.shape)),
                spec.layout,
                spec.dtype,
                float(np.median(samples)),
                float(np.min(samples)),
                float(np.percentile(samples, 90)),
                floor_ms,
                floor_label(passes, spec.nbytes),
                copy_ms,
                np_ms,
                ttimes.get(case.id),
                sk_ms,
            )
        )
    floors.release()
    print(table(rows))
    print(
        "times in ms; bnfast ms is the median, min and p90 beside it; bnfast/floor = "
        "bnfast's median over the memory floor of the passes in 'floor' (bnfast's own "
        "read and read+streaming-write passes over the same bytes, same threads); "
        "x/bnfast = how many times slower than bnfast; busy = p90 over "
        f"{BUSY_SPREAD}x the min"
    )
    if json_path:
        text = json.dumps(
            {
                "environment": env,
                "self_check_failures": failures,
                "rows": [asdict(r) for r in rows],
            },
            indent=2,
        )
        with atomic_write(json_path, "--json") as fh:
            fh.write(text.encode())
    if plot_path:
        plot(rows, plot_path, env)
    return 1 if failures else 0
