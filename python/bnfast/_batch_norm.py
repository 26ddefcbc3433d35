"""Batch normalization, forward and backward, with
torch.nn.functional.batch_norm semantics.

The backward runs on native kernels (a float64 reduction pass and an apply
pass over the canonical (A, C, B) views, fused per channel where the layout
allows); each has a NumPy twin, and results do not depend on the thread
count.
"""

from __future__ import annotations

import math

import numpy as np

from . import _layout, _runtime
from ._layout import as_float64, as_param
from ._validate import (
    as_array,
    channel_vector,
    check_axis,
    check_batched,
    check_eps,
    check_float_dtype,
    check_grad_pair,
    check_momentum,
    empty_grads,
    grad_weight,
    output_for,
    saved_stat,
)


def check_running(stat, name: str, c: int, dtype: np.dtype, updating: bool) -> np.ndarray:
    """A running statistic (batch and instance norm): 1-D, length c, x's
    dtype; an ndarray that is writeable when ``updating`` (in place)."""
    if updating and not isinstance(stat, np.ndarray):
        raise TypeError(
            f"{name} must be a NumPy array (it is updated in place), got {type(stat).__name__}"
        )
    arr = channel_vector(stat, name, c)
    if arr.dtype != dtype:
        raise TypeError(f"{name} must have dtype {dtype} to match x, got {arr.dtype}")
    if updating and not arr.flags.writeable:
        raise ValueError(f"{name} is read-only, but training updates it in place")
    return arr


def update_running(running: np.ndarray, value: np.ndarray, momentum: float) -> None:
    """``impl().running_update`` (float64, rounded once) on a running
    statistic of any layout: a non-contiguous one is updated through a
    contiguous copy, with the same bits."""
    update = _runtime.impl().running_update
    if running.flags.c_contiguous and running.flags.aligned:
        update(running, value, momentum)
    else:
        work = np.ascontiguousarray(running)
        update(work, value, momentum)
        running[...] = work


def batch_norm(
    x,
    running_mean=None,
    running_var=None,
    weight=None,
    bias=None,
    *,
    training=False,
    momentum=0.1,
    eps=1e-5,
    axis=1,
    out=None,
    return_stats=False,
):
    """Batch normalization, as ``torch.nn.functional.batch_norm``.

    ``x`` has its channels on ``axis`` (1 for (N, C, ...), -1 for channels
    last). With ``training=True`` the batch statistics (biased variance)
    normalize ``x`` and, when given, ``running_mean``/``running_var`` are
    updated in place with ``momentum`` (unbiased variance). With
    ``training=False`` the running statistics are used, folded into one scale
    and shift per channel. ``weight``/``bias`` are the optional affine
    parameters.

    Returns ``y`` (``out`` if given; ``out`` may be ``x``), or
    ``(y, mean, invstd)`` with ``return_stats=True``.
    """
    if not return_stats and _runtime.native_active():
        y = _runtime.core().batch_norm_fast(x, running_mean, running_var, weight, bias,
                                            training, momentum, eps, axis, out)
        if y is not None:  # the common case, done in C++ exactly as below
            return y
    x = as_array(x)
    check_float_dtype(x, "x", "batch_norm")
    check_batched(x, "batch_norm")
    axis = check_axis(axis, x.ndim)
    eps = check_eps(eps)
    training = bool(training)
    momentum = check_momentum(momentum)
    dtype = x.dtype
    c = x.shape[axis]

    if (running_mean is None) != (running_var is None):
        raise ValueError("running_mean and running_var must be given together (or both None)")
    has_running = running_mean is not None
    if not training and not has_running:
        raise ValueError(
            "running_mean and running_var are required when training=False "
            "(eval mode normalizes with the running statistics)"
        )
    if has_running:
        running_mean = check_running(running_mean, "running_mean", c, dtype, training)
        running_var = check_running(running_var, "running_var", c, dtype, training)
    w = None if weight is None else as_float64(channel_vector(weight, "weight", c))
    b = None if bias is None else as_float64(channel_vector(bias, "bias", c))
    y = output_for(x, out, "batch_norm")

    if training and eps == 0:
        raise ValueError("batch_norm eps must be positive during training")
    count = math.prod(n for i, n in enumerate(x.shape) if i != axis)
    if training and count <= 1:
        raise ValueError(
            f"Expected more than 1 value per channel when training, got input size {x.shape}"
        )

    impl = _runtime.impl()
    kept = (axis,)
    if training:
        groups = _layout.canonical_groups(x, kept)
        mean, m2 = _layout.apply_elementwise(impl.batch_norm_train, x, y, groups, w, b, eps)
        invstd = impl.invstd(m2, count, eps)
    else:
        mean = as_float64(running_mean)
        invstd = impl.invstd(as_float64(running_var), 1.0, eps)  # 1 / sqrt(var + eps)
        scale, shift = impl.eval_fold(mean, invstd, w, b)
        if x.size:
            groups = _layout.canonical_groups(x, kept)
            _layout.apply_elementwise(impl.affine, x, y, groups, None, None,
                                      as_param(scale, dtype), as_param(shift, dtype))

    if training and has_running:
        # In float64, rounded once (the C++ fast path does the same).
        unbiased = m2 / (count - 1)
        update_running(running_mean, mean, momentum)
        update_running(running_var, unbiased, momentum)

    if return_stats:
        return y, mean.astype(dtype), invstd.astype(dtype)
    return y


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
    dy, x = check_grad_pair(dy, x, "batch_norm_backward")
    check_batched(x, "batch_norm_backward")
    axis = check_axis(axis, x.ndim)
    c = x.shape[axis]
    dtype = x.dtype
    mu = saved_stat(mean, "mean", (c,), "batch_norm_backward")
    inv = saved_stat(invstd, "invstd", (c,), "batch_norm_backward")
    w = grad_weight(weight, (c,), "batch_norm_backward")
    dx = output_for(x, out, "batch_norm_backward")
    if x.size == 0:
        _, dweight, dbias = empty_grads(x, (c,), w)
        return dx, dweight, dbias
    impl = _runtime.impl()
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
