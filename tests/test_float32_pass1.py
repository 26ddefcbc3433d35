"""Pass 1 of the float32 moments runs in float32 (sum, min, max): its sum
only picks the shift of the corrected pass 2, and a sum that overflows
float32 on finite data is redone in float64. These cases exercise that
fallback and the accuracy argument on both kernel paths (rows along B for
the reduced last axis; the channel path for axis 0 and NHWC-like views)."""
import numpy as np
import pytest

import bnfast

from _util import ref_mean_var

CASES = [((3, 5000), -1), ((5000, 3), 0), ((40, 3, 50), (0, 2)), ((64, 700), 0)]


@pytest.mark.parametrize("shape,axis", CASES)
def test_float32_sum_overflow_falls_back_to_float64(backend, shape, axis):
    x = np.full(shape, 3e38, dtype=np.float32)
    x.flat[::7] = 2.5e38  # finite data whose float32 chunk sums overflow
    m = bnfast.moments(x, axis=axis)
    ref_m, ref_v = ref_mean_var(x, axis=axis)
    n = x.size // m.mean.size
    assert np.all(np.isfinite(m.mean)) and np.all(np.isfinite(m.m2))
    # float64 accumulation of float32 inputs: a few ulps of float64.
    np.testing.assert_allclose(m.mean, ref_m, rtol=1e-13)
    np.testing.assert_allclose(m.m2 / n, ref_v, rtol=1e-10)


@pytest.mark.parametrize("shape,axis", CASES)
@pytest.mark.parametrize("special", [np.nan, np.inf, -np.inf])
def test_float32_non_finite_still_propagates(backend, shape, axis, special):
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    x.flat[5] = special
    mean, var = bnfast.mean_var(x, axis=axis)
    with np.errstate(invalid="ignore"):  # NumPy's own propagation is the reference
        ref_m = x.astype(np.float64).mean(axis=axis)
        ref_v = x.astype(np.float64).var(axis=axis)
    assert np.isnan(mean).any() or np.isinf(mean).any()
    np.testing.assert_array_equal(np.isnan(mean), np.isnan(ref_m))
    np.testing.assert_array_equal(np.isinf(mean), np.isinf(ref_m))
    np.testing.assert_array_equal(np.isnan(var), np.isnan(ref_v))


@pytest.mark.parametrize("shape,axis", CASES)
def test_float32_offset_data_keeps_float64_accuracy(backend, shape, axis):
    """A float32 shift is off by ~1e-5 * |mean|; the corrected second pass
    must still give the float64-accurate variance (relative 1e-10 here; the
    public contract for float32 is 1e-5)."""
    rng = np.random.default_rng(1)
    x = (1e5 + rng.standard_normal(shape) * 0.5).astype(np.float32)
    m = bnfast.moments(x, axis=axis)
    n = x.size // m.mean.size
    ref_m, ref_v = ref_mean_var(x, axis=axis)
    np.testing.assert_allclose(m.mean, ref_m, rtol=1e-14)
    np.testing.assert_allclose(m.m2 / n, ref_v, rtol=1e-10)


@pytest.mark.parametrize("shape,axis", [((64,), 0), ((64, 3), 0), ((3, 5000), -1)])
def test_float32_inf_beside_overflowing_values_stays_inf(backend, shape, axis):
    """+inf next to finite values whose float32 sum overflows to -inf: a
    float32 pass 1 alone would give inf + -inf = NaN; float64 gives +inf."""
    x = np.full(shape, -3e38, dtype=np.float32)
    x.flat[5] = np.inf
    mean = bnfast.moments(x, axis=axis).mean
    with np.errstate(invalid="ignore", over="ignore"):
        ref = x.astype(np.float64).mean(axis=axis)
    np.testing.assert_array_equal(mean, ref)
