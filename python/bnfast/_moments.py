"""Statistics: mean_var, moments and the mergeable Moments value."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable

import numpy as np

from . import _layout, _runtime
from ._validate import as_array, check_ddof, check_real_dtype, normalize_axes


def _work_dtype(dtype: np.dtype) -> tuple:
    """(dtype the kernels read, dtype of the result) for an input dtype."""
    if dtype == np.float32 or dtype == np.float64:
        return dtype, dtype
    if dtype == np.float16:
        return np.dtype(np.float32), dtype
    if dtype.kind == "f":  # longdouble: computed in double
        return np.dtype(np.float64), dtype
    return np.dtype(np.float64), np.dtype(np.float64)  # bool, integers (as np.mean)


def _reduce(x, axis):
    """Shared front end: returns (mean64, m2_64, count, out_shape, result dtype)
    with mean64/m2_64 flat over the kept axes (C order)."""
    x = as_array(x)
    check_real_dtype(x, "x")
    axes = normalize_axes(axis, x.ndim)
    kept = tuple(i for i in range(x.ndim) if i not in axes)
    count = math.prod(x.shape[i] for i in axes)
    work_dtype, result_dtype = _work_dtype(x.dtype)
    n_kept = math.prod(x.shape[i] for i in kept)
    if count == 0 or n_kept == 0:
        return None, None, count, axes, kept, x, result_dtype
    if x.dtype != work_dtype:
        x = x.astype(work_dtype)
    x3, _ = _layout.canonical(x, kept)
    mean, m2 = _runtime.impl().moments(x3)
    return mean, m2, count, axes, kept, x, result_dtype


def _shape_out(x_shape, axes, kept, keepdims) -> tuple:
    if keepdims:
        return tuple(1 if i in axes else n for i, n in enumerate(x_shape))
    return tuple(x_shape[i] for i in kept)


def mean_var(x, axis=None, *, ddof=0, keepdims=False):
    """Mean and variance of ``x`` along ``axis``, in one exact pass over memory.

    NumPy conventions: ``axis`` is None (all axes), an int or a tuple of ints;
    ``keepdims`` keeps reduced axes as size 1; ``var = sum((x - mean)**2) /
    (n - ddof)``. float32 gives float32, float64 gives float64, integers and
    bool give float64. Statistics are accumulated in float64 with a blocked
    two-pass algorithm and rounded once, and are bit-identical for any thread
    count.

    Returns ``(mean, var)``. Raises ValueError for a reduction over zero
    elements, TypeError for complex, object or string arrays.
    """
    ddof = check_ddof(ddof)
    mean, m2, count, axes, kept, x, result_dtype = _reduce(x, axis)
    shape = _shape_out(x.shape, axes, kept, keepdims)
    if count == 0:
        raise ValueError(
            f"mean_var: cannot compute a mean or variance over zero elements "
            f"(array of shape {x.shape}, axis={axis!r})"
        )
    if mean is None:  # nothing kept: empty result
        empty = np.empty(shape, dtype=result_dtype)
        return empty, empty.copy()
    dof = count - ddof
    if dof <= 0:
        warnings.warn("Degrees of freedom <= 0 for slice", RuntimeWarning, stacklevel=2)
        dof = 0
    with np.errstate(divide="ignore", invalid="ignore"):
        var = np.divide(m2, dof, out=m2)  # m2 is ours: no new temporary
    mean_out = mean.reshape(shape).astype(result_dtype, copy=False)
    var_out = var.reshape(shape).astype(result_dtype, copy=False)
    if mean_out.ndim == 0:
        return mean_out[()], var_out[()]
    return mean_out, var_out


def moments(x, axis=None, *, keepdims=False) -> Moments:
    """Mergeable moments (count, mean, M2) of ``x`` along ``axis``.

    Same axis rules as :func:`mean_var`. The result is kept in float64
    whatever the input dtype, so that merging many chunks stays exact. A
    reduction over zero elements gives count 0 (the identity of ``merge``).
    """
    mean, m2, count, axes, kept, x, _ = _reduce(x, axis)
    shape = _shape_out(x.shape, axes, kept, keepdims)
    if mean is None:
        zeros = np.zeros(shape)
        return Moments(np.full(shape, count, dtype=np.int64), zeros, zeros)
    return Moments(np.full(shape, count, dtype=np.int64), mean.reshape(shape), m2.reshape(shape))


class Moments:
    """Count, mean and M2 (sum of squared deviations) of a set of values, per
    slot of an array of statistics.

    ``count`` is int64 (float64 for weighted moments, where it is the total
    weight), ``mean`` and ``m2`` are float64, all of one shape.
    Moments of disjoint sets merge exactly with Chan's parallel formula:
    ``a.merge(b)`` or ``a + b``; ``Moments.combine(iterable)`` merges many in
    order. Instances are immutable values: comparable with ``==`` and
    picklable.
    """

    __slots__ = ("count", "mean", "m2")

    def __init__(self, count, mean, m2):
        mean = np.array(mean, dtype=np.float64)
        m2 = np.array(m2, dtype=np.float64)
        if mean.shape != m2.shape:
            raise ValueError(f"mean has shape {mean.shape} but m2 has shape {m2.shape}")
        count = np.asarray(count)
        if count.dtype.kind in "iu":
            if count.dtype.kind == "u" and np.any(count > np.iinfo(np.int64).max):
                raise ValueError("count does not fit in int64")
            count_dtype = np.int64
        elif count.dtype.kind == "f":  # total weight of weighted samples
            if not np.all(np.isfinite(count)):
                raise ValueError("count (total weight) must be finite")
            count_dtype = np.float64
        else:
            raise TypeError(
                f"count must be integers (or floats for a total weight), got dtype {count.dtype}"
            )
        try:
            count = np.broadcast_to(count, mean.shape).astype(count_dtype)
        except ValueError:
            raise ValueError(
                f"count of shape {count.shape} does not match mean of shape {mean.shape}"
            ) from None
        if np.any(count < 0):
            raise ValueError("count must be non-negative")
        for arr in (count, mean, m2):
            arr.flags.writeable = False
        object.__setattr__(self, "count", count)
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "m2", m2)

    def __setattr__(self, name, value):
        raise AttributeError("Moments is immutable")

    @property
    def shape(self) -> tuple:
        return self.mean.shape

    def var(self, ddof=0) -> np.ndarray:
        """``m2 / (count - ddof)``; NaN or inf where that is not positive."""
        check_ddof(ddof)
        dof = np.maximum(self.count - ddof, 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.m2 / dof

    def std(self, ddof=0) -> np.ndarray:
        return np.sqrt(self.var(ddof))

    def merge(self, other: Moments) -> Moments:
        """Moments of the union of the two sets (Chan et al.)."""
        if not isinstance(other, Moments):
            raise TypeError(f"can only merge Moments with Moments, not {type(other).__name__}")
        if other.shape != self.shape:
            raise ValueError(f"cannot merge Moments of shapes {self.shape} and {other.shape}")
        na, nb = self.count, other.count
        n = na + nb
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            # Equal means merge with delta = 0: exact for constant data.
            delta = np.where(other.mean == self.mean, 0.0, other.mean - self.mean)
            b_frac = nb / np.where(n > 0, n, 1)
            mean = self.mean + delta * b_frac
            m2 = self.m2 + (other.m2 + delta * delta * na * b_frac)
            # inf/NaN data: the mean propagates as NumPy's would, M2 is NaN.
            finite = np.isfinite(self.mean) & np.isfinite(other.mean)
            mean = np.where(finite, mean, self.mean + other.mean)
            m2 = np.where(finite, m2, np.nan)
        mean = np.where(na == 0, other.mean, np.where(nb == 0, self.mean, mean))
        m2 = np.where(na == 0, other.m2, np.where(nb == 0, self.m2, m2))
        return Moments(n, mean, m2)

    __add__ = merge

    @classmethod
    def combine(cls, items: Iterable[Moments]) -> Moments:
        """Merge moments in order; the iterable must not be empty."""
        it = iter(items)
        try:
            total = next(it)
        except StopIteration:
            raise ValueError("Moments.combine needs at least one Moments") from None
        if not isinstance(total, Moments):
            raise TypeError(f"can only combine Moments, not {type(total).__name__}")
        for m in it:
            total = total.merge(m)
        return total

    def __eq__(self, other):
        if not isinstance(other, Moments):
            return NotImplemented
        return (
            self.shape == other.shape
            and np.array_equal(self.count, other.count)
            and np.array_equal(self.mean, other.mean, equal_nan=True)
            and np.array_equal(self.m2, other.m2, equal_nan=True)
        )

    __hash__ = None

    def __reduce__(self):
        return (Moments, (self.count, self.mean, self.m2))

    def __repr__(self) -> str:
        if self.mean.ndim == 0:
            return f"Moments(count={int(self.count)}, mean={float(self.mean)!r}, m2={float(self.m2)!r})"
        return f"Moments(shape={self.shape}, count={self.count!r}, mean={self.mean!r}, m2={self.m2!r})"
