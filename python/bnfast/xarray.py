"""The ``.bnfast`` accessor of xarray objects.

``import bnfast.xarray`` registers it on :class:`xarray.DataArray` and
:class:`xarray.Dataset`; bnfast itself never imports xarray. Reductions and
standardization name dimensions (``dim="time"``) instead of axes, keep the
other dimensions with their coordinates and the attributes, and stay lazy on
dask-backed data (nothing is computed until the result is).

Examples
--------
>>> import numpy as np
>>> import xarray as xr
>>> import bnfast.xarray
>>> t = xr.DataArray(np.array([[1.0, 2.0], [3.0, 6.0]]), dims=("time", "site"),
...                  coords={"site": ["a", "b"]}, attrs={"units": "K"})
>>> mean, var = t.bnfast.mean_var("time")
>>> mean.values, mean.dims, mean.attrs
(array([2., 4.]), ('site',), {'units': 'K'})
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Any, Literal, Union

import numpy as np
import xarray as xr

from . import _dispatch
from ._moments import mean_var as _mean_var
from ._moments import moments as _moments
from ._standardize import Standardizer

Dims = Union[Hashable, Iterable[Hashable], None]

__all__ = ["DataArrayAccessor", "DatasetAccessor"]


def _dim_names(dim: Hashable | Iterable[Hashable]) -> tuple[Hashable, ...]:
    """``dim`` as a tuple of names: one name (a string or any other hashable
    that is not a sequence of names), or a sequence of them."""
    return (dim,) if isinstance(dim, str) or not isinstance(dim, Iterable) else tuple(dim)


def _dims(obj: xr.DataArray, dim: Dims) -> tuple[Hashable, ...]:
    if dim is None:
        return tuple(obj.dims)
    names = _dim_names(dim)
    missing = [d for d in names if d not in obj.dims]
    if missing:
        raise ValueError(f"dim {missing[0]!r} is not a dimension of this array {tuple(obj.dims)}")
    if not names:
        raise ValueError("dim=() reduces over nothing; name the dimensions to reduce")
    return names


def _reduced_like(obj: xr.DataArray, data: Any, reduced: tuple[Hashable, ...]) -> xr.DataArray:
    """``data`` as a DataArray over the dimensions of ``obj`` not in
    ``reduced``, with the coordinates that only use those dimensions."""
    kept = [d for d in obj.dims if d not in reduced]
    coords = {name: c for name, c in obj.coords.items() if not set(c.dims) & set(reduced)}
    return xr.DataArray(data, dims=kept, coords=coords, attrs=dict(obj.attrs), name=obj.name)


class DataArrayAccessor:
    """The ``.bnfast`` accessor of an :class:`xarray.DataArray`.

    Registered as ``.bnfast`` by ``import bnfast.xarray``.

    Parameters
    ----------
    obj : xarray.DataArray
        The array the accessor belongs to.

    Examples
    --------
    >>> import numpy as np
    >>> import xarray as xr
    >>> import bnfast.xarray
    >>> x = xr.DataArray(np.array([[1.0, 3.0], [3.0, 5.0]]), dims=("time", "site"))
    >>> x.bnfast.standardize("time").values
    array([[-1., -1.],
           [ 1.,  1.]])
    """

    def __init__(self, obj: xr.DataArray) -> None:
        self._obj = obj

    def _axes(self, dim: Dims) -> tuple[tuple[Hashable, ...], tuple[int, ...]]:
        dims = _dims(self._obj, dim)
        return dims, tuple(self._obj.get_axis_num(d) for d in dims)

    def mean_var(self, dim: Dims = None, *, ddof: float = 0) -> tuple[xr.DataArray, xr.DataArray]:
        """Mean and variance over ``dim`` (:func:`bnfast.mean_var`).

        Parameters
        ----------
        dim : str or sequence of str, optional
            The dimensions to reduce; all of them by default.
        ddof : float, optional
            Delta degrees of freedom of the variance.

        Returns
        -------
        mean : xarray.DataArray
            Over the other dimensions, with their coordinates and the
            attributes; lazy when the data are a dask array.
        var : xarray.DataArray
            The variance, as ``mean``.
        """
        dims, axes = self._axes(dim)
        mean, var = _mean_var(self._obj.data, axis=axes, ddof=ddof)
        return _reduced_like(self._obj, mean, dims), _reduced_like(self._obj, var, dims)

    def moments(self, dim: Dims = None) -> xr.Dataset:
        """Mergeable moments over ``dim`` (:func:`bnfast.moments`), as a Dataset.

        Parameters
        ----------
        dim : str or sequence of str, optional
            The dimensions to reduce; all of them by default.

        Returns
        -------
        xarray.Dataset
            Variables ``count`` (int64), ``mean`` and ``m2`` (float64) over
            the other dimensions, with their coordinates and the attributes;
            lazy on dask-backed data. ``bnfast.Moments(ds.count, ds.mean,
            ds.m2)`` turns it into a :class:`bnfast.Moments` for merging.
        """
        dims, axes = self._axes(dim)
        data = self._obj.data
        if _dispatch.is_dask(data):
            packed = _dispatch.dask_ops().lazy_moments(data, axes)
            count, mean, m2 = (packed[..., k] for k in range(3))
            count = count.astype(np.int64)
        else:
            m = _moments(data, axis=axes)
            count, mean, m2 = m.count, m.mean, m.m2
        variables = {
            name: _reduced_like(self._obj, v, dims).rename(name)
            for name, v in (("count", count), ("mean", mean), ("m2", m2))
        }
        return xr.Dataset(variables, attrs=dict(self._obj.attrs))

    def standardize(
        self,
        dim: Dims = None,
        *,
        ddof: int = 0,
        nan_policy: Literal["omit", "propagate", "raise"] = "omit",
        with_mean: bool = True,
        with_std: bool = True,
    ) -> xr.DataArray:
        """Standardize over ``dim``: ``(x - mean(dim)) / std(dim)`` per slot.

        As :class:`bnfast.Standardizer` with ``axis`` the axes of ``dim``
        (``nan_policy``, constant slots scaled by 1, float32 kept).

        Parameters
        ----------
        dim : str or sequence of str, optional
            The dimensions the statistics are taken over; all by default.
        ddof : int, optional
            Delta degrees of freedom of the variance.
        nan_policy : {"omit", "propagate", "raise"}, optional
            NaN handling, as :class:`bnfast.Standardizer`.
        with_mean, with_std : bool, optional
            Centre, scale.

        Returns
        -------
        xarray.DataArray
            Same dimensions, coordinates, attributes and name; lazy on
            dask-backed data (the statistics are a tree reduction computed
            with the result).
        """
        _, axes = self._axes(dim)
        data = self._obj.data
        if _dispatch.is_dask(data):
            out = _dispatch.dask_ops().standardize(
                data,
                axes,
                ddof=ddof,
                nan_policy=nan_policy,
                with_mean=with_mean,
                with_std=with_std,
            )
        else:
            st = Standardizer(
                axis=axes, ddof=ddof, nan_policy=nan_policy, with_mean=with_mean, with_std=with_std
            )
            out = st.fit_transform(np.asarray(data))
        return self._obj.copy(data=out)


class DatasetAccessor:
    """The ``.bnfast`` accessor of an :class:`xarray.Dataset`.

    Each numeric data variable that has all the named dimensions is
    reduced or standardized; the others are left out (or unchanged).

    Registered as ``.bnfast`` by ``import bnfast.xarray``.

    Parameters
    ----------
    obj : xarray.Dataset
        The dataset the accessor belongs to.

    Examples
    --------
    >>> import numpy as np
    >>> import xarray as xr
    >>> import bnfast.xarray
    >>> ds = xr.Dataset({"t": (("time", "site"), np.array([[1.0, 3.0], [3.0, 5.0]]))})
    >>> ds.bnfast.standardize("time")["t"].values
    array([[-1., -1.],
           [ 1.,  1.]])
    """

    def __init__(self, obj: xr.Dataset) -> None:
        self._obj = obj

    def _variables(self, dim: Dims) -> list[Hashable]:
        names = None if dim is None else _dim_names(dim)
        return [
            k
            for k, v in self._obj.data_vars.items()
            if v.dtype.kind in "biuf" and (names is None or set(names) <= set(v.dims))
        ]

    def mean_var(self, dim: Dims = None, *, ddof: float = 0) -> tuple[xr.Dataset, xr.Dataset]:
        """Mean and variance over ``dim`` of each numeric data variable.

        Parameters
        ----------
        dim : str or sequence of str, optional
            The dimensions to reduce; all of each variable's by default.
        ddof : float, optional
            Delta degrees of freedom of the variance.

        Returns
        -------
        mean : xarray.Dataset
            One variable per data variable that has every dimension of
            ``dim``; lazy on dask-backed data.
        var : xarray.Dataset
            The variances, as ``mean``.
        """
        pairs = {
            k: DataArrayAccessor(self._obj[k]).mean_var(dim, ddof=ddof)
            for k in self._variables(dim)
        }
        attrs = dict(self._obj.attrs)
        return (
            xr.Dataset({k: p[0] for k, p in pairs.items()}, attrs=attrs),
            xr.Dataset({k: p[1] for k, p in pairs.items()}, attrs=attrs),
        )

    def standardize(
        self,
        dim: Dims = None,
        *,
        ddof: int = 0,
        nan_policy: Literal["omit", "propagate", "raise"] = "omit",
        with_mean: bool = True,
        with_std: bool = True,
    ) -> xr.Dataset:
        """Standardize each numeric data variable over ``dim``.

        Parameters
        ----------
        dim : str or sequence of str, optional
            The dimensions the statistics are taken over.
        ddof : int, optional
            Delta degrees of freedom of the variance.
        nan_policy : {"omit", "propagate", "raise"}, optional
            NaN handling, as :class:`bnfast.Standardizer`.
        with_mean, with_std : bool, optional
            Centre, scale.

        Returns
        -------
        xarray.Dataset
            The dataset with those variables standardized (others unchanged);
            lazy on dask-backed data.
        """
        out = self._obj.copy()
        for k in self._variables(dim):
            out[k] = DataArrayAccessor(self._obj[k]).standardize(
                dim, ddof=ddof, nan_policy=nan_policy, with_mean=with_mean, with_std=with_std
            )
        return out


xr.register_dataarray_accessor("bnfast")(DataArrayAccessor)
xr.register_dataset_accessor("bnfast")(DatasetAccessor)
