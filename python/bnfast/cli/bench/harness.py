"""``python -m bnfast bench``: a self-check, then every benchmark case timed
beside its baselines -- ``np.copyto`` of the same array (the memory floor),
the plain NumPy expression, PyTorch (in a child process, see
``_bench_peers.py``) and scikit-learn's StandardScaler for dataset
statistics. Times are medians of repeated runs; the ratios are what to read.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

import bnfast

# The peers script is a plain module with no bnfast imports: one timer for both.
from .peers import median_ms as _median_ms

EPS = 1e-5
NEW_OUTPUT = " (new output)"  # op suffix: the same call without out=


@dataclass
class Case:
    id: str
    op: str
    shape: tuple
    layout: str
    dtype: str
    bnfast: Callable[[], object]
    numpy: Optional[Callable[[], object]]
    copy_bytes: int
    extra: dict = field(default_factory=dict)  # e.g. {"groups": 32}
    sklearn: Optional[Callable[[], object]] = None


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


# --------------------------------------------------------------------------
# NumPy expressions a user would otherwise write.

def _np_bn_train(x, axis):
    axes = tuple(i for i in range(x.ndim) if i != axis % x.ndim)
    mean = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True)
    return (x - mean) / np.sqrt(var + EPS)


def _np_bn_eval(x, rm, rv, axis):
    shape = [1] * x.ndim
    shape[axis % x.ndim] = -1
    return (x - rm.reshape(shape)) / np.sqrt(rv.reshape(shape) + EPS)


def _np_bn_backward(dy, x, axis):
    axes = tuple(i for i in range(x.ndim) if i != axis % x.ndim)
    n = x.size // x.shape[axis]
    mean = x.mean(axis=axes, keepdims=True)
    xc = x - mean
    invstd = 1 / np.sqrt((xc * xc).mean(axis=axes, keepdims=True) + EPS)
    sum_dy = dy.sum(axis=axes, keepdims=True)
    sum_dy_xc = (dy * xc).sum(axis=axes, keepdims=True)
    dx = (dy - sum_dy / n - xc * sum_dy_xc * invstd**2 / n) * invstd
    return dx, (sum_dy_xc * invstd).ravel(), sum_dy.ravel()


def _np_layer_norm(x):
    mean = x.mean(axis=-1, keepdims=True)
    var = x.var(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + EPS)


def _np_rms_norm(x):
    return x / np.sqrt((x * x).mean(axis=-1, keepdims=True) + np.finfo(x.dtype).eps)


def _np_group_norm(x, groups):
    n = x.shape[0]
    xg = x.reshape(n, groups, -1)
    mean = xg.mean(axis=-1, keepdims=True)
    var = xg.var(axis=-1, keepdims=True)
    return ((xg - mean) / np.sqrt(var + EPS)).reshape(x.shape)


# --------------------------------------------------------------------------

def _shapes(quick: bool) -> dict:
    if quick:
        return {
            "nchw": [(16, 32, 28, 28), (8, 64, 14, 14)],
            "two_d": [(65_536, 64), (4096, 256)],
            "rows": [(2048, 1024), (1024, 768)],
            "gn": (8, 64, 28, 28),
        }
    return {
        "nchw": [(64, 64, 112, 112), (256, 128, 28, 28), (32, 64, 56, 56), (8, 256, 14, 14)],
        "two_d": [(1_048_576, 64), (65_536, 1024)],
        "rows": [(16_384, 4096), (8192, 768)],
        "gn": (32, 256, 56, 56),
    }


def make_cases(quick: bool, rng: np.random.Generator) -> list:
    """Every case, as closures over arrays built lazily per case."""
    s = _shapes(quick)
    cases = []

    def add(op, shape, layout, dtype, extra=None):
        cases.append((op, tuple(shape), layout, np.dtype(dtype).name, extra or {}))

    for shape in s["nchw"]:
        nhwc = (shape[0], shape[2], shape[3], shape[1])
        for op in ("batch_norm train", "batch_norm eval", "batch_norm backward"):
            add(op, shape, "NCHW", np.float32)
            if op != "batch_norm backward":
                add(op, nhwc, "NHWC", np.float32)
    # What a fresh output costs (no out=): the OS maps and zero-fills its pages.
    for op in ("batch_norm eval", "batch_norm backward"):
        add(op + NEW_OUTPUT, s["nchw"][0], "NCHW", np.float32)
    for shape in s["two_d"]:
        for dtype in (np.float32, np.float64):
            for op in ("batch_norm train", "batch_norm eval", "batch_norm backward", "mean_var axis=0",
                       "Standardizer fit", "Standardizer transform"):
                add(op, shape, "2-D", dtype)
    add("mean_var axis=-1", s["rows"][0], "2-D", np.float32)
    for shape in s["rows"]:
        for op in ("layer_norm", "layer_norm backward", "rms_norm", "rms_norm backward"):
            add(op, shape, "2-D", np.float32)
    add("group_norm", s["gn"], "NCHW", np.float32, {"groups": 32})
    add("batch_norm train", (4, 16), "tiny", np.float32)
    add("layer_norm", (4, 64), "tiny", np.float32)
    return [_build(i, *c, rng) for i, c in enumerate(cases)]


def _build(index, op_name, shape, layout, dtype, extra, rng):
    """A Case whose arrays are made on first use and dropped after timing."""
    case_id = f"{index:02d}"
    state: dict = {}
    fresh = op_name.endswith(NEW_OUTPUT)
    op = op_name[: -len(NEW_OUTPUT)] if fresh else op_name

    def arrays():
        if not state:
            x = rng.standard_normal(shape, dtype=np.float32).astype(dtype, copy=False)
            state["x"] = x
            state["y"] = np.empty_like(x)
            axis = -1 if layout == "NHWC" else (1 if x.ndim > 1 else 0)
            c = x.shape[axis]
            state["axis"] = axis
            state["w"] = np.ones(c, dtype)
            state["b"] = np.zeros(c, dtype)
            state["rm"] = np.zeros(c, dtype)
            state["rv"] = np.ones(c, dtype)
            if "backward" in op:
                state["dy"] = rng.standard_normal(shape, dtype=np.float32).astype(dtype, copy=False)
                state["dx"] = np.empty_like(x)
                if op == "batch_norm backward":
                    _, state["mean"], state["invstd"] = bnfast.batch_norm(
                        x, training=True, axis=axis, return_stats=True)
                elif op == "layer_norm backward":
                    d = x.shape[-1]
                    state["wd"] = np.ones(d, dtype)
                    _, state["mean"], state["rstd"] = bnfast.layer_norm(x, state["wd"], return_stats=True)
                else:
                    d = x.shape[-1]
                    state["wd"] = np.ones(d, dtype)
                    _, state["rstd"] = bnfast.rms_norm(x, state["wd"], return_stats=True)
        return state

    def bnfast_call():
        """The timed call as a closure over this case's arrays, so timing
        sees only the library call (no per-call case dispatch; that matters
        for the tiny cases, which take a few microseconds)."""
        a = arrays()
        x, y, axis = a["x"], a["y"], a["axis"]
        rm, rv, w, b = a["rm"], a["rv"], a["w"], a["b"]
        if op == "batch_norm train":
            return lambda: bnfast.batch_norm(x, rm, rv, w, b, training=True, axis=axis, out=y)
        if op == "batch_norm eval":
            out = None if fresh else y
            return lambda: bnfast.batch_norm(x, rm, rv, w, b, axis=axis, out=out)
        if op == "batch_norm backward":
            dy, mean, invstd, dx = a["dy"], a["mean"], a["invstd"], None if fresh else a["dx"]
            return lambda: bnfast.batch_norm_backward(dy, x, mean, invstd, w, axis=axis, out=dx)
        if op == "mean_var axis=0":
            return lambda: bnfast.mean_var(x, axis=0)
        if op == "mean_var axis=-1":
            return lambda: bnfast.mean_var(x, axis=-1)
        wd = a.setdefault("wd", np.ones(x.shape[-1], x.dtype))
        if op == "layer_norm":
            return lambda: bnfast.layer_norm(x, wd, out=y)
        if op == "layer_norm backward":
            dy, mean, rstd, dx = a["dy"], a["mean"], a["rstd"], a["dx"]
            return lambda: bnfast.layer_norm_backward(dy, x, mean, rstd, wd, out=dx)
        if op == "rms_norm":
            return lambda: bnfast.rms_norm(x, wd, out=y)
        if op == "rms_norm backward":
            dy, rstd, dx = a["dy"], a["rstd"], a["dx"]
            return lambda: bnfast.rms_norm_backward(dy, x, rstd, wd, out=dx)
        if op == "group_norm":
            groups = extra["groups"]
            return lambda: bnfast.group_norm(x, groups, w, b, out=y)
        if op == "Standardizer fit":
            return lambda: bnfast.Standardizer().fit(x)
        if op == "Standardizer transform":
            scaler = bnfast.Standardizer().fit(x)
            return lambda: scaler.transform(x, out=y)
        raise ValueError(op)

    def run_bnfast():
        fn = state.get("bnfast_fn")
        if fn is None:
            fn = state["bnfast_fn"] = bnfast_call()
        return fn()

    def run_numpy():
        a = arrays()
        x, axis = a["x"], a["axis"]
        if op == "batch_norm train":
            return _np_bn_train(x, axis)
        if op == "batch_norm eval":
            return _np_bn_eval(x, a["rm"], a["rv"], axis)
        if op == "batch_norm backward":
            return _np_bn_backward(a["dy"], x, axis)
        if op.startswith("mean_var"):
            ax = 0 if op == "mean_var axis=0" else -1
            return x.mean(axis=ax), x.var(axis=ax)
        if op == "layer_norm":
            return _np_layer_norm(x)
        if op == "rms_norm":
            return _np_rms_norm(x)
        if op == "group_norm":
            return _np_group_norm(x, extra["groups"])
        if op == "Standardizer fit":
            return x.mean(axis=0), x.std(axis=0)
        if op == "Standardizer transform":
            if "np_scaler" not in a:
                a["np_scaler"] = (x.mean(axis=0), x.std(axis=0))
            mean, std = a["np_scaler"]
            return (x - mean) / std
        return None  # no plain-NumPy backward for the row norms

    sklearn_fn = None
    if op in ("mean_var axis=0", "Standardizer fit", "Standardizer transform"):
        try:
            from sklearn.preprocessing import StandardScaler
        except ImportError:
            StandardScaler = None
        if StandardScaler is not None and op == "Standardizer transform":
            def sklearn_fn():
                a = arrays()
                if "sk_scaler" not in a:
                    a["sk_scaler"] = StandardScaler().fit(a["x"])
                return a["sk_scaler"].transform(a["x"])
        elif StandardScaler is not None:
            def sklearn_fn():
                return StandardScaler().fit(arrays()["x"])

    def release():
        state.clear()

    numpy_fn = run_numpy if op not in ("layer_norm backward", "rms_norm backward") else None
    case = Case(case_id, op_name, shape, layout, dtype, run_bnfast, numpy_fn,
                int(np.prod(shape)) * np.dtype(dtype).itemsize, dict(extra), sklearn_fn)
    case.extra["_release"] = release
    return case


def torch_times(cases: list, threads: int, repeats: int) -> tuple:
    """Time the PyTorch peers in a child process: (torch version, {id: ms})."""
    script = Path(__file__).with_name("peers.py")
    request = {
        "threads": threads,
        "repeats": repeats,
        "cases": [
            {"id": c.id, "op": c.op, "shape": list(c.shape), "layout": c.layout, "dtype": c.dtype,
             "groups": c.extra.get("groups")}
            for c in cases
        ],
    }
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    proc = subprocess.run([sys.executable, str(script)], input=json.dumps(request),
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        print(f"note: PyTorch peers failed: {proc.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return None, {}
    out = json.loads(proc.stdout)
    return out["torch"], out["times"]


def self_check(rng: np.random.Generator) -> list:
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


def format_table(rows: list) -> str:
    head = ["op", "shape", "layout", "dtype", "bnfast ms", "copy ms", "numpy ms", "torch ms",
            "sklearn ms", "bnfast/copy", "numpy/bnfast", "torch/bnfast", "sklearn/bnfast"]
    body = []
    for r in rows:
        body.append([
            r.op, r.shape, r.layout, r.dtype, _fmt(r.bnfast_ms), _fmt(r.copy_ms), _fmt(r.numpy_ms),
            _fmt(r.torch_ms), _fmt(r.sklearn_ms), _fmt(r.bnfast_ms / r.copy_ms, "x"),
            _fmt(r.ratio(r.numpy_ms), "x"), _fmt(r.ratio(r.torch_ms), "x"),
            _fmt(r.ratio(r.sklearn_ms), "x"),
        ])
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    lines = [" | ".join(h.ljust(w) for h, w in zip(head, widths))]
    lines.append("-+-".join("-" * w for w in widths))
    for b in body:
        lines.append(" | ".join(v.ljust(w) if i < 4 else v.rjust(w) for i, (v, w) in enumerate(zip(b, widths))))
    return "\n".join(lines)


def plot(rows: list, path: str) -> None:
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
    fig.savefig(path, dpi=120)
    print(f"plot written to {path}")


def environment(threads: int, torch_version: Optional[str]) -> dict:
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
        "cpu": cpu, "cores": os.cpu_count(), "threads": threads, "compiler": cfg["compiler"],
        "capability": cfg["capability"], "bnfast": cfg["version"], "numpy": np.__version__,
        "torch": torch_version, "python": platform.python_version(),
    }


def run(quick: bool = False, threads: Optional[int] = None, json_path: Optional[str] = None,
        plot_path: Optional[str] = None, peers: bool = True) -> int:
    rng = np.random.default_rng(0)
    if threads is not None:
        bnfast.set_num_threads(threads)
    threads = bnfast.get_num_threads()
    failures = self_check(rng)
    print("self-check:", "passed" if not failures else "FAILED: " + "; ".join(failures))
    repeats = 3 if quick else 7
    cases = make_cases(quick, rng)
    torch_version, ttimes = torch_times(cases, threads, repeats) if peers else (None, {})
    env = environment(threads, torch_version)
    print(" ".join(f"{k}={v}" for k, v in env.items()))
    rows = []
    for case in cases:
        src = np.ones(case.copy_bytes, dtype=np.uint8)
        dst = np.empty_like(src)
        copy_ms = _median_ms(lambda: np.copyto(dst, src), repeats)
        del src, dst
        bn_ms = _median_ms(case.bnfast, repeats)
        np_ms = _median_ms(case.numpy, max(2, repeats // 3)) if case.numpy else None
        sk_ms = _median_ms(case.sklearn, max(2, repeats // 3)) if case.sklearn else None
        case.extra["_release"]()
        rows.append(Row(case.op, "x".join(map(str, case.shape)), case.layout, case.dtype,
                        bn_ms, copy_ms, np_ms, ttimes.get(case.id), sk_ms))
    print(format_table(rows))
    print("times are medians in ms; x/bnfast = how many times slower than bnfast; "
          "bnfast/copy = cost relative to np.copyto of the same bytes")
    if json_path:
        with open(json_path, "w") as fh:
            json.dump({"environment": env, "self_check_failures": failures,
                       "rows": [asdict(r) for r in rows]}, fh, indent=2)
    if plot_path:
        plot(rows, plot_path)
    return 1 if failures else 0
