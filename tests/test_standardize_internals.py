"""Standardizer and diagnose internals: the slab scan (NaN, inf, weights,
integer data) against float64 references at slab boundaries, every layout
and backend, thread-count determinism, and weighted Moments.

References here are plain NumPy float64 computations with math.fsum where
exactness matters; scikit-learn parity lives in test_standardizer_spec.py.
"""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bnfast
from bnfast import _scan
from bnfast._stats import Moments


def ref_stats(x, axis, weights=None):
    """float64 (count, mean, var) of the finite values along ``axis``,
    weighted along axis[0] when weights are given (moved to the front)."""
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    axes = tuple(a % x.ndim for a in axes)
    kept = [i for i in range(x.ndim) if i not in axes]
    xt = np.transpose(x, list(axes) + kept).astype(np.float64)
    flat = xt.reshape(-1, math.prod(x.shape[i] for i in kept))
    if weights is None:
        w = np.ones(flat.shape[0])
    else:
        rest = flat.shape[0] // len(weights)
        w = np.repeat(weights, rest)
    count, mean, var = [], [], []
    for col in flat.T:
        ok = np.isfinite(col)
        v, ww = col[ok], w[ok]
        total = math.fsum(ww)
        m = math.fsum(ww * v) / total if total else np.nan
        count.append(total)
        mean.append(m)
        var.append(math.fsum(ww * (v - m) ** 2) / total if total else np.nan)
    shape = tuple(x.shape[i] for i in kept)
    return (np.array(count).reshape(shape), np.array(mean).reshape(shape),
            np.array(var).reshape(shape))


@pytest.fixture
def small_slabs(monkeypatch):
    """Slabs of 64 values so small arrays cross many slab boundaries."""
    monkeypatch.setattr(_scan, "SLAB_ELEMENTS", 64)


def _data(rng, shape, dtype, nan_frac=0.0, offset=1e3):
    x = offset + rng.standard_normal(shape) * rng.uniform(0.5, 3, size=shape[-1])
    if nan_frac:
        x[rng.random(shape) < nan_frac] = np.nan
    return x.astype(dtype)


# 2-D float64: mean/var relative 1e-13 (the scan's corrected two-pass plus
# a Chan merge per slab is a few ulps from the exact fsum result).
@pytest.mark.parametrize("rows", [1, 16, 17, 63, 64, 65, 1000])
@pytest.mark.parametrize("nan_frac", [0.0, 0.2])
def test_fit_matches_exact_reference_across_slabs(backend, small_slabs, rows, nan_frac):
    rng = np.random.default_rng(rows)
    x = _data(rng, (rows, 5), np.float64, nan_frac)
    s = bnfast.Standardizer().fit(x)
    count, mean, var = ref_stats(x, 0)
    np.testing.assert_array_equal(np.broadcast_to(s.n_samples_seen_, (5,)), count)
    np.testing.assert_allclose(s.mean_, mean, rtol=1e-13, equal_nan=True)
    np.testing.assert_allclose(s.var_, var, rtol=1e-11, atol=1e-12, equal_nan=True)


@pytest.mark.parametrize("layout", ["C", "F", "sliced", "transposed3d"])
def test_nan_columns_scan_every_layout(backend, small_slabs, layout):
    rng = np.random.default_rng(1)
    base = _data(rng, (40, 6, 5), np.float64, 0.1)
    if layout == "C":
        x, axis = base, (0, 2)
    elif layout == "F":
        x, axis = np.asfortranarray(base), (0, 2)
    elif layout == "sliced":
        x, axis = base[::2, ::-1, 1:], (0, 2)
    else:
        x, axis = np.transpose(base, (2, 0, 1)), (0, 1)
    s = bnfast.Standardizer(axis=axis).fit(x)
    count, mean, var = ref_stats(x, axis)
    np.testing.assert_array_equal(s.moments_.count, count)
    np.testing.assert_allclose(s.mean_, mean, rtol=1e-13)
    np.testing.assert_allclose(s.var_, var, rtol=1e-11)


def test_scan_features_equals_full_scan(small_slabs):
    rng = np.random.default_rng(2)
    x = _data(rng, (70, 9), np.float64)
    x[rng.random(70) < 0.1, 2] = np.nan
    x[5, 6] = np.nan
    mask = np.isnan(x).any(axis=0)
    assert mask.any() and not mask.all()
    full = _scan.scan(x, (0,))
    sub = _scan.scan_features(x, (0,), mask)
    np.testing.assert_array_equal(sub.nan_count, full.nan_count[mask])
    np.testing.assert_array_equal(sub.moments.count, full.moments.count[mask])
    np.testing.assert_allclose(sub.moments.mean, full.moments.mean[mask], rtol=1e-14)
    np.testing.assert_allclose(sub.moments.m2, full.moments.m2[mask], rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int64, np.float16, bool])
def test_integer_and_half_inputs_fit_in_slabs(backend, small_slabs, dtype):
    rng = np.random.default_rng(3)
    x = rng.integers(0, 200, size=(130, 4)).astype(dtype)
    s = bnfast.Standardizer().fit(x)
    count, mean, var = ref_stats(x, 0)
    np.testing.assert_allclose(s.mean_, mean, rtol=1e-13)
    np.testing.assert_allclose(s.var_, var, rtol=1e-11)
    y = s.transform(x)
    assert y.dtype == np.float64
    ref = (x.astype(np.float64) - mean) / np.where(s.scale_ == 1, 1, np.sqrt(var))
    np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)


def test_weighted_scan_equals_repetition(backend, small_slabs):
    rng = np.random.default_rng(4)
    x = _data(rng, (50, 3, 4), np.float64, 0.1)
    w = rng.integers(0, 4, size=50).astype(np.float64)
    w[0] = 1.0
    weighted = bnfast.Standardizer(axis=(0, 2)).fit(x, sample_weight=w)
    repeated = bnfast.Standardizer(axis=(0, 2)).fit(np.repeat(x, w.astype(int), axis=0))
    np.testing.assert_allclose(weighted.moments_.count, repeated.moments_.count, rtol=0)
    np.testing.assert_allclose(weighted.mean_, repeated.mean_, rtol=1e-13)
    np.testing.assert_allclose(weighted.var_, repeated.var_, rtol=1e-11)
    count, mean, var = ref_stats(x, (0, 2), weights=w)
    np.testing.assert_allclose(weighted.mean_, mean, rtol=1e-13)
    np.testing.assert_allclose(weighted.var_, var, rtol=1e-11)
    assert weighted.moments_.count.dtype == np.float64


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_fit_and_transform_do_not_depend_on_threads(native_backend, threads):
    rng = np.random.default_rng(5)
    x = _data(rng, (3000, 37), np.float32, 0.01)
    bnfast.set_num_threads(1)
    ref = bnfast.Standardizer().fit(x)
    y_ref = ref.transform(x)
    bnfast.set_num_threads(threads)
    s = bnfast.Standardizer().fit(x)
    np.testing.assert_array_equal(s.mean_, ref.mean_)
    np.testing.assert_array_equal(s.var_, ref.var_)
    np.testing.assert_array_equal(s.transform(x), y_ref)


def test_backends_agree_on_transform(backend):
    rng = np.random.default_rng(6)
    x = _data(rng, (257, 3, 17), np.float32, 0.02)
    s = bnfast.Standardizer(axis=(0, 2)).fit(x)
    y = s.transform(x)
    mean = s.mean_[None, :, None]
    ref = (x.astype(np.float64) - mean) / s.scale_[None, :, None]
    # float32 output: the centring x - mean is exact to float32 rounding of
    # the result (hi/lo split), then one multiply: 2 ulps of |y| plus the
    # rounding of x itself relative to the scale.
    np.testing.assert_allclose(y, ref, rtol=3e-7, atol=2 * 2**-24 * 1e3 / s.scale_.min(),
                               equal_nan=True)
    back = s.inverse_transform(y)
    np.testing.assert_allclose(back, x, rtol=2e-6, equal_nan=True)


def test_partial_fit_chunks_equal_one_fit_bitwise_for_clean_data():
    """Chan merges of chunk moments reproduce a single fit to rounding."""
    rng = np.random.default_rng(7)
    x = _data(rng, (1000, 8), np.float64)
    one = bnfast.Standardizer().fit(x)
    many = bnfast.Standardizer()
    for chunk in np.array_split(x, 13):
        many.partial_fit(chunk)
    np.testing.assert_allclose(many.mean_, one.mean_, rtol=1e-15)
    np.testing.assert_allclose(many.var_, one.var_, rtol=1e-13)
    assert many.n_samples_seen_ == 1000


def test_constant_offset_feature_gets_scale_one_and_zero_output(backend):
    x = np.full((100, 2), 1e8)
    x[:, 1] = np.linspace(-1, 1, 100)
    s = bnfast.Standardizer().fit(x)
    assert s.scale_[0] == 1.0 and s.var_[0] == 0.0
    y = s.transform(x)
    assert np.all(y[:, 0] == 0.0)
    x32 = np.full((100, 1), 0.1, dtype=np.float32)
    y32 = bnfast.Standardizer().fit_transform(x32)
    assert np.all(y32 == 0.0)


def test_diagnose_chunks_equal_whole(small_slabs):
    rng = np.random.default_rng(8)
    x = _data(rng, (90, 4), np.float64, 0.1)
    x[3, 1] = np.inf
    whole = bnfast.diagnose(x)
    acc = bnfast._diagnose.DiagnoseAccumulator(0)
    for chunk in np.array_split(x, 7):
        acc.update(chunk)
    part = acc.report()
    np.testing.assert_array_equal(part.count, whole.count)
    np.testing.assert_array_equal(part.inf_count, whole.inf_count)
    np.testing.assert_array_equal(part.min, whole.min)
    np.testing.assert_allclose(part.mean, whole.mean, rtol=1e-14)
    np.testing.assert_allclose(part.std, whole.std, rtol=1e-12)
    fin = np.where(np.isfinite(x), x, np.nan)
    np.testing.assert_allclose(whole.mean, np.nanmean(fin, axis=0), rtol=1e-13)
    np.testing.assert_array_equal(whole.max, np.nanmax(fin, axis=0))


@settings(max_examples=40)
@given(rows=st.sampled_from([1, 2, 15, 16, 17, 33, 100]),
       cols=st.sampled_from([1, 7, 16, 17]),
       nan_frac=st.sampled_from([0.0, 0.1, 0.5]),
       seed=st.integers(0, 2**31))
def test_hypothesis_fit_vs_reference(rows, cols, nan_frac, seed):
    rng = np.random.default_rng(seed)
    x = _data(rng, (rows, cols), np.float64, nan_frac)
    s = bnfast.Standardizer().fit(x)
    count, mean, var = ref_stats(x, 0)
    np.testing.assert_array_equal(s.moments_.count, count)
    np.testing.assert_allclose(s.mean_, mean, rtol=1e-13, equal_nan=True)
    np.testing.assert_allclose(s.var_, var, rtol=1e-11, atol=1e-12, equal_nan=True)


