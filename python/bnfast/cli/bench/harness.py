"""``python -m bnfast bench``: a self-check, then every benchmark case of
the registry (:mod:`.cases`) timed beside its baselines -- ``np.copyto`` of
the same bytes (the memory floor), the plain NumPy expression, PyTorch (in a
child process, see :mod:`.peers`) and scikit-learn's StandardScaler for
dataset statistics. Times are medians of repeated runs; the ratios are what
to read.
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


@dataclass
class Row:
    op: str
    shape: str
    layout: str
    dtype: str
    bnfast_ms: float
    copy_ms: float
    numpy_ms: Optional[float]
    torch_ms: Optional[float]
    sklearn_ms: Optional[float]

    def ratio(self, peer: Optional[float]) -> Optional[float]:
        return None if peer is None else peer / self.bnfast_ms


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
        "copy ms",
        "numpy ms",
        "torch ms",
        "sklearn ms",
        "bnfast/copy",
        "numpy/bnfast",
        "torch/bnfast",
        "sklearn/bnfast",
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
                _fmt(r.copy_ms),
                _fmt(r.numpy_ms),
                _fmt(r.torch_ms),
                _fmt(r.sklearn_ms),
                _fmt(r.bnfast_ms / r.copy_ms, "x"),
                _fmt(r.ratio(r.numpy_ms), "x"),
                _fmt(r.ratio(r.torch_ms), "x"),
                _fmt(r.ratio(r.sklearn_ms), "x"),
            ]
        )
    return format_table(
        head,
        body,
        "<" * 4 + ">" * (len(head) - 4),
        header_align="<" * len(head),
        sep=" | ",
        rule="-+-",
        strip=False,
    )


def plot(rows: list[Row], path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("note: --plot needs matplotlib (pip install 'bnfast[bench]')", file=sys.stderr)
        return
    labels = [f"{r.op}\n{r.shape} {r.layout} {r.dtype}" for r in rows]
    series = {
        "bnfast": [r.bnfast_ms / r.copy_ms for r in rows],
        "numpy": [(r.numpy_ms or np.nan) / r.copy_ms for r in rows],
        "torch": [(r.torch_ms or np.nan) / r.copy_ms for r in rows],
    }
    fig, ax = plt.subplots(figsize=(max(8, 0.45 * len(rows)), 6))
    idx = np.arange(len(rows))
    for k, (name, values) in enumerate(series.items()):
        ax.bar(idx + (k - 1) * 0.27, values, 0.27, label=name)
    ax.axhline(1.0, color="k", linewidth=0.8, linestyle="--", label="np.copyto (memory floor)")
    ax.set_yscale("log")
    ax.set_ylabel("time / np.copyto time (median, log scale)")
    ax.set_xticks(idx)
    ax.set_xticklabels(labels, rotation=90, fontsize=6)
    ax.legend()
    fig.tight_layout()
    fmt = os.path.splitext(path)[1][1:].lower() or "png"
    with atomic_write(path, "--plot") as fh:
        fig.savefig(fh, format=fmt, dpi=120)
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
    for case in cases:
        spec = case.spec
        copy_ms = copy_time(spec.nbytes, repeats)
        bn_ms = _median_ms(case.bnfast, repeats)
        np_ms = _median_ms(case.numpy, max(2, repeats // 3)) if case.numpy else None
        sk_ms = _median_ms(case.sklearn, max(2, repeats // 3)) if case.sklearn else None
        case.release()
        rows.append(
            Row(
                spec.op,
                "x".join(map(str, spec.shape)),
                spec.layout,
                spec.dtype,
                bn_ms,
                copy_ms,
                np_ms,
                ttimes.get(case.id),
                sk_ms,
            )
        )
    print(table(rows))
    print(
        "times are medians in ms; x/bnfast = how many times slower than bnfast; "
        "bnfast/copy = cost relative to np.copyto of the same bytes"
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
        plot(rows, plot_path)
    return 1 if failures else 0
