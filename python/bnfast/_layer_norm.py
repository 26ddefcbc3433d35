"""Layer and RMS normalization, forward and backward, with
torch.nn.functional semantics.

Both run on the row kernels over the (1, rows, D) view of the input: the
kept axes are the rows, the normalized axes the columns.
"""

from __future__ import annotations

import math

import numpy as np

from . import _layout, _runtime
from ._layout import as_param
from ._validate import (
    as_array,
    check_eps,
    check_float_dtype,
    check_grad_pair,
    empty_grads,
    grad_weight,
    normalize_axes,
    output_for,
    saved_stat,
)


def _shaped_param(p, name: str, shape: tuple, dtype: np.dtype):
    """weight/bias of layer/RMS norm: exactly the normalized shape."""
    if p is None:
        return None
    arr = as_array(p, name)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    if arr.shape != shape:
        raise ValueError(
            f"{name} should have shape {shape} (the normalized axes of x), got {arr.shape}"
        )
    return arr


def _row_groups(x: np.ndarray, norm_axes: tuple) -> _layout.Groups:
    """(A, C, B) groups with the kept axes as rows (C) and the normalized axes
    as columns (B), both in their original order (weight is indexed by B)."""
    kept = tuple(i for i in range(x.ndim) if i not in norm_axes and x.shape[i] != 1)
    cols = tuple(i for i in norm_axes if x.shape[i] != 1)
    return (), kept, cols


def _rows_forward(x, norm_axes, weight, bias, eps, out, func, rms):
    norm_shape = tuple(x.shape[i] for i in norm_axes)
    kept_shape = tuple(n for i, n in enumerate(x.shape) if i not in norm_axes)
    d = math.prod(norm_shape)
    w = _shaped_param(weight, "weight", norm_shape, x.dtype)
    b = _shaped_param(bias, "bias", norm_shape, x.dtype)
    y = output_for(x, out, func)
    impl = _runtime.impl()
    dtype = x.dtype
    if x.size == 0:  # as PyTorch: an empty result (statistics undefined: NaN)
        undefined = np.full(kept_shape, np.nan, dtype=dtype)
        return y, undefined, undefined.copy()
    groups = _row_groups(x, norm_axes)
    w_t = as_param(np.ones(d) if w is None else w, dtype)
    b_t = as_param(np.zeros(d) if b is None else b, dtype)
    # eps = 0 on a constant row gives rstd = inf, as in PyTorch; no warnings
    # for that or for an rstd beyond the float32 range.
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        mean, _, rstd = _layout.apply_elementwise(impl.layer_norm_forward, x, y, groups, w_t,
                                                  b_t, eps, rms)
        return y, mean.reshape(kept_shape).astype(dtype), rstd.reshape(kept_shape).astype(dtype)


def _norm_axes(axis, ndim: int) -> tuple:
    """The normalized axes of layer/RMS norm: an int or a non-empty tuple."""
    if axis is None:
        raise TypeError("axis must be an int or a tuple of ints, not None")
    axes = normalize_axes(axis, ndim)
    if not axes:
        raise ValueError("axis must name at least one axis to normalize over")
    return axes


def layer_norm(x, weight=None, bias=None, *, axis=-1, eps=1e-5, out=None, return_stats=False):
    """Layer normalization, as ``torch.nn.functional.layer_norm``.

    Normalizes over ``axis`` (an int or a tuple of axes; PyTorch's
    ``normalized_shape`` is the trailing axes, ``axis=(-2, -1)`` etc.).
    ``weight``/``bias`` have the shape of the normalized axes. Statistics
    are exact (float64 two-pass) and a constant row maps to exactly ``bias``.

    Returns ``y``, or ``(y, mean, rstd)`` with ``return_stats=True`` (shape of
    the axes not normalized).
    """
    if not return_stats and _runtime.native_active():
        y = _runtime.core().layer_norm_fast(x, weight, bias, axis, eps, False, out)
        if y is not None:  # the common case (last axis, contiguous), done in C++
            return y
    x = as_array(x)
    check_float_dtype(x, "x", "layer_norm")
    eps = check_eps(eps)
    norm_axes = _norm_axes(axis, x.ndim)
    y, mean, rstd = _rows_forward(x, norm_axes, weight, bias, eps, out, "layer_norm", rms=False)
    return (y, mean, rstd) if return_stats else y


def rms_norm(x, weight=None, *, axis=-1, eps=None, out=None, return_stats=False):
    """RMS normalization, as ``torch.nn.functional.rms_norm``:
    ``y = x / sqrt(mean(x**2) + eps) * weight`` over ``axis``.

    ``eps=None`` uses ``np.finfo(x.dtype).eps``. Returns ``y``, or
    ``(y, rstd)`` with ``return_stats=True``.
    """
    if not return_stats and _runtime.native_active():
        y = _runtime.core().layer_norm_fast(x, weight, None, axis, eps, True, out)
        if y is not None:
            return y
    x = as_array(x)
    check_float_dtype(x, "x", "rms_norm")
    eps = np.finfo(x.dtype).eps if eps is None else check_eps(eps)
    norm_axes = _norm_axes(axis, x.ndim)
    y, _, rstd = _rows_forward(x, norm_axes, weight, None, eps, out, "rms_norm", rms=True)
    return (y, rstd) if return_stats else y


# ---------------------------------------------------------------------------
# Backward


def _row_backward(dy, x, mean, rstd, weight, axis, func, rms, out=None):
    """Shared by layer and RMS norm backward: the native row kernel on the
    (1, rows, D) views, whatever the layout."""
    dy, x = check_grad_pair(dy, x, func)
    norm_axes = _norm_axes(axis, x.ndim)
    norm_shape = tuple(x.shape[i] for i in norm_axes)
    kept_shape = tuple(n for i, n in enumerate(x.shape) if i not in norm_axes)
    mu = None if rms else saved_stat(mean, "mean", kept_shape, func).ravel()
    rs = saved_stat(rstd, "rstd", kept_shape, func).ravel()
    w = grad_weight(weight, norm_shape, func)
    dx = output_for(x, out, func)
    if x.size == 0:
        _, dweight, dbias = empty_grads(x, norm_shape, w)
        return dx, dweight, dbias
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
        dweight, dbias = _runtime.impl().layer_norm_backward(
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
