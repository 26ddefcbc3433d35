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
    # One contiguous row per channel.
    channels = xd.shape[1]
    xd = np.ascontiguousarray(np.moveaxis(xd, 1, 0)).reshape(channels, n)
    with np.errstate(invalid="ignore", over="ignore"):
        # The mean from a double-double sum (within an ulp or two of the
        # exactly rounded mean where the values' signs agree, as the
        # kernel's compensated chunk sums; a pairwise sum, or a pairwise mean
        # corrected by the mean of its deviations, is up to ~10 ulps off on
        # an outlier or on int16 [1] + 270 zeros).
        hi, lo = dd_sum(xd)
        mean = hi / n
        finite = np.isfinite(mean)
        mean[finite] = (hi[finite] + lo[finite]) / n
        # Corrected two-pass M2: the deviations' mean removes the mean's
        # rounding from the sum of squares.
        dev = xd - mean[:, None]
        correction = dev.mean(axis=1)
        m2 = np.einsum("cn,cn->c", dev, dev) - n * correction * correction
        np.maximum(m2, 0.0, out=m2, where=~np.isnan(m2))
        lo_v = xd.min(axis=1)
        hi_v = xd.max(axis=1)
    constant: NDArray[np.bool_] = (lo_v == hi_v) & np.isfinite(lo_v)
    mean[constant] = lo_v[constant]
    m2[constant] = 0.0
    return mean, m2


def _two_sum(
    a: NDArray[np.floating[Any]], b: NDArray[np.floating[Any]]
) -> tuple[NDArray[np.floating[Any]], NDArray[np.floating[Any]]]:
    """Knuth's TwoSum, element-wise: s + e == a + b exactly."""
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def dd_sum(
    x: NDArray[np.floating[Any]], k: int = 8
) -> tuple[NDArray[np.floating[Any]], NDArray[np.floating[Any]]]:
    """Per-row sum of a 2-D array as an unevaluated ``hi + lo``: blocks of
    ``k`` values are added by TwoSum (vectorized across the blocks), their
    errors summed aside, the block sums reduced the same way until one is
    left. ``lo`` is 0 where ``hi`` is not finite (an inf's TwoSum is NaN)."""
    rows = x.shape[0]
    lo = np.zeros(rows, dtype=x.dtype)
    while x.shape[1] > 1:
        m = -(-x.shape[1] // k)
        if m * k != x.shape[1]:
            x = np.concatenate([x, np.zeros((rows, m * k - x.shape[1]), x.dtype)], axis=1)
        blocks = x.reshape(rows, m, k)
        s = blocks[:, :, 0].copy()
        err = np.zeros_like(s)
        for j in range(1, k):
            s, e = _two_sum(s, blocks[:, :, j])
            err += e
        lo += err.sum(axis=1)
        x = s
    hi = x[:, 0] if x.shape[1] else np.zeros(rows, dtype=x.dtype)
    lo[~np.isfinite(hi)] = 0.0
    return hi.copy(), lo
