"""The twins of the batch-norm kernels (training forward, backward)."""

from __future__ import annotations

from typing import Optional

import numpy as np

from .affine import affine
from .formulas import (
    F64,
    FloatArray,
    batch_norm_backward_params,
    compute_dtype,
    split_center,
    store,
    train_fold,
    widen,
)
from .moments import moments


def batch_norm_train(
    x: FloatArray, y: FloatArray, weight: Optional[F64], bias: Optional[F64], eps: float
) -> tuple[F64, F64]:
    """Batch statistics ``(mean, m2)`` of an (A, C, B) view (as :func:`moments`)
    and ``y = ((x - mean) * invstd) * weight + bias`` written into y, with
    ``invstd = 1 / sqrt(m2 / (A*B) + eps)``; weight/bias float64 or None."""
    mean, m2 = moments(x)
    count = x.shape[0] * x.shape[2]
    dtype = compute_dtype(x.dtype)
    scale, shift = train_fold(m2, count, eps, weight, bias)
    hi, lo = split_center(mean, dtype)
    if count:
        affine(x, y, hi, lo, scale.astype(dtype), shift.astype(dtype))
    return mean, m2


def batch_norm_backward_reduce(x: FloatArray, dy: FloatArray, center: F64) -> tuple[F64, F64, F64]:
    """Per-C ``(sum(d), sum(dy), sum(dy * d))`` in float64, ``d = x - center[c]``."""
    d = x.astype(np.float64) - center[None, :, None]
    g = dy.astype(np.float64)
    return d.sum(axis=(0, 2)), g.sum(axis=(0, 2)), np.einsum("acb,acb->c", g, d)


def batch_norm_backward_apply(
    x: FloatArray,
    dy: FloatArray,
    dx: FloatArray,
    hi: FloatArray,
    lo: FloatArray,
    s: FloatArray,
    p: FloatArray,
    q: FloatArray,
    r: FloatArray,
) -> None:
    """``dx = dy * p[c] + ((((x - hi[c]) - lo[c]) * s[c]) * q[c] + r[c]) * s[c]``
    written into dx."""
    col = (None, slice(None), None)
    xc, dyc = widen(x), widen(dy)
    with np.errstate(invalid="ignore", over="ignore"):
        xhat = ((xc - hi[col]) - lo[col]) * s[col]
        store(dx, dyc * p[col] + (xhat * q[col] + r[col]) * s[col])


def batch_norm_backward_train(
    x: FloatArray, dy: FloatArray, dx: FloatArray, mean: F64, invstd: F64, weight: Optional[F64]
) -> tuple[F64, F64]:
    """Training backward of batch norm: writes dx, returns per-C
    ``(sum_dy, sum_dy_xc)`` in float64, ``sum_dy_xc = sum(dy * (x - exact mean))``.

    The sums are taken about the stored ``mean`` (rounded to x's dtype by the
    forward pass); ``sum_d / n`` is that rounding, so the centre moves to the
    exact batch mean. Then ``dx = dy*p + ((((x - hi) - lo)*s)*q + r)*s`` with the
    parameters of :func:`~bnfast._twin.formulas.batch_norm_backward_params`
    and ``hi + lo`` the exact mean, all rounded to x's dtype.
    """
    n = x.shape[0] * x.shape[2]
    sum_d, sum_dy, sum_dy_d = batch_norm_backward_reduce(x, dy, mean)
    dtype = compute_dtype(x.dtype)
    sum_dy_xc, center, s, p, q, r = batch_norm_backward_params(
        sum_d, sum_dy, sum_dy_d, n, mean, invstd, weight
    )
    hi, lo = split_center(center, dtype)
    with np.errstate(invalid="ignore", over="ignore"):
        batch_norm_backward_apply(x, dy, dx, hi, lo, *(a.astype(dtype) for a in (s, p, q, r)))
    return sum_dy, sum_dy_xc
