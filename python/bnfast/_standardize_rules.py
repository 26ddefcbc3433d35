"""The conventions of scikit-learn that :class:`bnfast.Standardizer` follows:
its estimator protocol and NotFittedError, the fitted attributes derived
from the moments, which features count as constant, the result dtype, and
when ``copy=False`` works in place."""

from __future__ import annotations

import math
import numbers
import sys
import threading
import warnings
from typing import Any, TypeVar

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

from ._moments import Moments
from ._validate import (
    ACCEPTED_FLOATS,
    check_ddof,
    check_out,
    is_float_dtype,
    resolve_dtype,
)

_EPS = np.finfo(np.float64).eps
_E = TypeVar("_E", bound="EstimatorParams")


class NotFittedError(ValueError, AttributeError):
    """A method that needs fitted statistics was called before ``fit``.

    Raised by :meth:`Standardizer.transform`, :meth:`~Standardizer.inverse_transform`
    and :meth:`~Standardizer.save` of an unfitted :class:`Standardizer`. It
    derives from ``ValueError`` and ``AttributeError``, as scikit-learn's
    ``NotFittedError`` does, so code that catches either keeps working.

    Examples
    --------
    >>> import bnfast
    >>> try:
    ...     bnfast.Standardizer().transform([[1.0, 2.0]])
    ... except bnfast.NotFittedError as exc:
    ...     print(exc)
    This Standardizer is not fitted yet; call fit or partial_fit before transform
    """


class EstimatorParams:
    """scikit-learn's parameter protocol, without scikit-learn: the
    constructor's keyword parameters ``_PARAMS`` are attributes of the same
    names."""

    _PARAMS: tuple[str, ...] = ()

    def __repr__(self) -> str:
        defaults = type(self)().get_params()
        changed = [f"{k}={v!r}" for k, v in self.get_params().items() if v != defaults[k]]
        return f"{type(self).__name__}({', '.join(changed)})"

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor's parameters (scikit-learn's estimator protocol).

        Parameters
        ----------
        deep : bool, default True
            Ignored: no parameter is an estimator.

        Returns
        -------
        dict
            ``{name: value}`` of every parameter.

        Examples
        --------
        >>> import bnfast
        >>> bnfast.Standardizer(ddof=1).get_params()["ddof"]
        1
        """
        return {name: getattr(self, name) for name in self._PARAMS}

    def set_params(self: _E, **params: Any) -> _E:
        """Set constructor parameters; they apply from the next :meth:`fit`.

        Parameters
        ----------
        **params
            New values by name (see :meth:`get_params`).

        Returns
        -------
        Standardizer
            ``self``.

        Raises
        ------
        ValueError
            For a name that is not a parameter.

        Examples
        --------
        >>> import bnfast
        >>> bnfast.Standardizer().set_params(with_mean=False)
        Standardizer(with_mean=False)
        """
        for name, value in params.items():
            if name not in self._PARAMS:
                raise ValueError(
                    f"Invalid parameter {name!r} for {type(self).__name__}; "
                    f"valid parameters are {', '.join(self._PARAMS)}"
                )
            setattr(self, name, value)
        return self


def constant_features(
    var: NDArray[np.float64], mean: NDArray[np.float64], count: ArrayLike
) -> NDArray[np.bool_]:
    """scikit-learn's rule for features indistinguishable from a constant:
    the variance is within the error bound of the two-pass algorithm
    (Chan, Golub and LeVeque): ``var <= n*eps*var + (n*mean*eps)**2``."""
    n = np.asarray(count, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        return var <= n * _EPS * var + (n * mean * _EPS) ** 2


def check_axis_param(axis: Any) -> int | tuple[int, ...] | None:
    """``axis`` as given, if it is an int, a tuple of ints or None."""
    if axis is None:
        return None
    items = axis if isinstance(axis, tuple) else (axis,)
    for a in items:
        if isinstance(a, bool) or not isinstance(a, numbers.Integral):
            raise TypeError(f"axis must be an int, a tuple of ints or None, got {axis!r}")
    return axis


def result_dtype(dtype: DTypeLike) -> np.dtype[Any]:
    """The default output dtype: float32 stays float32; everything else
    (float16 and bfloat16 included: ask for them with ``dtype=``) is
    standardized in float64 (as scikit-learn)."""
    return np.dtype(np.float32) if dtype == np.float32 else np.dtype(np.float64)


def check_output_dtype(dtype: object) -> np.dtype[Any] | None:
    """The ``dtype`` parameter of Standardizer: None (the default rule,
    :func:`result_dtype`) or float32, float64, float16 or bfloat16."""
    if dtype is None:
        return None
    dt = resolve_dtype(dtype)
    if not is_float_dtype(dt):
        raise ValueError(f"dtype must be None or one of {ACCEPTED_FLOATS}, got {dt}")
    return dt


def same_memory(x: np.ndarray, X: object) -> bool:
    """Whether ``x`` (from as_array) is ``X`` itself or a plain view of all of
    it (an ndarray subclass such as np.memmap), so writing x writes X."""
    if x is X:
        return True
    return (
        isinstance(X, np.ndarray)
        and not isinstance(X, np.ma.MaskedArray)
        and x.dtype == X.dtype
        and x.shape == X.shape
        and x.strides == X.strides
        and x.__array_interface__["data"][0] == X.__array_interface__["data"][0]
    )


def output_array(
    x: np.ndarray, X: object, out: np.ndarray | None, dtype: np.dtype[Any], copy: bool, func: str
) -> tuple[np.ndarray, np.ndarray, Any]:
    """``(x, y, result)`` for a transform of ``x`` (``X`` as given) into
    ``dtype``: ``y`` is where to write (``out``, ``x`` itself when ``copy``
    is False and that writes ``X``, else a new array), ``x`` is converted to
    ``dtype`` (in ``y``) when it is not, ``result`` is what to return."""
    if out is not None:
        y = check_out(out, x.shape, dtype, func)
    elif not copy and x.dtype == dtype and x.flags.writeable and same_memory(x, X):
        y = x  # copy=False: in place (on X itself, subclasses included), as scikit-learn
    else:
        y = np.empty_like(x, dtype=dtype, order="K")
    result = X if (y is x and out is None and x is not X) else y
    if x.dtype != dtype:
        np.copyto(y, x, casting="unsafe")  # convert once, then work in place
        x = y
    return x, y, result


def derived_attributes(
    m: Moments, ddof: int, with_mean: bool, with_std: bool
) -> tuple[dict[str, Any], int]:
    """scikit-learn's fitted attributes (``mean_``, ``var_``, ``scale_``,
    ``n_samples_seen_``) from merged moments, and the number of features
    whose variance is undefined (count <= ddof)."""
    count = m.count
    empty = count == 0
    mean = np.where(empty, np.nan, m.mean)
    dof = count - check_ddof(ddof)  # (a Fraction or a huge int as a float)
    with np.errstate(divide="ignore", invalid="ignore"):
        var = np.where(empty | (dof <= 0), np.nan, m.m2 / np.where(dof > 0, dof, 1))
    undefined = ~empty & (dof <= 0)
    with np.errstate(invalid="ignore"):
        scale = np.sqrt(var)
        flat = constant_features(var, mean, count) | undefined
    scale = np.where(flat, 1.0, scale)
    flat_count = count.reshape(-1)
    seen: int | float | np.ndarray
    if flat_count.size and np.all(flat_count == flat_count[0]):
        first = flat_count[0]
        seen = int(first) if count.dtype.kind == "i" else float(first)
    else:
        seen = count.copy()
    derived = {
        "mean_": mean if (with_mean or with_std) else None,
        "var_": var if with_std else None,
        "scale_": scale if with_std else None,
        "n_samples_seen_": seen,
    }
    return derived, int(undefined.sum())


class FittedState:
    """Whether an estimator is fitted, and the per-instance lock of its state.

    The lock is created on first use (the constructor sets parameters only, as
    scikit-learn expects) and left out of pickles and deep copies, which get a
    lock of their own.
    """

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "moments_")

    def _check_fitted(self, method: str) -> None:
        if not hasattr(self, "moments_"):
            raise NotFittedError(
                f"This {type(self).__name__} is not fitted yet; call fit or partial_fit "
                f"before {method}"
            )

    def _fit_lock(self) -> threading.Lock:
        lock: threading.Lock | None = self.__dict__.get("_lock")
        if lock is None:  # setdefault: two threads creating it keep one
            lock = self.__dict__.setdefault("_lock", threading.Lock())
        return lock

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_lock", None)
        return state


def check_chunk(
    x: np.ndarray,
    axes: tuple[int, ...],
    weights: np.ndarray | None,
    feature_shape: tuple[int, ...],
    fitted_shape: tuple[int, ...] | None,
) -> None:
    """Refuse a chunk whose features do not match the fit (``fitted_shape``),
    or a first chunk (``fitted_shape`` None) with nothing to fit."""
    if fitted_shape is not None and feature_shape != fitted_shape:
        raise ValueError(
            f"X has features of shape {feature_shape}, but this Standardizer was "
            f"fitted on features of shape {fitted_shape}"
        )
    n_samples = math.prod(x.shape[i] for i in axes)
    if fitted_shape is None and (
        n_samples == 0 or (weights is not None and not np.any(weights > 0))
    ):
        what = "no samples" if n_samples == 0 else "zero weight for every sample"
        raise ValueError(
            f"Standardizer: the first chunk has {what} (X of shape {x.shape}); "
            f"nothing to compute statistics from"
        )


# -- feature names (scikit-learn's rules for DataFrame columns) --------------


def feature_names(X: object) -> NDArray[np.object_] | None:
    """The column names of a pandas DataFrame ``X`` when all are strings (as
    scikit-learn records them), None for other input or non-string names;
    TypeError for a mix. pandas is never imported: a DataFrame can only
    exist once it is."""
    pd = sys.modules.get("pandas")
    if pd is None or not isinstance(X, pd.DataFrame):
        return None
    names = np.asarray(X.columns, dtype=object)
    is_str = [isinstance(n, str) for n in names]
    if names.size and all(is_str):
        return names
    if any(is_str):
        kinds = sorted({type(n).__name__ for n in names})
        raise TypeError(
            f"Feature names are only supported if all columns have string names, but X's "
            f"column names are of types {kinds}; convert them all to strings "
            f"(X.columns = X.columns.astype(str)) or to another type"
        )
    return None


def check_feature_names(
    fitted: NDArray[np.object_] | None, names: NDArray[np.object_] | None, func: str
) -> None:
    """scikit-learn's check of ``X``'s column names against the fitted ones:
    a ValueError naming the unseen, missing or reordered columns; a warning
    when only one side has names."""
    if fitted is None and names is None:
        return
    if names is None:
        warnings.warn(
            f"{func}: X does not have feature names, but the Standardizer was fitted with "
            f"feature names (feature_names_in_)",
            UserWarning,
            stacklevel=3,
        )
        return
    if fitted is None:
        warnings.warn(
            f"{func}: X has feature names, but the Standardizer was fitted without feature names",
            UserWarning,
            stacklevel=3,
        )
        return
    if len(names) == len(fitted) and np.array_equal(names, fitted):
        return
    unseen = [n for n in names if n not in set(fitted)]
    missing = [n for n in fitted if n not in set(names)]
    if not unseen and not missing:
        why = "the same columns in another order; reorder them: X[st.feature_names_in_]"
    else:
        parts = []
        if unseen:
            parts.append(f"unseen at fit time: {unseen[:5]}")
        if missing:
            parts.append(f"seen at fit time, now missing: {missing[:5]}")
        why = "; ".join(parts)
    raise ValueError(
        f"{func}: the feature names of X should match those passed during fit "
        f"(feature_names_in_): {why}"
    )


def feature_names_out(
    fitted: NDArray[np.object_] | None, n_features: int, input_features: object
) -> NDArray[np.object_]:
    """scikit-learn's names of a one-to-one transformer's outputs."""
    if input_features is None:
        if fitted is not None:
            return fitted.copy()
        return np.asarray([f"x{i}" for i in range(n_features)], dtype=object)
    names = np.asarray(input_features, dtype=object)
    if names.ndim != 1:
        raise ValueError(f"input_features must be 1-D, got shape {names.shape}")
    if fitted is not None and not np.array_equal(names, fitted):
        raise ValueError(
            "input_features is not equal to feature_names_in_; pass None or the fitted names"
        )
    if len(names) != n_features:
        raise ValueError(
            f"input_features should have length equal to the number of features "
            f"({n_features}), got {len(names)}"
        )
    return names
