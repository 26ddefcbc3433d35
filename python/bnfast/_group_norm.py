"""Group and instance normalization, forward and backward, with
torch.nn.functional semantics.

Statistics are per (sample, group) -- per (sample, channel) for instance
norm. The forward runs the moments and affine kernels; the backward runs
batch norm's reduction and apply kernels with one row per (sample, channel).
Instance norm with running statistics is batch norm's eval path.
"""

from __future__ import annotations

import math

import numpy as np

from . import _layout, _runtime
from ._batch_norm import batch_norm, batch_norm_backward, check_running, update_running
from ._layout import as_float64, as_param
from ._validate import (
    as_array,
    channel_axis,
    channel_vector,
    check_axis,
    check_batched,
    check_eps,
    check_float_dtype,
    check_grad_pair,
    check_momentum,
    check_num_groups,
    empty_grads,
    grad_weight,
    output_for,
    saved_stat,
)


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
    w = None if weight is None else as_float64(channel_vector(weight, "weight", c))
    b = None if bias is None else as_float64(channel_vector(bias, "bias", c))
    y = output_for(x, out, func)
    impl = _runtime.impl()
    dtype = x.dtype
    count = _spatial_size(x, axis) * (c // num_groups) if num_groups else 0
    if x.size == 0:  # as PyTorch: an empty result (statistics undefined: NaN)
        undefined = np.full((n, num_groups), np.nan, dtype=dtype)
        return y, undefined, undefined.copy(), None, None
    mean, m2 = _group_moments(impl, x, axis, num_groups)
    rstd = impl.invstd(m2.ravel(), count, eps).reshape(m2.shape)
    if zero_var_rstd and eps == 0:
        rstd[m2 == 0] = 0.0
    per_group = c // num_groups
    mean_nc = np.repeat(mean, per_group, axis=1)  # (N, C)
    scale_nc = np.repeat(rstd, per_group, axis=1)
    if w is not None:
        scale_nc = scale_nc * w
    shift_nc = np.broadcast_to(np.zeros(c) if b is None else b, (n, c))
    hi, lo = impl.split_center(mean_nc.ravel(), dtype)
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
    check_batched(x, "group_norm")
    axis = channel_axis(axis, x.ndim, "group_norm")
    eps = check_eps(eps)
    c = x.shape[axis]
    num_groups = check_num_groups(num_groups, x.shape, c)
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
    x = as_array(x)
    check_float_dtype(x, "x", "instance_norm")
    check_batched(x, "instance_norm")
    axis = channel_axis(axis, x.ndim, "instance_norm")
    eps = check_eps(eps)
    momentum = check_momentum(momentum)
    c = x.shape[axis]
    if (running_mean is None) != (running_var is None):
        raise ValueError("running_mean and running_var must be given together (or both None)")
    has_running = running_mean is not None
    use_input_stats = bool(use_input_stats)
    if not use_input_stats and not has_running:
        raise ValueError(
            "running_mean and running_var are required when use_input_stats=False"
        )
    if has_running:
        running_mean = check_running(running_mean, "running_mean", c, x.dtype, use_input_stats)
        running_var = check_running(running_var, "running_var", c, x.dtype, use_input_stats)
    spatial = _spatial_size(x, axis)
    if use_input_stats and spatial == 1:
        raise ValueError(
            f"Expected more than 1 spatial element when training, got input size {x.shape}"
        )
    if not use_input_stats:
        # Running statistics per channel: exactly batch norm's eval path.
        return batch_norm(x, running_mean, running_var, weight, bias, training=False,
                          eps=eps, axis=axis, out=out, return_stats=return_stats)
    y, mean, rstd, mean64, m2 = _group_forward(x, c, weight, bias, eps, axis, out,
                                               "instance_norm", zero_var_rstd=True)
    if has_running and mean64 is not None:
        # Batch averages of the instance statistics, in float64 and rounded
        # once, by the same formula as batch norm's update.
        update_running(running_mean, mean64.mean(axis=0), momentum)
        update_running(running_var, (m2 / (spatial - 1)).mean(axis=0), momentum)
    return (y, mean, rstd) if return_stats else y


# ---------------------------------------------------------------------------
# Backward


def group_norm_backward(dy, x, mean, rstd, num_groups, weight=None, *, axis=1):
    """Gradients of :func:`bnfast.group_norm`: ``(dx, dweight, dbias)``.

    ``mean``/``rstd`` have shape (N, num_groups), as
    ``group_norm(..., return_stats=True)`` returned them.
    """
    dy, x = check_grad_pair(dy, x, "group_norm_backward")
    check_batched(x, "group_norm_backward")
    axis = channel_axis(axis, x.ndim, "group_norm_backward")
    n, c = x.shape[0], x.shape[axis]
    g_count = check_num_groups(num_groups, x.shape, c)
    mu = saved_stat(mean, "mean", (n, g_count), "group_norm_backward")
    rs = saved_stat(rstd, "rstd", (n, g_count), "group_norm_backward")
    w = grad_weight(weight, (c,), "group_norm_backward")
    if x.size == 0:
        return empty_grads(x, (c,), w)
    dtype = x.dtype
    per = c // g_count
    spatial = tuple(i for i in range(1, x.ndim) if i != axis and x.shape[i] != 1)
    count = per * math.prod(x.shape[i] for i in spatial)
    impl = _runtime.impl()
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
        hi_all, lo_all = impl.split_center((center + delta_c).ravel(), dtype)
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
    dy, x = check_grad_pair(dy, x, "instance_norm_backward")
    check_batched(x, "instance_norm_backward")
    axis = check_axis(axis, x.ndim)
    if not use_input_stats:
        return batch_norm_backward(dy, x, mean, rstd, weight, axis=axis, training=False)
    return group_norm_backward(dy, x, mean, rstd, x.shape[axis], weight, axis=axis)
