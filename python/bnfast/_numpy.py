"""The pure-NumPy backend: the executable specification of every native
kernel, and the fallback when the extension is not built.

Each function here has the same signature and meaning as its twin in
``bnfast._core`` and works on the same canonical (A, C, B) views.
"""

from __future__ import annotations

import numpy as np


def moments(x3: np.ndarray):
    """Per-C ``(mean, m2)`` in float64 over axes 0 and 2 of an (A, C, B) view.

    Two-pass in float64: mean first, then the sum of squared deviations from
    it. A channel whose values are all equal (and finite) gets that value as
    its mean and M2 exactly 0.
    """
    if x3.ndim != 3:
        raise ValueError("x must be a 3-D (A, C, B) view")
    if x3.dtype not in (np.float32, np.float64):
        raise TypeError("moments: x must be float32 or float64")
    if x3.shape[0] * x3.shape[2] == 0:
        nan = np.full(x3.shape[1], np.nan)
        return nan, nan.copy()
    xd = x3.astype(np.float64)
    n = x3.shape[0] * x3.shape[2]
    with np.errstate(invalid="ignore", over="ignore"):
        # Corrected two-pass: the mean of the deviations from a first mean
        # removes that mean's rounding (NumPy's sum along a strided axis is
        # not pairwise and can be off by many ulps on offset data).
        mean = xd.mean(axis=(0, 2))
        dev = xd - mean[None, :, None]
        correction = dev.mean(axis=(0, 2))
        m2 = np.einsum("acb,acb->c", dev, dev) - n * correction * correction
        np.maximum(m2, 0.0, out=m2, where=~np.isnan(m2))
        mean += np.where(np.isfinite(mean), correction, 0.0)
        lo = xd.min(axis=(0, 2))
        hi = xd.max(axis=(0, 2))
    constant = (lo == hi) & np.isfinite(lo)
    mean[constant] = lo[constant]
    m2[constant] = 0.0
    return mean, m2


def affine(x3, y3, center_hi, center_lo, scale, shift, param_stride_a=0) -> None:
    """``y = ((x - center_hi[p]) - center_lo[p]) * scale[p] + shift[p]`` with
    ``p = a * param_stride_a + c``, or ``y = x * scale[p] + shift[p]`` when
    ``center_hi`` is None; written into y3."""
    _check_xy(x3, y3)
    a, c = x3.shape[0], x3.shape[1]

    def per_ac(p):
        if param_stride_a == 0:
            return p[None, :, None]
        idx = np.arange(a)[:, None] * param_stride_a + np.arange(c)[None, :]
        return p[idx][:, :, None]

    with np.errstate(invalid="ignore", over="ignore"):
        if center_hi is None:
            y3[...] = x3 * per_ac(scale) + per_ac(shift)
        else:
            y3[...] = ((x3 - per_ac(center_hi)) - per_ac(center_lo)) * per_ac(scale) + per_ac(shift)


def batch_norm_train(x3, y3, weight, bias, eps):
    """Batch statistics ``(mean, m2)`` of an (A, C, B) view (as :func:`moments`)
    and ``y = ((x - mean) * invstd) * weight + bias`` written into y3, with
    ``invstd = 1 / sqrt(m2 / (A*B) + eps)``; weight/bias float64 or None."""
    mean, m2 = moments(x3)
    count = x3.shape[0] * x3.shape[2]
    dtype = x3.dtype
    with np.errstate(divide="ignore", invalid="ignore"):
        invstd = 1.0 / np.sqrt(m2 / count + eps)
    scale = invstd if weight is None else invstd * weight
    shift = np.zeros_like(mean) if bias is None else bias
    hi = mean.astype(dtype)
    lo = (mean - hi).astype(dtype)
    if count:
        affine(x3, y3, hi, lo, scale.astype(dtype), shift.astype(dtype))
    return mean, m2


def batch_norm_backward_reduce(x3, dy3, center):
    """Per-C ``(sum(d), sum(dy), sum(dy * d))`` in float64, ``d = x - center[c]``."""
    d = x3.astype(np.float64) - center[None, :, None]
    g = dy3.astype(np.float64)
    return d.sum(axis=(0, 2)), g.sum(axis=(0, 2)), np.einsum("acb,acb->c", g, d)


def batch_norm_backward_apply(x3, dy3, dx3, hi, lo, p, q, r) -> None:
    """``dx = dy * p[c] + ((x - hi[c]) - lo[c]) * q[c] + r[c]`` written into dx3."""
    col = (None, slice(None), None)
    with np.errstate(invalid="ignore", over="ignore"):
        dx3[...] = dy3 * p[col] + (((x3 - hi[col]) - lo[col]) * q[col] + r[col])


def batch_norm_backward_train(x3, dy3, dx3, mean, invstd, weight):
    """Training backward of batch norm: writes dx3, returns per-C
    ``(sum_dy, sum_dy_xc)`` in float64, ``sum_dy_xc = sum(dy * (x - exact mean))``.

    The sums are taken about the stored ``mean`` (rounded to x's dtype by the
    forward pass); ``sum_d / n`` is that rounding, so the centre moves to the
    exact batch mean. Then ``dx = dy*p + ((x - hi) - lo)*q + r`` with
    ``p = invstd*w``, ``q = -(sum_dy_xc*invstd*invstd/n)*p``,
    ``r = -(sum_dy/n)*p`` and ``hi + lo`` the exact mean, all rounded to x's
    dtype.
    """
    n = x3.shape[0] * x3.shape[2]
    sum_d, sum_dy, sum_dy_d = batch_norm_backward_reduce(x3, dy3, mean)
    gamma = np.ones(x3.shape[1]) if weight is None else weight
    dtype = x3.dtype
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        delta = sum_d / n
        mu_exact = mean + delta
        sum_dy_xc = sum_dy_d - delta * sum_dy
        k = sum_dy_xc * invstd * invstd / n
        p = invstd * gamma
        q = -k * p
        r = -(sum_dy / n) * p
        hi = mu_exact.astype(dtype)
        lo = (mu_exact - hi).astype(dtype)
        batch_norm_backward_apply(x3, dy3, dx3, hi, lo, p.astype(dtype), q.astype(dtype),
                          r.astype(dtype))
    return sum_dy, sum_dy_xc


def row_rstd(mean, m2, d, eps, rms):
    """Per-row 1/sqrt(var + eps), or 1/sqrt(mean(x**2) + eps) for RMS norm."""
    var = m2 / d
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        return 1.0 / np.sqrt(var + mean * mean + eps) if rms else 1.0 / np.sqrt(var + eps)


def layer_norm_forward(x3, y3, weight, bias, eps, rms):
    """Layer (``rms=False``) or RMS normalization of the rows of a (1, R, D)
    view into y3; returns per-row ``(mean, m2, rstd)`` in float64. For RMS
    norm a row with +-inf and no NaN has mean(x**2) = inf: rstd = 0."""
    mean, m2 = moments(x3)
    dtype = x3.dtype
    rstd = row_rstd(mean, m2, x3.shape[0] * x3.shape[2], eps, rms)
    if rms:
        inf_rows = np.isnan(rstd) & ~np.isnan(x3).any(axis=(0, 2))
        rstd[inf_rows] = 0.0
    hi = None if rms else mean.astype(dtype)
    lo = None if rms else (mean - hi).astype(dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        row_affine(x3, y3, hi, lo, rstd.astype(dtype), weight, bias)
    return mean, m2, rstd


def layer_norm_backward(x3, dy3, dx3, mean, rstd, weight, rms):
    """Backward of :func:`layer_norm_forward` on (1, R, D) views: writes dx3,
    returns ``(dweight, dbias)`` in float64."""
    x = x3[0].astype(np.float64)
    dy = dy3[0].astype(np.float64)
    rs = rstd[:, None]
    g = dy * weight.astype(np.float64)[None, :]
    d = x3.shape[2]
    if rms:
        dx = rs * g - x * rs**3 * (g * x).mean(axis=1, keepdims=True)
        dweight = (dy * x * rs).sum(axis=0)
    else:
        xc = x - mean[:, None]
        xc -= xc.mean(axis=1, keepdims=True)  # the stored mean was rounded
        xhat = xc * rs
        dx = rs * (g - g.mean(axis=1, keepdims=True) - xhat * (g * xhat).sum(axis=1, keepdims=True) / d)
        dweight = (dy * xhat).sum(axis=0)
    dx3[0] = dx
    return dweight, dy.sum(axis=0)


def row_affine(x3, y3, center_hi, center_lo, scale, weight, bias) -> None:
    """``y = ((x - center_hi[c]) - center_lo[c]) * scale[c] * weight[b] + bias[b]``,
    without the centring when ``center_hi`` is None; written into y3."""
    _check_xy(x3, y3)
    col = (None, slice(None), None)
    row = (None, None, slice(None))
    with np.errstate(invalid="ignore", over="ignore"):
        if center_hi is None:
            t = x3 * scale[col]
        else:
            t = ((x3 - center_hi[col]) - center_lo[col]) * scale[col]
        y3[...] = t * weight[row] + bias[row]


def _check_xy(x3, y3) -> None:
    if y3.shape != x3.shape:
        raise ValueError("x and y must have the same shape")
    if not y3.flags.writeable:
        raise ValueError("y is read-only")
