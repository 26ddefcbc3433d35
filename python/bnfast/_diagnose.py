"""``bnfast.diagnose``: check a data set before training on it."""

from __future__ import annotations

import math
import os
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

from . import _scan
from ._dispatch import dask_ops, is_dask
from ._files import atomic_write
from ._moments import Moments
from ._standardize_rules import constant_features
from ._table import MAX_ROWS, feature_label, feature_table, format_value
from ._validate import as_array, check_real_dtype, normalize_axes

# A feature's std this many times above or below the median std of the
# others is flagged: inputs on such different scales slow or stall training.
SCALE_RATIO = 1000.0
# Already standardized: every non-constant feature has |mean| and |std - 1|
# within this.
STANDARDIZED_TOL = 0.1
_TABLE_ROWS = MAX_ROWS  # more features than this print as head ... tail


class _Totals(NamedTuple):
    """Per feature: moments of the finite values, NaN and inf counts, min
    and max of the finite values (float64)."""

    moments: Moments
    nan: NDArray[np.int64]
    inf: NDArray[np.int64]
    min: NDArray[np.float64]
    max: NDArray[np.float64]

    def merge(self, other: _Totals) -> _Totals:
        return _Totals(
            self.moments.merge(other.moments),
            self.nan + other.nan,
            self.inf + other.inf,
            np.fmin(self.min, other.min),
            np.fmax(self.max, other.max),
        )


class DiagnoseAccumulator:
    """Statistics of a data set fed chunk by chunk (consecutive slices along
    axis 0, which ``axis`` must reduce when there is more than one chunk)."""

    def __init__(self, axis: int | tuple[int, ...] | None = 0) -> None:
        self.axis = axis
        self._axes: tuple[int, ...] = ()
        self._ndim = 0
        self._shape_rest: tuple[int, ...] = ()
        self._dtype = np.dtype(np.float64)
        self._n_samples = 0
        self._totals: _Totals | None = None
        self._integer_valued = True

    def update(self, chunk: ArrayLike) -> DiagnoseAccumulator:
        """Add the statistics of ``chunk``; returns ``self``."""
        x = as_array(chunk, "X")
        check_real_dtype(x, "X")
        if x.ndim == 0:
            raise ValueError("diagnose needs an array with at least one dimension, got a scalar")
        if self._totals is None:
            self._axes = normalize_axes(self.axis, x.ndim)
            if not self._axes:
                raise ValueError("axis=() reduces over nothing; name the sample axes")
            self._ndim, self._dtype, self._shape_rest = x.ndim, x.dtype, x.shape[1:]
        else:
            self._dtype = np.result_type(self._dtype, x.dtype)  # report the common dtype
            if 0 not in self._axes:
                raise ValueError("chunks are slices along axis 0, so axis must include 0")
            if x.ndim != self._ndim or x.shape[1:] != self._shape_rest:
                raise ValueError(
                    f"chunk of shape {x.shape} does not continue data of shape "
                    f"(..., {', '.join(map(str, self._shape_rest))})"
                )
        axes = self._axes
        s = _scan_chunk(x, axes)
        self._n_samples += math.prod(x.shape[i] for i in axes)
        self._totals = s if self._totals is None else self._totals.merge(s)
        if self._integer_valued and x.dtype.kind == "f":
            self._integer_valued = _integer_valued(x, axes)
        return self

    def report(self) -> DataReport:
        """The :class:`DataReport` of every chunk so far."""
        t = self._totals
        if t is None:
            raise ValueError("no data: call update(chunk) at least once")
        return report_from(t, self._n_samples, self._dtype, self._integer_valued)


def report_from(t: _Totals, n_samples: int, dtype: Any, integer_valued: bool) -> DataReport:
    """The :class:`DataReport` of merged per-feature totals (NumPy chunks,
    or dask blocks merged in a tree): one home for mean and std."""
    m = t.moments
    count = m.count
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, m.mean, np.nan)
        std = np.where(count > 0, np.sqrt(m.m2 / np.where(count > 0, count, 1)), np.nan)
    return DataReport(
        count=count,
        nan_count=t.nan,
        inf_count=t.inf,
        mean=mean,
        std=std,
        minimum=t.min,
        maximum=t.max,
        n_samples=n_samples,
        dtype=dtype,
        integer_valued=integer_valued,
    )


def _scan_chunk(x: np.ndarray, axes: tuple[int, ...]) -> _Totals:
    fast = _scan.fast_moments(x, axes) if x.size else None
    if fast is not None and np.all(np.isfinite(fast.mean)) and np.all(np.isfinite(fast.m2)):
        zeros = np.zeros(fast.shape, dtype=np.int64)
        # No NaN or inf anywhere (either would make a mean or M2 non-finite).
        lo = np.min(x, axis=axes).astype(np.float64)
        hi = np.max(x, axis=axes).astype(np.float64)
        return _Totals(fast, zeros, zeros.copy(), lo, hi)
    s = _scan.scan(x, axes, minmax=True)
    assert s.minimum is not None and s.maximum is not None  # minmax=True
    return _Totals(s.moments, s.nan_count, s.inf_count, s.minimum, s.maximum)


def _integer_valued(x: np.ndarray, axes: tuple[int, ...]) -> bool:
    for _, _, s in _scan.slabs(x, axes):
        finite = s[np.isfinite(s)]
        if not np.array_equal(finite, np.round(finite)):
            return False
    return True


def diagnose(X: ArrayLike, axis: int | tuple[int, ...] | None = 0) -> DataReport:
    """Check data before training on it.

    Per feature: count of finite values, NaN and inf counts, mean, std, min
    and max; flags for constant features, features on very different scales,
    unnormalized image bytes and data that already looks standardized. Memory
    use is bounded by a slab of the data, not its size. A dask array is
    scanned block by block and the report computed at once.

    Parameters
    ----------
    X : array_like of bool, int or float, at least 1-D
        The data.
    axis : int, tuple of int or None, default 0
        The sample axes, as in :class:`bnfast.Standardizer`: the other axes
        are the features (``(0, 2, 3)``: one feature per channel of NCHW
        images; ``None``: all values as one feature).

    Returns
    -------
    DataReport
        The statistics and findings; ``print(report)`` shows them.

    Raises
    ------
    ValueError
        If ``X`` is a scalar or ``axis`` reduces nothing or is out of range.
    TypeError
        If ``X`` does not hold real numbers.

    See Also
    --------
    bnfast.Standardizer : Standardize the data.

    Examples
    --------
    >>> import numpy as np
    >>> import bnfast
    >>> X = np.array([[0.5, 5.0], [1.5, 5.0], [np.nan, 5.0]])
    >>> report = bnfast.diagnose(X)
    >>> report.nan_count, report.constant
    (array([1, 0]), array([False,  True]))
    >>> print(report.table())
    feature  count  nan  inf  mean  std  min  max  flags
    0            2    1    0     1  0.5  0.5  1.5
    1            3    0    0     5    0    5    5  constant
    >>> report.warnings[0]
    '1 NaN value(s) in feature(s) 0'
    """
    if is_dask(X):
        return dask_ops().diagnose(X, axis)
    return DiagnoseAccumulator(axis).update(X).report()


def _field(value: ArrayLike, dtype: type, name: str) -> np.ndarray:
    """A DataReport field as an array of ``dtype``; TypeError naming it otherwise."""
    try:
        return np.asarray(value, dtype=dtype)
    except OverflowError:
        raise ValueError(f"{name} is beyond the range of {np.dtype(dtype)}") from None
    except Exception as exc:  # strings, objects, a failing __array__
        raise TypeError(f"{name} must be real numbers: {exc}") from None


class DataReport:
    """What :func:`diagnose` found about a data set.

    ``print(report)`` shows a table and the findings, :meth:`to_dict` gives
    plain Python values, :meth:`plot` writes a PNG. Made by :func:`diagnose`;
    the arrays below have the feature shape.

    Parameters
    ----------
    count, nan_count, inf_count : array_like of int64
        Finite, NaN and infinite values per feature.
    mean, std, minimum, maximum : array_like of float64
        Statistics of the finite values per feature (NaN where none).
    n_samples : int
        Values per feature (the product of the sample axes' lengths).
    dtype : dtype_like
        The data's dtype.
    integer_valued : bool
        Whether every finite value is an integer.

    Attributes
    ----------
    count, nan_count, inf_count : ndarray of int64, shape ``feature_shape``
        Finite, NaN and infinite values per feature.
    mean, std, min, max : ndarray of float64, shape ``feature_shape``
        Mean, standard deviation (ddof=0), minimum and maximum of the finite
        values of each feature; NaN for a feature without any.
    n_samples : int
        Values per feature, finite or not.
    n_features : int
        Number of features.
    feature_shape : tuple of int
        Shape of the features (the axes not reduced).
    dtype : str
        The data's dtype (the common dtype of every chunk).
    has_nan, has_inf : bool
        Whether any value is NaN, infinite.
    constant : ndarray of bool, shape ``feature_shape``
        Features whose variance is within rounding noise of zero (the rule
        that gives them scale 1 in :class:`bnfast.Standardizer`).
    scale_outliers : ndarray of bool, shape ``feature_shape``
        Features whose std is more than ``SCALE_RATIO`` (1000) times above or
        below the median std of the varying features.
    looks_like_image_bytes : bool
        Integer values in 0..255 (raw image bytes, not yet scaled).
    looks_standardized : bool
        Every varying feature has ``|mean| <= 0.1`` and ``|std - 1| <= 0.1``.
    warnings : list of str
        The findings in words (what ``print`` lists after ``!``).

    See Also
    --------
    diagnose : Makes a DataReport.

    Examples
    --------
    >>> import bnfast
    >>> report = bnfast.diagnose([[0, 128], [255, 7]])
    >>> report
    <DataReport 2 samples x 2 features, 1 warning(s)>
    >>> report.looks_like_image_bytes, report.to_dict()["max"]
    (True, [255.0, 128.0])
    """

    count: NDArray[np.int64]
    nan_count: NDArray[np.int64]
    inf_count: NDArray[np.int64]
    mean: NDArray[np.float64]
    std: NDArray[np.float64]
    min: NDArray[np.float64]
    max: NDArray[np.float64]
    n_samples: int
    n_features: int
    feature_shape: tuple[int, ...]
    dtype: str
    has_nan: bool
    has_inf: bool
    constant: NDArray[np.bool_]
    scale_outliers: NDArray[np.bool_]
    looks_like_image_bytes: bool
    looks_standardized: bool
    warnings: list[str]

    def __init__(
        self,
        *,
        count: ArrayLike,
        nan_count: ArrayLike,
        inf_count: ArrayLike,
        mean: ArrayLike,
        std: ArrayLike,
        minimum: ArrayLike,
        maximum: ArrayLike,
        n_samples: int,
        dtype: DTypeLike,
        integer_valued: bool,
    ) -> None:
        # (No copies: diagnose passes arrays of these dtypes.)
        self.count = count = _field(count, np.int64, "count")
        self.nan_count = nan_count = _field(nan_count, np.int64, "nan_count")
        self.inf_count = inf_count = _field(inf_count, np.int64, "inf_count")
        self.mean = mean = _field(mean, np.float64, "mean")
        self.std = std = _field(std, np.float64, "std")
        self.min = minimum = _field(minimum, np.float64, "minimum")
        self.max = maximum = _field(maximum, np.float64, "maximum")
        self.n_samples = int(n_samples)
        self.dtype = str(np.dtype(dtype))
        self.feature_shape = tuple(mean.shape)
        self.n_features = int(mean.size)
        self.has_nan = bool(np.any(nan_count))
        self.has_inf = bool(np.any(inf_count))
        var = std * std
        self.constant = (count > 0) & constant_features(var, mean, count)
        varying = (count > 0) & ~self.constant & np.isfinite(std)
        self.scale_outliers = np.zeros(mean.shape, dtype=bool)
        if varying.sum() >= 2:
            median = float(np.median(std[varying]))
            ratio = std / median
            self.scale_outliers = varying & ((ratio > SCALE_RATIO) | (ratio < 1 / SCALE_RATIO))
        finite_min = np.nanmin(minimum) if np.any(count > 0) else np.nan
        finite_max = np.nanmax(maximum) if np.any(count > 0) else np.nan
        kind = np.dtype(dtype).kind
        self.looks_like_image_bytes = bool(
            (kind in "iu" or (kind == "f" and integer_valued))
            and finite_min >= 0
            and finite_max <= 255
            and finite_max > 1
        )
        self.looks_standardized = bool(
            varying.any()
            and np.all(np.abs(mean[varying]) <= STANDARDIZED_TOL)
            and np.all(np.abs(std[varying] - 1) <= STANDARDIZED_TOL)
        )
        self.warnings = self._warnings()

    def _index(self, flat: int) -> str:
        return feature_label(self.feature_shape, int(flat))

    def _list(self, mask: NDArray[np.bool_]) -> str:
        idx = np.flatnonzero(mask.reshape(-1))
        shown = ", ".join(self._index(i) for i in idx[:8])
        return shown + (f", ... ({idx.size} in all)" if idx.size > 8 else "")

    def _warnings(self) -> list[str]:
        out = []
        if self.has_nan:
            out.append(
                f"{int(self.nan_count.sum())} NaN value(s) in feature(s) "
                f"{self._list(self.nan_count > 0)}"
            )
        if self.has_inf:
            out.append(
                f"{int(self.inf_count.sum())} infinite value(s) in feature(s) "
                f"{self._list(self.inf_count > 0)}; Standardizer.fit refuses them"
            )
        empty = self.count == 0
        if empty.any():
            out.append(f"feature(s) {self._list(empty)} have no finite values")
        if self.constant.any():
            out.append(
                f"constant or near-constant feature(s) {self._list(self.constant)}: "
                f"they carry no information (Standardizer gives them scale 1)"
            )
        if self.scale_outliers.any():
            out.append(
                f"feature(s) {self._list(self.scale_outliers)} have a std more than "
                f"{SCALE_RATIO:g}x away from the median std: standardize before training"
            )
        if self.looks_like_image_bytes:
            out.append(
                "values are integers in 0..255: this looks like raw image bytes; "
                "scale to [0, 1] or standardize before training"
            )
        if self.looks_standardized:
            out.append("data already looks standardized (mean ~0, std ~1 per feature)")
        return out

    def to_dict(self) -> dict[str, Any]:
        """The report as plain Python values, e.g. for JSON.

        Returns
        -------
        dict
            Every attribute by name: arrays as (nested) lists, the rest as
            ints, floats, bools, str and lists.

        Examples
        --------
        >>> import bnfast
        >>> bnfast.diagnose([[1.0], [3.0]]).to_dict()["mean"]
        [2.0]
        """

        def lst(a: np.ndarray) -> Any:
            return a.tolist()

        return {
            "n_samples": self.n_samples,
            "n_features": self.n_features,
            "feature_shape": list(self.feature_shape),
            "dtype": self.dtype,
            "count": lst(self.count),
            "nan_count": lst(self.nan_count),
            "inf_count": lst(self.inf_count),
            "mean": lst(self.mean),
            "std": lst(self.std),
            "min": lst(self.min),
            "max": lst(self.max),
            "constant": lst(self.constant),
            "scale_outliers": lst(self.scale_outliers),
            "has_nan": self.has_nan,
            "has_inf": self.has_inf,
            "looks_like_image_bytes": self.looks_like_image_bytes,
            "looks_standardized": self.looks_standardized,
            "warnings": list(self.warnings),
        }

    def table(self, max_rows: int = _TABLE_ROWS) -> str:
        """The per-feature table that ``print(report)`` shows.

        Parameters
        ----------
        max_rows : int, default 20
            With more features, the first and last ``max_rows // 2`` rows
            only, with a ``...`` row between.

        Returns
        -------
        str
            One line per feature: its index, count, nan, inf, mean, std, min,
            max and flags (``constant``, ``scale``).

        Examples
        --------
        See :func:`diagnose`.
        """
        return feature_table(
            self.feature_shape,
            [
                ("count", self.count),
                ("nan", self.nan_count),
                ("inf", self.inf_count),
                ("mean", self.mean),
                ("std", self.std),
                ("min", self.min),
                ("max", self.max),
            ],
            flags=[("constant", self.constant), ("scale", self.scale_outliers)],
            max_rows=max_rows,
        )

    def __str__(self) -> str:
        head = (
            f"bnfast.diagnose: {self.n_samples} samples x {self.n_features} features "
            f"(feature shape {self.feature_shape}), dtype {self.dtype}"
        )
        body = self.table()
        if self.n_features > _TABLE_ROWS:
            body += "\n" + self._summary()
        tail = "\n".join(f"! {w}" for w in self.warnings) if self.warnings else "no problems found"
        return f"{head}\n{body}\n{tail}"

    def _summary(self) -> str:
        """Spread of each statistic across features (for wide data)."""
        lines = [f"across all {self.n_features} features: min / median / max"]
        for name, values in (
            ("count", self.count),
            ("mean", self.mean),
            ("std", self.std),
            ("min", self.min),
            ("max", self.max),
        ):
            v = values.reshape(-1).astype(np.float64)
            v = v[np.isfinite(v)]
            if v.size:
                lo, med, hi = np.min(v), np.median(v), np.max(v)
                lines.append(
                    f"  {name:<5} {format_value(lo)} / {format_value(med)} / {format_value(hi)}"
                )
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"<DataReport {self.n_samples} samples x {self.n_features} features, "
            f"{len(self.warnings)} warning(s)>"
        )

    def plot(self, path: str | os.PathLike[str]) -> None:
        """Write a PNG of each feature's mean and std, before and after standardizing.

        Parameters
        ----------
        path : str or os.PathLike
            The PNG file, written atomically (a temporary file in the same
            directory, renamed when complete).

        Raises
        ------
        ImportError
            Without matplotlib (``pip install 'bnfast[plot]'``).
        ValueError
            If ``path`` is a FIFO, a device, a socket or a directory.

        Examples
        --------
        >>> import os, tempfile
        >>> import bnfast
        >>> report = bnfast.diagnose([[1.0, 200.0], [3.0, 100.0]])
        >>> report.plot(os.path.join(tempfile.mkdtemp(), "report.png"))
        """
        try:  # a Figure of its own: the user's pyplot backend stays untouched
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure
        except ImportError:
            raise ImportError(
                "DataReport.plot needs matplotlib: pip install 'bnfast[plot]'"
            ) from None
        mean = self.mean.reshape(-1)
        std = self.std.reshape(-1)
        # After standardization each feature has mean 0 and std 1, except
        # constant features (scale 1: std stays ~0) and empty ones (NaN).
        scale = np.where(self.constant.reshape(-1), 1.0, std)
        with np.errstate(invalid="ignore", divide="ignore"):
            after_std = std / scale
        after_mean = np.where(np.isnan(mean), np.nan, 0.0)
        idx = np.arange(mean.size)
        fig = Figure(figsize=(9, 6))
        FigureCanvasAgg(fig)
        axes = fig.subplots(2, 1, sharex=True)
        for ax, before, after, label in (
            (axes[0], mean, after_mean, "mean"),
            (axes[1], std, after_std, "std"),
        ):
            ax.plot(idx, before, ".", label="before", markersize=4)
            ax.plot(idx, after, ".", label="after standardization", markersize=4)
            ax.set_ylabel(label)
            magnitude = np.abs(before[np.isfinite(before)])
            if magnitude.size and magnitude.max() > 1000 * max(np.median(magnitude), 1e-3):
                ax.set_yscale("symlog", linthresh=1e-3)  # features on very different scales
            ax.legend(loc="best", fontsize="small")
        axes[1].set_xlabel("feature (flat index)")
        fig.suptitle(f"{self.n_samples} samples x {self.n_features} features ({self.dtype})")
        fig.tight_layout()
        with atomic_write(path, "path") as fh:
            fig.savefig(fh, format="png", dpi=100)
