"""The twins of the layer-norm row kernels (layer and RMS norm, forward and
backward) on (1, rows, D) views."""

from __future__ import annotations

import numpy as np

from .affine import check_xy
from .formulas import (
    F64,
    FloatArray,
    compute_dtype,
    rms_inf_row_rstd,
    row_rstd,
    split_center,
    store,
    widen,
)
from .moments import moments


def layer_norm_forward(
    x: FloatArray, y: FloatArray, weight: FloatArray, bias: FloatArray, eps: float, rms: bool
) -> tuple[F64, F64, F64]:
    """Layer (``rms=False``) or RMS normalization of the rows of a (1, R, D)
    view into y: ``y = ((x - hi[r]) - lo[r]) * rstd[r] * weight[j] + bias[j]``
    (no centring for RMS norm); returns per-row ``(mean, m2, rstd)`` in
    float64. For RMS norm a row with +-inf and no NaN has mean(x**2) = inf:
    rstd = 0."""
    check_xy(x, y)
    mean, m2 = moments(x)
    dtype = compute_dtype(x.dtype)
    xc = widen(x)
    rstd = row_rstd(mean, m2, x.shape[0] * x.shape[2], eps, rms)
    if rms:
        rstd = rms_inf_row_rstd(rstd, np.isnan(xc).any(axis=(0, 2)))
    col = (None, slice(None), None)
    row = (None, None, slice(None))
    with np.errstate(over="ignore", invalid="ignore"):
        scale = rstd.astype(dtype)[col]
        if rms:
            t = xc * scale
        else:
            hi, lo = split_center(mean, dtype)
            t = ((xc - hi[col]) - lo[col]) * scale
        store(y, t * weight[row] + bias[row])
    return mean, m2, rstd


def layer_norm_backward(
    x: FloatArray,
    dy: FloatArray,
    dx: FloatArray,
    mean: F64,
    rstd: F64,
    weight: FloatArray,
    rms: bool,
) -> tuple[F64, F64]:
    """Backward of :func:`layer_norm_forward` on (1, R, D) views: writes dx,
    returns ``(dweight, dbias)`` in float64. float32 and half data take
    :func:`_backward_f32`, the kernels' float32 arithmetic."""
    if compute_dtype(x.dtype) == np.float32:
        return _backward_f32(x, dy, dx, mean, rstd, weight, rms)
    x2 = x[0].astype(np.float64)
    dy2 = dy[0].astype(np.float64)
    rs = rstd[:, None]
    g = dy2 * weight.astype(np.float64)[None, :]
    d = x.shape[2]
    if rms:
        dx2 = rs * g - x2 * rs**3 * (g * x2).mean(axis=1, keepdims=True)
        dweight = (dy2 * x2 * rs).sum(axis=0)
    else:
        xc = x2 - mean[:, None]
        xc -= xc.mean(axis=1, keepdims=True)  # the stored mean was rounded
        xhat = xc * rs
        dx2 = rs * (
            g - g.mean(axis=1, keepdims=True) - xhat * (g * xhat).sum(axis=1, keepdims=True) / d
        )
        dweight = (dy2 * xhat).sum(axis=0)
    store(dx[0], dx2)
    return dweight, dy2.sum(axis=0)


def _backward_f32(
    x: FloatArray,
    dy: FloatArray,
    dx: FloatArray,
    mean: F64,
    rstd: F64,
    weight: FloatArray,
    rms: bool,
) -> tuple[F64, F64]:
    """The float32 backward (kernels: backward_row_sums_f32): float32
    products, row and column sums in float64 (the kernels sum float32
    blocks of a few terms first: the sums agree to a few float32 ulps of a
    block, the row constants almost always to the bit), row constants
    rounded to float32 once, dx in float32."""
    f32 = np.float32
    xf = widen(x[0])
    dyf = widen(dy[0])
    d = x.shape[2]
    g = dyf * weight.astype(f32)[None, :]
    rs = rstd.astype(f32)[:, None]
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        if rms:
            s_gd = (g * xf).sum(axis=1, dtype=np.float64)
            m = (rstd * s_gd / d).astype(f32)[:, None]
            xhat = xf * rs
            dxf = rs * (g - xhat * m)
        else:
            mu = mean.astype(f32)
            dev = xf - mu[:, None]
            s_d = dev.sum(axis=1, dtype=np.float64)
            s_g = g.sum(axis=1, dtype=np.float64)
            s_gd = (g * dev).sum(axis=1, dtype=np.float64)
            delta = s_d / d
            hi, lo = split_center(mu.astype(np.float64) + delta, f32)
            mean_g = (s_g / d).astype(f32)[:, None]
            mean_gx = (rstd * (s_gd - delta * s_g) / d).astype(f32)[:, None]
            xhat = ((xf - hi[:, None]) - lo[:, None]) * rs
            dxf = rs * ((g - mean_g) - xhat * mean_gx)
        store(dx[0], dxf)
        dweight = (dyf * xhat).sum(axis=0, dtype=np.float64)
    return dweight, dyf.sum(axis=0, dtype=np.float64)
