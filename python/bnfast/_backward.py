"""Backward passes of the normalization family (gradients of the forward
functions with respect to x, weight and bias).

Batch norm's backward runs on native kernels (a float64 reduction pass and
an apply pass over the canonical (A, C, B) views); group and instance norm
use the same two kernels with one row per (sample, channel); layer and RMS
norm run on the native row kernel. Each kernel has a NumPy twin, and all
results are independent of the thread count.
"""

from __future__ import annotations

import math

import numpy as np

from . import _backend, _layout
from ._common import as_param, output_for, split_center
from ._validate import as_array, check_axis, check_float_dtype

F64 = np.float64


def _check_pair(dy, x, func: str) -> tuple:
    dy = as_array(dy, "dy")
    x = as_array(x)
    check_float_dtype(x, "x", func)
    check_float_dtype(dy, "dy", func)
    if dy.shape != x.shape:
        raise ValueError(f"{func}: dy has shape {dy.shape} but x has shape {x.shape}")
    if dy.dtype != x.dtype:
        raise TypeError(f"{func}: dy has dtype {dy.dtype} but x has dtype {x.dtype}")
    return dy, x


def _stat(v, name: str, shape: tuple, func: str) -> np.ndarray:
    arr = as_array(v, name)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{func}: {name} must hold real numbers, got dtype {arr.dtype}")
    if arr.shape != shape:
        if arr.size == math.prod(shape) and arr.squeeze().shape == tuple(n for n in shape if n != 1):
            arr = arr.reshape(shape)  # e.g. PyTorch's (N, 1) statistics
        else:
            raise ValueError(f"{func}: {name} should have shape {shape}, got {arr.shape}")
    return arr.astype(F64)


def _weight(weight, shape: tuple, func: str):
    if weight is None:
        return None
    arr = as_array(weight, "weight")
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{func}: weight must hold real numbers, got dtype {arr.dtype}")
    if arr.shape != shape:
        raise ValueError(f"{func}: weight should have shape {shape}, got {arr.shape}")
    return arr.astype(F64)


def _norm_axes(axis, ndim: int) -> tuple:
    from ._norms import _norm_axes as forward_rule  # one rule for forward and backward

    return forward_rule(axis, ndim)


# ---------------------------------------------------------------------------


def batch_norm_backward(dy, x, mean, invstd, weight=None, *, axis=1, training=True, out=None):
    """Gradients of :func:`bnfast.batch_norm`.

    ``mean``/``invstd`` are what ``batch_norm(..., return_stats=True)``
    returned: the batch statistics (``training=True``) or the running ones
    (``training=False``, where ``dx = dy * invstd * weight``).
    Returns ``(dx, dweight, dbias)``; ``dweight`` is None when ``weight`` is.
    ``out=`` receives dx (it may be ``dy`` itself).

    Runs on the native kernels: one pass reducing sum(dy) and
    sum(dy * (x - mean)) per channel in float64, one pass writing dx.
    """
    dy, x = _check_pair(dy, x, "batch_norm_backward")
    if x.ndim < 2:
        raise ValueError(f"batch_norm_backward expects at least 2-D input, got shape {x.shape}")
    axis = check_axis(axis, x.ndim)
    c = x.shape[axis]
    dtype = x.dtype
    mu = _stat(mean, "mean", (c,), "batch_norm_backward")
    inv = _stat(invstd, "invstd", (c,), "batch_norm_backward")
    w = _weight(weight, (c,), "batch_norm_backward")
    dx = output_for(x, out, "batch_norm_backward")
    if x.size == 0:
        _, dweight, dbias = _empty_grads(x, (c,), w)
        return dx, dweight, dbias
    impl = _backend.impl()
    groups = _layout.canonical_groups(x, (axis,))
    x3 = _layout.view_or_copy(x, groups)
    dy3 = _layout.view_or_copy(dy, groups)
    # dx overlapping an input it is computed from goes through a temporary.
    private = np.may_share_memory(dx, x) or (dx is not dy and np.may_share_memory(dx, dy))
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"), \
            _layout.output_view(dx, groups, x3.shape, private) as dx3_work:
        if training:
            # One kernel: the sums about the stored mean, the move to the exact
            # batch mean, and dx (fused per channel where the layout allows).
            sum_dy, sum_dy_xc = impl.batch_norm_backward_train(
                x3, dy3, dx3_work, np.ascontiguousarray(mu), np.ascontiguousarray(inv), w)
        else:
            # Eval: dx = dy * invstd * weight, independent of x.
            _, sum_dy, sum_dy_xc = impl.batch_norm_backward_reduce(x3, dy3, mu)
            gamma = np.ones(c) if w is None else w
            impl.affine(dy3, dx3_work, None, None, as_param(inv * gamma, dtype),
                        np.zeros(c, dtype=dtype))
        dweight = None if w is None else (sum_dy_xc * inv).astype(dtype)
    return dx, dweight, sum_dy.astype(dtype)


def _empty_grads(x: np.ndarray, param_shape: tuple, w) -> tuple:
    """Gradients of an empty input: empty dx, zero parameter gradients."""
    zeros = np.zeros(param_shape, dtype=x.dtype)
    return np.zeros_like(x), (None if w is None else zeros.copy()), zeros


def _row_backward(dy, x, mean, rstd, weight, axis, func, rms, out=None):
    """Shared by layer and RMS norm backward: the native row kernel on the
    (1, rows, D) views, whatever the layout."""
    dy, x = _check_pair(dy, x, func)
    norm_axes = _norm_axes(axis, x.ndim)
    norm_shape = tuple(x.shape[i] for i in norm_axes)
    kept_shape = tuple(n for i, n in enumerate(x.shape) if i not in norm_axes)
    mu = None if rms else _stat(mean, "mean", kept_shape, func).ravel()
    rs = _stat(rstd, "rstd", kept_shape, func).ravel()
    w = _weight(weight, norm_shape, func)
    dx = output_for(x, out, func)
    if x.size == 0:
        _, dweight, dbias = _empty_grads(x, norm_shape, w)
        return dx, dweight, dbias
    from ._norms import _row_groups

    dtype = x.dtype
    groups = _row_groups(x, norm_axes)
    x3 = _layout.view_or_copy(x, groups)
    dy3 = _layout.view_or_copy(dy, groups)
    d = math.prod(norm_shape)
    w_t = as_param(np.ones(d) if w is None else w, dtype)
    # Each element of dy is read before dx is written at the same place, so
    # out=dy works in place; any other overlap goes through a temporary.
    private = np.may_share_memory(dx, x) or (dx is not dy and np.may_share_memory(dx, dy))
    with np.errstate(invalid="ignore", over="ignore"), \
            _layout.output_view(dx, groups, x3.shape, private) as dx3:
        dweight, dbias = _backend.impl().layer_norm_backward(
            x3, dy3, dx3, np.zeros_like(rs) if mu is None else mu, rs, w_t, rms)
    dweight = None if w is None else dweight.reshape(norm_shape).astype(dtype)
    return dx, dweight, dbias.reshape(norm_shape).astype(dtype)


def layer_norm_backward(dy, x, mean, rstd, weight=None, *, axis=-1, out=None):
    """Gradients of :func:`bnfast.layer_norm`: ``(dx, dweight, dbias)``.

    ``mean``/``rstd`` are the statistics ``layer_norm(..., return_stats=True)``
    returned; ``dweight``/``dbias`` have the normalized shape (``dweight``
    is None when ``weight`` is). ``out``: an array of x's shape and dtype
    for dx (it may be ``dy``), which saves allocating one.
    """
    return _row_backward(dy, x, mean, rstd, weight, axis, "layer_norm_backward", rms=False,
                         out=out)


def rms_norm_backward(dy, x, rstd, weight=None, *, axis=-1, out=None):
    """Gradients of :func:`bnfast.rms_norm`: ``(dx, dweight)``.

    ``rstd`` is what ``rms_norm(..., return_stats=True)`` returned
    (``1 / sqrt(mean(x**2) + eps)``); ``out`` as in :func:`layer_norm_backward`.
    """
    dx, dweight, _ = _row_backward(dy, x, None, rstd, weight, axis, "rms_norm_backward", rms=True,
                                   out=out)
    return dx, dweight


def group_norm_backward(dy, x, mean, rstd, num_groups, weight=None, *, axis=1):
    """Gradients of :func:`bnfast.group_norm`: ``(dx, dweight, dbias)``.

    ``mean``/``rstd`` have shape (N, num_groups), as
    ``group_norm(..., return_stats=True)`` returned them.
    """
    dy, x = _check_pair(dy, x, "group_norm_backward")
    if x.ndim < 2:
        raise ValueError(f"group_norm_backward expects at least 2-D input, got shape {x.shape}")
    axis = check_axis(axis, x.ndim)
    if axis == 0:
        raise ValueError("group_norm_backward: axis 0 is the batch axis")
    n, c = x.shape[0], x.shape[axis]
    if isinstance(num_groups, bool) or not isinstance(num_groups, (int, np.integer)):
        raise TypeError(f"num_groups must be an integer, got {type(num_groups).__name__}")
    if num_groups < 1 or c % num_groups:
        raise ValueError(
            f"Expected number of channels in input to be divisible by num_groups, but got "
            f"input of shape {x.shape} and num_groups={num_groups}"
        )
    g_count = int(num_groups)
    mu = _stat(mean, "mean", (n, g_count), "group_norm_backward")
    rs = _stat(rstd, "rstd", (n, g_count), "group_norm_backward")
    w = _weight(weight, (c,), "group_norm_backward")
    if x.size == 0:
        return _empty_grads(x, (c,), w)
    dtype = x.dtype
    per = c // g_count
    spatial = tuple(i for i in range(1, x.ndim) if i != axis and x.shape[i] != 1)
    count = per * math.prod(x.shape[i] for i in spatial)
    impl = _backend.impl()
    dx = np.empty_like(x, order="K")
    x_blocks, dy_blocks, dx_blocks, finish = _sample_channel_blocks(x, dy, dx, axis, spatial)
    # Per (sample, channel) sums, centred on the stored group mean.
    center = np.repeat(mu, per, axis=1)  # (N, C)
    s_d, s_dy, s_dyd = (np.empty((n, c)) for _ in range(3))
    for (lo_n, hi_n), xb, dyb in zip(_block_ranges(n, len(x_blocks)), x_blocks, dy_blocks):
        sums = impl.batch_norm_backward_reduce(xb, dyb, np.ascontiguousarray(center[lo_n:hi_n].ravel()))
        for dst, src in zip((s_d, s_dy, s_dyd), sums):
            dst[lo_n:hi_n] = src.reshape(hi_n - lo_n, c)
    gamma = np.ones(c) if w is None else w
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        # The stored mean was rounded to x's dtype: move to the exact one.
        delta = s_d.reshape(n, g_count, per).sum(axis=2) / count  # (N, G)
        delta_c = np.repeat(delta, per, axis=1)
        t = s_dyd - delta_c * s_dy  # sum dy * (x - exact mean), per (n, c)
        rs_c = np.repeat(rs, per, axis=1)
        sum_g = (gamma * s_dy).reshape(n, g_count, per).sum(axis=2)
        sum_gx = rs * (gamma * t).reshape(n, g_count, per).sum(axis=2)
        mean_g = np.repeat(sum_g / count, per, axis=1)
        mean_gx = np.repeat(sum_gx / count, per, axis=1)
        p = rs_c * gamma
        q = -rs_c * rs_c * mean_gx
        r = -rs_c * mean_g
        hi_all, lo_all = split_center(center + delta_c, dtype)
        params = [as_param(a, dtype) for a in (p, q, r)]
        for (lo_n, hi_n), xb, dyb, dxb in zip(_block_ranges(n, len(x_blocks)), x_blocks,
                                              dy_blocks, dx_blocks):
            sl = slice(lo_n * c, hi_n * c)
            impl.batch_norm_backward_apply(xb, dyb, dxb, hi_all.ravel()[sl], lo_all.ravel()[sl],
                                   *(a[sl] for a in params))
        finish()
        dweight = None if w is None else (t * rs_c).sum(axis=0).astype(dtype)
    return dx, dweight, s_dy.sum(axis=0).astype(dtype)


def _block_ranges(n: int, blocks: int) -> list:
    """Sample ranges of the blocks: one block of all N, or one per sample."""
    return [(0, n)] if blocks == 1 else [(i, i + 1) for i in range(n)]


def _sample_channel_blocks(x, dy, dx, axis, spatial):
    """(1, K, S) views of x, dy and dx with rows = (sample, channel) pairs.

    One block of N*C rows when batch and channel axes collapse in all three
    (channels first), else one block per sample (channels last). Inputs that
    cannot be viewed are copied; an output that cannot be viewed goes through
    a temporary written back by the returned ``finish()``."""
    merged = ((), (0, axis), spatial)
    views = [_layout.fold(a, merged) for a in (x, dy, dx)]
    if all(v is not None for v in views):
        return [views[0]], [views[1]], [views[2]], lambda: None
    per_sample = ((0,), (axis,), spatial)
    x3 = _layout.view_or_copy(x, per_sample)
    dy3 = _layout.view_or_copy(dy, per_sample)
    dx3 = _layout.fold(dx, per_sample)
    work = np.empty(x3.shape, dtype=dx.dtype) if dx3 is None else dx3

    def finish():
        if dx3 is None:
            _layout.copy_from_groups(work, dx, per_sample)

    n = x.shape[0]
    return ([x3[i:i + 1] for i in range(n)], [dy3[i:i + 1] for i in range(n)],
            [work[i:i + 1] for i in range(n)], finish)


def instance_norm_backward(dy, x, mean, rstd, weight=None, *, axis=1, use_input_stats=True):
    """Gradients of :func:`bnfast.instance_norm`: ``(dx, dweight, dbias)``.

    With input statistics ``mean``/``rstd`` have shape (N, C); with
    ``use_input_stats=False`` they are the running statistics' mean and
    ``1/sqrt(var + eps)``, shape (C,), and the gradient is batch norm's eval
    gradient.
    """
    dy, x = _check_pair(dy, x, "instance_norm_backward")
    if x.ndim < 2:
        raise ValueError(f"instance_norm_backward expects at least 2-D input, got shape {x.shape}")
    axis = check_axis(axis, x.ndim)
    if not use_input_stats:
        return batch_norm_backward(dy, x, mean, rstd, weight, axis=axis, training=False)
    return group_norm_backward(dy, x, mean, rstd, x.shape[axis], weight, axis=axis)
