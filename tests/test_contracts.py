"""Headline contracts: accuracy, exactness on constants, thread determinism,
native/numpy parity."""
import numpy as np
import pytest

import bnfast
from bnfast import _runtime
from _util import assert_stats_close, ref_batch_norm


# --------------------------------------------------------------------------
# accuracy
# --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def big_offset_f32():
    rng = np.random.default_rng(2024)
    return (1e4 + rng.standard_normal(4_000_000)).astype(np.float32)


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


def test_float32_large_offset_batch_norm(backend, big_offset_f32):
    x = big_offset_f32.reshape(-1, 8)
    y, mean, invstd = bnfast.batch_norm(x, training=True, return_stats=True)
    x64 = x.astype(np.float64)
    ref_invstd = 1 / np.sqrt(x64.var(axis=0) + 1e-5)
    np.testing.assert_allclose(invstd, ref_invstd, rtol=1e-5)
    np.testing.assert_allclose(mean, x64.mean(axis=0), rtol=1e-6)
    # outputs must be normalized: a bad variance would scale them
    np.testing.assert_allclose(y.astype(np.float64).var(axis=0), 1.0, rtol=1e-3)


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


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(64, 3, 17, 33), (300_000, 3)], ids=["nchw", "large-nc"])
def test_batch_norm_constant_channel_is_bias(backend, dtype, shape):
    rng = np.random.default_rng(5)
    x = rng.standard_normal(shape).astype(dtype)
    x[:, 2] = dtype(1e4)
    w = np.array([0.5, 1.5, 2.5], dtype)
    b = np.array([0.1, -0.2, 0.3], dtype)
    rm, rv = np.zeros(3, dtype), np.ones(3, dtype)
    y = bnfast.batch_norm(x, rm, rv, w, b, training=True)
    assert (y[:, 2] == b[2]).all()
    # running mean moves towards 1e4; running var decays towards 0
    assert abs(float(rm[2]) - 1e3) <= 1e-6 * 1e3
    assert abs(float(rv[2]) - 0.9) <= 1e-7


# --------------------------------------------------------------------------
# determinism across thread counts
# --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def det_inputs():
    rng = np.random.default_rng(99)
    return {
        "nc": (rng.standard_normal((70_000, 33)) * 3 + 100).astype(np.float32),
        "nc64": rng.standard_normal((70_000, 33)) * 3 + 100,
        "flat": (rng.standard_normal(3_000_001) + 10).astype(np.float32),
        "flat64": rng.standard_normal(3_000_001) + 10,
        "nchw": (rng.standard_normal((16, 8, 96, 96)) + 1).astype(np.float32),
    }


def _bytes(*arrays):
    return b"".join(np.ascontiguousarray(a).tobytes() for a in arrays)


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
        rm, rv = np.zeros(8, np.float32), np.ones(8, np.float32)
        y, mean, invstd = bnfast.batch_norm(d["nchw"], rm, rv, training=True, return_stats=True)
        out.append(_bytes(y, mean, invstd, rm, rv))
        rm, rv = np.zeros(33, np.float32), np.ones(33, np.float32)
        y = bnfast.batch_norm(d["nc"], rm, rv, training=True)
        out.append(_bytes(y, rm, rv))
        return out

    with bnfast.threads(1):
        ref = run()
    for n in (2, 3, 4):
        with bnfast.threads(n):
            got = run()
        names = ["nc", "nc64", "flat", "flat64", "nchw", "moments", "bn-nchw", "bn-nc"]
        for name, a, b in zip(names, ref, got):
            assert a == b, f"{name}: result with {n} threads differs from 1 thread"


def test_repeated_calls_identical(native_backend, det_inputs):
    x = det_inputs["flat"]
    with bnfast.threads(4):
        first = _bytes(*bnfast.mean_var(x))
        for _ in range(3):
            assert _bytes(*bnfast.mean_var(x)) == first


# --------------------------------------------------------------------------
# native vs numpy backend parity
# --------------------------------------------------------------------------
def _with(choice, fn):
    with _runtime.using(choice):
        return fn()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("axis", [None, 0, 1, (0, 2), -1], ids=str)
def test_native_matches_numpy_backend_mean_var(native_backend, dtype, axis):
    rng = np.random.default_rng(11)
    x = (rng.standard_normal((33, 17, 1023)) * 2 + 5).astype(dtype)
    m, v = bnfast.mean_var(x, axis=axis)
    mn, vn = _with("numpy", lambda: bnfast.mean_var(x, axis=axis))
    assert np.asarray(m).dtype == np.asarray(mn).dtype == dtype
    # Both accumulate in float64.  float32: results rounded once from float64
    # values agreeing to ~1e-15 -> at most 1 ulp apart (2 ulp slack);
    # float64: reassociation only, << 1e-12 for 5.7e5 terms of O(1) data.
    rtol = 2 * np.finfo(np.float32).eps if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(m, mn, rtol=rtol)
    np.testing.assert_allclose(v, vn, rtol=rtol)
    mo = bnfast.moments(x, axis=axis)
    mon = _with("numpy", lambda: bnfast.moments(x, axis=axis))
    np.testing.assert_array_equal(mo.count, mon.count)
    np.testing.assert_allclose(mo.mean, mon.mean, rtol=1e-13)
    np.testing.assert_allclose(mo.m2, mon.m2, rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("axis", [1, -1])
def test_native_matches_numpy_backend_batch_norm(native_backend, dtype, training, axis):
    rng = np.random.default_rng(12)
    x = rng.standard_normal((8, 17, 33, 15)).astype(dtype)
    C = x.shape[axis]
    w = (rng.standard_normal(C) + 1).astype(dtype)
    b = rng.standard_normal(C).astype(dtype)
    rm0 = rng.standard_normal(C).astype(dtype)
    rv0 = rng.uniform(0.5, 2, C).astype(dtype)

    def run():
        rm, rv = rm0.copy(), rv0.copy()
        y, mean, invstd = bnfast.batch_norm(x, rm, rv, w, b, training=training, axis=axis,
                                            return_stats=True)
        return y, mean, invstd, rm, rv

    got = run()
    ref = _with("numpy", run)
    # float32: stats agree to ~1 ulp, the O(1) outputs to a few ulps;
    # float64: rounding order only.
    tol = 1e-6 if dtype == np.float32 else 1e-12
    for name, a, r in zip(["y", "mean", "invstd", "running_mean", "running_var"], got, ref):
        assert a.dtype == r.dtype == dtype, name
        np.testing.assert_allclose(a, r, rtol=tol, atol=tol, err_msg=name)
    # and both are right
    y64 = ref_batch_norm(x, axis, training, rm0, rv0, w, b)[0]
    np.testing.assert_allclose(got[0], y64, rtol=1e-5, atol=1e-5)


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


@pytest.mark.parametrize("nthreads", [1, 4])
@pytest.mark.parametrize("axis", [1, -1])
def test_big_batch_norm_correct(native_backend, nthreads, axis):
    rng = np.random.default_rng(32)
    x = (rng.standard_normal((32, 24, 48, 48)) * 2 + 1).astype(np.float32)
    C = x.shape[axis]
    w = (rng.standard_normal(C) + 1).astype(np.float32)
    b = rng.standard_normal(C).astype(np.float32)
    rm, rv = np.zeros(C, np.float32), np.ones(C, np.float32)
    y64, mean, invstd, nrm, nrv = ref_batch_norm(x, axis, True, rm, rv, w, b)
    with bnfast.threads(nthreads):
        y = bnfast.batch_norm(x, rm, rv, w, b, training=True, axis=axis)
    # float32 outputs of O(1) magnitude: rtol = atol = 1e-5 as for torch parity
    np.testing.assert_allclose(y, y64, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(rm, nrm, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(rv, nrv, rtol=1e-6)
