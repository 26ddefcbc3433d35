"""Times the PyTorch peers of the benchmark cases, in a child process.

Run by ``python -m bnfast bench`` as a plain script (not through the bnfast
package), so PyTorch's OpenMP thread pool lives in a different process from
bnfast's and the two never contend for the cores while timing each other.
Reads a JSON request on stdin (the cases as ``CaseSpec.peer_request`` of
:mod:`.cases` describes them), prints ``{case_id: median_ms}`` as JSON.
``bench/test_bench.py`` imports :func:`make_peer` to time the same peers in
process. Only the standard library is imported here, and torch in
:func:`main`: the script's directory is first on ``sys.path`` when it runs.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from typing import Any, Callable


def sample_ms(fn: Callable[[], object], repeats: int) -> list[float]:
    """Times of one call of ``fn`` in ms, ``repeats`` samples after a
    warm-up. Calls shorter than ~0.1 ms are timed in batches of about 1 ms
    per sample (the timer's own cost would otherwise be part of a
    microsecond call)."""
    t0 = time.perf_counter()
    fn()  # warm up: page faults, thread pool start, a case's lazy setup
    first = time.perf_counter() - t0
    if first < 1e-3:  # the warm-up may have been all setup: size batches on a second call
        t0 = time.perf_counter()
        fn()
        first = time.perf_counter() - t0
    inner = 1 if first >= 1e-4 else int(min(1000, max(1, 1e-3 / max(first, 1e-7))))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        times.append((time.perf_counter() - t0) / inner * 1e3)
    return times


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    """Median of :func:`sample_ms`."""
    return statistics.median(sample_ms(fn, repeats))


def make_peer(torch: Any, spec: dict[str, Any]) -> Callable[[], object] | None:
    """PyTorch's call for one case (a zero-argument callable over tensors
    made here), or None if PyTorch has no peer for it."""
    F = torch.nn.functional
    op, shape, layout = spec["op"], tuple(spec["shape"]), spec["layout"]
    dtype = {"float32": torch.float32, "float64": torch.float64}[spec["dtype"]]
    gen = torch.Generator().manual_seed(0)
    if layout == "NHWC":  # logical NCHW, channels-last memory
        n, h, w, c = shape
        x = torch.randn((n, c, h, w), generator=gen, dtype=dtype)
        x = x.to(memory_format=torch.channels_last)
    else:
        x = torch.randn(shape, generator=gen, dtype=dtype)
    c = x.shape[1] if x.ndim > 1 else 1
    ones = torch.ones(c, dtype=dtype)
    zeros = torch.zeros(c, dtype=dtype)
    if op == "batch_norm train":
        rm, rv = zeros.clone(), ones.clone()
        return lambda: F.batch_norm(x, rm, rv, ones, zeros, training=True)
    if op == "batch_norm eval":
        return lambda: F.batch_norm(x, zeros, ones, ones, zeros, training=False)
    if op == "batch_norm backward":
        _, mean, invstd = torch.ops.aten.native_batch_norm(
            x, ones, zeros, None, None, True, 0.1, 1e-5
        )
        dy = torch.randn(x.shape, generator=gen, dtype=dtype)
        if layout == "NHWC":
            dy = dy.to(memory_format=torch.channels_last)
        return lambda: torch.ops.aten.native_batch_norm_backward(
            dy, x, ones, None, None, mean, invstd, True, 1e-5, [True, True, True]
        )
    if op.startswith("mean_var"):
        dim = 0 if op == "mean_var axis=0" else -1
        return lambda: torch.var_mean(x, dim=dim, correction=0)
    d = x.shape[-1]
    w_d, b_d = torch.ones(d, dtype=dtype), torch.zeros(d, dtype=dtype)
    if op == "layer_norm":
        return lambda: F.layer_norm(x, (d,), w_d, b_d)
    if op == "layer_norm backward":
        _, mean, rstd = torch.ops.aten.native_layer_norm(x, [d], w_d, b_d, 1e-5)
        dy = torch.randn(x.shape, generator=gen, dtype=dtype)
        return lambda: torch.ops.aten.native_layer_norm_backward(
            dy, x, [d], mean, rstd, w_d, b_d, [True, True, True]
        )
    if op == "rms_norm":
        return lambda: F.rms_norm(x, (d,), w_d)
    if op == "rms_norm backward":
        xg = x.clone().requires_grad_(True)
        wg = w_d.clone().requires_grad_(True)
        y = F.rms_norm(xg, (d,), wg)
        dy = torch.randn(x.shape, generator=gen, dtype=dtype)
        return lambda: torch.autograd.grad(y, (xg, wg), dy, retain_graph=True)
    if op == "group_norm":
        return lambda: F.group_norm(x, spec["groups"], ones, zeros)
    if op == "instance_norm":
        return lambda: F.instance_norm(x, weight=ones, bias=zeros)
    if op in ("group_norm backward", "instance_norm backward"):
        # Autograd through the forward (PyTorch's own backward kernels), as
        # for RMS norm: instance norm is group norm with C groups there too.
        groups = spec["groups"] if op == "group_norm backward" else c
        xg = x.clone().requires_grad_(True)
        wg = ones.clone().requires_grad_(True)
        y = F.group_norm(xg, groups, wg, zeros)
        dy = torch.randn(x.shape, generator=gen, dtype=dtype)
        if layout == "NHWC":
            dy = dy.to(memory_format=torch.channels_last)
        return lambda: torch.autograd.grad(y, (xg, wg), dy, retain_graph=True)
    return None


def main() -> int:
    request = json.load(sys.stdin)
    try:
        import torch
    except ImportError:
        json.dump({"torch": None, "times": {}}, sys.stdout)
        return 0
    torch.set_num_threads(request["threads"])
    times: dict[str, float] = {}
    for spec in request["cases"]:
        fn = make_peer(torch, spec)
        if fn is not None:
            times[spec["id"]] = median_ms(fn, request["repeats"])
        del fn  # free the case's tensors before the next one
    json.dump({"torch": torch.__version__, "times": times}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
