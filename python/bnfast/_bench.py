"""``python -m bnfast bench``: a self-check and a timing table on synthetic
data, bnfast beside ``np.copyto`` (the memory floor) and the plain NumPy
expression. Times are medians of repeated runs; the ratios are what to read.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

import bnfast


@dataclass
class Case:
    op: str
    shape: tuple
    layout: str
    dtype: str
    run: Callable[[], object]
    numpy: Callable[[], object]
    nbytes: int


@dataclass
class Row:
    op: str
    shape: str
    layout: str
    dtype: str
    bnfast_ms: float
    copy_ms: float
    numpy_ms: float

    @property
    def vs_copy(self) -> float:
        return self.bnfast_ms / self.copy_ms

    @property
    def numpy_speedup(self) -> float:
        return self.numpy_ms / self.bnfast_ms


def _median_ms(fn: Callable[[], object], repeats: int, min_time: float = 0.05) -> float:
    fn()  # warm up (page faults, thread pool start)
    times = []
    budget_end = time.perf_counter() + max(min_time, 0)
    while len(times) < repeats or (time.perf_counter() < budget_end and len(times) < 50):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def _np_batch_norm_train(x, axis):
    axes = tuple(i for i in range(x.ndim) if i != axis)
    mean = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-5)


def _np_batch_norm_eval(x, rm, rv, axis):
    shape = [1] * x.ndim
    shape[axis] = -1
    return (x - rm.reshape(shape)) / np.sqrt(rv.reshape(shape) + 1e-5)


def make_cases(quick: bool, rng: np.random.Generator) -> list:
    if quick:
        nchw = (16, 64, 32, 32)
        two_d = (262_144, 64)
        rows = (2048, 2048)
    else:
        nchw = (32, 64, 56, 56)
        two_d = (1_048_576, 64)
        rows = (16_384, 4096)
    cases = []
    for dtype in (np.float32,):
        x = rng.standard_normal(nchw, dtype=np.float32).astype(dtype)
        y = np.empty_like(x)
        xh = np.ascontiguousarray(np.moveaxis(x, 1, -1))
        yh = np.empty_like(xh)
        c = nchw[1]
        rm = rng.standard_normal(c).astype(dtype)
        rv = (rng.random(c) + 0.5).astype(dtype)
        x2 = rng.standard_normal(two_d, dtype=np.float32).astype(dtype)
        xr = rng.standard_normal(rows, dtype=np.float32).astype(dtype)
        name = np.dtype(dtype).name
        cases += [
            Case("batch_norm train", nchw, "NCHW", name,
                 lambda x=x, y=y: bnfast.batch_norm(x, training=True, out=y),
                 lambda x=x: _np_batch_norm_train(x, 1), x.nbytes),
            Case("batch_norm train", xh.shape, "NHWC", name,
                 lambda x=xh, y=yh: bnfast.batch_norm(x, training=True, axis=-1, out=y),
                 lambda x=xh: _np_batch_norm_train(x, 3), xh.nbytes),
            Case("batch_norm eval", nchw, "NCHW", name,
                 lambda x=x, y=y: bnfast.batch_norm(x, rm, rv, out=y),
                 lambda x=x: _np_batch_norm_eval(x, rm, rv, 1), x.nbytes),
            Case("mean_var axis=0", two_d, "2-D", name,
                 lambda x=x2: bnfast.mean_var(x, axis=0),
                 lambda x=x2: (x.mean(axis=0), x.var(axis=0)), x2.nbytes),
            Case("mean_var axis=-1", rows, "2-D", name,
                 lambda x=xr: bnfast.mean_var(x, axis=-1),
                 lambda x=xr: (x.mean(axis=-1), x.var(axis=-1)), xr.nbytes),
        ]
    return cases


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
    y_ref = (ref - ref_mean[None, :, None]) / np.sqrt(ref_var[None, :, None] + 1e-5) + 0.5
    if not np.allclose(y, y_ref, rtol=1e-4, atol=1e-4):
        failures.append("batch_norm training output")
    if not np.all(y[:, 5, :] == 0.5):
        failures.append("constant channel does not normalize to exactly beta")
    with bnfast.threads(1):
        one = bnfast.mean_var(x, axis=(0, 2))[1]
    with bnfast.threads(3):
        three = bnfast.mean_var(x, axis=(0, 2))[1]
    if not np.array_equal(one, three):
        failures.append("results depend on the thread count")
    return failures


def run(quick: bool = False, threads: int | None = None, json_path: str | None = None) -> int:
    rng = np.random.default_rng(0)
    if threads is not None:
        bnfast.set_num_threads(threads)
    cfg = bnfast.config()
    print(
        f"bnfast {cfg['version']}  backend={cfg['backend']}  capability={cfg['capability']}  "
        f"threads={cfg['num_threads']}  numpy={np.__version__}"
    )
    failures = self_check(rng)
    print("self-check:", "passed" if not failures else "FAILED: " + "; ".join(failures))
    repeats = 5 if quick else 15
    rows = []
    for case in make_cases(quick, rng):
        src = np.ones(case.nbytes // 4, dtype=np.float32)
        dst = np.empty_like(src)
        rows.append(Row(
            case.op, "x".join(map(str, case.shape)), case.layout, case.dtype,
            bnfast_ms=_median_ms(case.run, repeats),
            copy_ms=_median_ms(lambda: np.copyto(dst, src), repeats),
            numpy_ms=_median_ms(case.numpy, max(3, repeats // 3), min_time=0),
        ))
    header = f"{'op':<18} {'shape':<18} {'layout':<6} {'dtype':<8} {'bnfast ms':>10} {'copy ms':>9} {'numpy ms':>9} {'bnfast/copy':>11} {'numpy/bnfast':>12}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r.op:<18} {r.shape:<18} {r.layout:<6} {r.dtype:<8} {r.bnfast_ms:>10.3f} "
            f"{r.copy_ms:>9.3f} {r.numpy_ms:>9.3f} {r.vs_copy:>10.2f}x {r.numpy_speedup:>11.1f}x"
        )
    print("times are medians; bnfast/copy = cost relative to np.copyto of the same bytes")
    if json_path:
        with open(json_path, "w") as fh:
            json.dump({"config": cfg, "self_check_failures": failures,
                       "rows": [asdict(r) for r in rows]}, fh, indent=2)
    return 1 if failures else 0
