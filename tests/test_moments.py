"""bnfast.moments / bnfast.Moments: fields, var/std, Chan merging, pickling."""
import copy
import functools
import operator
import pickle

import numpy as np
import pytest
from hypothesis import given, strategies as st

import bnfast
from _util import array_cases, ref_mean_var

Moments = bnfast.Moments

# Moments are float64 accumulators, so values match the float64 reference to
# accumulation-order error only: for the small (<= 2e4 element) arrays here,
# relative 1e-13 (plus an absolute term scaled by max|x| for results ~ 0).
RTOL = 1e-13


def _ref(x, axis=None, keepdims=False):
    x64 = np.asarray(x, dtype=np.float64)
    m, v = ref_mean_var(x64, axis=axis, keepdims=keepdims)
    n = x64.size // m.size
    return n, m, v * n


def assert_moments_close(got, count, mean, m2, scale, rtol=RTOL):
    assert np.asarray(got.count).dtype == np.int64
    assert np.asarray(got.mean).dtype == np.float64
    assert np.asarray(got.m2).dtype == np.float64
    assert np.shape(got.count) == np.shape(mean) == np.shape(got.mean) == np.shape(got.m2)
    np.testing.assert_array_equal(got.count, count)
    np.testing.assert_allclose(got.mean, mean, rtol=rtol, atol=rtol * scale)
    n = np.max(count) if np.size(count) else 0
    np.testing.assert_allclose(got.m2, m2, rtol=rtol, atol=rtol * scale**2 * max(n, 1))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32, np.bool_])
@pytest.mark.parametrize("axis", [None, 0, 1, (0, 2), -1])
@pytest.mark.parametrize("keepdims", [False, True])
def test_fields(backend, dtype, axis, keepdims):
    rng = np.random.default_rng(0)
    if dtype is np.bool_:
        x = rng.random((7, 16, 17)) < 0.4
    else:
        x = (rng.standard_normal((7, 16, 17)) * 20 + 3).astype(dtype)
    mo = bnfast.moments(x, axis=axis, keepdims=keepdims)
    n, m, m2 = _ref(x, axis, keepdims)
    assert_moments_close(mo, np.full(np.shape(m), n), m, m2, np.abs(x).max())


def test_mean_is_float64_even_for_float32(backend):
    # The mean is exposed at accumulator precision: it must resolve
    # differences far below float32's resolution.
    x = np.array([1.0, 1.0, 1.0, 1.0 + 2**-23], dtype=np.float32)
    mo = bnfast.moments(x)
    assert np.asarray(mo.mean).dtype == np.float64
    assert float(mo.mean) == 1.0 + 2**-25  # not representable in float32
    assert float(mo.m2) == pytest.approx(3 * 2**-50 + (3 * 2**-25) ** 2, rel=1e-12)
    assert int(mo.count) == 4


@pytest.mark.parametrize("ddof", [0, 1, 3])
def test_var_std(backend, ddof):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((33, 5)) * 4 + 2
    mo = bnfast.moments(x, axis=0)
    np.testing.assert_allclose(mo.var(ddof=ddof), np.var(x, axis=0, ddof=ddof), rtol=RTOL)
    np.testing.assert_allclose(mo.std(ddof=ddof), np.std(x, axis=0, ddof=ddof), rtol=RTOL)
    if ddof == 0:
        np.testing.assert_allclose(mo.var(), np.var(x, axis=0), rtol=RTOL)
        np.testing.assert_allclose(mo.std(), np.std(x, axis=0), rtol=RTOL)


def test_constructor_and_var():
    mo = Moments(np.array([4, 2], dtype=np.int64), np.array([1.0, -2.0]), np.array([8.0, 3.0]))
    np.testing.assert_array_equal(mo.count, [4, 2])
    np.testing.assert_array_equal(mo.mean, [1.0, -2.0])
    np.testing.assert_array_equal(mo.m2, [8.0, 3.0])
    np.testing.assert_array_equal(mo.var(), [2.0, 1.5])
    np.testing.assert_array_equal(mo.var(ddof=1), [8.0 / 3.0, 3.0])
    np.testing.assert_allclose(mo.std(), np.sqrt([2.0, 1.5]), rtol=1e-15)


def test_merge_known_values(backend):
    a = bnfast.moments(np.array([1.0, 2.0, 3.0]))
    b = bnfast.moments(np.array([10.0, 20.0]))
    whole = np.array([1.0, 2.0, 3.0, 10.0, 20.0])
    for merged in (a.merge(b), a + b, b + a, Moments.combine([a, b])):
        assert int(merged.count) == 5
        assert float(merged.mean) == pytest.approx(7.2, rel=1e-15)
        assert float(merged.m2) == pytest.approx(np.sum((whole - 7.2) ** 2), rel=1e-14)


def test_merge_does_not_mutate(backend):
    rng = np.random.default_rng(2)
    a = bnfast.moments(rng.standard_normal((10, 3)), axis=0)
    b = bnfast.moments(rng.standard_normal((7, 3)), axis=0)
    a0, b0 = copy.deepcopy(a), copy.deepcopy(b)
    a.merge(b)
    _ = a + b
    assert a == a0 and b == b0


def test_merge_with_empty_moments(backend):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((9, 4)) + 1
    a = bnfast.moments(x, axis=0)
    empty = Moments(np.zeros(4, np.int64), np.zeros(4), np.zeros(4))
    for merged in (a + empty, empty + a, Moments.combine([empty, a, empty])):
        np.testing.assert_array_equal(merged.count, a.count)
        np.testing.assert_allclose(merged.mean, a.mean, rtol=1e-15)
        np.testing.assert_allclose(merged.m2, a.m2, rtol=1e-15)


def test_combine_accepts_generators(backend):
    rng = np.random.default_rng(4)
    x = rng.standard_normal(100) * 3 + 7
    mo = Moments.combine(bnfast.moments(c) for c in np.array_split(x, 9))
    assert int(mo.count) == 100
    assert float(mo.mean) == pytest.approx(x.mean(), rel=RTOL)
    assert float(mo.m2) == pytest.approx(np.sum((x - x.mean()) ** 2), rel=RTOL)


@pytest.mark.parametrize("empty", [[], (), iter([])], ids=["list", "tuple", "iterator"])
def test_combine_empty_raises(empty):
    with pytest.raises(ValueError):
        Moments.combine(empty)


def test_merge_shape_mismatch(backend):
    a = bnfast.moments(np.ones((5, 3)), axis=0)
    b = bnfast.moments(np.ones((5, 4)), axis=0)
    with pytest.raises(ValueError):
        a.merge(b)
    with pytest.raises(ValueError):
        _ = a + b
    with pytest.raises(ValueError):
        Moments.combine([a, b])


def test_equality_is_exact(backend):
    x = np.arange(12.0).reshape(4, 3)
    a = bnfast.moments(x, axis=0)
    b = bnfast.moments(x.copy(), axis=0)
    assert a == b
    assert not (a != b)
    c = Moments(np.asarray(a.count), np.asarray(a.mean), np.nextafter(np.asarray(a.m2), np.inf))
    assert not (a == c)
    d = Moments(np.asarray(a.count) + 1, np.asarray(a.mean), np.asarray(a.m2))
    assert not (a == d)
    e = Moments(np.asarray(a.count), np.nextafter(np.asarray(a.mean), -np.inf), np.asarray(a.m2))
    assert not (a == e)


def test_pickle_round_trip(backend):
    rng = np.random.default_rng(5)
    a = bnfast.moments(rng.standard_normal((6, 7)).astype(np.float32), axis=1, keepdims=True)
    for proto in range(pickle.HIGHEST_PROTOCOL + 1):
        b = pickle.loads(pickle.dumps(a, protocol=proto))
        assert type(b) is Moments
        assert b == a
        np.testing.assert_array_equal(b.count, a.count)
        assert np.asarray(b.mean).tobytes() == np.asarray(a.mean).tobytes()
        assert np.asarray(b.m2).tobytes() == np.asarray(a.m2).tobytes()


def test_full_reduction_shapes(backend):
    mo = bnfast.moments(np.arange(10, dtype=np.float32))
    assert np.shape(mo.count) == np.shape(mo.mean) == np.shape(mo.m2) == ()
    assert int(mo.count) == 10 and float(mo.mean) == 4.5 and float(mo.m2) == 82.5


def test_moments_agree_with_mean_var(backend):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((33, 16))
    mo = bnfast.moments(x, axis=0)
    m, v = bnfast.mean_var(x, axis=0)
    np.testing.assert_allclose(mo.mean, m, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(mo.var(), v, rtol=1e-14)


# --------------------------------------------------------------------------
# property: merging the moments of chunks == moments of the whole
# --------------------------------------------------------------------------
@given(data=st.data())
def test_property_chunk_merge(backend, data):
    x = data.draw(array_cases(dtypes=[np.float32, np.float64], min_dims=1, max_dims=3,
                              max_size=5_000, allow_zero=False))
    ax = data.draw(st.integers(0, x.ndim - 1))
    use_tuple = x.ndim > 1 and data.draw(st.booleans())
    axis = (ax, (ax + 1) % x.ndim) if use_tuple else ax
    n = x.shape[ax]
    cuts = sorted(data.draw(st.lists(st.integers(0, n), max_size=6)))
    bounds = [0] + cuts + [n]
    out_shape = np.mean(x, axis=axis).shape
    parts = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        if hi == lo:  # empty chunk: count 0
            parts.append(Moments(np.zeros(out_shape, np.int64), np.zeros(out_shape), np.zeros(out_shape)))
        else:
            parts.append(bnfast.moments(np.take(x, np.arange(lo, hi), axis=ax), axis=axis))
    merged = functools.reduce(operator.add, parts)
    combined = Moments.combine(parts)
    cnt, m, m2 = _ref(x, axis)
    scale = float(np.abs(x.astype(np.float64)).max())
    for got in (merged, combined):
        assert_moments_close(got, np.full(out_shape, cnt), m, m2, scale)
    whole = bnfast.moments(x, axis=axis)
    assert_moments_close(whole, np.full(out_shape, cnt), m, m2, scale)


@given(data=st.data())
def test_property_moments_fields(backend, data):
    x = data.draw(array_cases(dtypes=[np.float32, np.float64, np.int32, np.bool_], allow_zero=False))
    axis = data.draw(st.sampled_from([None] + list(range(x.ndim))))
    keepdims = data.draw(st.booleans())
    mo = bnfast.moments(x, axis=axis, keepdims=keepdims)
    cnt, m, m2 = _ref(x, axis, keepdims)
    scale = float(np.abs(x.astype(np.float64)).max())
    assert_moments_close(mo, np.full(np.shape(m), cnt), m, m2, scale)
