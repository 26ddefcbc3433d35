"""Statistics: mean_var, moments and the mergeable Moments value."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from typing import Any, Literal, NoReturn, Optional, Union, overload

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import _layout, _runtime
from ._dispatch import dask_ops, is_dask
from ._twin.moments import corrected_two_pass
from ._validate import (
    F64Array,
    FloatArray,
    FloatScalar,
    as_array,
    check_ddof,
    check_real_dtype,
    is_half,
    normalize_axes,
)

Axis = Union[int, tuple[int, ...], None]


def _work_dtype(dtype: np.dtype[Any]) -> tuple[np.dtype[Any], np.dtype[Any]]:
    """(dtype the kernels read, dtype of the result) for an input dtype."""
    if dtype == np.float32 or dtype == np.float64:
        return dtype, dtype
    if is_half(dtype):  # float16, bfloat16: read as they are (the kernels widen them)
        return dtype, dtype
    if dtype.kind == "f":  # longdouble: computed in long double (see _reduce)
        return dtype, dtype
    return np.dtype(np.float64), np.dtype(np.float64)  # bool, integers (as np.mean)


def _reduce(
    x: ArrayLike, axis: Axis
) -> tuple[
    Optional[NDArray[np.floating[Any]]],
    Optional[NDArray[np.floating[Any]]],
    int,
    tuple[int, ...],
    tuple[int, ...],
    np.ndarray[Any, Any],
    np.dtype[Any],
]:
    """Shared front end: returns (mean, m2, count, out_shape, result dtype)
    with mean/m2 flat over the kept axes (C order), float64 (long double for
    longdouble input)."""
    x = as_array(x)
    check_real_dtype(x, "x")
    axes = normalize_axes(axis, x.ndim)
    kept = tuple(i for i in range(x.ndim) if i not in axes)
    count = math.prod(x.shape[i] for i in axes)
    work_dtype, result_dtype = _work_dtype(x.dtype)
    n_kept = math.prod(x.shape[i] for i in kept)
    if count == 0 or n_kept == 0:
        return None, None, count, axes, kept, x, result_dtype
    mean: NDArray[np.floating[Any]]
    m2: NDArray[np.floating[Any]]
    if x.dtype.kind in "biu":
        mean, m2 = _slab_moments(x, kept)
        return mean, m2, count, axes, kept, x, result_dtype
    if x.dtype != work_dtype:
        x = x.astype(work_dtype)
    x3, _ = _layout.canonical(x, kept)
    if work_dtype == np.longdouble and work_dtype != np.float64:
        # No kernel has long double: the twin's two-pass in long double keeps
        # every bit of the input's precision (both backends run it).
        mean, m2 = corrected_two_pass(x3)
    else:
        mean, m2 = _runtime.impl().moments(x3)
    return mean, m2, count, axes, kept, x, result_dtype


# Integer and bool input is converted to float64 a slab of at most this many
# values at a time (1 MiB of float64): never the whole array (8x the memory
# of uint8 data).
SLAB_ELEMENTS = 1 << 17


def _slab_moments(x: np.ndarray, kept: tuple[int, ...]) -> tuple[F64Array, F64Array]:
    """Per-kept-slot ``(mean, m2)`` of integer/bool ``x``, converting at most
    :data:`SLAB_ELEMENTS` values to float64 at a time.

    The (A, C, B) view of ``x`` (a copy in x's own dtype only where no view
    exists) is cut into blocks of whole channels (C) and, where a channel
    block holds more than a slab, of A rows and B columns; each block's
    moments come from the moments kernel, and the blocks of one channel
    range merge with Chan's formula in a fixed binary tree (depth log2 of
    the block count, so the rounding stays within a few ulps of the whole
    float64 pass). Results do not depend on the thread count."""
    x3, _ = _layout.canonical(x, kept)
    a_len, c_len, b_len = x3.shape
    b_step = min(b_len, SLAB_ELEMENTS)
    c_step = max(1, min(c_len, SLAB_ELEMENTS // b_step))
    a_step = max(1, min(a_len, SLAB_ELEMENTS // (c_step * b_step)))
    kernel = _runtime.impl().moments
    means, m2s = [], []
    for c0 in range(0, c_len, c_step):
        tree = _MergeTree()
        for a0 in range(0, a_len, a_step):
            for b0 in range(0, b_len, b_step):
                block = x3[a0 : a0 + a_step, c0 : c0 + c_step, b0 : b0 + b_step]
                mean, m2 = kernel(block.astype(np.float64))
                tree.add(Moments(block.shape[0] * block.shape[2], mean, m2))
        total = tree.result()
        means.append(total.mean)
        m2s.append(total.m2)
    if len(means) == 1:
        return np.array(means[0]), np.array(m2s[0])
    return np.concatenate(means), np.concatenate(m2s)


class _MergeTree:
    """Moments merged in a balanced binary tree, in a fixed order, keeping
    only O(log n) partial results (a binary counter of merged runs)."""

    def __init__(self) -> None:
        self._stack: list[tuple[int, Moments]] = []

    def add(self, m: Moments) -> None:
        level = 0
        while self._stack and self._stack[-1][0] == level:
            _, left = self._stack.pop()
            m = left.merge(m)
            level += 1
        self._stack.append((level, m))

    def result(self) -> Moments:
        _, total = self._stack.pop()
        while self._stack:
            _, left = self._stack.pop()
            total = left.merge(total)
        return total


def _shape_out(
    x_shape: tuple[int, ...], axes: tuple[int, ...], kept: tuple[int, ...], keepdims: bool
) -> tuple[int, ...]:
    if keepdims:
        return tuple(1 if i in axes else n for i, n in enumerate(x_shape))
    return tuple(x_shape[i] for i in kept)


@overload
def mean_var(
    x: ArrayLike, axis: None = None, *, ddof: float = 0, keepdims: Literal[False] = False
) -> tuple[FloatScalar, FloatScalar]: ...
@overload
def mean_var(
    x: ArrayLike, axis: Axis = None, *, ddof: float = 0, keepdims: bool = False
) -> tuple[FloatArray, FloatArray]: ...


def mean_var(
    x: ArrayLike, axis: Axis = None, *, ddof: float = 0, keepdims: bool = False
) -> Union[tuple[FloatArray, FloatArray], tuple[FloatScalar, FloatScalar]]:
    """Mean and variance of ``x`` along ``axis``, in one exact pass over memory.

    NumPy conventions: ``var = sum((x - mean)**2) / (n - ddof)``.
    Statistics are accumulated in float64 with a blocked two-pass algorithm
    and rounded once, and are bit-identical for any thread count. A dask
    array gives lazy dask arrays (per-block moments merged in a tree).

    Parameters
    ----------
    x : array_like
        Data of any shape and layout; bool, integer or floating dtype.
    axis : None, int or tuple of ints, optional
        Axes to reduce: None (the default) for all of them; negative axes
        count from the end.
    ddof : float, optional
        Delta degrees of freedom: the divisor is ``n - ddof`` (0 by default;
        1 for the unbiased estimate).
    keepdims : bool, optional
        Keep the reduced axes with size 1 (broadcasts against ``x``).

    Returns
    -------
    mean : ndarray or NumPy scalar
        The shape of ``x`` without the reduced axes (with them as size 1
        when ``keepdims``); a NumPy scalar when that shape is ``()``, as
        NumPy's reductions give (typed as a scalar for ``axis=None``
        without ``keepdims``, else as an array, which a NumPy scalar stands
        in for as a 0-d one). float32 gives float32, float64 gives
        float64, float16, bfloat16 and longdouble keep their dtype (the half
        types are read as they are, accumulated in float64; longdouble is
        computed in long double), integers and bool give float64.
    var : ndarray or NumPy scalar
        Shape and dtype as ``mean``; inf or NaN (with a RuntimeWarning)
        where ``n - ddof <= 0``.

    Raises
    ------
    ValueError
        For a reduction over zero elements, or a bad or repeated axis.
    TypeError
        For complex, object, string or masked arrays, or a non-real ``ddof``.

    See Also
    --------
    moments : The same statistics as a mergeable :class:`Moments` value.

    Examples
    --------
    >>> import numpy as np
    >>> import bnfast
    >>> x = np.array([[1.0, 2.0], [3.0, 6.0]])
    >>> mean, var = bnfast.mean_var(x, axis=0)
    >>> mean, var
    (array([2., 4.]), array([1., 4.]))
    >>> mean, var = bnfast.mean_var(x, ddof=1)
    >>> float(mean), float(var)
    (3.0, 4.666666666666667)
    """
    if is_dask(x):
        return dask_ops().mean_var(x, axis, ddof=ddof, keepdims=keepdims)
    ddof = check_ddof(ddof)
    mean, m2, count, axes, kept, xa, result_dtype = _reduce(x, axis)
    shape = _shape_out(xa.shape, axes, kept, keepdims)
    if count == 0:
        raise ValueError(
            f"mean_var: cannot compute a mean or variance over zero elements "
            f"(array of shape {xa.shape}, axis={axis!r})"
        )
    if mean is None or m2 is None:  # nothing kept: empty result
        empty = np.empty(shape, dtype=result_dtype)
        return empty, empty.copy()
    dof = count - ddof
    if dof <= 0:
        warnings.warn("Degrees of freedom <= 0 for slice", RuntimeWarning, stacklevel=2)
        dof = 0
    with np.errstate(divide="ignore", invalid="ignore"):
        var = np.divide(m2, dof, out=m2)  # m2 is ours: no new temporary
    mean_out: FloatArray = mean.reshape(shape).astype(result_dtype, copy=False)
    var_out: FloatArray = var.reshape(shape).astype(result_dtype, copy=False)
    if mean_out.ndim == 0:
        return mean_out[()], var_out[()]  # NumPy scalars, as NumPy's reductions
    return mean_out, var_out


def moments(x: ArrayLike, axis: Axis = None, *, keepdims: bool = False) -> Moments:
    """Mergeable moments (count, mean, M2) of ``x`` along ``axis``.

    The result is kept in float64 whatever the input dtype (longdouble input
    is reduced in long double, then rounded once to float64), so that merging
    many chunks stays exact; ``Moments.combine`` of the chunks' moments
    equals the moments of their concatenation. A dask array is reduced
    block by block and this (small) result computed at once.

    Parameters
    ----------
    x : array_like
        Data of any shape and layout; bool, integer or floating dtype.
    axis : None, int or tuple of ints, optional
        Axes to reduce, as in :func:`mean_var` (None: all).
    keepdims : bool, optional
        Keep the reduced axes with size 1.

    Returns
    -------
    Moments
        ``count`` (int64), ``mean`` and ``m2`` (float64), of the shape of
        ``x`` without the reduced axes (size 1 with ``keepdims``). A
        reduction over zero elements gives count 0 (the identity of
        :meth:`Moments.merge`).

    Raises
    ------
    ValueError
        For a bad or repeated axis.
    TypeError
        For complex, object, string or masked arrays.

    Examples
    --------
    >>> import numpy as np
    >>> import bnfast
    >>> a = bnfast.moments(np.array([1.0, 2.0, 3.0]))
    >>> b = bnfast.moments(np.array([4.0, 5.0]))
    >>> a + b
    Moments(count=5, mean=3.0, m2=10.0)
    >>> float((a + b).var(ddof=1))
    2.5
    """
    if is_dask(x):
        return dask_ops().moments(x, axis, keepdims=keepdims)
    mean, m2, count, axes, kept, xa, _ = _reduce(x, axis)
    shape = _shape_out(xa.shape, axes, kept, keepdims)
    counts = np.full(shape, count, dtype=np.int64)
    if mean is None or m2 is None:
        zeros = np.zeros(shape)
        return Moments(counts, zeros, zeros)
    return Moments(counts, mean.reshape(shape), m2.reshape(shape))


def _float64_field(value: ArrayLike, name: str) -> F64Array:
    """A Moments field as a float64 array; TypeError naming it otherwise."""
    try:
        return np.array(value, dtype=np.float64)
    except OverflowError:
        raise ValueError(f"{name} is beyond the range of float64") from None
    except Exception as exc:  # strings, objects, a failing __array__
        raise TypeError(f"{name} must be real numbers: {exc}") from None


class Moments:
    """Mergeable count, mean and M2 of sets of values, one set per slot.

    M2 is the sum of squared deviations from the mean. Moments of disjoint sets merge exactly with Chan's parallel formula:
    ``a.merge(b)`` or ``a + b``; ``Moments.combine(iterable)`` merges many in
    order. Instances are immutable values: comparable with ``==`` and
    picklable. :func:`moments` computes them from data.

    Parameters
    ----------
    count : array_like of int or float
        Number of values per slot (int64), or for weighted moments the total
        weight (float64, finite); non-negative, broadcast to ``mean``'s
        shape.
    mean : array_like
        Mean per slot, stored as float64.
    m2 : array_like
        Sum of squared deviations from the mean per slot, stored as float64;
        the same shape as ``mean``.

    Attributes
    ----------
    count : ndarray of int64 or float64
        Read-only.
    mean : ndarray of float64
        Read-only.
    m2 : ndarray of float64
        Read-only.

    Raises
    ------
    ValueError
        If the shapes do not match, or a count is negative, does not fit in
        int64 or (as a weight) is not finite.
    TypeError
        If ``count`` is neither integers nor floats.

    Examples
    --------
    >>> import bnfast
    >>> m = bnfast.Moments(4, 2.5, 5.0)
    >>> m
    Moments(count=4, mean=2.5, m2=5.0)
    >>> float(m.var()), float(m.var(ddof=1))
    (1.25, 1.6666666666666667)
    """

    __slots__ = ("count", "mean", "m2")

    count: NDArray[Union[np.int64, np.float64]]
    mean: F64Array
    m2: F64Array

    def __init__(self, count: ArrayLike, mean: ArrayLike, m2: ArrayLike) -> None:
        mean = _float64_field(mean, "mean")
        m2 = _float64_field(m2, "m2")
        if mean.shape != m2.shape:
            raise ValueError(f"mean has shape {mean.shape} but m2 has shape {m2.shape}")
        try:
            given = np.asarray(count)
        except Exception as exc:  # a failing __array__, ragged lists
            raise TypeError(f"count could not be converted to an array: {exc}") from None
        count_dtype: type[Union[np.int64, np.float64]]
        if given.dtype.kind in "iu":
            if given.dtype.kind == "u" and np.any(given > np.iinfo(np.int64).max):
                raise ValueError("count does not fit in int64")
            count_dtype = np.int64
        elif given.dtype.kind == "f":  # total weight of weighted samples
            if not np.all(np.isfinite(given)):
                raise ValueError("count (total weight) must be finite")
            count_dtype = np.float64
        else:
            raise TypeError(
                f"count must be integers (or floats for a total weight), got dtype {given.dtype}"
            )
        try:
            counts = np.broadcast_to(given, mean.shape).astype(count_dtype)
        except ValueError:
            raise ValueError(
                f"count of shape {given.shape} does not match mean of shape {mean.shape}"
            ) from None
        if np.any(counts < 0):
            raise ValueError("count must be non-negative")
        for arr in (counts, mean, m2):
            arr.flags.writeable = False
        object.__setattr__(self, "count", counts)
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "m2", m2)

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError("Moments is immutable")

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of the statistics (that of ``mean``)."""
        return self.mean.shape

    def var(self, ddof: float = 0) -> F64Array:
        """Variance per slot: ``m2 / (count - ddof)``.

        Parameters
        ----------
        ddof : float, optional
            Delta degrees of freedom (0: population variance, 1: unbiased).

        Returns
        -------
        ndarray
            Float64, of :attr:`shape` (a NumPy scalar, standing in for a 0-d
            array, when the shape is ``()``); inf or NaN where
            ``count - ddof`` is not positive.

        Raises
        ------
        TypeError
            If ``ddof`` is not a real number.
        """
        ddof = check_ddof(ddof)
        dof = np.maximum(self.count - ddof, 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            var: F64Array = self.m2 / dof
        return var

    def std(self, ddof: float = 0) -> F64Array:
        """Standard deviation per slot: ``sqrt(var(ddof))``.

        Parameters
        ----------
        ddof : float, optional
            Delta degrees of freedom, as in :meth:`var`.

        Returns
        -------
        ndarray
            Float64, of :attr:`shape` (see :meth:`var`).
        """
        std: F64Array = np.sqrt(self.var(ddof))
        return std

    def merge(self, other: Moments) -> Moments:
        """Merge with the moments of a disjoint set (Chan et al.).

        Parameters
        ----------
        other : Moments
            Moments of a disjoint set, of the same :attr:`shape`.

        Returns
        -------
        Moments
            Counts add; a slot with count 0 on one side takes the other
            side's values; equal means merge exactly (constant data stays
            exact); inf or NaN means propagate as NumPy's mean would, with
            M2 NaN.

        Raises
        ------
        TypeError
            If ``other`` is not a Moments.
        ValueError
            If the shapes differ.
        """
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
        """Merge moments in order (left to right, with :meth:`merge`).

        Parameters
        ----------
        items : iterable of Moments
            At least one, all of one shape.

        Returns
        -------
        Moments

        Raises
        ------
        ValueError
            If ``items`` is empty or the shapes differ.
        TypeError
            If an item is not a Moments.
        """
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

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Moments):
            return NotImplemented
        return (
            self.shape == other.shape
            and np.array_equal(self.count, other.count)
            and np.array_equal(self.mean, other.mean, equal_nan=True)
            and np.array_equal(self.m2, other.m2, equal_nan=True)
        )

    __hash__ = None  # type: ignore[assignment]

    def __reduce__(self) -> tuple[type[Moments], tuple[Any, Any, Any]]:
        return (Moments, (self.count, self.mean, self.m2))

    def __repr__(self) -> str:
        if self.mean.ndim == 0:
            return f"Moments(count={int(self.count)}, mean={float(self.mean)!r}, m2={float(self.m2)!r})"
        return (
            f"Moments(shape={self.shape}, count={self.count!r}, mean={self.mean!r}, m2={self.m2!r})"
        )
