"""The twin of the moments kernel."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from .formulas import F64, FloatArray, compute_dtype


def moments(x: FloatArray) -> tuple[F64, F64]:
    """Per-C ``(mean, m2)`` in float64 over axes 0 and 2 of an (A, C, B) view.

    Two-pass in float64: mean first, then the sum of squared deviations from
    it. A channel whose values are all equal (and finite) gets that value as
    its mean and M2 exactly 0.
    """
    if x.ndim != 3:
        raise ValueError("x must be a 3-D (A, C, B) view")
    if x.dtype not in (np.float32, np.float64) and compute_dtype(x.dtype) != np.float32:
        raise TypeError("moments: x must be float32, float64, float16 or bfloat16")
    if x.shape[0] * x.shape[2] == 0:
        nan = np.full(x.shape[1], np.nan)
        return nan, nan.copy()
    xd = x.astype(np.float64)
    n = x.shape[0] * x.shape[2]
    with np.errstate(invalid="ignore", over="ignore"):
        # Corrected two-pass: the mean of the deviations from a first mean
        # removes that mean's rounding (NumPy's sum along a strided axis is
        # not pairwise and can be off by many ulps on offset data).
        mean = xd.mean(axis=(0, 2))
        dev = xd - mean[None, :, None]
        correction = dev.mean(axis=(0, 2))
        m2: F64 = np.einsum("acb,acb->c", dev, dev) - n * correction * correction
        np.maximum(m2, 0.0, out=m2, where=~np.isnan(m2))
        mean += np.where(np.isfinite(mean), correction, 0.0)
        lo = xd.min(axis=(0, 2))
        hi = xd.max(axis=(0, 2))
    constant: NDArray[np.bool_] = (lo == hi) & np.isfinite(lo)
    mean[constant] = lo[constant]
    m2[constant] = 0.0
    return mean, m2
