"""Side-by-side timing of float16 / bfloat16 against float32 (issue 14).

Run once by hand (not a test): ``python bench/half_precision.py [--repeats N]``.
Prints, per capability (avx512, avx2 where the CPU has them) and case, the
median (and minimum) time of each dtype and its time per element relative
to float32 (< 1: the half type is faster per element). The half types move
half the bytes of float32, so on memory-bound passes they should be at
least as fast.

The dtypes of one case are timed interleaved (float32, float16, bfloat16,
float32, ...) in one process, so a machine whose load changes during the
run (other jobs, frequency changes) shifts all of them alike; the ratios
are of medians over ``--repeats`` rounds.
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

CASES = (
    "layer_norm 16384x4096",
    "layer_norm backward 16384x4096",
    "batch_norm train NCHW 64x64x56x56",
    "batch_norm eval NCHW 64x64x56x56",
    "mean_var 16384x4096 axis=0",
)


def make_case(case: str, dtype):
    rng = np.random.default_rng(0)
    if case.startswith("layer_norm") or case.startswith("mean_var"):
        x = (1.0 + rng.standard_normal((16384, 4096), dtype=np.float32)).astype(dtype)
        if case.startswith("mean_var"):
            return lambda: bnfast.mean_var(x, axis=0)
        out = np.empty_like(x)
        if "backward" in case:
            dy = rng.standard_normal(x.shape, dtype=np.float32).astype(dtype)
            w = np.ones(x.shape[-1], np.float32)
            _, mean, rstd = bnfast.layer_norm(x, w, return_stats=True)
            return lambda: bnfast.layer_norm_backward(dy, x, mean, rstd, w, out=out)
        return lambda: bnfast.layer_norm(x, out=out)
    x = (1.0 + rng.standard_normal((64, 64, 56, 56), dtype=np.float32)).astype(dtype)
    out = np.empty_like(x)
    c = x.shape[1]
    rm, rv = np.zeros(c, np.float32), np.ones(c, np.float32)
    w, b = np.ones(c, np.float32), np.zeros(c, np.float32)
    training = "train" in case
    return lambda: bnfast.batch_norm(x, rm, rv, w, b, training=training, out=out)


def interleaved_times(fns: dict, repeats: int) -> dict:
    """Per name, the times of ``repeats`` calls, the names taking turns."""
    for fn in fns.values():
        fn()  # warm up (page faults of the output, thread pool start)
    times: dict = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--case", action="append", choices=CASES, help="only these cases")
    parser.add_argument("--capability", action="append", help="only these capabilities")
    args = parser.parse_args()
    caps = [c for c in ("avx512", "avx2") if c in _runtime.supported_capabilities()]
    if args.capability:
        caps = [c for c in caps if c in args.capability]
    print(
        f"threads {bnfast.get_num_threads()}, {args.repeats} interleaved rounds; "
        "median (min) time per call, median time per element relative to float32"
    )
    for cap in caps:
        with _runtime.using(cap):
            for case in args.case or CASES:
                fns = {name: make_case(case, dtype) for name, dtype in DTYPES.items()}
                times = interleaved_times(fns, args.repeats)
                del fns
                base = statistics.median(times["float32"])
                cols = ", ".join(
                    f"{n} {statistics.median(t) * 1e3:.1f} ({min(t) * 1e3:.1f}) ms "
                    f"({statistics.median(t) / base:.2f}x)"
                    for n, t in times.items()
                )
                print(f"{cap:7s} {case:34s} {cols}", flush=True)


if __name__ == "__main__":
    main()
