"""Each loop of the moments and affine kernels, chosen by the strides of the
(A, C, B) view, on sizes around its block boundaries (4096-element chunks,
2**18-element groups, 512-channel tiles, SIMD widths):

- rows along B (NCHW, axis=-1, axis=None), one group and several groups
- channels with unit stride (NHWC, 2-D axis=0), one group and several
- channels with a stride (small B, many channels)
- B == 1 with A as the row (Fortran 2-D)
- plain strided loops
"""

import numpy as np
import pytest

import bnfast

# (shape, axis reduced, order, slicer) -> exercises the named path.
CASES = {
    "rows-1-group": ((3, 5, 4097), (0, 2), "C"),
    "rows-groups": ((2, 3, 150_001), (0, 2), "C"),
    "rows-axis-None": ((600_001,), None, "C"),
    "channels-unit": ((4099, 37), 0, "C"),
    "channels-unit-tiles": ((700, 1100), 0, "C"),
    "channels-unit-groups": ((20_000, 33), 0, "C"),
    "channels-strided": ((3, 1030, 5), (0, 2), "C"),
    "fortran-rows": ((5000, 7), 0, "F"),
    "generic": ((40, 9, 70), (0, 2), "F"),
}


def _data(shape, order, dtype, offset, rng):
    x = offset + rng.standard_normal(shape)
    return np.asarray(x.astype(dtype), order=order)


@pytest.mark.parametrize("name", list(CASES))
def test_offset_float64_is_exact(native_backend, name):
    # float64 data with |mean|/std = 1e8: a sum-of-squares formula loses all
    # digits, rounding chunk means to ulp(1e8) loses ~1e-9. The reference is
    # computed in long double (64-bit mantissa on x86: ~2000x more precise;
    # NumPy's own float64 sum along a strided axis is off by tens of ulps
    # here). The mean must be within 2 ulps; the variance within 1e-11
    # relative (a few hundred Chan merges of O(std) relative means).
    shape, axis, order = CASES[name]
    rng = np.random.default_rng(1)
    x = _data(shape, order, np.float64, 1e8, rng)
    mean, var = bnfast.mean_var(x, axis=axis)
    ref = x.astype(np.longdouble)
    ref_mean = ref.mean(axis=axis)
    ref_var = ((ref - ref.mean(axis=axis, keepdims=True)) ** 2).mean(axis=axis)
    np.testing.assert_allclose(mean, ref_mean.astype(np.float64), rtol=2 * 2**-52)
    np.testing.assert_allclose(var, ref_var.astype(np.float64), rtol=1e-11)


@pytest.mark.parametrize("name", list(CASES))
def test_offset_float32_matches_float64(native_backend, name):
    # float32 in, float64 accumulation, one rounding at the end: the result is
    # the float64 answer over the same float32 values to float32 rounding.
    shape, axis, order = CASES[name]
    rng = np.random.default_rng(2)
    x = _data(shape, order, np.float32, 1e4, rng)
    mean, var = bnfast.mean_var(x, axis=axis)
    ref = x.astype(np.float64)
    np.testing.assert_allclose(mean, ref.mean(axis=axis), rtol=2**-23)
    np.testing.assert_allclose(var, ref.var(axis=axis), rtol=2**-23 * 4)


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("value", [1e4, 0.1, -3.0e8])
def test_constant_is_exact(native_backend, name, value):
    shape, axis, order = CASES[name]
    x = np.full(shape, value, dtype=np.float64, order=order)
    mean, var = bnfast.mean_var(x, axis=axis)
    assert np.all(np.asarray(mean) == value)
    assert np.all(np.asarray(var) == 0.0)


@pytest.mark.parametrize("name", list(CASES))
def test_thread_count_does_not_change_bits(native_backend, name):
    shape, axis, order = CASES[name]
    x = _data(shape, order, np.float32, 3.0, np.random.default_rng(3))
    results = []
    for n in (1, 2, 3, 4):
        with bnfast.threads(n):
            m, v = bnfast.mean_var(x, axis=axis)
            results.append((np.asarray(m).tobytes(), np.asarray(v).tobytes()))
    assert all(r == results[0] for r in results)


@pytest.mark.parametrize("name", list(CASES))
def test_nan_and_inf_stay_in_their_channel(native_backend, name):
    shape, axis, order = CASES[name]
    x = _data(shape, order, np.float64, 0.0, np.random.default_rng(4))
    # Poison one element far from the start so it lands in a later chunk.
    idx = np.unravel_index(x.size * 3 // 4, x.shape, order=order)
    x[idx] = np.nan
    with np.errstate(invalid="ignore"):
        ref_m, ref_v = x.mean(axis=axis), x.var(axis=axis)
    mean, var = bnfast.mean_var(x, axis=axis)
    np.testing.assert_array_equal(np.isnan(mean), np.isnan(ref_m))
    np.testing.assert_array_equal(np.isnan(var), np.isnan(ref_v))
    x[idx] = np.inf
    with np.errstate(invalid="ignore"):
        ref_m = x.mean(axis=axis)
    mean, _ = bnfast.mean_var(x, axis=axis)
    mean, ref_m = np.asarray(mean), np.asarray(ref_m)
    np.testing.assert_array_equal(np.isposinf(mean), np.isposinf(ref_m))
    np.testing.assert_array_equal(np.isnan(mean), np.isnan(ref_m))
    finite = np.isfinite(ref_m)
    np.testing.assert_allclose(mean[finite], ref_m[finite], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batch_norm_affine_paths_match_numpy_twin(native_backend, name, dtype):
    shape, axis, order = CASES[name]
    if axis is None or len(shape) < 2:
        pytest.skip("batch norm needs a channel axis")
    kept = [i for i in range(len(shape)) if i not in np.atleast_1d(axis)]
    if len(kept) != 1:
        pytest.skip("batch norm keeps exactly one axis")
    ch = kept[0]
    rng = np.random.default_rng(5)
    x = _data(shape, order, dtype, 2.0, rng)
    c = shape[ch]
    w = rng.standard_normal(c).astype(dtype)
    b = rng.standard_normal(c).astype(dtype)
    rm = rng.standard_normal(c).astype(dtype)
    rv = (rng.random(c) + 0.5).astype(dtype)
    for training in (True, False):
        y = bnfast.batch_norm(x, rm, rv, w, b, training=False, axis=ch) if not training else \
            bnfast.batch_norm(x, None, None, w, b, training=True, axis=ch)
        with bnfast._runtime.using("numpy"):
            y_ref = bnfast.batch_norm(x, rm, rv, w, b, training=False, axis=ch) if not training else \
                bnfast.batch_norm(x, None, None, w, b, training=True, axis=ch)
        # Same formula, same per-channel constants; only FMA contraction
        # differs: a couple of ulps of the terms' magnitude.
        eps = np.finfo(dtype).eps
        mag = np.abs(x).max() * np.abs(w).max() * 2 + np.abs(b).max() + 10
        np.testing.assert_allclose(y, y_ref, rtol=0, atol=8 * eps * mag)


def _moments_then_affine(impl, x3, mean, m2, w, b):
    """The unfused training output for statistics (mean, m2): the affine
    kernel with the same float64 scale and split centre."""
    dtype = x3.dtype
    n = x3.shape[0] * x3.shape[2]
    scale = (1.0 / np.sqrt(m2 / n + 1e-5) * w).astype(dtype)
    hi = mean.astype(dtype)
    lo = (mean - hi).astype(dtype)
    y_ref = np.empty_like(x3)
    impl.affine(x3, y_ref, hi, lo, scale, b.astype(dtype))
    return y_ref


@pytest.mark.parametrize(
    "shape",
    [(3, 5, 4097), (2, 3, 150_001), (4, 6, 17), (5, 4, 3),
     (2, 9, 150_001), (2, 9, 300_001), (3, 8, 100_003)],
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_batch_norm_statistics_equal_moments(backend, shape, dtype):
    # The training kernel must reproduce the moments kernel's statistics bit
    # for bit (same chunks, groups and merge order), and the output of the
    # unfused moments + affine path, whichever loop the thread count picks:
    # fused per channel where C >= 4 * threads, channels over 1 MiB with a
    # group per thread shared by the threads (the last three shapes at 2
    # threads; groups cut rows in the middle, and (2, 9, 300_001) gives 3
    # groups to 2 threads), moments + affine otherwise.
    from bnfast import _runtime

    impl = _runtime.impl()
    rng = np.random.default_rng(6)
    x3 = (3.0 + rng.standard_normal(shape)).astype(dtype)
    w = rng.standard_normal(shape[1])
    b = rng.standard_normal(shape[1])
    ref_mean, ref_m2 = impl.moments(x3)
    y_ref = _moments_then_affine(impl, x3, ref_mean, ref_m2, w, b)
    for threads in (1, 2, 3):
        y3 = np.empty_like(x3)
        with bnfast.threads(threads):
            mean, m2 = impl.batch_norm_train(x3, y3, w, b, 1e-5)
        assert mean.tobytes() == ref_mean.tobytes() and m2.tobytes() == ref_m2.tobytes()
        np.testing.assert_array_equal(y3, y_ref)
