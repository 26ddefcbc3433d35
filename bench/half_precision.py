"""Side-by-side timing of float16 / bfloat16 against float32 (issue 14).

Run once by hand (not a test): ``python bench/half_precision.py [--repeats N]``.
Prints, per capability (avx512, avx2 where the CPU has them) and case, the
median time of each dtype and its time per element relative to float32
(< 1: the half type is faster per element). The half types move half the
bytes of float32, so on memory-bound passes they should be at least as fast.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import bnfast
from bnfast import _runtime

try:
    import ml_dtypes

    DTYPES = {"float32": np.float32, "float16": np.float16, "bfloat16": ml_dtypes.bfloat16}
except ImportError:
    DTYPES = {"float32": np.float32, "float16": np.float16}


def cases(dtype):
    rng = np.random.default_rng(0)
    ln = (1.0 + rng.standard_normal((16384, 4096), dtype=np.float32)).astype(dtype)
    ln_out = np.empty_like(ln)
    bn = (1.0 + rng.standard_normal((64, 64, 56, 56), dtype=np.float32)).astype(dtype)
    bn_out = np.empty_like(bn)
    c = bn.shape[1]
    rm, rv = np.zeros(c, np.float32), np.ones(c, np.float32)
    w, b = np.ones(c, np.float32), np.zeros(c, np.float32)
    return {
        "layer_norm 16384x4096": lambda: bnfast.layer_norm(ln, out=ln_out),
        "batch_norm train NCHW 64x64x56x56": lambda: bnfast.batch_norm(
            bn, rm, rv, w, b, training=True, out=bn_out
        ),
        "batch_norm eval NCHW 64x64x56x56": lambda: bnfast.batch_norm(bn, rm, rv, w, b, out=bn_out),
        "mean_var 16384x4096 axis=0": lambda: bnfast.mean_var(ln, axis=0),
    }


def median_time(fn, repeats):
    fn()  # warm up (page faults of the output, thread pool start)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    caps = [c for c in ("avx512", "avx2") if c in _runtime.supported_capabilities()]
    print(f"threads {bnfast.get_num_threads()}, median of {args.repeats} runs")
    for cap in caps:
        with _runtime.using(cap):
            results: dict = {}
            for name, dtype in DTYPES.items():
                for case, fn in cases(dtype).items():
                    results.setdefault(case, {})[name] = median_time(fn, args.repeats)
            for case, per in results.items():
                base = per["float32"]
                cols = ", ".join(f"{n} {t * 1e3:.1f} ms ({t / base:.2f}x)" for n, t in per.items())
                print(f"{cap:7s} {case:36s} {cols}")


if __name__ == "__main__":
    main()
