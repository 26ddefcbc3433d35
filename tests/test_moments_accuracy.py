"""Accuracy, exactness and determinism of the moments kernels behind
bnfast.mean_var and bnfast.moments: large offsets, constant data, the float32
first pass, every loop of the kernel (chosen by the strides of the (A, C, B)
view), thread counts, and native/NumPy parity."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bnfast
from helpers import (
    KERNEL_PATHS,
    THREAD_THRESHOLD,
    assert_stats_close,
    ref_mean_var,
    runtime,
    threshold_shapes,
)


def _bytes(*arrays):
    return b"".join(np.ascontiguousarray(a).tobytes() for a in arrays)


# --------------------------------------------------------------------------
# accuracy on offset data
# --------------------------------------------------------------------------
def test_float32_large_offset_variance(backend, big_offset_f32):
    # A float32 (or naive sum-of-squares) accumulator loses everything here:
    # mean^2/var = 1e8 > 1/eps32.  Contract: var rel. error <= 1e-5 against
    # float64 statistics of the very same float32 values.
    x = big_offset_f32
    x64 = x.astype(np.float64)
    ref_m, ref_v = x64.mean(), x64.var()
    m, v = bnfast.mean_var(x)
    assert abs(float(v) - ref_v) <= 1e-5 * ref_v
    assert abs(float(m) - ref_m) <= 1e-6 * ref_m  # rounded once to float32
    mo = bnfast.moments(x)
    # moments keep the float64 accumulators: much tighter than float32.
    assert abs(float(mo.mean) - ref_m) <= 1e-12 * ref_m
    assert abs(float(mo.var()) - ref_v) <= 1e-9 * ref_v
    # per-column reduction of the same data
    x2 = x.reshape(-1, 4)
    m2, v2 = bnfast.mean_var(x2, axis=0)
    ref_v2 = x2.astype(np.float64).var(axis=0)
    np.testing.assert_allclose(v2, ref_v2, rtol=1e-5)


def test_float64_mean_1e8(backend):
    # mean 1e8, std 1: a sum-of-squares formula has relative error ~1 here;
    # Welford/two-pass keeps the variance error at about ulp(1e8)/std per
    # term, averaging out to << 1e-9 relative for 1M values.
    rng = np.random.default_rng(7)
    x = 1e8 + rng.standard_normal(1_000_000)
    ref_m, ref_v = x.mean(), x.var()
    m, v = bnfast.mean_var(x)
    assert abs(float(m) - ref_m) <= 1e-13 * ref_m
    assert abs(float(v) - ref_v) <= 1e-9 * ref_v
    m, v = bnfast.mean_var(x.reshape(1000, 1000), axis=0)
    x2 = x.reshape(1000, 1000)
    np.testing.assert_allclose(v, x2.var(axis=0), rtol=1e-9)
    np.testing.assert_allclose(m, x2.mean(axis=0), rtol=1e-13)


# --------------------------------------------------------------------------
# exactness on constant data
# --------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("value", [1e4, 0.1, -7.3, 1e-30])
@pytest.mark.parametrize("n", [1, 17, 1_000_003])
def test_constant_is_exact(backend, dtype, value, n):
    val = dtype(value)
    x = np.full(n, val, dtype=dtype)
    m, v = bnfast.mean_var(x)
    assert m == val and v == 0
    mo = bnfast.moments(x)
    assert float(mo.mean) == float(val) and float(mo.m2) == 0.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_constant_columns_are_exact(backend, dtype):
    vals = np.array([1e4, 0.1, -3.3, 12345.678, 0.0, 1e-3, 7.0], dtype=dtype)
    x = np.tile(vals, (300_001, 1))
    m, v = bnfast.mean_var(x, axis=0)
    np.testing.assert_array_equal(m, vals)
    np.testing.assert_array_equal(v, np.zeros_like(vals))
    m, v = bnfast.mean_var(np.ascontiguousarray(x.T), axis=1)
    np.testing.assert_array_equal(m, vals)
    np.testing.assert_array_equal(v, np.zeros_like(vals))


# --------------------------------------------------------------------------
# the float32 first pass
# --------------------------------------------------------------------------
# Pass 1 of the float32 moments runs in float32 (sum, min, max): its sum only
# picks the shift of the corrected pass 2, and a sum that overflows float32 on
# finite data is redone in float64. These cases exercise that fallback and the
# accuracy argument on both kernel paths (rows along B for the reduced last
# axis; the channel path for axis 0 and NHWC-like views).
PASS1_CASES = [((3, 5000), -1), ((5000, 3), 0), ((40, 3, 50), (0, 2)), ((64, 700), 0)]


@pytest.mark.parametrize("shape,axis", PASS1_CASES)
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


@pytest.mark.parametrize("shape,axis", PASS1_CASES)
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


@pytest.mark.parametrize("shape,axis", PASS1_CASES)
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


# --------------------------------------------------------------------------
# every loop of the native moments kernel
# --------------------------------------------------------------------------
# KERNEL_PATHS (helpers.py) names each loop of the kernel.
def _path_data(shape, order, dtype, offset, rng):
    x = offset + rng.standard_normal(shape)
    return np.asarray(x.astype(dtype), order=order)


@pytest.mark.parametrize("name", list(KERNEL_PATHS))
def test_kernel_path_offset_float64_is_exact(native_backend, name):
    # float64 data with |mean|/std = 1e8: a sum-of-squares formula loses all
    # digits, rounding chunk means to ulp(1e8) loses ~1e-9. The reference is
    # computed in long double (64-bit mantissa on x86: ~2000x more precise;
    # NumPy's own float64 sum along a strided axis is off by tens of ulps
    # here). The mean must be within 2 ulps; the variance within 1e-11
    # relative (a few hundred Chan merges of O(std) relative means).
    shape, axis, order = KERNEL_PATHS[name]
    rng = np.random.default_rng(1)
    x = _path_data(shape, order, np.float64, 1e8, rng)
    mean, var = bnfast.mean_var(x, axis=axis)
    ref = x.astype(np.longdouble)
    ref_mean = ref.mean(axis=axis)
    ref_var = ((ref - ref.mean(axis=axis, keepdims=True)) ** 2).mean(axis=axis)
    np.testing.assert_allclose(mean, ref_mean.astype(np.float64), rtol=2 * 2**-52)
    np.testing.assert_allclose(var, ref_var.astype(np.float64), rtol=1e-11)


@pytest.mark.parametrize("name", list(KERNEL_PATHS))
def test_kernel_path_offset_float32_matches_float64(native_backend, name):
    # float32 in, float64 accumulation, one rounding at the end: the result is
    # the float64 answer over the same float32 values to float32 rounding.
    shape, axis, order = KERNEL_PATHS[name]
    rng = np.random.default_rng(2)
    x = _path_data(shape, order, np.float32, 1e4, rng)
    mean, var = bnfast.mean_var(x, axis=axis)
    ref = x.astype(np.float64)
    np.testing.assert_allclose(mean, ref.mean(axis=axis), rtol=2**-23)
    np.testing.assert_allclose(var, ref.var(axis=axis), rtol=2**-23 * 4)


@pytest.mark.parametrize("name", list(KERNEL_PATHS))
@pytest.mark.parametrize("value", [1e4, 0.1, -3.0e8])
def test_kernel_path_constant_is_exact(native_backend, name, value):
    shape, axis, order = KERNEL_PATHS[name]
    x = np.full(shape, value, dtype=np.float64, order=order)
    mean, var = bnfast.mean_var(x, axis=axis)
    assert np.all(np.asarray(mean) == value)
    assert np.all(np.asarray(var) == 0.0)


@pytest.mark.parametrize("name", list(KERNEL_PATHS))
def test_kernel_path_thread_count_does_not_change_bits(native_backend, name):
    shape, axis, order = KERNEL_PATHS[name]
    x = _path_data(shape, order, np.float32, 3.0, np.random.default_rng(3))
    results = []
    for n in (1, 2, 3, 4):
        with bnfast.threads(n):
            m, v = bnfast.mean_var(x, axis=axis)
            results.append((np.asarray(m).tobytes(), np.asarray(v).tobytes()))
    assert all(r == results[0] for r in results)


@pytest.mark.parametrize("name", list(KERNEL_PATHS))
def test_kernel_path_nan_and_inf_stay_in_their_channel(native_backend, name):
    shape, axis, order = KERNEL_PATHS[name]
    x = _path_data(shape, order, np.float64, 0.0, np.random.default_rng(4))
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


# --------------------------------------------------------------------------
# determinism across thread counts
# --------------------------------------------------------------------------
def test_threads_are_deterministic(native_backend, det_inputs):
    d = det_inputs

    def run():
        out = []
        for key in ("nc", "nc64"):
            out.append(_bytes(*bnfast.mean_var(d[key], axis=0)))
        for key in ("flat", "flat64"):
            out.append(_bytes(*bnfast.mean_var(d[key])))
        out.append(_bytes(*bnfast.mean_var(d["nchw"], axis=(0, 2))))
        mo = bnfast.moments(d["nc"], axis=0)
        out.append(_bytes(mo.count, mo.mean, mo.m2))
        return out

    with bnfast.threads(1):
        ref = run()
    for n in (2, 3, 4):
        with bnfast.threads(n):
            got = run()
        names = ["nc", "nc64", "flat", "flat64", "nchw", "moments"]
        for name, a, b in zip(names, ref, got):
            assert a == b, f"{name}: result with {n} threads differs from 1 thread"


def test_repeated_calls_identical(native_backend, det_inputs):
    x = det_inputs["flat"]
    with bnfast.threads(4):
        first = _bytes(*bnfast.mean_var(x))
        for _ in range(3):
            assert _bytes(*bnfast.mean_var(x)) == first


@settings(max_examples=15)
@given(shape=threshold_shapes(), dtype=st.sampled_from([np.float32, np.float64]), data=st.data())
def test_property_thread_threshold(backend, shape, dtype, data):
    # Sizes just below, at and just above the element count where the native
    # kernels start splitting the work between threads: the same values at 1
    # and 3 threads, and right.
    assert abs(int(np.prod(shape)) - THREAD_THRESHOLD) <= 17
    axis = data.draw(st.sampled_from([None] + list(range(len(shape)))))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    x = (5 + rng.standard_normal(shape)).astype(dtype)
    results = []
    for n in (1, 3):
        with bnfast.threads(n):
            m, v = bnfast.mean_var(x, axis=axis)
            mo = bnfast.moments(x, axis=axis)
        results.append(_bytes(m, v, mo.count, mo.mean, mo.m2))
        assert_stats_close(m, v, x, axis=axis)
    assert results[0] == results[1]


# --------------------------------------------------------------------------
# threaded paths (> 1M elements) are also correct, for every layout
# --------------------------------------------------------------------------
def _big_cases():
    rng = np.random.default_rng(31)
    nchw = (rng.standard_normal((16, 8, 96, 96)) * 2 + 3).astype(np.float32)
    rows = (rng.standard_normal((1200, 1001)) - 4).astype(np.float32)
    return [
        ("nchw-(0,2,3)", nchw, (0, 2, 3)),
        ("nchw-(0,2)", nchw, (0, 2)),
        ("nchw-1", nchw, 1),
        ("rows-axis1", rows, 1),
        ("rows-axis0", rows, 0),
        ("fortran-axis0", np.asfortranarray(rows), 0),
        ("fortran-axis1", np.asfortranarray(rows), 1),
        ("step-axis0", np.repeat(rows, 2, axis=1)[:, ::-2], 0),
        ("float64-nchw-(0,2,3)", nchw.astype(np.float64), (0, 2, 3)),
        ("transposed-nhwc", np.moveaxis(nchw, 1, -1).copy().transpose(0, 3, 1, 2), (0, 2, 3)),
    ]


BIG = _big_cases()


@pytest.mark.parametrize("nthreads", [1, 4])
@pytest.mark.parametrize("name, x, axis", BIG, ids=[c[0] for c in BIG])
def test_big_arrays_correct(native_backend, nthreads, name, x, axis):
    with bnfast.threads(nthreads):
        m, v = bnfast.mean_var(x, axis=axis)
    assert_stats_close(m, v, x, axis=axis)


# --------------------------------------------------------------------------
# native vs numpy backend parity
# --------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("axis", [None, 0, 1, (0, 2), -1], ids=str)
def test_native_matches_numpy_backend(native_backend, dtype, axis):
    rng = np.random.default_rng(11)
    x = (rng.standard_normal((33, 17, 1023)) * 2 + 5).astype(dtype)
    m, v = bnfast.mean_var(x, axis=axis)
    with runtime.using("numpy"):
        mn, vn = bnfast.mean_var(x, axis=axis)
    assert np.asarray(m).dtype == np.asarray(mn).dtype == dtype
    # Both accumulate in float64.  float32: results rounded once from float64
    # values agreeing to ~1e-15 -> at most 1 ulp apart (2 ulp slack);
    # float64: reassociation only, << 1e-12 for 5.7e5 terms of O(1) data.
    rtol = 2 * np.finfo(np.float32).eps if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(m, mn, rtol=rtol)
    np.testing.assert_allclose(v, vn, rtol=rtol)
    mo = bnfast.moments(x, axis=axis)
    with runtime.using("numpy"):
        mon = bnfast.moments(x, axis=axis)
    np.testing.assert_array_equal(mo.count, mon.count)
    np.testing.assert_allclose(mo.mean, mon.mean, rtol=1e-13)
    np.testing.assert_allclose(mo.m2, mon.m2, rtol=1e-12)


# --------------------------------------------------------------------------
# the mean on adversarial data: within 8 ulps of the exactly rounded mean
# --------------------------------------------------------------------------
# Each loop of the kernel: the contiguous row path, the strided row path (its
# scalar loop), the channel path's scalar loop (3 channels) and its register
# blocks (34 channels: a block of 32 or 8 plus a scalar rest on every ISA).
MEAN_PATHS = ["rows", "rows-strided", "channels", "channels-wide"]


def _on_path(x, path):
    """x (1-D) laid out for `path`; mean_var(out, axis=0) reduces it."""
    if path == "rows":
        return x
    if path == "rows-strided":
        out = np.empty(2 * x.size, x.dtype)
        out[::2] = x
        return out[::2]
    columns = 3 if path == "channels" else 34
    return np.tile(x[:, None], (1, columns))


def _assert_mean_within_8_ulps(x, path):
    exact = math.fsum(x.astype(np.float64).tolist()) / x.size
    mean, _ = bnfast.mean_var(_on_path(x, path), axis=0)
    err = np.abs(np.asarray(mean, np.float64) - exact)
    # The exactly rounded mean's own rounding is half an ulp of it: 8 ulps of
    # slack as NumPy's pairwise sum has on this data (~6).
    bound = 8 * np.spacing(abs(exact))
    assert np.all(err <= bound), (path, np.max(err) / np.spacing(abs(exact)), "ulps")


@pytest.mark.parametrize("path", MEAN_PATHS)
@pytest.mark.parametrize(
    "outlier, rest, n",
    [(1e16, 1.0, 1_000_000), (1e8, 0.1, 999), (-3e15, 7.0, 100_000), (1e300, 1.0, 5000)],
)
def test_mean_with_an_outlier_first(backend, path, outlier, rest, n):
    # Means kept relative to the channel's first element rounded the mean to
    # ulp(first element): [1e16] + a million ones came out 5e5 ulps off. The
    # mean now comes from double-double sums of the chunks whose deviation
    # sums are compensated (TwoSum per block of values), so the chunk holding
    # the outlier rounds at its scale a few times, not once per value of a
    # chain (which was 20-680 ulps off).
    if path == "channels-wide" and n > 100_000:
        n = 100_000  # 34 columns of a million values: too much memory for a test
    x = np.concatenate([[outlier], np.full(n, rest)])
    _assert_mean_within_8_ulps(x, path)


@pytest.mark.parametrize("path", MEAN_PATHS)
@pytest.mark.parametrize("position", ["first", "middle", "last"])
def test_mean_with_a_huge_dynamic_range(backend, path, position):
    # Positive values from 1e-300 to 1e300: the sum is a few of the largest
    # values, the rest rounds away, wherever the largest sit in a chunk.
    rng = np.random.default_rng(11)
    n = 30_000 if path == "channels-wide" else 200_001
    x = 10.0 ** rng.uniform(-300, 300, n)
    big = {"first": 0, "middle": n // 2 + 3, "last": n - 1}[position]
    x[big] = 1e301
    _assert_mean_within_8_ulps(x, path)
    _assert_mean_within_8_ulps(x[::-1].copy(), path)


@pytest.mark.parametrize("path", MEAN_PATHS)
@pytest.mark.parametrize(
    "dtype, values",
    [
        (np.int16, "one-then-zeros"),
        (np.int64, "big"),
        (np.int32, "ramp"),
        (np.float32, "ramp"),
    ],
)
def test_mean_of_integer_data(backend, path, dtype, values):
    # int16 [1] + 270 zeros was 115 ulps off; 2**53-scale int64 values are
    # not exact in float64 (their sum is, in math.fsum of the float64s); a
    # ramp is sorted data, whose partial sums in a chunk run far from zero.
    rng = np.random.default_rng(12)
    if values == "one-then-zeros":
        x = np.zeros(271, dtype)
        x[0] = 1
    elif values == "big":
        x = rng.integers(2**50, 2**53, 50_001).astype(dtype)
    else:
        x = np.arange(1, 70_001).astype(dtype)
    _assert_mean_within_8_ulps(x.astype(np.float64) if path == "rows-strided" else x, path)


# --------------------------------------------------------------------------
# the channel path's one-pass chunks and their fallback
# --------------------------------------------------------------------------
# With unit channel stride, every chunk after a tile's first is summed in one
# pass around the tile's running mean and kept only where its cancellation
# bound holds (n * dbar^2 <= M2); elsewhere the chunk is redone in two passes.
# Data whose level jumps between chunks fails the bound: the results must
# keep the two-pass accuracy through jumps, a staircase and a channel turning
# constant, at every chunk and tile shape. (M2 alone would not show a kept
# one pass: around the running mean its cancellation, ~u * n * dbar^2, is u
# times the jump's own share of M2. The mean shows it: see the next test.)
def _jumps(kind, dtype, rng, rows=6000, columns=34):
    step = np.arange(rows)[:, None]
    if kind == "jump-once":  # N(0, 1), then 1e8 + N(0, 1) from 5/12 of the rows on
        offset = np.where(step >= rows * 5 // 12, 1e8 if dtype == np.float64 else 1e4, 0.0)
    elif kind == "jump-one-channel":  # as jump-once in one channel; 100 + N(0, 1) in the rest
        offset = np.full((rows, columns), 100.0)
        offset[rows * 5 // 12 :, columns // 2 + 1] = 1e8 if dtype == np.float64 else 1e4
    elif kind == "inf-one-channel":  # 100 + N(0, 1), one inf in one channel
        x = 100.0 + rng.standard_normal((rows, columns))
        x[rows * 5 // 12, columns // 2 + 1] = np.inf
        return np.ascontiguousarray(x.astype(dtype))
    elif kind == "staircase":  # a new level every 100 rows (every chunk jumps)
        offset = (step // 100) * (1e7 if dtype == np.float64 else 1e3)
    else:  # "constant-later": random first rows, then one constant value
        x = rng.standard_normal((rows, columns))
        x[rows // 4 :] = 3.0
        return np.ascontiguousarray(x.astype(dtype))
    x = offset + rng.standard_normal((rows, columns))
    return np.ascontiguousarray(x.astype(dtype))


@pytest.mark.parametrize(
    "kind", ["jump-once", "jump-one-channel", "inf-one-channel", "staircase", "constant-later"]
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("columns", [34, 1100])
def test_channel_one_pass_falls_back_where_it_cancels(native_backend, kind, dtype, columns):
    rows = 6000 if columns == 34 else 700
    x = _jumps(kind, dtype, np.random.default_rng(41), rows, columns)
    if kind == "staircase" and columns == 1100:  # 7 rows per level: chunks of 29 rows
        level = (np.arange(rows)[:, None] // 7) * (1e7 if dtype == np.float64 else 1e3)
        x = np.ascontiguousarray((x + level).astype(dtype))
    mo = bnfast.moments(x, axis=0)
    ref = x.astype(np.longdouble)
    with np.errstate(invalid="ignore"):  # inf - inf: the inf channel's M2 is NaN
        ref_mean = ref.mean(axis=0)
        ref_m2 = ((ref - ref_mean) ** 2).sum(axis=0)
    # The two-pass accuracy (test_kernel_path_offset_float64_is_exact): the
    # mean to a few ulps of float64, M2 to 1e-11.
    np.testing.assert_allclose(mo.mean, ref_mean.astype(np.float64), rtol=4 * 2**-52)
    np.testing.assert_allclose(mo.m2, ref_m2.astype(np.float64), rtol=1e-11)
    with bnfast.threads(3):
        again = bnfast.moments(x, axis=0)
    assert _bytes(mo.mean, mo.m2) == _bytes(again.mean, again.m2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("columns", [34, 600])
def test_channel_one_pass_falls_back_on_alternating_levels(native_backend, dtype, columns):
    """Levels +-L alternating chunk by chunk (aligned to the kernel's chunks:
    32768 values of a tile of up to 512 channels, 16384 of float64), N(0, 1)
    noise: the mean is ~1e-2. A one pass around the running mean (~ +-L away)
    rounds every deviation at ulp(L); the fallback's chunk means round them
    at ulp(1). (A chunk holding both levels rounds its far rows at ulp(L) in
    two passes too: hence the alignment.)"""
    chunk_values = 16384 if dtype == np.float64 else 32768
    chunk_rows = chunk_values // min(columns, 512)
    chunks = 6
    rng = np.random.default_rng(43)
    level = 1e8 if dtype == np.float64 else 1e6
    signs = np.where(np.arange(chunks * chunk_rows) // chunk_rows % 2 == 0, 1.0, -1.0)
    x = (signs[:, None] * level + rng.standard_normal((chunks * chunk_rows, columns))).astype(dtype)
    mo = bnfast.moments(x, axis=0)
    ref = x.astype(np.longdouble)
    ref_mean = ref.mean(axis=0)
    # Error bound of the two-pass: ~u * std * sqrt(n) / n ~ 1e-18; the one
    # pass kept everywhere was off by 1e-12 (float32) to 1e-10 (float64).
    np.testing.assert_allclose(mo.mean, ref_mean.astype(np.float64), rtol=0, atol=1e-15)
    ref_m2 = ((ref - ref_mean) ** 2).sum(axis=0)
    np.testing.assert_allclose(mo.m2, ref_m2.astype(np.float64), rtol=1e-11)


# --------------------------------------------------------------------------
# the row path's one-pass chunks and their fallback
# --------------------------------------------------------------------------
# On the row path (reductions along contiguous or strided rows: axis=-1, the
# (0, 2, 3) axes of NCHW) every chunk is first summed in one pass around the
# mean of a few values sampled across it, and kept only where the
# cancellation bound holds (n * dbar^2 <= M2); elsewhere it is redone in two
# passes. The data below put levels, jumps, trends and constant runs inside
# and across chunks, and spikes on a period that sampled values may all
# fall on (the shift is then far from the chunk's mean).
def _row_data(kind, dtype, rng, n):
    i = np.arange(n)
    level = 1e8 if dtype == np.float64 else 1e4
    noise = rng.standard_normal(n)
    if kind == "jump-inside":  # a new level partway through every 1000 values
        x = np.where(i % 1000 >= 417, level, 0.0) + noise
    elif kind == "alternating":  # +-level, switching every 4096 values
        x = np.where(i // 4096 % 2 == 0, level, -level) + noise
    elif kind == "offset":  # |mean| / std = 1e8 (float64), 1e4 (float32)
        x = level + noise
    elif kind == "trend":
        x = i * (level / n) + noise
    elif kind == "spikes":  # one spike per 256 values, as many as the noise
        x = np.where(i % 256 == 128, level, 0.0) + noise
    else:  # "constant-later": random, then one value far from the random part
        x = noise.copy()
        x[n // 3 :] = 0.1 * level + 0.1
    return x.astype(dtype)


ROW_PATHS = ["last-axis", "strided", "nchw"]


def _row_layout(x, path):
    """x (1-D of 4 * 50176 values) laid out on `path`, with the axes that
    reduce it to 4 channels of the same values."""
    per = x.size // 4
    if path == "last-axis":
        return x.reshape(4, per), 1
    if path == "strided":
        wide = np.empty((4, 2 * per), x.dtype)
        wide[:, ::2] = x.reshape(4, per)
        return wide[:, ::2], 1
    # NCHW: channel c holds values c*per ... (c+1)*per - 1 as 2 images of 112x112
    return np.ascontiguousarray(x.reshape(4, 2, 112, 112).transpose(1, 0, 2, 3)), (0, 2, 3)


@pytest.mark.parametrize(
    "kind", ["offset", "jump-inside", "alternating", "trend", "spikes", "constant-later"]
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("path", ROW_PATHS)
def test_row_one_pass_keeps_two_pass_accuracy(native_backend, kind, dtype, path):
    x = _row_data(kind, dtype, np.random.default_rng(47), 4 * 2 * 112 * 112)
    arr, axis = _row_layout(x, path)
    mo = bnfast.moments(arr, axis=axis)
    ref = x.astype(np.longdouble).reshape(4, -1)
    ref_mean = ref.mean(axis=1)
    ref_m2 = ((ref - ref_mean[:, None]) ** 2).sum(axis=1)
    # The two-pass accuracy: the mean to a few ulps of float64 (of the
    # spread of the data: a mean near 0 beside values of 1e8 is rounded at
    # their scale), M2 to 1e-13 (a kept one pass cancels at most
    # n * dbar^2 <= M2, a factor 2; spikes met by every sample cancel ~256x).
    scale = np.abs(ref).max(axis=1).astype(np.float64)
    err = np.abs(np.asarray(mo.mean, np.float64) - ref_mean.astype(np.float64))
    assert np.all(err <= 4 * 2**-52 * scale), err / (2**-52 * scale)
    np.testing.assert_allclose(mo.m2, ref_m2.astype(np.float64), rtol=1e-13)
    with bnfast.threads(3):
        again = bnfast.moments(arr, axis=axis)
    assert _bytes(mo.mean, mo.m2) == _bytes(again.mean, again.m2)
