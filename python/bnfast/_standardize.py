"""Dataset standardization: a streaming, exact StandardScaler for NumPy."""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, Union, overload

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import _layout, _runtime, _scan
from ._dispatch import dask_ops, is_dask
from ._layout import as_param
from ._moments import Moments
from ._sparse import check_sparse, is_sparse, scale_columns, sparse_moments
from ._standardize_io import Persistence, State, not_saved
from ._standardize_rules import (
    EstimatorParams,
    FittedState,
    NotFittedError,
    check_axis_param,
    check_chunk,
    check_feature_names,
    check_output_dtype,
    constant_features,
    derived_attributes,
    feature_names,
    feature_names_out,
    output_array,
    result_dtype,
)
from ._validate import (
    as_array,
    check_ddof,
    check_out,
    check_real_dtype,
    compute_dtype,
    is_half,
    normal_in,
    normalize_axes,
)

NAN_POLICIES = ("omit", "propagate", "raise")


def _converts_exactly(source: np.dtype[Any], target: np.dtype[Any]) -> bool:
    """Whether every value of ``source`` is exact in ``target`` (uint8 in
    float16, float16 in float32, ...): then the data is converted into the
    output first and standardized there, in the output's precision."""
    if source == target or (
        is_half(source) and target in (np.dtype(np.float32), np.dtype(np.float64))
    ):
        return True
    if target.name == "bfloat16":  # 8 significant bits, float32's range
        return source == np.bool_ or source in (np.dtype(np.uint8), np.dtype(np.int8))
    try:
        return bool(np.can_cast(source, target, casting="safe"))
    except TypeError:  # a dtype NumPy's table does not know (bfloat16 source)
        return False


# Values per slab of a rounding transform (float64 temporaries of 8 MB).
_SLAB_VALUES = 1 << 20


def _sample_slabs(shape: tuple[int, ...], kept: tuple[int, ...]) -> list[tuple[slice, ...]]:
    """Index tuples cutting an array of ``shape`` along its first sample
    (non-kept) axis into slabs of about ``_SLAB_VALUES`` values (at least
    one index each)."""
    sample = [i for i in range(len(shape)) if i not in kept]
    axis = sample[0] if sample else 0
    n = shape[axis] if shape else 1
    per_index = math.prod(shape) // n if n else 0
    step = max(1, _SLAB_VALUES // max(per_index, 1))
    slabs = []
    for start in range(0, n, step):
        index = [slice(None)] * len(shape)
        index[axis] = slice(start, start + step)
        slabs.append(tuple(index))
    return slabs


_S = TypeVar("_S", bound="Standardizer")
_F = TypeVar("_F", np.float32, np.float64)  # transform keeps these dtypes
_SC = TypeVar("_SC", bound=np.generic)  # an output dtype asked for
# The output dtype a Standardizer was made with, for the type checker only:
# Standardizer[None] (dtype=None: the result dtype follows the input's),
# Standardizer[np.float32] for dtype=np.float32 / "float32", and so on.
# Unparametrized annotations mean Standardizer[Any] (the default).
if TYPE_CHECKING:
    from typing_extensions import TypeVar as _TypeVarWithDefault

    _O = _TypeVarWithDefault("_O", default=Any)
else:
    _O = TypeVar("_O")
if TYPE_CHECKING:
    _IntOrBool = Union[np.integer[Any], np.bool_]  # transformed to float64
    AxisLike = Union[int, tuple[int, ...], None]


class Standardizer(EstimatorParams, FittedState, Persistence, Generic[_O]):
    """Per-feature standardization ``(X - mean_) / scale_``, like StandardScaler.

    scikit-learn's StandardScaler semantics, with exact statistics (Welford/Chan
    moments, merged with Chan's formula: fitting chunk by chunk with
    :meth:`partial_fit` gives the result of one :meth:`fit`) in memory bounded
    by a slab of the data. Features whose variance is within rounding noise of
    zero get ``scale_ = 1``, so constant features map to 0, not inf or NaN.

    Parameters
    ----------
    axis : int, tuple of int or None, default 0
        The axes reduced over (the sample axes), as in ``numpy.mean``: ``0``
        for 2-D ``(n_samples, n_features)`` data, ``(0, 2, 3)`` for one mean
        and scale per channel of NCHW images, ``(0, 1, 2)`` for NHWC, ``None``
        for one global mean and scale. The other axes are the features.
    with_mean : bool, default True
        Subtract the mean.
    with_std : bool, default True
        Divide by the standard deviation.
    ddof : int, default 0
        Delta degrees of freedom of the variance: ``M2 / (count - ddof)``.
    nan_policy : {"omit", "propagate", "raise"}, default "omit"
        ``"omit"`` leaves NaNs out of the fit (counts become per feature) and
        keeps them in the output, ``"propagate"`` gives NaN statistics to
        features with NaN, ``"raise"`` refuses NaN. Infinity is always refused.
    copy : bool, default True
        ``False`` lets :meth:`transform` and :meth:`inverse_transform` work in
        place on float32/float64 arrays.
    dtype : dtype or None, default None
        The dtype of what :meth:`transform` and :meth:`inverse_transform`
        return: float32, float64, float16 or bfloat16 (``"bfloat16"`` needs
        ml_dtypes). None keeps float32 input float32 and gives float64 for
        everything else (integers, bool, float16, bfloat16; as scikit-learn
        does for integers). Data that the output dtype holds exactly (uint8
        in float32 or float16, float16 in float32) is standardized in the
        output's precision; other data in its own, a slab at a time, and
        rounded once: no float64 copy of the whole data set.

    Attributes
    ----------
    mean_ : ndarray of float64, shape ``feature_shape_``, or None
        Mean of each feature (NaN for a feature without values); None when
        ``with_mean`` and ``with_std`` are both False.
    var_ : ndarray of float64, shape ``feature_shape_``, or None
        Variance of each feature (NaN for no more than ``ddof`` values); None
        when ``with_std=False``.
    scale_ : ndarray of float64, shape ``feature_shape_``, or None
        ``sqrt(var_)``, or 1 for constant features and undefined variances;
        None when ``with_std=False``.
    n_samples_seen_ : int, float or ndarray of shape ``feature_shape_``
        Values (total weight with ``sample_weight``) per feature: one number
        when all features have the same count, else an int64/float64 array.
    n_features_in_ : int
        Number of features, ``prod(feature_shape_)``.
    feature_shape_ : tuple of int
        The data's shape along the axes not reduced.
    sample_axes_ : tuple of int
        The axes the fit reduced (non-negative, sorted), with which later
        chunks and :meth:`transform` read their input even if ``axis`` has
        changed since (it applies from the next :meth:`fit`). After a fit over
        every axis (``feature_shape_ == ()``) any input shape is accepted.
    moments_ : Moments
        Count, mean and M2 per feature (:class:`bnfast.Moments`).
    feature_names_in_ : ndarray of str, shape (n_features_in_,)
        The column names of a pandas DataFrame fitted per column (``axis=0``),
        when all are strings (scikit-learn's rule); only then. Later
        DataFrames must have these columns in this order.

    See Also
    --------
    bnfast.sklearn.Standardizer : This class as a scikit-learn estimator.
    bnfast.diagnose : Check data before standardizing it.

    Notes
    -----
    Input may be any array-like, a pandas DataFrame (nullable ``Float64``/
    ``Int64`` columns read ``pd.NA`` as NaN, which ``nan_policy`` governs), a
    CPU PyTorch tensor or a DLPack object; results are NumPy arrays. With
    ``with_mean=False``, scipy.sparse CSR/CSC matrices are fitted without
    densifying (implicit zeros count as data) and transformed into sparse
    output of the same format.

    Threads may share one instance: :meth:`partial_fit` computes each chunk's
    statistics in parallel and merges them under the instance's lock (no
    sample is lost), and :meth:`transform` uses the mean and scale of one
    fit. See the README's "Threads" section.

    Examples
    --------
    >>> import numpy as np
    >>> import bnfast
    >>> X = np.array([[1.0, 10.0], [3.0, 10.0], [5.0, 10.0]])
    >>> st = bnfast.Standardizer().fit(X)
    >>> st.mean_, st.scale_  # the constant feature gets scale 1
    (array([ 3., 10.]), array([1.63299316, 1.        ]))
    >>> st.transform(X)[:, 0]
    array([-1.22474487,  0.        ,  1.22474487])

    One mean and scale per channel of NCHW images:

    >>> images = np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2)
    >>> st = bnfast.Standardizer(axis=(0, 2, 3)).fit(images)
    >>> st.feature_shape_, st.mean_
    ((3,), array([ 7.5, 11.5, 15.5]))
    >>> st.transform(images).dtype
    dtype('float32')
    """

    mean_: NDArray[np.float64] | None
    var_: NDArray[np.float64] | None
    scale_: NDArray[np.float64] | None
    n_samples_seen_: int | float | NDArray[np.int64] | NDArray[np.float64]
    n_features_in_: int
    feature_shape_: tuple[int, ...]
    sample_axes_: tuple[int, ...]
    moments_: Moments
    feature_names_in_: NDArray[np.object_]
    _fit_ndim: int

    @overload
    def __init__(
        self: Standardizer[None],
        *,
        axis: AxisLike = 0,
        with_mean: bool = True,
        with_std: bool = True,
        ddof: int = 0,
        nan_policy: Literal["omit", "propagate", "raise"] = "omit",
        copy: bool = True,
        dtype: None = None,
    ) -> None: ...
    @overload
    def __init__(
        self: Standardizer[np.float32],
        *,
        axis: AxisLike = 0,
        with_mean: bool = True,
        with_std: bool = True,
        ddof: int = 0,
        nan_policy: Literal["omit", "propagate", "raise"] = "omit",
        copy: bool = True,
        dtype: Literal["float32"],
    ) -> None: ...
    @overload
    def __init__(
        self: Standardizer[np.float64],
        *,
        axis: AxisLike = 0,
        with_mean: bool = True,
        with_std: bool = True,
        ddof: int = 0,
        nan_policy: Literal["omit", "propagate", "raise"] = "omit",
        copy: bool = True,
        dtype: Literal["float64"],
    ) -> None: ...
    @overload
    def __init__(
        self: Standardizer[np.float16],
        *,
        axis: AxisLike = 0,
        with_mean: bool = True,
        with_std: bool = True,
        ddof: int = 0,
        nan_policy: Literal["omit", "propagate", "raise"] = "omit",
        copy: bool = True,
        dtype: Literal["float16"],
    ) -> None: ...
    @overload
    def __init__(
        self: Standardizer[_SC],
        *,
        axis: AxisLike = 0,
        with_mean: bool = True,
        with_std: bool = True,
        ddof: int = 0,
        nan_policy: Literal["omit", "propagate", "raise"] = "omit",
        copy: bool = True,
        dtype: type[_SC] | np.dtype[_SC],
    ) -> None: ...
    @overload
    def __init__(
        self: Standardizer[Any],
        *,
        axis: AxisLike = 0,
        with_mean: bool = True,
        with_std: bool = True,
        ddof: int = 0,
        nan_policy: Literal["omit", "propagate", "raise"] = "omit",
        copy: bool = True,
        dtype: Any,
    ) -> None: ...

    def __init__(
        self,
        *,
        axis: AxisLike = 0,
        with_mean: bool = True,
        with_std: bool = True,
        ddof: int = 0,
        nan_policy: Literal["omit", "propagate", "raise"] = "omit",
        copy: bool = True,
        dtype: Any = None,
    ) -> None:
        self.axis = axis
        self.with_mean = with_mean
        self.with_std = with_std
        self.ddof = ddof
        self.nan_policy: str = nan_policy
        self.copy = copy
        self.dtype = dtype

    _PARAMS = ("axis", "with_mean", "with_std", "ddof", "nan_policy", "copy", "dtype")

    # -- fitting ------------------------------------------------------------
    def _checked_params(self) -> AxisLike:
        if self.nan_policy not in NAN_POLICIES:
            raise ValueError(
                f"nan_policy must be one of {', '.join(map(repr, NAN_POLICIES))}, "
                f"got {self.nan_policy!r}"
            )
        check_ddof(self.ddof)
        check_output_dtype(self.dtype)
        return check_axis_param(self.axis)

    def _reset(self) -> None:
        for name in (
            "moments_",
            "mean_",
            "var_",
            "scale_",
            "n_samples_seen_",
            "n_features_in_",
            "feature_shape_",
            "sample_axes_",
            "feature_names_in_",
            "_fit_ndim",
        ):
            self.__dict__.pop(name, None)

    def fit(self: _S, X: ArrayLike, y: object = None, sample_weight: ArrayLike | None = None) -> _S:
        """Compute the mean and scale of each feature of ``X``, anew.

        A dask array ``X`` is reduced block by block (exact merges in a
        tree) and the statistics are computed at once; ``transform`` then
        returns lazy dask arrays.

        Parameters
        ----------
        X : array_like of bool, int or float, at least 1-D
            The data; ``axis`` names its sample axes. float32/float64 arrays are
            read in place, other dtypes converted to float64 a slab at a time.
            A DataFrame records ``feature_names_in_``; a scipy.sparse CSR/CSC
            matrix needs ``with_mean=False``.
        y : object, optional
            Ignored.
        sample_weight : array_like of shape (X.shape[sample_axes_[0]],) or float, optional
            One non-negative weight per index of the first sample axis.

        Returns
        -------
        Standardizer
            ``self``, fitted.

        Raises
        ------
        ValueError
            If ``X`` holds no values or infinity, NaN under
            ``nan_policy="raise"``, for a bad parameter or weight, or for
            sparse ``X`` with ``with_mean=True``.
        TypeError
            If ``X`` does not hold real numbers.

        Warns
        -----
        RuntimeWarning
            For features with no more values than ``ddof``.

        Examples
        --------
        >>> import bnfast
        >>> bnfast.Standardizer().fit([[0.0], [2.0]], sample_weight=[1.0, 3.0]).mean_
        array([1.5])
        """
        if is_dask(X):
            return dask_ops().standardizer_fit(self, X, sample_weight, reset=True)
        names = self._names_of(X, "fit", reset=True)
        x: Any = X if is_sparse(X) else as_array(X, "X")
        with self._fit_lock():
            self._reset()
        if math.prod(x.shape) == 0 and len(x.shape) > 0:
            raise ValueError(f"Standardizer.fit: X of shape {x.shape} holds no values")
        return self._fit_chunk(x, sample_weight, reset=True, names=names)

    def partial_fit(
        self: _S, X: ArrayLike, y: object = None, sample_weight: ArrayLike | None = None
    ) -> _S:
        """Merge the statistics of one chunk of data into the fitted ones.

        The merge is exact (Chan's formula); the first call fits. Later chunks
        must have the fitted feature shape and are reduced over
        ``sample_axes_``. Threads may call it on one instance concurrently:
        each chunk's statistics are computed in parallel and merged under the
        instance's lock, so no sample is lost (the order of the merges, which
        may change the last bits, is the order in which chunks finish).

        Parameters
        ----------
        X : array_like of bool, int or float, at least 1-D
            One chunk of the data.
        y : object, optional
            Ignored.
        sample_weight : array_like of shape (X.shape[sample_axes_[0]],) or float, optional
            As for :meth:`fit`.

        Returns
        -------
        Standardizer
            ``self``, fitted to every chunk so far.

        Raises
        ------
        ValueError, TypeError
            As :meth:`fit`; ValueError also for a chunk of other features.

        Examples
        --------
        >>> import numpy as np
        >>> import bnfast
        >>> st = bnfast.Standardizer()
        >>> for chunk in np.split(np.arange(12.0).reshape(6, 2), 3):
        ...     _ = st.partial_fit(chunk)
        >>> st.mean_, st.n_samples_seen_
        (array([5., 6.]), 6)
        """
        if is_dask(X):
            return dask_ops().standardizer_fit(self, X, sample_weight, reset=False)
        names = self._names_of(X, "partial_fit", reset=not hasattr(self, "moments_"))
        x = X if is_sparse(X) else as_array(X, "X")
        return self._fit_chunk(x, sample_weight, reset=False, names=names)

    def _names_of(self, X: object, method: str, reset: bool) -> NDArray[np.object_] | None:
        """The feature names of ``X`` (a DataFrame's string column names, else
        None), checked against ``feature_names_in_`` unless ``reset``. (The
        scikit-learn adapter validates names itself and returns None.)"""
        names = feature_names(X)
        if not reset:
            fitted = self.__dict__.get("feature_names_in_")
            check_feature_names(fitted, names, f"{type(self).__name__}.{method}")
        return names

    def _fit_chunk(
        self: _S,
        x: Any,
        sample_weight: ArrayLike | None,
        reset: bool,
        names: NDArray[np.object_] | None = None,
    ) -> _S:
        """Compute the statistics of chunk ``x`` (an ndarray or CSR/CSC
        matrix) outside the lock, then merge them into the fitted ones
        (``reset``: replace them) under it. ``names``: the feature names a
        first fit records."""
        axis = self._checked_params()
        check_real_dtype(x, "X")
        if x.ndim == 0:
            raise ValueError(
                "Standardizer needs an array with at least one dimension, got a scalar"
            )
        while True:
            with self._fit_lock():
                fitted = not reset and hasattr(self, "moments_")
                # Later chunks are read with the axes of the first fit, even if
                # the axis parameter changed since (it applies from the next fit()).
                axes = self._axes_for(x, "partial_fit") if fitted else normalize_axes(axis, x.ndim)
            if not axes:
                raise ValueError("axis=() reduces over nothing; name the sample axes to reduce")
            feature_shape = tuple(x.shape[i] for i in _scan.kept_axes(x.ndim, axes))
            weights = None
            if sample_weight is not None:
                weights = _scan.check_weights(sample_weight, x.shape[axes[0]])
            check_chunk(x, axes, weights, feature_shape, self.feature_shape_ if fitted else None)
            if is_sparse(x):
                method = "fit" if reset else "partial_fit"
                check_sparse(x, axes, self.with_mean, f"{type(self).__name__}.{method}")
                chunk = sparse_moments(x, weights, self.nan_policy)
            else:
                chunk = _scan.chunk_moments(x, axes, weights, self.nan_policy)
            with self._fit_lock():
                now_fitted = not reset and hasattr(self, "moments_")
                if now_fitted and not fitted:  # another thread fitted first
                    if self._axes_for(x, "partial_fit") != axes:
                        continue  # on other axes: read x again with those
                    check_chunk(
                        x,
                        axes,
                        weights,
                        feature_shape,
                        self.feature_shape_ if now_fitted else None,
                    )
                if now_fitted:
                    chunk = self.moments_.merge(chunk)
                derived, undefined = derived_attributes(
                    chunk, self.ddof, self.with_mean, self.with_std
                )
                # All state at once, then warn: a warning turned into an error
                # must not leave a half-updated estimator.
                self._set_fitted(chunk, x.ndim, axes, feature_shape, derived)
                if not now_fitted and names is not None and axes == (0,) and x.ndim == 2:
                    self.feature_names_in_ = names
            break
        if undefined:
            warnings.warn(
                f"Standardizer: {undefined} feature(s) have no more values than "
                f"ddof={self.ddof}; their variance is NaN and their scale 1",
                RuntimeWarning,
                stacklevel=3,
            )
        return self

    def _set_fitted(
        self,
        moments: Moments,
        ndim: int,
        axes: tuple[int, ...],
        feature_shape: tuple[int, ...],
        derived: dict[str, Any],
    ) -> None:
        self.moments_ = moments
        self._fit_ndim = ndim
        self.sample_axes_ = axes
        self.feature_shape_ = feature_shape
        self.n_features_in_ = math.prod(feature_shape)
        for name, value in derived.items():
            setattr(self, name, value)

    # -- transforming -------------------------------------------------------
    def _prepare(
        self,
        X: ArrayLike,
        out: np.ndarray | None,
        method: str,
    ) -> tuple[np.ndarray, np.ndarray, tuple[int, ...], np.dtype[Any], Any]:
        """``(x, y, kept, work dtype, result)``: the output ``y`` (of the
        ``dtype`` parameter's dtype) holds ``x`` converted to it already,
        unless the conversion would round ``x``: then ``x`` comes back as it
        is and the work dtype is the one to compute in (see _apply)."""
        self._check_fitted(method)
        self._names_of(X, method, reset=False)
        x = as_array(X, "X")
        check_real_dtype(x, "X")
        requested = check_output_dtype(self.dtype)
        axes = self._axes_for(x, method)
        kept = _scan.kept_axes(x.ndim, axes)
        feature_shape = tuple(x.shape[i] for i in kept)
        if feature_shape != self.feature_shape_:
            n = math.prod(feature_shape)
            raise ValueError(
                f"X has {n} features (shape {feature_shape}), but {type(self).__name__} "
                f"was fitted with {self.n_features_in_} features (shape {self.feature_shape_})"
            )
        work = result_dtype(x.dtype)
        dtype = work if requested is None else requested
        func = f"{type(self).__name__}.{method}"
        if dtype != work and not _converts_exactly(x.dtype, dtype):
            # e.g. float64 -> float32, int64 -> float16: compute in `work`,
            # round once into y (slab by slab: no full-size temporary).
            if out is None:
                y = np.empty_like(x, dtype=dtype, order="K")
            else:
                y = check_out(out, x.shape, dtype, func)
            work = compute_dtype(work)  # half input: computed in float32
            return x, y, kept, work, y
        x, y, result = output_array(x, X, out, dtype, self.copy, func)
        return x, y, kept, dtype, result

    def _axes_for(self, x: np.ndarray, method: str) -> tuple[int, ...]:
        """The fitted sample axes, for input ``x`` of a fitted Standardizer.
        Fitted over all axes (one global mean), any shape will do."""
        if len(self.sample_axes_) == self._fit_ndim:
            return tuple(range(x.ndim))
        if x.ndim != self._fit_ndim:
            raise ValueError(
                f"{method}: X has {x.ndim} dimensions, but this Standardizer was fitted on "
                f"{self._fit_ndim}-D data"
            )
        return self.sample_axes_

    @overload  # dtype=None: float32 stays float32, float64 float64
    def transform(
        self: Standardizer[None], X: NDArray[_F], out: NDArray[_F] | None = None
    ) -> NDArray[_F]: ...
    @overload
    def transform(
        self: Standardizer[None],
        X: NDArray[_IntOrBool],
        out: NDArray[np.float64] | None = None,
    ) -> NDArray[np.float64]: ...
    @overload
    def transform(
        self: Standardizer[None], X: ArrayLike, out: NDArray[np.floating[Any]] | None = None
    ) -> NDArray[np.floating[Any]]: ...
    @overload  # an output dtype asked for: that dtype
    def transform(
        self: Standardizer[_SC], X: ArrayLike, out: NDArray[_SC] | None = None
    ) -> NDArray[_SC]: ...

    def transform(self, X: ArrayLike, out: NDArray[Any] | None = None) -> NDArray[Any]:
        """Standardize ``X``: ``(X - mean_) / scale_`` per feature.

        No centring when ``with_mean=False``, no scaling when
        ``with_std=False``; NaN stays NaN.

        Parameters
        ----------
        X : array_like of bool, int or float
            Data of the fitted dimensions and feature shape (any shape after a
            fit over every axis); a DataFrame with the fitted columns; a CSR/CSC
            matrix (``with_mean=False``).
        out : ndarray, optional
            Writable array of the shape of ``X`` and the result dtype for the
            result; may be ``X`` itself.

        Returns
        -------
        ndarray of the shape of ``X``
            The result, of dtype ``dtype``; by default float32 for float32
            input, else float64. ``out`` when
            given, ``X`` itself when ``copy=False`` and ``X`` is float32/float64.
            A NumPy array for DataFrames and tensors; sparse in ``X``'s format
            for sparse ``X``.

        Raises
        ------
        NotFittedError
            Before :meth:`fit`.
        ValueError
            If the features (or DataFrame columns) of ``X`` are not the fitted
            ones, or ``out`` has the wrong shape or is read-only.
        TypeError
            If ``X`` does not hold real numbers, or ``out`` has the wrong dtype.

        Examples
        --------
        >>> import numpy as np
        >>> import bnfast
        >>> st = bnfast.Standardizer().fit(np.array([[1.0], [3.0]]))
        >>> st.transform(np.array([[2.0], [4.0]], dtype=np.float32))
        array([[0.],
               [2.]], dtype=float32)
        """
        if is_dask(X):
            return dask_ops().standardizer_transform(self, X, out)
        if is_sparse(X):
            return self._scale_sparse(X, out, "transform")
        x, y, kept, work, result = self._prepare(X, out, "transform")
        dtype = compute_dtype(work)  # of the kernel parameters
        c = self.n_features_in_
        if not (self.with_mean or self.with_std):
            if y is not x:
                np.copyto(y, x)
            return result
        mean_, scale_ = self._fitted_pair()
        if self.with_std:
            assert scale_ is not None, "fitted with with_std=False"
            inv = 1.0 / scale_
            if not normal_in(inv, dtype):
                # 1 / scale_ leaves dtype's normal range (subnormal data: an
                # inf factor; huge data: a subnormal one losing digits):
                # divide in float64 instead of multiplying by the reciprocal.
                self._divide(x, y, kept, mean_ if self.with_mean else None, scale_)
                return result
        else:
            inv = np.ones(self.feature_shape_)
        zero = np.zeros(c, dtype=dtype)
        assert mean_ is not None, "fitted with neither with_mean nor with_std"
        if self.with_mean:
            hi, lo = _runtime.impl().split_center(mean_.reshape(-1), dtype)
        else:
            hi = lo = None
        self._apply(x, y, kept, hi, lo, as_param(inv, dtype), zero)
        return result

    @overload  # dtype=None: float32 stays float32, float64 float64
    def inverse_transform(
        self: Standardizer[None], X: NDArray[_F], out: NDArray[_F] | None = None
    ) -> NDArray[_F]: ...
    @overload
    def inverse_transform(
        self: Standardizer[None],
        X: NDArray[_IntOrBool],
        out: NDArray[np.float64] | None = None,
    ) -> NDArray[np.float64]: ...
    @overload
    def inverse_transform(
        self: Standardizer[None], X: ArrayLike, out: NDArray[np.floating[Any]] | None = None
    ) -> NDArray[np.floating[Any]]: ...
    @overload  # an output dtype asked for: that dtype
    def inverse_transform(
        self: Standardizer[_SC], X: ArrayLike, out: NDArray[_SC] | None = None
    ) -> NDArray[_SC]: ...

    def inverse_transform(self, X: ArrayLike, out: NDArray[Any] | None = None) -> NDArray[Any]:
        """Undo :meth:`transform`: ``X * scale_ + mean_`` per feature.

        Parameters
        ----------
        X : array_like of bool, int or float
            Standardized data, shaped as for :meth:`transform`.
        out : ndarray, optional
            As for :meth:`transform`.

        Returns
        -------
        ndarray of the shape of ``X``
            The result, of dtype ``dtype``; by default float32 for float32
            input, else float64.

        Raises
        ------
        NotFittedError, ValueError, TypeError
            As :meth:`transform`.

        Examples
        --------
        >>> import bnfast
        >>> st = bnfast.Standardizer().fit([[1.0], [3.0]])
        >>> st.inverse_transform(st.transform([[4.0]]))
        array([[4.]])
        """
        if is_dask(X):
            return dask_ops().standardizer_inverse_transform(self, X, out)
        if is_sparse(X):
            return self._scale_sparse(X, out, "inverse_transform")
        x, y, kept, work, result = self._prepare(X, out, "inverse_transform")
        dtype = compute_dtype(work)  # of the kernel parameters
        c = self.n_features_in_
        if not (self.with_mean or self.with_std):
            if y is not x:
                np.copyto(y, x)
            return result
        mean_, scale_ = self._fitted_pair()
        if self.with_std:
            assert scale_ is not None, "fitted with with_std=False"
            scale = scale_
        else:
            scale = np.ones(c)
        assert mean_ is not None, "fitted with neither with_mean nor with_std"
        shift = mean_ if self.with_mean else np.zeros(c)
        self._apply(x, y, kept, None, None, as_param(scale, dtype), as_param(shift, dtype))
        return result

    def _scale_sparse(self, X: Any, out: object, method: str) -> Any:
        """:meth:`transform` (or :meth:`inverse_transform`) of a CSR/CSC
        matrix: its stored values scaled per column, in its format."""
        self._check_fitted(method)
        self._names_of(X, method, reset=False)
        func = f"{type(self).__name__}.{method}"
        check_real_dtype(X, "X")
        if out is not None:
            raise TypeError(
                f"{func}: out= is not supported for sparse X; the result is a new sparse "
                f"matrix (or X itself with copy=False)"
            )
        if self.sample_axes_ != (0,) or self._fit_ndim != 2:
            raise ValueError(
                f"{func}: sparse X needs a Standardizer fitted per column of 2-D data "
                f"(axis=0); this one was fitted over axes {self.sample_axes_} of "
                f"{self._fit_ndim}-D data"
            )
        check_sparse(X, (0,), self.with_mean, func)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {X.shape[1]} features, but {type(self).__name__} was fitted with "
                f"{self.n_features_in_} features"
            )
        scale_ = self._fitted_pair()[1]
        if self.with_std:
            assert scale_ is not None, "fitted with with_std=False"
            factor = scale_ if method == "inverse_transform" else 1.0 / scale_
        else:
            factor = np.ones(self.n_features_in_)
        return scale_columns(X, factor, result_dtype(X.dtype), self.copy)

    def get_feature_names_out(self, input_features: ArrayLike | None = None) -> NDArray[np.object_]:
        """Get the names of the output features: those of the input, one to one.

        Parameters
        ----------
        input_features : array_like of str, optional
            The input feature names: None for ``feature_names_in_`` when fitted
            on a DataFrame, else ``["x0", "x1", ...]``; if given, they must
            equal ``feature_names_in_`` (when set) and number
            ``n_features_in_``.

        Returns
        -------
        ndarray of object, shape (n_features_in_,)
            The output feature names (scikit-learn's one-to-one rule, so the
            Standardizer can name its outputs in a ColumnTransformer).

        Raises
        ------
        NotFittedError
            Before :meth:`fit`.
        ValueError
            If ``input_features`` does not match the fitted features.

        Examples
        --------
        >>> import bnfast
        >>> bnfast.Standardizer().fit([[1.0, 2.0], [3.0, 5.0]]).get_feature_names_out()
        array(['x0', 'x1'], dtype=object)
        """
        self._check_fitted("get_feature_names_out")
        fitted = self.__dict__.get("feature_names_in_")
        return feature_names_out(fitted, self.n_features_in_, input_features)

    def _fitted_pair(self) -> tuple[NDArray[np.float64] | None, NDArray[np.float64] | None]:
        """``mean_`` and ``scale_`` of one fit (a concurrent partial_fit
        replaces both under the lock)."""
        with self._fit_lock():
            return self.mean_, self.scale_

    @staticmethod
    def _divide(
        x: np.ndarray,
        y: np.ndarray,
        kept: tuple[int, ...],
        mean: np.ndarray | None,
        scale: np.ndarray,
    ) -> None:
        """``y = (x - mean) / scale`` in float64, rounded once to y's dtype, a
        slab of at most ``_scan.SLAB_ELEMENTS`` values at a time (the rare
        path of :meth:`transform` for scales whose reciprocal the kernels'
        dtype cannot hold)."""
        if x.size == 0:
            return
        bshape = tuple(n if i in kept else 1 for i, n in enumerate(x.shape))
        center = 0.0 if mean is None else np.reshape(mean, bshape)
        divisor = np.reshape(scale, bshape)
        axis = next(i for i in range(x.ndim) if i not in kept)
        n = x.shape[axis]
        step = max(1, _scan.SLAB_ELEMENTS // max(1, x.size // n))
        for start in range(0, n, step):
            idx = (slice(None),) * axis + (slice(start, start + step),)
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                y[idx] = (x[idx].astype(np.float64) - center) / divisor

    @staticmethod
    def _apply(
        x: np.ndarray,
        y: np.ndarray,
        kept: tuple[int, ...],
        hi: np.ndarray | None,
        lo: np.ndarray | None,
        scale: np.ndarray,
        shift: np.ndarray,
    ) -> None:
        if x.size == 0:
            return
        if x.dtype != y.dtype:  # a rounding conversion (see _prepare): in slabs
            work = compute_dtype(result_dtype(x.dtype))
            for index in _sample_slabs(x.shape, kept):
                tmp = x[index].astype(work)
                Standardizer._apply(tmp, tmp, kept, hi, lo, scale, shift)
                y[index] = tmp  # rounded once, to nearest
            return
        groups = _layout.canonical_groups(x, kept)
        _layout.apply_elementwise(_runtime.impl().affine, x, y, groups, hi, lo, scale, shift)

    @overload
    def fit_transform(
        self: Standardizer[None],
        X: NDArray[_F],
        y: object = None,
        sample_weight: ArrayLike | None = None,
    ) -> NDArray[_F]: ...
    @overload
    def fit_transform(
        self: Standardizer[None],
        X: NDArray[_IntOrBool],
        y: object = None,
        sample_weight: ArrayLike | None = None,
    ) -> NDArray[np.float64]: ...
    @overload
    def fit_transform(
        self: Standardizer[None],
        X: ArrayLike,
        y: object = None,
        sample_weight: ArrayLike | None = None,
    ) -> NDArray[np.floating[Any]]: ...
    @overload
    def fit_transform(
        self: Standardizer[_SC],
        X: ArrayLike,
        y: object = None,
        sample_weight: ArrayLike | None = None,
    ) -> NDArray[_SC]: ...

    def fit_transform(
        self, X: ArrayLike, y: object = None, sample_weight: ArrayLike | None = None
    ) -> NDArray[Any]:
        """Fit to ``X`` (:meth:`fit`), then standardize it (:meth:`transform`).

        Parameters
        ----------
        X : array_like of bool, int or float, at least 1-D
            The data.
        y : object, optional
            Ignored.
        sample_weight : array_like or float, optional
            As for :meth:`fit`.

        Returns
        -------
        ndarray of the shape of ``X``
            The result, of dtype ``dtype``; by default float32 for float32
            input, else float64.

        Raises
        ------
        ValueError, TypeError
            As :meth:`fit`.

        Examples
        --------
        >>> import bnfast
        >>> bnfast.Standardizer().fit_transform([[1.0], [3.0]])
        array([[-1.],
               [ 1.]])
        """
        return self.fit(X, y, sample_weight).transform(X)

    # -- persistence (save and load: _standardize_io.Persistence) -----------
    def _saved_state(self) -> State:
        self._check_fitted("save")
        return State(
            self.get_params(),
            self._fit_ndim,
            self.sample_axes_,
            self.feature_shape_,
            self.moments_,
            self.__dict__.get("feature_names_in_"),
        )

    @classmethod
    def _from_saved(cls: type[_S], state: State, name: str) -> _S:
        obj = cls()
        try:
            obj.set_params(**state.params)
            obj._checked_params()
            derived, _ = derived_attributes(state.moments, obj.ddof, obj.with_mean, obj.with_std)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise not_saved(name, exc) from None
        obj._set_fitted(state.moments, state.ndim, state.axes, state.feature_shape, derived)
        if state.feature_names is not None:
            obj.feature_names_in_ = state.feature_names
        return obj


__all__ = ["Standardizer", "NotFittedError", "constant_features"]
