"""The per-channel float64 formulas of the NumPy twin.

The twin's copy of ``cpp/formulas.cpp``: the same operations in the same
order, vectorised over channels (or rows), so the twin rounds exactly as the
native kernels, the fast path and the general path do. The first four are
kernels of the backend (``impl().invstd(...)`` etc.); the others are used
by the twin's own kernels. None of them warns on 0, inf or NaN.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

F64 = NDArray[np.float64]
FloatArray = NDArray[np.floating[Any]]


def compute_dtype(dtype: DTypeLike) -> np.dtype[Any]:
    """float32 for the half-precision storage dtypes (float16, bfloat16),
    else ``dtype``: the kernels compute in it (cpp: compute_t)."""
    dt = np.dtype(dtype)
    if dt.itemsize == 2 and (dt.kind == "f" or dt.name == "bfloat16"):
        return np.dtype(np.float32)
    return dt


def widen(x: FloatArray) -> FloatArray:
    """x in its compute dtype: half-precision elements widened to float32
    (exact), as the kernels' loads do; other dtypes as they are."""
    dt = compute_dtype(x.dtype)
    return x if dt == x.dtype else x.astype(dt)


def store(dst: FloatArray, value: Any) -> None:
    """``dst[...] = value`` rounded as the kernels round: a float64 value
    written to half-precision storage goes through float32 (its compute
    dtype) first, then to nearest even."""
    dt = compute_dtype(dst.dtype)
    if dt != dst.dtype:
        value = np.asarray(value).astype(dt)
    dst[...] = value


def _f64(a: Any) -> F64:
    return np.asarray(a, dtype=np.float64)


def invstd(m2: F64, count: float, eps: float) -> F64:
    """``1 / sqrt(m2 / count + eps)`` per channel: inf where the sum is 0,
    NaN propagates. ``count = 1`` gives ``1 / sqrt(var + eps)`` for a
    variance (the eval path)."""
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        return 1.0 / np.sqrt(_f64(m2) / float(count) + float(eps))


def eval_fold(
    mean: F64, invstd: F64, weight: Optional[F64], bias: Optional[F64]
) -> tuple[F64, F64]:
    """``(scale, shift)`` of the eval map ``y = x * scale + shift``:
    ``scale = invstd * weight``, ``shift = bias - mean * scale`` (an absent
    weight is 1.0, an absent bias 0.0)."""
    mean, inv = _f64(mean), _f64(invstd)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        scale = inv * (1.0 if weight is None else _f64(weight))
        shift = (0.0 if bias is None else _f64(bias)) - mean * scale
    return scale, shift


def running_update(running: FloatArray, value: F64, momentum: float) -> None:
    """``running = (1 - momentum) * running + momentum * value`` in float64,
    rounded once to running's dtype, in place."""
    momentum = float(momentum)
    value = np.array(value, dtype=np.float64)  # read in full before running is written
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        running[...] = (1.0 - momentum) * running.astype(np.float64) + momentum * value


def split_center(mean: F64, dtype: DTypeLike) -> tuple[FloatArray, FloatArray]:
    """``(hi, lo)`` of ``dtype`` with ``hi = mean`` rounded and ``lo = mean -
    hi`` rounded: ``(x - hi) - lo`` centres float32 data on the float64 mean."""
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError("split_center: dtype must be float32 or float64")
    mean = _f64(mean)
    hi = np.array(mean, dtype=dt)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        lo = np.array(mean - hi.astype(np.float64), dtype=dt)
    return hi, lo


def train_fold(
    m2: F64, count: float, eps: float, weight: Optional[F64], bias: Optional[F64]
) -> tuple[F64, F64]:
    """``(scale, shift)`` of batch norm's training map ``y = (x - mean) *
    scale + shift``: ``scale = invstd(m2, count, eps) * weight``, ``shift = bias``."""
    scale = invstd(m2, count, eps)
    if weight is not None:
        scale = scale * _f64(weight)
    shift = np.zeros_like(scale) if bias is None else _f64(bias)
    return scale, shift


def batch_norm_backward_params(
    sum_d: F64,
    sum_dy: F64,
    sum_dy_d: F64,
    n: float,
    mean: F64,
    invstd: F64,
    weight: Optional[F64],
) -> tuple[F64, F64, F64, F64, F64, F64]:
    """``(sum_dy_xc, center, s, p, q, r)`` of batch norm's training backward.

    From the sums about the stored mean over ``n`` values: ``delta = sum_d /
    n`` moves the centre to the exact mean (``center = mean + delta``),
    ``sum_dy_xc = sum_dy_d - delta * sum_dy``, and ``dx = dy * p + (((x -
    center) * s) * q + r) * s`` with ``s = invstd``, ``p = invstd * weight``,
    ``q = -(sum_dy_xc * invstd / n) * weight``, ``r = -(sum_dy / n) *
    weight`` (no ``invstd * invstd``: it leaves float32's range for data near
    1e21).
    """
    inv = _f64(invstd)
    w = 1.0 if weight is None else _f64(weight)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        delta = sum_d / n
        sum_dy_xc = sum_dy_d - delta * sum_dy
        center = mean + delta
        k = sum_dy_xc * inv / n
        p = inv * w
        q = -k * w
        r = -(sum_dy / n) * w
    return sum_dy_xc, center, inv, p, q, r


def group_norm_backward_params(
    sum_d: F64,
    sum_dy: F64,
    sum_dy_d: F64,
    weight: Optional[F64],
    count: float,
    mean: F64,
    rstd: F64,
) -> tuple[F64, F64, F64, F64, F64]:
    """``(sum_dy_xc, center, s, q, r)`` of group norm's training backward,
    per (sample, group).

    The sums (shape (N, G, per)) are each channel's about the stored group
    ``mean`` (N, G); ``weight`` is (G, per) or None (all ones). ``delta =
    sum(sum_d) / count`` moves the centre to the exact mean (``center = mean
    + delta``), ``sum_dy_xc = sum_dy_d - delta * sum_dy`` per channel, and
    ``dx = dy * p + (((x - center) * s) * q + r) * s`` with ``s = rstd``,
    ``p = rstd * weight`` (the caller's), ``q = -((rstd * sum(w *
    sum_dy_xc)) / count)``, ``r = -(sum(w * sum_dy) / count)``. Every sum
    runs over the channels in order from 0.0, as the C++ loop.
    """
    per = sum_d.shape[2]
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        sd = np.zeros(mean.shape)
        for j in range(per):
            sd = sd + sum_d[:, :, j]
        delta = sd / count
        t = sum_dy_d - delta[:, :, None] * sum_dy
        sg = np.zeros(mean.shape)
        sgx = np.zeros(mean.shape)
        for j in range(per):
            w = 1.0 if weight is None else weight[:, j]
            sg = sg + w * sum_dy[:, :, j]
            sgx = sgx + w * t[:, :, j]
        center = mean + delta
        q = -((rstd * sgx) / count)
        r = -(sg / count)
    return t, center, _f64(rstd), q, r


def row_rstd(mean: F64, m2: F64, count: float, eps: float, rms: bool) -> F64:
    """Per-row ``1 / sqrt(m2 / count + eps)`` (layer norm) or ``1 / sqrt(m2 /
    count + mean * mean + eps)`` (RMS norm: the mean of the squares)."""
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        var = m2 / count
        return 1.0 / np.sqrt(var + mean * mean + eps) if rms else 1.0 / np.sqrt(var + eps)


def rms_inf_row_rstd(rstd: F64, row_has_nan: ArrayLike) -> F64:
    """RMS norm of a row holding +-inf but no NaN gets rstd 0 (mean(x**2) is
    inf), where the moments gave NaN; other rows keep their rstd."""
    return np.where(np.isnan(rstd) & ~np.asarray(row_has_nan, dtype=bool), 0.0, rstd)
