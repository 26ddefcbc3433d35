"""The ``.bnfast`` xarray accessor (issue 15): dims, coords and attrs kept,
lazy on dask-backed data, equal to bnfast on the underlying NumPy array."""

from __future__ import annotations

import numpy as np
import pytest

xr = pytest.importorskip("xarray", reason="xarray is not installed")
da = pytest.importorskip("dask.array", reason="dask is not installed")
import dask  # noqa: E402

import bnfast  # noqa: E402
import bnfast.xarray  # noqa: E402


@pytest.fixture
def temps():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((40, 3, 5)) * 2 + 280).astype(np.float32)
    x[3, 1, 2] = np.nan
    coords = {"time": np.arange(40), "lat": [10.0, 20.0, 30.0], "label": ("lat", list("abc"))}
    return x, xr.DataArray(
        x, dims=("time", "lat", "lon"), coords=coords, attrs={"units": "K"}, name="t2m"
    )


@pytest.mark.parametrize("lazy", [False, True])
def test_mean_var_keeps_dims_coords_attrs(temps, lazy):
    x, arr = temps
    if lazy:
        arr = arr.chunk({"time": 7, "lat": 2, "lon": 3})
    mean, var = arr.bnfast.mean_var("time", ddof=1)
    assert mean.dims == ("lat", "lon") and mean.attrs == {"units": "K"} and mean.name == "t2m"
    assert list(mean.coords) == ["lat", "label"]  # time's coordinate dropped
    assert isinstance(mean.data, da.Array) == lazy
    want = bnfast.mean_var(x, axis=0, ddof=1)
    np.testing.assert_array_equal(np.isnan(mean.values), np.isnan(want[0]))
    # float32 from float64 statistics rounded once: at most 1 ulp apart.
    np.testing.assert_allclose(mean.values, want[0], rtol=np.finfo(np.float32).eps)
    np.testing.assert_allclose(var.values, want[1], rtol=np.finfo(np.float32).eps)
    m2, v2 = arr.bnfast.mean_var(("time", "lon"))
    assert m2.dims == ("lat",)


@pytest.mark.parametrize("lazy", [False, True])
def test_standardize_along_time(temps, lazy):
    x, arr = temps
    if lazy:
        arr = arr.chunk({"time": 9, "lat": 1})
    with dask.config.set(scheduler="sync"):
        out = arr.bnfast.standardize("time")
        assert isinstance(out.data, da.Array) == lazy  # nothing computed yet
        assert out.dims == arr.dims and out.attrs == arr.attrs and out.name == "t2m"
        assert out.coords.identical(arr.coords)
        got = out.values
    want = bnfast.Standardizer(axis=0).fit_transform(x)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=0, atol=4 * np.finfo(np.float32).eps)


def test_moments_dataset_merges(temps):
    x, arr = temps
    ds = arr.chunk({"time": 11}).bnfast.moments("time")
    assert set(ds.data_vars) == {"count", "mean", "m2"} and ds["mean"].dims == ("lat", "lon")
    m = bnfast.Moments(ds["count"].values, ds["mean"].values, ds["m2"].values)
    assert m.count.dtype == np.int64
    want = bnfast.moments(x, axis=0)
    np.testing.assert_allclose(m.mean, want.mean, rtol=1e-14)


def test_dataset_accessor(temps):
    _, arr = temps
    ds = xr.Dataset({"t2m": arr, "flag": ("lat", np.array(["x", "y", "z"]))})
    mean, _ = ds.bnfast.mean_var("time")
    assert list(mean.data_vars) == ["t2m"]  # the string variable is left out
    out = ds.bnfast.standardize("time")
    assert out["flag"].equals(ds["flag"])
    np.testing.assert_allclose(out["t2m"].values, arr.bnfast.standardize("time").values)


def test_bad_dim(temps):
    _, arr = temps
    with pytest.raises(ValueError, match="not a dimension"):
        arr.bnfast.mean_var("depth")


def test_dataset_non_string_dim_name():
    # A dimension named by a non-string hashable (an int here) is one name,
    # for a Dataset as for a DataArray (the Dataset accessor once iterated it).
    values = np.arange(6.0).reshape(3, 2)
    ds = xr.Dataset({"a": ((1, "s"), values)})
    mean, var = ds.bnfast.mean_var(1)
    np.testing.assert_allclose(mean["a"].values, values.mean(axis=0))
    np.testing.assert_allclose(var["a"].values, values.var(axis=0))
    assert mean["a"].dims == ("s",)
