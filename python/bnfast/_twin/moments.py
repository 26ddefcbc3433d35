"""The twin of the moments kernel."""

from __future__ import annotations

from typing import Any, cast

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
    mean, m2 = corrected_two_pass(x.astype(np.float64))
    return cast(F64, mean), cast(F64, m2)


def corrected_two_pass(
    xd: NDArray[np.floating[Any]],
) -> tuple[NDArray[np.floating[Any]], NDArray[np.floating[Any]]]:
    """:func:`moments` of an (A, C, B) view, computed in ``xd``'s own dtype:
    float64 for the kernel's twin, long double for longdouble input
    (:func:`bnfast.mean_var` keeps its precision; no native kernel has it)."""
    if xd.shape[0] * xd.shape[2] == 0:
        nan = np.full(xd.shape[1], np.nan, dtype=xd.dtype)
        return nan, nan.copy()
    n = xd.shape[0] * xd.shape[2]
    # One contiguous row per channel: NumPy sums a contiguous axis pairwise
    # (a few ulps), a strided one sequentially (an outlier first put the
    # mean 5e4 ulps off).
    channels = xd.shape[1]
    xd = np.ascontiguousarray(np.moveaxis(xd, 1, 0)).reshape(channels, n)
    with np.errstate(invalid="ignore", over="ignore"):
        # Corrected two-pass: the mean of the deviations from a first mean
        # removes that mean's rounding.
        mean = xd.mean(axis=1)
        dev = xd - mean[:, None]
        correction = dev.mean(axis=1)
        m2 = np.einsum("cn,cn->c", dev, dev) - n * correction * correction
        np.maximum(m2, 0.0, out=m2, where=~np.isnan(m2))
        mean += np.where(np.isfinite(mean), correction, 0.0)
        lo = xd.min(axis=1)
        hi = xd.max(axis=1)
    constant: NDArray[np.bool_] = (lo == hi) & np.isfinite(lo)
    mean[constant] = lo[constant]
    m2[constant] = 0.0
    return mean, m2
