"""Layer, RMS, group and instance normalization (forward), with
torch.nn.functional semantics."""

from __future__ import annotations

import math
import numbers

import numpy as np

from . import _backend, _layout
from ._common import as_param, output_for, split_center
from ._validate import (
    as_array,
    channel_vector,
    check_axis,
    check_eps,
    check_float_dtype,
    check_momentum,
    normalize_axes,
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
    impl = _backend.impl()
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
    if not return_stats and _backend.native_active():
        y = _backend.core().layer_norm_fast(x, weight, bias, axis, eps, False, out)
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
    if not return_stats and _backend.native_active():
        y = _backend.core().layer_norm_fast(x, weight, None, axis, eps, True, out)
        if y is not None:
            return y
    x = as_array(x)
    check_float_dtype(x, "x", "rms_norm")
    eps = np.finfo(x.dtype).eps if eps is None else check_eps(eps)
    norm_axes = _norm_axes(axis, x.ndim)
    y, _, rstd = _rows_forward(x, norm_axes, weight, None, eps, out, "rms_norm", rms=True)
    return (y, rstd) if return_stats else y


# ---------------------------------------------------------------------------
# Group and instance normalization: statistics per (sample, group).


def _check_batched(x: np.ndarray, func: str) -> None:
    if x.ndim < 2:
        raise ValueError(
            f"{func} expects x with at least 2 dimensions (N, C, ...), got {x.ndim}-D "
            f"input of shape {x.shape}"
        )


def _channel_axis(axis, x: np.ndarray, func: str) -> int:
    axis = check_axis(axis, x.ndim)
    if axis == 0:
        raise ValueError(f"{func}: axis 0 is the batch axis; the channel axis must be another one")
    return axis


def _group_moments(impl, x: np.ndarray, axis: int, groups_count: int) -> tuple:
    """Per-(n, g) mean and M2 (float64, shape (N, G)) over the spatial axes and
    the channels of each group."""
    n, c = x.shape[0], x.shape[axis]
    split = x.shape[:axis] + (groups_count, c // groups_count) + x.shape[axis + 1:]
    xs = x.reshape(split)  # splitting an axis never copies
    kept = (0, axis)
    plan = _layout.plan_groups(xs, kept)
    x3 = _layout.fold(xs, plan) if plan is not None else None
    if x3 is not None:
        mean, m2 = impl.moments(x3)
        return mean.reshape(n, groups_count), m2.reshape(n, groups_count)
    # Batch and group axes do not collapse (channels last): one call per sample.
    means = np.empty((n, groups_count))
    m2s = np.empty((n, groups_count))
    for i in range(n):
        x3, _ = _layout.canonical(xs[i], (axis - 1,))
        means[i], m2s[i] = impl.moments(x3)
    return means, m2s


def _apply_per_sample_channel(impl, x, y, axis, hi, lo, scale, shift) -> None:
    """y[n, c, ...] = ((x - hi[n, c]) - lo[n, c]) * scale[n, c] + shift[n, c]."""
    spatial = tuple(i for i in range(1, x.ndim) if i != axis and x.shape[i] != 1)
    groups = ((0,), (axis,), spatial)
    c = x.shape[axis]
    _layout.apply_elementwise(impl.affine, x, y, groups, hi, lo, scale, shift, c)


def _spatial_size(x: np.ndarray, axis: int) -> int:
    return math.prod(n for i, n in enumerate(x.shape) if i not in (0, axis))


def _group_forward(x, num_groups, weight, bias, eps, axis, out, func, zero_var_rstd=False):
    """Shared forward of group and instance norm with input statistics.

    ``zero_var_rstd``: rstd = 0 where variance and eps are both 0 (instance
    norm, which PyTorch runs through its batch-norm kernel), instead of inf."""
    n, c = x.shape[0], x.shape[axis]
    w = None if weight is None else channel_vector(weight, "weight", c).astype(np.float64)
    b = None if bias is None else channel_vector(bias, "bias", c).astype(np.float64)
    y = output_for(x, out, func)
    impl = _backend.impl()
    dtype = x.dtype
    count = _spatial_size(x, axis) * (c // num_groups) if num_groups else 0
    if x.size == 0:  # as PyTorch: an empty result (statistics undefined: NaN)
        undefined = np.full((n, num_groups), np.nan, dtype=dtype)
        return y, undefined, undefined.copy(), None, None
    mean, m2 = _group_moments(impl, x, axis, num_groups)
    with np.errstate(divide="ignore"):
        rstd = 1.0 / np.sqrt(m2 / count + eps)
    if zero_var_rstd and eps == 0:
        rstd[m2 == 0] = 0.0
    per_group = c // num_groups
    mean_nc = np.repeat(mean, per_group, axis=1)  # (N, C)
    scale_nc = np.repeat(rstd, per_group, axis=1)
    if w is not None:
        scale_nc = scale_nc * w
    shift_nc = np.broadcast_to(np.zeros(c) if b is None else b, (n, c))
    hi, lo = split_center(mean_nc, dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        _apply_per_sample_channel(impl, x, y, axis, hi.ravel(), lo.ravel(),
                                  as_param(scale_nc, dtype), as_param(shift_nc, dtype))
        return y, mean.astype(dtype), rstd.astype(dtype), mean, m2


def group_norm(x, num_groups, weight=None, bias=None, *, eps=1e-5, axis=1, out=None,
               return_stats=False):
    """Group normalization, as ``torch.nn.functional.group_norm``.

    ``x`` is (N, C, ...) with channels on ``axis`` (1, or -1 for channels
    last); statistics per sample and group of ``C // num_groups`` channels;
    ``weight``/``bias`` are per channel. Returns ``y``, or
    ``(y, mean, rstd)`` with ``return_stats=True`` (shape (N, num_groups)).
    """
    x = as_array(x)
    check_float_dtype(x, "x", "group_norm")
    _check_batched(x, "group_norm")
    axis = _channel_axis(axis, x, "group_norm")
    eps = check_eps(eps)
    if isinstance(num_groups, bool) or not isinstance(num_groups, numbers.Integral):
        raise TypeError(f"num_groups must be an integer, got {type(num_groups).__name__}")
    num_groups = int(num_groups)
    c = x.shape[axis]
    if num_groups < 1 or c % num_groups:
        raise ValueError(
            f"Expected number of channels in input to be divisible by num_groups, but got "
            f"input of shape {x.shape} and num_groups={num_groups}"
        )
    if x.shape[0] * (c // num_groups) * _spatial_size(x, axis) == 1:
        raise ValueError(
            f"Expected more than 1 value per channel when training, got input size {x.shape}"
        )
    y, mean, rstd, _, _ = _group_forward(x, num_groups, weight, bias, eps, axis, out, "group_norm")
    return (y, mean, rstd) if return_stats else y


def instance_norm(x, weight=None, bias=None, *, running_mean=None, running_var=None,
                  use_input_stats=True, momentum=0.1, eps=1e-5, axis=1, out=None,
                  return_stats=False):
    """Instance normalization, as ``torch.nn.functional.instance_norm``.

    Statistics per sample and channel over the spatial axes. With
    ``use_input_stats=True`` and running statistics given, those are updated
    in place with the batch average of the instance statistics (unbiased
    variance); with ``use_input_stats=False`` the running statistics
    normalize (eval of a layer that tracks them). Returns ``y``, or
    ``(y, mean, rstd)`` with ``return_stats=True`` (shape (N, C) with input
    statistics, (C,) with running ones).
    """
    from ._batch_norm import _check_running  # shared validation of running stats

    x = as_array(x)
    check_float_dtype(x, "x", "instance_norm")
    _check_batched(x, "instance_norm")
    axis = _channel_axis(axis, x, "instance_norm")
    eps = check_eps(eps)
    momentum = check_momentum(momentum)
    n, c = x.shape[0], x.shape[axis]
    if (running_mean is None) != (running_var is None):
        raise ValueError("running_mean and running_var must be given together (or both None)")
    has_running = running_mean is not None
    use_input_stats = bool(use_input_stats)
    if not use_input_stats and not has_running:
        raise ValueError(
            "running_mean and running_var are required when use_input_stats=False"
        )
    if has_running:
        running_mean = _check_running(running_mean, "running_mean", c, x.dtype, use_input_stats)
        running_var = _check_running(running_var, "running_var", c, x.dtype, use_input_stats)
    spatial = _spatial_size(x, axis)
    if use_input_stats and spatial == 1:
        raise ValueError(
            f"Expected more than 1 spatial element when training, got input size {x.shape}"
        )
    if not use_input_stats:
        # Running statistics per channel: exactly batch norm's eval path.
        from ._batch_norm import batch_norm

        return batch_norm(x, running_mean, running_var, weight, bias, training=False,
                          eps=eps, axis=axis, out=out, return_stats=return_stats)
    y, mean, rstd, mean64, m2 = _group_forward(x, c, weight, bias, eps, axis, out,
                                               "instance_norm", zero_var_rstd=True)
    if has_running and mean64 is not None:
        unbiased = m2 / (spatial - 1)
        running_mean[...] = (1.0 - momentum) * running_mean + momentum * mean64.mean(axis=0)
        running_var[...] = (1.0 - momentum) * running_var + momentum * unbiased.mean(axis=0)
    return (y, mean, rstd) if return_stats else y
