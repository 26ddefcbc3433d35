"""Backward passes of the normalization family (gradients of the forward
functions with respect to x, weight and bias).

Batch norm's backward runs on native kernels (a float64 reduction pass and
an apply pass over the canonical (A, C, B) views), layer and RMS norm's on
the native row kernel; each has a NumPy twin. Group and instance norm's are
NumPy code shared by both backends: reductions accumulate in float64 and
each gradient is rounded once to x's dtype. All are independent of the
thread count.
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


def _recenter(xc: np.ndarray, axes) -> np.ndarray:
    """Remove the rounding of a stored mean: x - mean(x) from x - mean_stored.

    The forward returns its mean rounded to x's dtype; for offset float32
    data that rounding (ulp(mean)) is large next to the spread of x, and the
    gradient formulas need the exact batch mean."""
    if xc.size:
        xc -= xc.mean(axis=axes, keepdims=True)
    return xc


def _bcast(v: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    shape = [1] * ndim
    shape[axis] = -1
    return v.reshape(shape)


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
    n = math.prod(x.shape[i] for i in range(x.ndim) if i != axis)
    dx = output_for(x, out, "batch_norm_backward")
    if x.size == 0:
        _, dweight, dbias = _empty_grads(x, (c,), w)
        return dx, dweight, dbias
    impl = _backend.impl()
    groups = _layout.canonical_groups(x, (axis,))
    x3 = _layout.fold(x, groups)
    x3 = _layout.copy_to_groups(x, groups) if x3 is None else x3
    dy3 = _layout.fold(dy, groups)
    dy3 = _layout.copy_to_groups(dy, groups) if dy3 is None else dy3
    sum_d, sum_dy, sum_dy_xc = impl.bn_backward_reduce(x3, dy3, mu)
    gamma = np.ones(c) if w is None else w
    dx3 = _layout.fold(dx, groups)
    if dx3 is not None and (np.may_share_memory(dx, x) or
                            (dx is not dy and np.may_share_memory(dx, dy))):
        dx3 = None  # dx overlaps an input it is computed from: go through a temporary
    dx3_work = np.empty(x3.shape, dtype=dtype) if dx3 is None else dx3
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        if training:
            # The stored mean was rounded to x's dtype: move the centre to the
            # exact batch mean (sum_d / n is that rounding).
            delta = sum_d / n
            mu_exact = mu + delta
            sum_dy_xc = sum_dy_xc - delta * sum_dy
            k = sum_dy_xc * inv * inv / n
            p = inv * gamma
            q = -k * p
            r = -(sum_dy / n) * p
            hi, lo = split_center(mu_exact, dtype)
            impl.bn_backward_apply(x3, dy3, dx3_work, hi, lo, as_param(p, dtype),
                                   as_param(q, dtype), as_param(r, dtype))
        else:
            # Eval: dx = dy * invstd * weight, independent of x.
            impl.affine(dy3, dx3_work, None, None, as_param(inv * gamma, dtype),
                        np.zeros(c, dtype=dtype))
        dweight = None if w is None else (sum_dy_xc * inv).astype(dtype)
    if dx3 is None:
        _layout.copy_from_groups(dx3_work, dx, groups)
    return dx, dweight, sum_dy.astype(dtype)


def _empty_grads(x: np.ndarray, param_shape: tuple, w) -> tuple:
    """Gradients of an empty input: empty dx, zero parameter gradients."""
    zeros = np.zeros(param_shape, dtype=x.dtype)
    return np.zeros_like(x), (None if w is None else zeros.copy()), zeros


def _row_backward(dy, x, mean, rstd, weight, axis, func, rms):
    """Shared by layer and RMS norm backward: the native row kernel on the
    (1, rows, D) views, whatever the layout."""
    dy, x = _check_pair(dy, x, func)
    norm_axes = _norm_axes(axis, x.ndim)
    norm_shape = tuple(x.shape[i] for i in norm_axes)
    kept_shape = tuple(n for i, n in enumerate(x.shape) if i not in norm_axes)
    mu = None if rms else _stat(mean, "mean", kept_shape, func).ravel()
    rs = _stat(rstd, "rstd", kept_shape, func).ravel()
    w = _weight(weight, norm_shape, func)
    if x.size == 0:
        return _empty_grads(x, norm_shape, w)
    from ._norms import _row_groups

    dtype = x.dtype
    groups = _row_groups(x, norm_axes)
    x3 = _layout.fold(x, groups)
    x3 = _layout.copy_to_groups(x, groups) if x3 is None else x3
    dy3 = _layout.fold(dy, groups)
    dy3 = _layout.copy_to_groups(dy, groups) if dy3 is None else dy3
    dx = np.empty_like(x, order="K")
    dx3 = _layout.fold(dx, groups)
    dx3_work = np.empty(x3.shape, dtype=dtype) if dx3 is None else dx3
    d = math.prod(norm_shape)
    w_t = as_param(np.ones(d) if w is None else w, dtype)
    with np.errstate(invalid="ignore", over="ignore"):
        dweight, dbias = _backend.impl().row_norm_backward(
            x3, dy3, dx3_work, np.zeros_like(rs) if mu is None else mu, rs, w_t, rms)
    if dx3 is None:
        _layout.copy_from_groups(dx3_work, dx, groups)
    dweight = None if w is None else dweight.reshape(norm_shape).astype(dtype)
    return dx, dweight, dbias.reshape(norm_shape).astype(dtype)


def layer_norm_backward(dy, x, mean, rstd, weight=None, *, axis=-1):
    """Gradients of :func:`bnfast.layer_norm`: ``(dx, dweight, dbias)``.

    ``mean``/``rstd`` are the statistics ``layer_norm(..., return_stats=True)``
    returned; ``dweight``/``dbias`` have the normalized shape (``dweight``
    is None when ``weight`` is).
    """
    return _row_backward(dy, x, mean, rstd, weight, axis, "layer_norm_backward", rms=False)


def rms_norm_backward(dy, x, rstd, weight=None, *, axis=-1):
    """Gradients of :func:`bnfast.rms_norm`: ``(dx, dweight)``.

    ``rstd`` is what ``rms_norm(..., return_stats=True)`` returned
    (``1 / sqrt(mean(x**2) + eps)``).
    """
    dx, dweight, _ = _row_backward(dy, x, None, rstd, weight, axis, "rms_norm_backward", rms=True)
    return dx, dweight


def _channels_first(a: np.ndarray, axis: int) -> np.ndarray:
    """(N, C, S) float64 copy with channels on axis 1 and spatial flattened."""
    moved = np.moveaxis(a, axis, 1)
    return moved.astype(F64).reshape(a.shape[0], a.shape[axis], -1)


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
    x3, dy3 = _channels_first(x, axis), _channels_first(dy, axis)
    per = c // g_count
    s = x3.shape[2]
    # (N, G, C/G, S)
    x4 = x3.reshape(n, g_count, per, s)
    dy4 = dy3.reshape(n, g_count, per, s)
    xhat = _recenter(x4 - mu[:, :, None, None], (2, 3)) * rs[:, :, None, None]
    g = dy4 if w is None else dy4 * w.reshape(1, g_count, per, 1)
    mean_g = g.mean(axis=(2, 3), keepdims=True)
    mean_gx = (g * xhat).mean(axis=(2, 3), keepdims=True)
    dx4 = rs[:, :, None, None] * (g - mean_g - xhat * mean_gx)
    dweight = None if w is None else (dy4 * xhat).sum(axis=(0, 3)).reshape(c).astype(x.dtype)
    dbias = dy4.sum(axis=(0, 3)).reshape(c).astype(x.dtype)
    dx = np.moveaxis(dx4.reshape(n, c, *[x.shape[i] for i in range(1, x.ndim) if i != axis]), 1, axis)
    return dx.astype(x.dtype), dweight, dbias


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
