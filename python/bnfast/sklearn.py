"""scikit-learn adapter: ``bnfast.sklearn.Standardizer`` is
:class:`bnfast.Standardizer` with scikit-learn's base classes and input
validation (2-D data, feature names, ``set_output``), so it passes
``check_estimator`` and fits in pipelines and grid searches.

scikit-learn is an optional dependency of bnfast; importing this module
without it raises ImportError.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Literal, TypeVar, Union, overload

import numpy as np
from numpy.typing import ArrayLike, NDArray

try:
    from sklearn import get_config
    from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin
    from sklearn.utils.validation import check_is_fitted, validate_data
except ImportError as exc:  # pragma: no cover - exercised without sklearn
    raise ImportError(
        "bnfast.sklearn needs scikit-learn >= 1.6 (pip install scikit-learn); "
        f"the plain bnfast.Standardizer works without it ({exc})"
    ) from None

from . import _standardize
from ._sparse import FORMATS
from ._validate import from_container, is_bfloat16, is_sparse

# Read as they are (float16 too, as scikit-learn's StandardScaler; bfloat16
# as well, see _checked_input); other input is converted to float64.
_FLOATS = (np.float64, np.float32, np.float16)
_S = TypeVar("_S", bound="Standardizer")
_F = TypeVar("_F", np.float32, np.float64)  # transform keeps these dtypes
if TYPE_CHECKING:
    _IntOrBool = Union[np.integer[Any], np.bool_]  # transformed to float64


def _checked_input(est: Any, X: Any, reset: bool, finite: Any) -> Any:
    """``validate_data`` of X, keeping bfloat16 arrays as they are:
    scikit-learn does not know the dtype and would convert them to float64
    (a silent 4x larger result). Their shape and features are validated on a
    uint16 view (no copy); the plain class checks their values (it refuses
    infinity and applies ``nan_policy`` itself). Tensors, DLPack objects
    and foreign namespaces go through :func:`_numpy_input` first."""
    X = _numpy_input(X)
    if isinstance(X, np.ndarray) and is_bfloat16(X.dtype):
        validate_data(est, X.view(np.uint16), reset=reset, dtype=None, ensure_all_finite=False)
        return X
    return validate_data(
        est, X, reset=reset, dtype=_FLOATS, accept_sparse=FORMATS, ensure_all_finite=finite
    )


class Standardizer(
    OneToOneFeatureMixin, TransformerMixin, BaseEstimator, _standardize.Standardizer
):
    """:class:`bnfast.Standardizer` as a scikit-learn transformer.

    Takes 2-D ``(n_samples, n_features)`` data (``axis`` must be 0) --
    array-likes and DataFrames, validated as scikit-learn estimators do
    (feature names, ``set_output``) -- so it passes ``check_estimator`` and
    fits in pipelines and grid searches. Statistics, accuracy and memory
    behaviour are those of :class:`bnfast.Standardizer`, whose methods and
    fitted attributes it has (plus ``feature_names_in_`` for named columns).
    With ``with_mean=False`` it takes scipy.sparse CSR/CSC input, as
    scikit-learn's StandardScaler. CPU PyTorch tensors and DLPack objects are
    read as NumPy arrays; under ``sklearn.config_context(array_api_dispatch=True)``
    only NumPy-backed input is accepted (results are NumPy arrays).

    Parameters
    ----------
    axis : {0, -2}, default 0
        The sample axis of 2-D data.
    with_mean : bool, default True
        Subtract the mean.
    with_std : bool, default True
        Divide by the standard deviation.
    ddof : int, default 0
        Delta degrees of freedom of the variance.
    nan_policy : {"omit", "propagate", "raise"}, default "omit"
        NaN handling of the fit, as in :class:`bnfast.Standardizer`.
    copy : bool, default True
        ``False`` lets :meth:`transform` work in place on float arrays.
    dtype : dtype or None, default None
        The output dtype, as for :class:`bnfast.Standardizer`: None gives
        float32 for float32 input and float64 otherwise.

    Attributes
    ----------
    mean_, var_, scale_, n_samples_seen_, n_features_in_, feature_shape_, \
sample_axes_, moments_
        As for :class:`bnfast.Standardizer`.
    feature_names_in_ : ndarray of str, shape (n_features_in_,)
        Column names of a fitted DataFrame (only then).

    See Also
    --------
    bnfast.Standardizer : The same for any number of dimensions.

    Examples
    --------
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.linear_model import LinearRegression
    >>> from bnfast.sklearn import Standardizer
    >>> model = make_pipeline(Standardizer(), LinearRegression())
    >>> X, y = [[1.0, 10.0], [2.0, 30.0], [3.0, 20.0]], [1.0, 2.0, 3.0]
    >>> model.fit(X, y).predict([[4.0, 20.0]])
    array([4.])
    """

    def __init__(
        self,
        *,
        axis: int = 0,
        with_mean: bool = True,
        with_std: bool = True,
        ddof: int = 0,
        nan_policy: Literal["omit", "propagate", "raise"] = "omit",
        copy: bool = True,
        dtype: Any = None,
    ) -> None:
        super().__init__(
            axis=axis,
            with_mean=with_mean,
            with_std=with_std,
            ddof=ddof,
            nan_policy=nan_policy,
            copy=copy,
            dtype=dtype,
        )

    def _validate(self, X: Any, reset: bool, allow_nan: bool | None = None) -> Any:
        """scikit-learn's validation of ``X`` (feature names included); NaN
        allowed unless ``nan_policy="raise"`` (``allow_nan`` overrides)."""
        if self.axis not in (0, -2):
            raise ValueError(
                f"bnfast.sklearn.Standardizer standardizes the columns of 2-D data (axis=0), "
                f"got axis={self.axis!r}; use bnfast.Standardizer for other axes"
            )
        if allow_nan is None:
            allow_nan = self.nan_policy != "raise"
        return _checked_input(self, X, reset, "allow-nan" if allow_nan else True)

    def _names_of(self, X: object, method: str, reset: bool) -> None:
        # validate_data has recorded or checked the feature names already.
        return None

    def fit(self: _S, X: ArrayLike, y: object = None, sample_weight: ArrayLike | None = None) -> _S:
        """Compute the mean and scale of each column of ``X``, anew.

        Parameters
        ----------
        X : array_like or DataFrame, shape (n_samples, n_features)
            The data (converted to float64 unless float32).
        y : object, optional
            Ignored.
        sample_weight : array_like of shape (n_samples,) or float, optional
            One non-negative weight per sample.

        Returns
        -------
        Standardizer
            ``self``, fitted.

        Raises
        ------
        ValueError
            For data scikit-learn's validation refuses, infinity, NaN under
            ``nan_policy="raise"``, or ``axis`` other than 0.

        Examples
        --------
        >>> from bnfast.sklearn import Standardizer
        >>> Standardizer().fit([[1.0, 2.0], [3.0, 6.0]]).mean_
        array([2., 4.])
        """
        with self._fit_lock():
            self._reset()
        return self._fit_chunk(self._validate(X, reset=True), sample_weight, reset=True)

    def partial_fit(
        self: _S, X: ArrayLike, y: object = None, sample_weight: ArrayLike | None = None
    ) -> _S:
        """Merge the statistics of one chunk of rows into the fitted ones.

        Parameters
        ----------
        X : array_like or DataFrame, shape (n_samples, n_features)
            One chunk of rows.
        y : object, optional
            Ignored.
        sample_weight : array_like of shape (n_samples,) or float, optional
            As for :meth:`fit`.

        Returns
        -------
        Standardizer
            ``self``, fitted to every chunk so far.

        Raises
        ------
        ValueError
            As :meth:`fit`, and for a chunk with other columns.

        Examples
        --------
        >>> from bnfast.sklearn import Standardizer
        >>> st = Standardizer().partial_fit([[1.0]]).partial_fit([[3.0]])
        >>> st.mean_, st.n_samples_seen_
        (array([2.]), 2)
        """
        first = not hasattr(self, "moments_")
        X = self._validate(X, reset=first)
        return super().partial_fit(X, None, sample_weight)

    @overload  # float32 stays float32, float64 float64
    def transform(self, X: NDArray[_F], out: NDArray[_F] | None = None) -> NDArray[_F]: ...
    @overload
    def transform(
        self, X: NDArray[_IntOrBool], out: NDArray[np.float64] | None = None
    ) -> NDArray[np.float64]: ...
    @overload
    def transform(
        self, X: ArrayLike, out: NDArray[np.floating[Any]] | None = None
    ) -> NDArray[np.floating[Any]]: ...

    def transform(
        self, X: ArrayLike, out: NDArray[np.floating[Any]] | None = None
    ) -> NDArray[np.floating[Any]]:
        """Standardize the columns of ``X``: ``(X - mean_) / scale_``.

        Parameters
        ----------
        X : array_like or DataFrame, shape (n_samples, n_features_in_)
            The data; NaN passes through under every ``nan_policy``.
        out : ndarray, optional
            As for :meth:`bnfast.Standardizer.transform`.

        Returns
        -------
        ndarray of shape (n_samples, n_features_in_)
            The result, of dtype ``dtype``; by default float32 for float32
            input, else float64 (a DataFrame
            under ``set_output(transform="pandas")``).

        Raises
        ------
        sklearn.exceptions.NotFittedError
            Before :meth:`fit`.
        ValueError
            For data of other columns.

        Examples
        --------
        >>> from bnfast.sklearn import Standardizer
        >>> Standardizer().fit([[1.0], [3.0]]).transform([[2.0], [5.0]])
        array([[0.],
               [3.]])
        """
        check_is_fitted(self)
        # NaN passes through transform under every nan_policy (it only
        # governs fitting), as in the plain class.
        X = self._validate(X, reset=False, allow_nan=True)
        return super().transform(X, out=out)

    @overload
    def inverse_transform(self, X: NDArray[_F], out: NDArray[_F] | None = None) -> NDArray[_F]: ...
    @overload
    def inverse_transform(
        self, X: NDArray[_IntOrBool], out: NDArray[np.float64] | None = None
    ) -> NDArray[np.float64]: ...
    @overload
    def inverse_transform(
        self, X: ArrayLike, out: NDArray[np.floating[Any]] | None = None
    ) -> NDArray[np.floating[Any]]: ...

    def inverse_transform(
        self, X: ArrayLike, out: NDArray[np.floating[Any]] | None = None
    ) -> NDArray[np.floating[Any]]:
        """Undo :meth:`transform`: ``X * scale_ + mean_`` per column.

        Parameters
        ----------
        X : array_like or DataFrame, shape (n_samples, n_features_in_)
            Standardized data.
        out : ndarray, optional
            As for :meth:`bnfast.Standardizer.transform`.

        Returns
        -------
        ndarray of shape (n_samples, n_features_in_)
            The result, of dtype ``dtype``; by default float32 for float32
            input, else float64.

        Raises
        ------
        sklearn.exceptions.NotFittedError, ValueError
            As :meth:`transform`.

        Examples
        --------
        >>> from bnfast.sklearn import Standardizer
        >>> st = Standardizer().fit([[1.0], [3.0]])
        >>> st.inverse_transform([[3.0]])
        array([[5.]])
        """
        check_is_fitted(self)
        X = self._validate(X, reset=False, allow_nan=True)
        return super().inverse_transform(X, out=out)

    @overload
    def fit_transform(
        self, X: NDArray[_F], y: object = None, sample_weight: ArrayLike | None = None
    ) -> NDArray[_F]: ...
    @overload
    def fit_transform(
        self, X: NDArray[_IntOrBool], y: object = None, sample_weight: ArrayLike | None = None
    ) -> NDArray[np.float64]: ...
    @overload
    def fit_transform(
        self, X: ArrayLike, y: object = None, sample_weight: ArrayLike | None = None
    ) -> NDArray[np.floating[Any]]: ...

    def fit_transform(
        self, X: ArrayLike, y: object = None, sample_weight: ArrayLike | None = None
    ) -> NDArray[np.floating[Any]]:
        """Fit to ``X`` (:meth:`fit`), then standardize it (:meth:`transform`).

        Parameters
        ----------
        X : array_like or DataFrame, shape (n_samples, n_features)
            The data.
        y : object, optional
            Ignored.
        sample_weight : array_like of shape (n_samples,) or float, optional
            As for :meth:`fit`.

        Returns
        -------
        ndarray of shape (n_samples, n_features)
            The result, of dtype ``dtype``; by default float32 for float32
            input, else float64.

        Raises
        ------
        ValueError
            As :meth:`fit`.

        Examples
        --------
        >>> from bnfast.sklearn import Standardizer
        >>> Standardizer().fit_transform([[1.0], [3.0]])
        array([[-1.],
               [ 1.]])
        """
        return self.fit(X, y, sample_weight).transform(X)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.input_tags.sparse = not self.with_mean  # as StandardScaler
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags

    # BaseEstimator's get_params/set_params/__repr__ take precedence over the
    # plain class's (same parameters, scikit-learn's formatting).


def _numpy_input(X: Any) -> Any:
    """``X`` for scikit-learn's validation: torch tensors and DLPack objects
    as the NumPy arrays sharing their memory (bnfast computes with NumPy),
    the rest as given (DataFrames keep their column names). Under
    ``array_api_dispatch=True``, input of another array namespace is refused:
    scikit-learn would then expect results in that namespace."""
    if get_config().get("array_api_dispatch", False) and _foreign_namespace(X):
        raise TypeError(
            f"bnfast.sklearn.Standardizer computes with NumPy: under "
            f"sklearn.config_context(array_api_dispatch=True) it takes NumPy arrays, "
            f"array-likes, DataFrames and scipy.sparse matrices, got "
            f"{type(X).__module__}.{type(X).__name__}; pass np.asarray(X) (X.cpu().numpy() "
            f"for a torch tensor), or use sklearn.preprocessing.StandardScaler to keep "
            f"results in that namespace"
        )
    pd = sys.modules.get("pandas")
    if is_sparse(X) or (pd is not None and isinstance(X, (pd.DataFrame, pd.Series))):
        return X  # scikit-learn's validation reads these (DataFrames: with names)
    return from_container(X, "X")


def _foreign_namespace(X: Any) -> bool:
    """Whether ``X`` belongs to an array namespace other than NumPy's."""
    if isinstance(X, np.ndarray):
        return False
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(X, torch.Tensor):
        return True
    get_namespace = getattr(X, "__array_namespace__", None)
    if get_namespace is None:
        return False
    try:
        namespace = get_namespace()
    except Exception:  # a namespace that cannot even name itself is foreign
        return True
    return getattr(namespace, "__name__", "").split(".")[0] != "numpy"
