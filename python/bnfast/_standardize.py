"""Dataset standardization: a streaming, exact StandardScaler for NumPy."""

from __future__ import annotations

import json
import math
import numbers
import os
import warnings
import zipfile

import numpy as np

from . import _backend, _layout, _scan
from ._common import as_param, split_center
from ._stats import Moments, _check_ddof
from ._validate import as_array, check_out, check_real_dtype, normalize_axes

NAN_POLICIES = ("omit", "propagate", "raise")
_FORMAT = "bnfast.Standardizer"
_FORMAT_VERSION = 1
_EPS = np.finfo(np.float64).eps


class NotFittedError(ValueError, AttributeError):
    """A method that needs fitted statistics was called before ``fit``."""


def constant_features(var: np.ndarray, mean: np.ndarray, count) -> np.ndarray:
    """scikit-learn's rule for features indistinguishable from a constant:
    the variance is within the error bound of the two-pass algorithm
    (Chan, Golub and LeVeque): ``var <= n*eps*var + (n*mean*eps)**2``."""
    n = np.asarray(count, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        return var <= n * _EPS * var + (n * mean * _EPS) ** 2


def _check_axis_param(axis):
    if axis is None:
        return None
    items = axis if isinstance(axis, tuple) else (axis,)
    for a in items:
        if isinstance(a, bool) or not isinstance(a, numbers.Integral):
            raise TypeError(
                f"axis must be an int, a tuple of ints or None, got {axis!r}"
            )
    return axis


def result_dtype(dtype: np.dtype) -> np.dtype:
    """float32 stays float32; everything else is standardized in float64 (as
    scikit-learn)."""
    return np.dtype(np.float32) if dtype == np.float32 else np.dtype(np.float64)


def _check_weights(sample_weight, n: int) -> np.ndarray:
    if isinstance(sample_weight, numbers.Real) and not isinstance(sample_weight, bool):
        w = np.full(n, float(sample_weight))
    else:
        w = as_array(sample_weight, "sample_weight")
        if w.dtype.kind not in "biuf":
            raise TypeError(f"sample_weight must hold real numbers, got dtype {w.dtype}")
        w = np.asarray(w, dtype=np.float64)  # no copy when already float64
        if w.ndim != 1 or w.shape[0] != n:
            raise ValueError(
                f"sample_weight should have shape ({n},) (one weight per sample), "
                f"got {w.shape}"
            )
    if not np.all(np.isfinite(w)):
        raise ValueError("sample_weight contains NaN or infinity")
    if np.any(w < 0):
        raise ValueError("sample_weight must be non-negative")
    return w


def _scatter(sub: "_scan.Scan", mask: np.ndarray, base: Moments) -> "_scan.Scan":
    """A full-feature Scan from one of only the ``mask`` features: the other
    features keep ``base`` and count no NaN or inf."""
    flat = mask.reshape(-1)

    def fill(values, into):
        out = into.reshape(-1).copy()
        out[flat] = values
        return out.reshape(mask.shape)

    zeros = np.zeros(mask.shape, dtype=np.int64)
    moments = Moments(fill(sub.moments.count, base.count), fill(sub.moments.mean, base.mean),
                      fill(sub.moments.m2, base.m2))
    return _scan.Scan(moments, fill(sub.nan_count, zeros), fill(sub.inf_count, zeros), None, None)


def _same_memory(x: np.ndarray, X) -> bool:
    """Whether ``x`` (from as_array) is ``X`` itself or a plain view of all of
    it (an ndarray subclass such as np.memmap), so writing x writes X."""
    if x is X:
        return True
    return (isinstance(X, np.ndarray) and not isinstance(X, np.ma.MaskedArray)
            and x.dtype == X.dtype and x.shape == X.shape and x.strides == X.strides
            and x.__array_interface__["data"][0] == X.__array_interface__["data"][0])


def _plain(value):
    """A JSON-ready copy of a parameter value (NumPy scalars from grids and
    the like become Python numbers)."""
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


class Standardizer:
    """Per-feature standardization ``(X - mean_) / scale_``, fitted exactly
    and in bounded memory, with scikit-learn's StandardScaler semantics.

    ``axis`` names the axes reduced over (the sample axes), as in
    ``numpy.mean``: ``0`` for 2-D (n_samples, n_features) data, ``(0, 2, 3)``
    for one mean and scale per channel of NCHW image batches, ``(0, 1, 2)``
    for NHWC, ``None`` for one global mean and scale. The other axes are the
    features. ``ddof`` is the variance's delta degrees of freedom.

    ``nan_policy``: ``"omit"`` ignores NaNs when fitting (counts become per
    feature) and keeps them in the output, ``"propagate"`` gives NaN
    statistics to features that contain NaN, ``"raise"`` refuses NaN.
    Infinite values are always refused when fitting.

    ``copy=False`` lets ``transform``/``inverse_transform`` work in place on
    float32/float64 arrays. Features whose variance is within rounding noise
    of zero get ``scale_ = 1`` (scikit-learn's rule), so constant features
    map to 0 instead of inf or NaN.

    Fitted attributes: ``mean_``, ``var_``, ``scale_`` (float64, one per
    feature), ``n_samples_seen_``, ``n_features_in_``, ``feature_shape_`` and
    ``moments_`` (a :class:`bnfast.Moments`, mergeable with other chunks).
    """

    def __init__(self, *, axis=0, with_mean=True, with_std=True, ddof=0,
                 nan_policy="omit", copy=True):
        self.axis = axis
        self.with_mean = with_mean
        self.with_std = with_std
        self.ddof = ddof
        self.nan_policy = nan_policy
        self.copy = copy

    # -- scikit-learn estimator protocol ----------------------------------
    _PARAMS = ("axis", "with_mean", "with_std", "ddof", "nan_policy", "copy")

    def get_params(self, deep=True) -> dict:
        return {name: getattr(self, name) for name in self._PARAMS}

    def set_params(self, **params):
        for name, value in params.items():
            if name not in self._PARAMS:
                raise ValueError(
                    f"Invalid parameter {name!r} for {type(self).__name__}; "
                    f"valid parameters are {', '.join(self._PARAMS)}"
                )
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        defaults = Standardizer().get_params()
        changed = [f"{k}={v!r}" for k, v in self.get_params().items() if v != defaults[k]]
        return f"{type(self).__name__}({', '.join(changed)})"

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "moments_")

    # -- fitting ------------------------------------------------------------
    def _checked_params(self):
        if self.nan_policy not in NAN_POLICIES:
            raise ValueError(
                f"nan_policy must be one of {', '.join(map(repr, NAN_POLICIES))}, "
                f"got {self.nan_policy!r}"
            )
        _check_ddof(self.ddof)
        return _check_axis_param(self.axis)

    def _reset(self) -> None:
        for name in ("moments_", "mean_", "var_", "scale_", "n_samples_seen_",
                     "n_features_in_", "feature_shape_", "sample_axes_", "_fit_ndim"):
            self.__dict__.pop(name, None)

    def fit(self, X, y=None, sample_weight=None):
        """Compute the per-feature mean and scale of ``X`` (forgetting any
        earlier fit). ``y`` is ignored. ``sample_weight``: one non-negative
        weight per index of the first reduced axis."""
        self._reset()
        x = as_array(X, "X")
        if x.size == 0 and x.ndim > 0:
            raise ValueError(f"Standardizer.fit: X of shape {x.shape} holds no values")
        return self.partial_fit(x, y, sample_weight)

    def partial_fit(self, X, y=None, sample_weight=None):
        """Merge the statistics of ``X`` into the fitted ones (exactly, with
        Chan's formula), so data can be fitted chunk by chunk."""
        axis = self._checked_params()
        x = as_array(X, "X")
        check_real_dtype(x, "X")
        if x.ndim == 0:
            raise ValueError("Standardizer needs an array with at least one dimension, got a scalar")
        fitted = hasattr(self, "moments_")
        # Later chunks are read with the axes of the first fit, even if the
        # axis parameter changed since (it applies from the next fit()).
        axes = self._axes_for(x, "partial_fit") if fitted else normalize_axes(axis, x.ndim)
        if not axes:
            raise ValueError("axis=() reduces over nothing; name the sample axes to reduce")
        feature_shape = tuple(x.shape[i] for i in _scan.kept_axes(x.ndim, axes))
        if fitted and feature_shape != self.feature_shape_:
            raise ValueError(
                f"X has features of shape {feature_shape}, but this Standardizer was "
                f"fitted on features of shape {self.feature_shape_}"
            )
        weights = None
        if sample_weight is not None:
            weights = _check_weights(sample_weight, x.shape[axes[0]])
        n_samples = math.prod(x.shape[i] for i in axes)
        if not fitted and (n_samples == 0 or (weights is not None and not np.any(weights > 0))):
            what = "no samples" if n_samples == 0 else "zero weight for every sample"
            raise ValueError(
                f"Standardizer: the first chunk has {what} (X of shape {x.shape}); "
                f"nothing to compute statistics from"
            )
        chunk = self._chunk_moments(x, axes, weights)
        if fitted:
            chunk = self.moments_.merge(chunk)
        derived, undefined = self._derived(chunk)
        # All state at once, then warn: a warning turned into an error must
        # not leave a half-updated estimator.
        self.moments_ = chunk
        self._fit_ndim = x.ndim
        self.sample_axes_ = axes
        self.feature_shape_ = feature_shape
        self.n_features_in_ = math.prod(feature_shape)
        for name, value in derived.items():
            setattr(self, name, value)
        if undefined:
            warnings.warn(
                f"Standardizer: {undefined} feature(s) have no more values than "
                f"ddof={self.ddof}; their variance is NaN and their scale 1",
                RuntimeWarning, stacklevel=2,
            )
        return self

    def _chunk_moments(self, x: np.ndarray, axes: tuple, weights) -> Moments:
        """Moments of one chunk under the NaN policy; raises on infinity."""
        if x.size == 0:
            return _scan.scan(x, axes, weights).moments
        if weights is None:
            fast = _scan.fast_moments(x, axes)
            bad = ~(np.isfinite(fast.mean) & np.isfinite(fast.m2))
            if not bad.any():
                return fast
        found = None
        if weights is None:
            found = _scan.scan_features(x, axes, bad)
            if found is not None:  # scatter the bad features' results back
                found = _scatter(found, bad, fast)
        if found is None:
            found = _scan.scan(x, axes, weights)
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
        if self.nan_policy == "raise":
            raise ValueError(
                f"X contains NaN in {int(has_nan.sum())} feature(s) and nan_policy='raise'"
            )
        result = found.moments
        if weights is None:
            # Clean features keep the (more exact, native) single-call moments.
            result = Moments(np.where(bad, result.count, fast.count),
                             np.where(bad, result.mean, fast.mean),
                             np.where(bad, result.m2, fast.m2))
        if self.nan_policy == "propagate":
            n_all = (math.prod(x.shape[i] for i in axes) if weights is None
                     else weights.sum() * (math.prod(x.shape[i] for i in axes) // x.shape[axes[0]]))
            result = Moments(np.where(has_nan, n_all, result.count),
                             np.where(has_nan, np.nan, result.mean),
                             np.where(has_nan, np.nan, result.m2))
        return result

    def _derived(self, m: Moments) -> tuple:
        """scikit-learn's attributes from merged moments, and the number of
        features whose variance is undefined (count <= ddof)."""
        count = m.count
        empty = count == 0
        mean = np.where(empty, np.nan, m.mean)
        dof = count - self.ddof
        with np.errstate(divide="ignore", invalid="ignore"):
            var = np.where(empty | (dof <= 0), np.nan, m.m2 / np.where(dof > 0, dof, 1))
        undefined = ~empty & (dof <= 0)
        with np.errstate(invalid="ignore"):
            scale = np.sqrt(var)
            flat = constant_features(var, mean, count) | undefined
        scale = np.where(flat, 1.0, scale)
        flat_count = count.reshape(-1)
        if flat_count.size and np.all(flat_count == flat_count[0]):
            first = flat_count[0]
            seen = int(first) if count.dtype.kind == "i" else float(first)
        else:
            seen = count.copy()
        derived = {
            "mean_": mean if (self.with_mean or self.with_std) else None,
            "var_": var if self.with_std else None,
            "scale_": scale if self.with_std else None,
            "n_samples_seen_": seen,
        }
        return derived, int(undefined.sum())

    # -- transforming -------------------------------------------------------
    def _check_fitted(self, method: str) -> None:
        if not hasattr(self, "moments_"):
            raise NotFittedError(
                f"This {type(self).__name__} is not fitted yet; call fit or partial_fit "
                f"before {method}"
            )

    def _prepare(self, X, out, method: str):
        self._check_fitted(method)
        x = as_array(X, "X")
        check_real_dtype(x, "X")
        axes = self._axes_for(x, method)
        kept = _scan.kept_axes(x.ndim, axes)
        feature_shape = tuple(x.shape[i] for i in kept)
        if feature_shape != self.feature_shape_:
            n = math.prod(feature_shape)
            raise ValueError(
                f"X has {n} features (shape {feature_shape}), but {type(self).__name__} "
                f"was fitted with {self.n_features_in_} features (shape {self.feature_shape_})"
            )
        dtype = result_dtype(x.dtype)
        if out is not None:
            y = check_out(out, x.shape, dtype, f"{type(self).__name__}.{method}")
        elif not self.copy and x.dtype == dtype and x.flags.writeable and _same_memory(x, X):
            y = x  # copy=False: in place (on X itself, subclasses included), as scikit-learn
        else:
            y = np.empty_like(x, dtype=dtype, order="K")
        result = X if (y is x and out is None and x is not X) else y
        if x.dtype != dtype:
            np.copyto(y, x, casting="unsafe")  # convert once, then work in place
            x = y
        return x, y, kept, dtype, result

    def _axes_for(self, x: np.ndarray, method: str) -> tuple:
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

    def transform(self, X, out=None) -> np.ndarray:
        """``(X - mean_) / scale_`` per feature (no centring when
        ``with_mean=False``, no scaling when ``with_std=False``). float32
        stays float32, other dtypes give float64; NaN stays NaN. ``out`` may
        be ``X`` itself."""
        x, y, kept, dtype, result = self._prepare(X, out, "transform")
        c = self.n_features_in_
        if not (self.with_mean or self.with_std):
            if y is not x:
                np.copyto(y, x)
            return result
        inv = 1.0 / self.scale_ if self.with_std else np.ones(self.feature_shape_)
        zero = np.zeros(c, dtype=dtype)
        if self.with_mean:
            hi, lo = split_center(self.mean_.reshape(-1), dtype)
        else:
            hi = lo = None
        self._apply(x, y, kept, hi, lo, as_param(inv, dtype), zero)
        return result

    def inverse_transform(self, X, out=None) -> np.ndarray:
        """``X * scale_ + mean_`` per feature: undoes :meth:`transform`."""
        x, y, kept, dtype, result = self._prepare(X, out, "inverse_transform")
        c = self.n_features_in_
        if not (self.with_mean or self.with_std):
            if y is not x:
                np.copyto(y, x)
            return result
        scale = self.scale_ if self.with_std else np.ones(c)
        shift = self.mean_ if self.with_mean else np.zeros(c)
        self._apply(x, y, kept, None, None, as_param(scale, dtype), as_param(shift, dtype))
        return result

    @staticmethod
    def _apply(x, y, kept, hi, lo, scale, shift) -> None:
        if x.size == 0:
            return
        groups = _layout.canonical_groups(x, kept)
        _layout.apply_elementwise(_backend.impl().affine, x, y, groups, hi, lo, scale, shift)

    def fit_transform(self, X, y=None, sample_weight=None) -> np.ndarray:
        """``fit(X)`` then ``transform(X)``."""
        return self.fit(X, y, sample_weight).transform(X)

    # -- persistence --------------------------------------------------------
    def save(self, path) -> None:
        """Write the parameters and fitted statistics to a ``.npz`` file
        (NumPy adds the suffix when missing; :meth:`load` finds it either
        way) that loads without pickle."""
        self._check_fitted("save")
        meta = {
            "params": {k: _plain(v) for k, v in self.get_params().items()},
            "ndim": self._fit_ndim,
            "axes": list(self.sample_axes_),
            "feature_shape": list(self.feature_shape_),
        }
        np.savez(
            path,
            format=np.array(_FORMAT),
            version=np.array(_FORMAT_VERSION),
            meta=np.array(json.dumps(meta)),
            count=self.moments_.count,
            mean=self.moments_.mean,
            m2=self.moments_.m2,
        )

    @classmethod
    def load(cls, path) -> "Standardizer":
        """A fitted Standardizer from a file written by :meth:`save`.
        ValueError (naming the file) for anything else."""
        name = os.fspath(path)
        if not os.path.exists(name) and os.path.exists(name + ".npz"):
            name += ".npz"  # as np.savez named it
        if not os.path.exists(name):
            raise FileNotFoundError(f"No such file: {name!r}")

        def refuse(why):
            return ValueError(f"{name} is not a saved bnfast Standardizer ({why})")

        try:
            data = np.load(name, allow_pickle=False)
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
            raise refuse(exc) from None
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise refuse("not an .npz archive")
        try:
            with data:
                missing = {"format", "version", "meta", "count", "mean", "m2"} - set(data.files)
                if missing:
                    raise refuse(f"missing entries {sorted(missing)}")
                fmt, version = data["format"], data["version"]
                if fmt.shape != () or str(fmt) != _FORMAT:
                    raise refuse(f"format is {str(fmt)!r}")
                if version.shape != () or version.dtype.kind not in "iu" or int(version) != _FORMAT_VERSION:
                    raise refuse(f"unsupported version {version!r}")
                meta = json.loads(str(data["meta"]))
                count, mean, m2 = data["count"], data["mean"], data["m2"]
        except (ValueError, TypeError, KeyError, OSError, EOFError, zipfile.BadZipFile) as exc:
            if isinstance(exc, ValueError) and str(exc).startswith(name):
                raise
            raise refuse(exc) from None
        obj = cls()
        try:
            if mean.dtype.kind != "f" or m2.dtype.kind != "f":
                raise TypeError(f"mean/m2 must be floating point, got {mean.dtype}/{m2.dtype}")
            params = dict(meta["params"])
            if isinstance(params.get("axis"), list):
                params["axis"] = tuple(params["axis"])
            obj.set_params(**params)
            obj._checked_params()
            ndim = int(meta["ndim"])
            axes = normalize_axes(tuple(int(a) for a in meta["axes"]), ndim)
            feature_shape = tuple(int(n) for n in meta["feature_shape"])
            if len(feature_shape) != ndim - len(axes) or not axes:
                raise ValueError(f"feature shape {feature_shape} does not fit {ndim}-D data "
                                 f"reduced over axes {axes}")
            moments = Moments(count, mean, m2)
            if moments.shape != feature_shape:
                raise ValueError(f"statistics of shape {moments.shape} for features of "
                                 f"shape {feature_shape}")
            derived, _ = obj._derived(moments)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise refuse(exc) from None
        obj.moments_ = moments
        obj._fit_ndim = ndim
        obj.sample_axes_ = axes
        obj.feature_shape_ = feature_shape
        obj.n_features_in_ = math.prod(feature_shape)
        for attr, value in derived.items():
            setattr(obj, attr, value)
        return obj


__all__ = ["Standardizer", "NotFittedError", "constant_features"]
