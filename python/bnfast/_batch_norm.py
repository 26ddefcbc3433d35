"""Batch normalization forward with torch.nn.functional.batch_norm semantics."""

from __future__ import annotations

import math

import numpy as np

from . import _backend, _layout
from ._common import as_param, output_for
from ._validate import (
    as_array,
    channel_vector,
    check_axis,
    check_eps,
    check_float_dtype,
    check_momentum,
)


def _check_running(stat, name: str, c: int, dtype: np.dtype, updating: bool) -> np.ndarray:
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
    if not return_stats and _backend.native_active():
        y = _backend.core().batch_norm_fast(x, running_mean, running_var, weight, bias,
                                            training, momentum, eps, axis, out)
        if y is not None:  # the common case, done in C++ exactly as below
            return y
    x = as_array(x)
    check_float_dtype(x, "x", "batch_norm")
    if x.ndim < 2:
        raise ValueError(
            f"batch_norm expects x with at least 2 dimensions (N, C, ...), got {x.ndim}-D "
            f"input of shape {x.shape}"
        )
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
        running_mean = _check_running(running_mean, "running_mean", c, dtype, training)
        running_var = _check_running(running_var, "running_var", c, dtype, training)
    w = None if weight is None else channel_vector(weight, "weight", c).astype(np.float64)
    b = None if bias is None else channel_vector(bias, "bias", c).astype(np.float64)
    y = output_for(x, out, "batch_norm")

    if training and eps == 0:
        raise ValueError("batch_norm eps must be positive during training")
    count = math.prod(n for i, n in enumerate(x.shape) if i != axis)
    if training and count <= 1:
        raise ValueError(
            f"Expected more than 1 value per channel when training, got input size {x.shape}"
        )

    impl = _backend.impl()
    kept = (axis,)
    if training:
        groups = _layout.canonical_groups(x, kept)
        mean, m2 = _layout.apply_elementwise(impl.batch_norm_train, x, y, groups, w, b, eps)
        with np.errstate(divide="ignore"):
            invstd = 1.0 / np.sqrt(m2 / count + eps)
    else:
        mean = running_mean.astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            invstd = 1.0 / np.sqrt(running_var.astype(np.float64) + eps)
        scale = invstd if w is None else invstd * w
        with np.errstate(invalid="ignore"):
            shift = (0.0 if b is None else b) - mean * scale
        if x.size:
            groups = _layout.canonical_groups(x, kept)
            _layout.apply_elementwise(impl.affine, x, y, groups, None, None,
                                      as_param(scale, dtype), as_param(shift, dtype))

    if training and has_running:
        # In float64, rounded once (the C++ fast path does the same).
        unbiased = m2 / (count - 1)
        keep = 1.0 - momentum
        running_mean[...] = keep * running_mean.astype(np.float64) + momentum * mean
        running_var[...] = keep * running_var.astype(np.float64) + momentum * unbiased

    if return_stats:
        return y, mean.astype(dtype), invstd.astype(dtype)
    return y
