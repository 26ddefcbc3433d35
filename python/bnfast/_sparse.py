"""scipy.sparse CSR/CSC input of :class:`bnfast.Standardizer` (``with_mean=False``).

Statistics never densify: the stored values of each column are reduced with
a corrected two-pass in float64 (O(nnz) temporaries), and the column's
implicit zeros -- data like any other value -- are merged in as a block of
zeros with Chan's formula (:meth:`Moments.merge`), which is exact for a block
of known count, mean 0 and M2 0. Transforms scale the stored values only, so
the output is sparse in the input's format.

scipy stays optional: a sparse matrix can only exist once ``scipy.sparse`` is
imported, so :func:`is_sparse` looks it up in ``sys.modules`` and never
imports it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from ._moments import Moments
from ._validate import is_sparse

FORMATS = ("csr", "csc")
__all__ = ["FORMATS", "check_sparse", "is_sparse", "scale_columns", "sparse_moments"]


def check_sparse(x: Any, axes: tuple[int, ...], with_mean: bool, func: str) -> None:
    """Refuse what the sparse path cannot do: other formats, centring (it
    would make every implicit zero non-zero), axes other than the rows."""
    if x.format not in FORMATS:
        raise TypeError(
            f"{func}: X is a scipy.sparse {x.format.upper()} matrix; pass it as CSR or CSC "
            f"(X.tocsr() or X.tocsc())"
        )
    if with_mean:
        raise ValueError(
            f"{func}: cannot center sparse data (every implicit zero would become non-zero); "
            f"use Standardizer(with_mean=False), or X.toarray() if the dense data fits in memory"
        )
    if axes != (0,):
        raise ValueError(
            f"{func}: sparse X is standardized per column (axis=0), got sample axes {axes}"
        )


def _columns_of_stored(x: Any) -> NDArray[np.intp]:
    """The column index of each stored value, in the order of ``x.data``."""
    if x.format == "csr":
        return np.asarray(x.indices, dtype=np.intp)
    return np.repeat(np.arange(x.shape[1], dtype=np.intp), np.diff(x.indptr))


def _rows_of_stored(x: Any) -> NDArray[np.intp]:
    """The row index of each stored value, in the order of ``x.data``."""
    if x.format == "csc":
        return np.asarray(x.indices, dtype=np.intp)
    return np.repeat(np.arange(x.shape[0], dtype=np.intp), np.diff(x.indptr))


def sparse_moments(x: Any, weights: NDArray[np.float64] | None, nan_policy: str) -> Moments:
    """Per-column moments of CSR/CSC ``x`` (implicit zeros included) under
    :class:`bnfast.Standardizer`'s ``nan_policy``; ValueError on infinity."""
    if not x.has_canonical_format:  # duplicates add up: sum them in a copy
        x = x.copy()
        x.sum_duplicates()
    n_rows, n_cols = x.shape
    cols = _columns_of_stored(x)
    data = np.asarray(x.data, dtype=np.float64)
    finite = np.isfinite(data)
    nan = np.isnan(data)
    if not finite.all() and (~finite & ~nan).any():
        bad = np.unique(cols[~finite & ~nan])
        raise ValueError(
            f"X contains infinity in {bad.size} feature(s) (first: feature {int(bad[0])}); "
            f"replace or drop infinite values before fitting"
        )
    has_nan = np.bincount(cols[nan], minlength=n_cols) > 0
    if nan_policy == "raise" and has_nan.any():
        raise ValueError(
            f"X contains NaN in {int(has_nan.sum())} feature(s) and nan_policy='raise'"
        )
    stored_per_col = np.bincount(cols, minlength=n_cols)  # NaN included: not zeros
    if weights is None:
        w_stored = None
        count = np.bincount(cols[finite], minlength=n_cols).astype(np.int64)
        zero_count: NDArray[Any] = (n_rows - stored_per_col).astype(np.int64)
        n_all: Any = n_rows
    else:
        w_stored = weights[_rows_of_stored(x)]
        w_finite = np.where(finite, w_stored, 0.0)
        count = np.bincount(cols, w_finite, minlength=n_cols)
        # The rows without a stored value in a column (a sum of weights,
        # rounded once; exactly 0 where every row is stored).
        n_all = float(weights.sum())
        zero_count = np.where(
            stored_per_col == n_rows,
            0.0,
            np.maximum(n_all - np.bincount(cols, w_stored, minlength=n_cols), 0.0),
        )
    # Corrected two-pass over the stored finite values: the weighted mean
    # of the deviations removes the rounding of the first mean.
    safe = np.where(count > 0, count, 1)
    values = np.where(finite, data, 0.0)
    wv = values if w_stored is None else values * w_finite
    mean = np.bincount(cols, wv, minlength=n_cols) / safe
    dev = np.where(finite, data - mean[cols], 0.0)
    wd = dev if w_stored is None else dev * w_finite
    corr = np.bincount(cols, wd, minlength=n_cols)
    m2 = np.maximum(np.bincount(cols, wd * dev, minlength=n_cols) - corr * corr / safe, 0.0)
    mean = mean + corr / safe
    stored = Moments(count, np.where(count > 0, mean, 0.0), np.where(count > 0, m2, 0.0))
    zeros = np.zeros(n_cols)
    total = stored.merge(Moments(zero_count, zeros, zeros))
    if nan_policy == "propagate" and has_nan.any():
        total = Moments(
            np.where(has_nan, n_all, total.count).astype(total.count.dtype),
            np.where(has_nan, np.nan, total.mean),
            np.where(has_nan, np.nan, total.m2),
        )
    return total


def scale_columns(x: Any, factor: NDArray[np.float64], dtype: np.dtype[Any], copy: bool) -> Any:
    """``x`` with every stored value multiplied by its column's ``factor``
    (rounded to ``dtype``, as the dense path's parameters), in ``dtype`` and
    ``x``'s format; in place on ``x`` when ``copy`` is False and ``x``
    already has ``dtype``."""
    if copy or x.dtype != dtype:
        y = x.astype(dtype, copy=True)
    else:
        y = x
    if y.nnz:
        y.data *= factor.astype(dtype)[_columns_of_stored(y)]
    return y
