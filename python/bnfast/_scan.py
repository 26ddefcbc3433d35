"""Per-feature statistics of data sets that may hold NaN, inf, integers or
sample weights, without a temporary the size of the data.

Clean float32/float64 data goes through one native ``moments`` call. Anything
else (NaN or inf present, integer or float16 data, weights, layouts the
kernels cannot view without a copy, the NumPy backend) is reduced in slabs
of at most ``SLAB_ELEMENTS`` values cut along the reduced axes, merged
exactly with Chan's formula. Shared by :class:`bnfast.Standardizer`
(:func:`chunk_moments` applies its NaN policy) and :func:`bnfast.diagnose`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import _layout, _runtime
from ._moments import Moments, moments
from ._validate import as_array, is_float_dtype, real_float

# 2**18 values: float64 slab temporaries of 2 MB each (a NaN-aware slab
# needs about ten of them at once), large enough that the per-slab Python
# overhead stays negligible.
SLAB_ELEMENTS = 1 << 18


class Scan(NamedTuple):
    """Per-feature results of :func:`scan` (arrays of the feature shape)."""

    moments: Moments  # of the finite values (weighted when weights are given)
    nan_count: np.ndarray  # int64
    inf_count: np.ndarray  # int64
    minimum: np.ndarray | None  # float64 over finite values, NaN where none
    maximum: np.ndarray | None


def kept_axes(ndim: int, axes: tuple) -> tuple:
    return tuple(i for i in range(ndim) if i not in axes)


def slabs(x: np.ndarray, axes: tuple, max_elements: int | None = None) -> Iterator[tuple]:
    """``(start, stop, view)``: views of ``x`` that together cover it, each of
    at most ``max_elements`` values (``SLAB_ELEMENTS`` by default) unless a
    single index along every reduced axis is already larger. ``x`` is cut
    along ``axes[0]`` first; where one index of it is too large, each index
    is cut along the next reduced axis, and so on. ``start:stop`` is the
    view's range along ``axes[0]`` (for per-sample weights)."""
    budget = SLAB_ELEMENTS if max_elements is None else max_elements
    yield from _split(x, tuple(axes), 0, budget, None)


def _split(x: np.ndarray, axes: tuple, k: int, budget: int, first_range) -> Iterator[tuple]:
    axis = axes[k]
    n = x.shape[axis]
    per_index = x.size // n if n else 0
    index = [slice(None)] * x.ndim
    if per_index > budget and k + 1 < len(axes):
        for i in range(n):
            index[axis] = slice(i, i + 1)
            rng = (i, i + 1) if k == 0 else first_range
            yield from _split(x[tuple(index)], axes, k + 1, budget, rng)
        return
    step = max(1, budget // max(per_index, 1))
    for start in range(0, n, step):
        stop = min(n, start + step)
        index[axis] = slice(start, stop)
        rng = (start, stop) if k == 0 else first_range
        yield rng[0], rng[1], x[tuple(index)]


def _viewable(x: np.ndarray, axes: tuple) -> bool:
    groups = _layout.plan_groups(x, kept_axes(x.ndim, axes))
    return groups is not None and _layout.fold(x, groups) is not None


def fast_moments(x: np.ndarray, axes: tuple) -> Moments:
    """Moments of every value (NaN/inf propagate) along ``axes``: one native
    call for float32/float64 data the kernels can view in place, else slabs
    (integers, float16, odd layouts and the NumPy backend would otherwise
    copy the data whole)."""
    if _runtime.native_active() and is_float_dtype(x.dtype) and _viewable(x, axes):
        return moments(x, axis=axes)  # no temporary at all
    # (The NumPy backend converts its input to float64 whole: feed it slabs.)
    if not axes or x.size == 0:
        return moments(x, axis=axes)
    work = np.float64 if x.dtype != np.float16 else np.float32
    parts = (moments(s.astype(work), axis=axes) for _, _, s in slabs(x, axes))
    return Moments.combine(parts)


def scan(
    x: np.ndarray, axes: tuple, weights: np.ndarray | None = None, minmax: bool = False
) -> Scan:
    """NaN- and inf-aware statistics of ``x`` along ``axes`` (non-empty).

    ``weights`` (float64, one per index of ``axes[0]``) weight the values;
    NaN and inf values are left out of the moments and counted instead.
    Each slab is reduced with a corrected two-pass in float64.
    """
    kept = kept_axes(x.ndim, axes)
    feature_shape = tuple(x.shape[i] for i in kept)
    first = axes[0]
    w_shape = [1] * x.ndim
    total = None
    nan_count = np.zeros(feature_shape, dtype=np.int64)
    inf_count = np.zeros(feature_shape, dtype=np.int64)
    lo = np.full(feature_shape, np.inf)  # (returned only with minmax)
    hi = np.full(feature_shape, -np.inf)
    for start, stop, s in slabs(x, axes):
        xs = s.astype(np.float64)
        finite = np.isfinite(xs)
        nan = np.isnan(xs)
        nan_count += nan.sum(axis=axes)
        inf_count += (~finite & ~nan).sum(axis=axes)
        if minmax:
            np.minimum(lo, np.min(xs, axis=axes, where=finite, initial=np.inf), out=lo)
            np.maximum(hi, np.max(xs, axis=axes, where=finite, initial=-np.inf), out=hi)
        if weights is None:
            count = finite.sum(axis=axes)
            wv = None
        else:
            w_shape[first] = stop - start
            wv = np.where(finite, weights[start:stop].reshape(w_shape), 0.0)
            count = wv.sum(axis=axes)
        safe = np.where(count > 0, count, 1)
        xz = np.where(finite, xs, 0.0)
        total_s = (xz if wv is None else xz * wv).sum(axis=axes, keepdims=True)
        mean = total_s / np.expand_dims(safe, axes)
        # Corrected two-pass: the weighted mean of the deviations removes the
        # rounding of the first mean.
        np.subtract(xs, mean, out=xs)
        np.copyto(xs, 0.0, where=~finite)
        wd = xs if wv is None else xs * wv
        corr = wd.sum(axis=axes)
        m2 = (wd * xs).sum(axis=axes)
        m2 = np.maximum(m2 - corr * corr / safe, 0.0)
        mean = mean.reshape(feature_shape) + corr / safe
        part = Moments(count, np.where(count > 0, mean, np.nan), np.where(count > 0, m2, np.nan))
        total = part if total is None else total.merge(part)
    if total is None:  # zero-length reduced axis
        zero = np.zeros(feature_shape)
        total = Moments(
            np.zeros(feature_shape, dtype=np.int64 if weights is None else np.float64), zero, zero
        )
    if not minmax:
        return Scan(total, nan_count, inf_count, None, None)
    none = total.count == 0
    lo[none] = np.nan
    hi[none] = np.nan
    return Scan(total, nan_count, inf_count, lo, hi)


def scan_features(x: np.ndarray, axes: tuple, features: np.ndarray) -> Scan | None:
    """:func:`scan` (unweighted) of only the features selected by the boolean
    ``features`` mask, as flat arrays in C order of the feature shape; None
    when the kernels' (A, C, B) view of ``x`` does not exist. A few NaN
    columns then cost a pass over those columns, not over the whole array."""
    groups = _layout.plan_groups(x, kept_axes(x.ndim, axes))
    x3 = None if groups is None else _layout.fold(x, groups)
    if x3 is None:
        return None
    idx = np.flatnonzero(features.reshape(-1))
    along = 0 if x3.shape[0] >= x3.shape[2] else 2
    parts = [scan(s[:, idx, :], (0, 2)) for _, _, s in slabs(x3, (along, 2 - along))]
    return Scan(
        Moments.combine(p.moments for p in parts),
        np.sum([p.nan_count for p in parts], axis=0),
        np.sum([p.inf_count for p in parts], axis=0),
        None,
        None,
    )


def check_weights(sample_weight: ArrayLike, n: int) -> NDArray[np.float64]:
    """``sample_weight`` (a number, or one per sample) as ``n`` finite,
    non-negative float64 weights."""
    if isinstance(sample_weight, numbers.Real) and not isinstance(sample_weight, bool):
        w = np.full(n, real_float(sample_weight, "sample_weight"))
    else:
        w = as_array(sample_weight, "sample_weight")
        if w.dtype.kind not in "biuf":
            raise TypeError(f"sample_weight must hold real numbers, got dtype {w.dtype}")
        w = np.asarray(w, dtype=np.float64)  # no copy when already float64
        if w.ndim != 1 or w.shape[0] != n:
            raise ValueError(
                f"sample_weight should have shape ({n},) (one weight per sample), got {w.shape}"
            )
    if not np.all(np.isfinite(w)):
        raise ValueError("sample_weight contains NaN or infinity")
    if np.any(w < 0):
        raise ValueError("sample_weight must be non-negative")
    return w


def _scatter(sub: Scan, mask: np.ndarray, base: Moments) -> Scan:
    """A full-feature Scan from one of only the ``mask`` features: the other
    features keep ``base`` and count no NaN or inf."""
    flat = mask.reshape(-1)

    def fill(values: np.ndarray, into: np.ndarray) -> np.ndarray:
        out = into.reshape(-1).copy()
        out[flat] = values
        return out.reshape(mask.shape)

    zeros = np.zeros(mask.shape, dtype=np.int64)
    moments = Moments(
        fill(sub.moments.count, base.count),
        fill(sub.moments.mean, base.mean),
        fill(sub.moments.m2, base.m2),
    )
    return Scan(moments, fill(sub.nan_count, zeros), fill(sub.inf_count, zeros), None, None)


def chunk_moments(
    x: np.ndarray, axes: tuple[int, ...], weights: NDArray[np.float64] | None, nan_policy: str
) -> Moments:
    """Moments of the values of ``x`` along ``axes`` (non-empty) under
    :class:`bnfast.Standardizer`'s ``nan_policy``; ValueError on infinity.

    Clean data costs one :func:`fast_moments` call; only where its result is
    not finite are the features scanned again, NaN- and inf-aware."""
    if x.size == 0:
        return scan(x, axes, weights).moments
    if weights is None:
        fast = fast_moments(x, axes)
        bad = ~(np.isfinite(fast.mean) & np.isfinite(fast.m2))
        if not bad.any():
            return fast
    found = None
    if weights is None:
        found = scan_features(x, axes, bad)
        if found is not None:  # scatter the bad features' results back
            found = _scatter(found, bad, fast)
    if found is None:
        found = scan(x, axes, weights)
    if found.inf_count.any():
        where = np.argwhere(found.inf_count.reshape(-1) > 0).ravel()
        raise ValueError(
            f"X contains infinity in {where.size} feature(s) (first: feature "
            f"{int(where[0])}); replace or drop infinite values before fitting"
        )
    has_nan = found.nan_count > 0
    if not has_nan.any():
        # Finite data whose moments overflowed: keep the native result.
        return found.moments if weights is not None else fast
    if nan_policy == "raise":
        raise ValueError(
            f"X contains NaN in {int(has_nan.sum())} feature(s) and nan_policy='raise'"
        )
    result = found.moments
    if weights is None:
        # Clean features keep the (more exact, native) single-call moments.
        result = Moments(
            np.where(bad, result.count, fast.count),
            np.where(bad, result.mean, fast.mean),
            np.where(bad, result.m2, fast.m2),
        )
    if nan_policy == "propagate":
        n_all = (
            math.prod(x.shape[i] for i in axes)
            if weights is None
            else weights.sum() * (math.prod(x.shape[i] for i in axes) // x.shape[axes[0]])
        )
        result = Moments(
            np.where(has_nan, n_all, result.count),
            np.where(has_nan, np.nan, result.mean),
            np.where(has_nan, np.nan, result.m2),
        )
    return result
