"""scikit-learn adapter: ``bnfast.sklearn.Standardizer`` is
:class:`bnfast.Standardizer` with scikit-learn's base classes and input
validation (2-D data, feature names, ``set_output``), so it passes
``check_estimator`` and fits in pipelines and grid searches.

scikit-learn is an optional dependency of bnfast; importing this module
without it raises ImportError.
"""

from __future__ import annotations

import numpy as np

try:
    from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin
    from sklearn.utils.validation import check_is_fitted, validate_data
except ImportError as exc:  # pragma: no cover - exercised without sklearn
    raise ImportError(
        "bnfast.sklearn needs scikit-learn >= 1.6 (pip install scikit-learn); "
        f"the plain bnfast.Standardizer works without it ({exc})"
    ) from None

from . import _standardize

_FLOATS = (np.float64, np.float32)


class Standardizer(OneToOneFeatureMixin, TransformerMixin, BaseEstimator,
                   _standardize.Standardizer):
    """:class:`bnfast.Standardizer` as a scikit-learn transformer.

    Takes 2-D ``(n_samples, n_features)`` data (``axis`` must be 0), array-
    likes and DataFrames as scikit-learn estimators do; statistics,
    accuracy and memory behaviour are those of :class:`bnfast.Standardizer`.
    """

    def __init__(self, *, axis=0, with_mean=True, with_std=True, ddof=0,
                 nan_policy="omit", copy=True):
        super().__init__(axis=axis, with_mean=with_mean, with_std=with_std, ddof=ddof,
                         nan_policy=nan_policy, copy=copy)

    def _validate(self, X, reset: bool):
        if self.axis not in (0, -2):
            raise ValueError(
                f"bnfast.sklearn.Standardizer standardizes the columns of 2-D data (axis=0), "
                f"got axis={self.axis!r}; use bnfast.Standardizer for other axes"
            )
        return validate_data(self, X, reset=reset, dtype=_FLOATS,
                             ensure_all_finite="allow-nan" if self.nan_policy != "raise" else True)

    def fit(self, X, y=None, sample_weight=None):
        self._reset()
        return self.partial_fit(X, y, sample_weight)

    def partial_fit(self, X, y=None, sample_weight=None):
        first = not hasattr(self, "moments_")
        X = self._validate(X, reset=first)
        return super().partial_fit(X, None, sample_weight)

    def transform(self, X, out=None):
        check_is_fitted(self)
        # NaN passes through transform under every nan_policy (it only
        # governs fitting), as in the plain class.
        X = validate_data(self, X, reset=False, dtype=_FLOATS, ensure_all_finite="allow-nan")
        return super().transform(X, out=out)

    def inverse_transform(self, X, out=None):
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=_FLOATS, ensure_all_finite="allow-nan")
        return super().inverse_transform(X, out=out)

    def fit_transform(self, X, y=None, sample_weight=None):
        return self.fit(X, y, sample_weight).transform(X)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.input_tags.sparse = False
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags

    # BaseEstimator's get_params/set_params/__repr__ take precedence over the
    # plain class's (same parameters, scikit-learn's formatting).
