"""The moments family's public API: bnfast.mean_var (values, dtypes, axes,
keepdims, layouts, edge cases) and bnfast.moments / bnfast.Moments (fields,
var/std, Chan merging, pickling), under every backend."""

import copy
import functools
import operator
import pickle

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import bnfast
from helpers import (
    EDGE_SIZES,
    array_cases,
    assert_stats_close,
    axes_for,
    output_count,
    reduced_count,
    ref_mean_var,
)

AXIS_CASES = [None, 0, 1, -1, -2, (0,), (0, 2), (2, 0), (-1, 0), (0, 1, 2)]


# --------------------------------------------------------------------------
# basic values
# --------------------------------------------------------------------------
def test_small_known_values(backend):
    # Hand-computed: mean 2.5, population var 1.25, sample var 5/3.
    x = np.array([1.0, 2.0, 3.0, 4.0])
    m, v = bnfast.mean_var(x)
    assert float(m) == 2.5
    assert float(v) == 1.25
    m, v = bnfast.mean_var(x, ddof=1)
    assert float(m) == 2.5
    assert float(v) == pytest.approx(5.0 / 3.0, rel=1e-15)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("axis", AXIS_CASES, ids=str)
@pytest.mark.parametrize("keepdims", [False, True])
def test_axes_3d(backend, dtype, axis, keepdims):
    rng = np.random.default_rng(0)
    x = (2.0 + rng.standard_normal((7, 17, 33))).astype(dtype)
    m, v = bnfast.mean_var(x, axis=axis, keepdims=keepdims)
    assert_stats_close(m, v, x, axis=axis, keepdims=keepdims)


@pytest.mark.parametrize("n", EDGE_SIZES + [31, 32, 63, 64, 65, 1023, 4097])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_1d_tail_sizes(backend, n, dtype):
    rng = np.random.default_rng(n)
    x = (rng.standard_normal(n) * 3 - 1).astype(dtype)
    m, v = bnfast.mean_var(x)
    assert_stats_close(m, v, x)


@pytest.mark.parametrize("shape", [(c, r) for c in EDGE_SIZES for r in EDGE_SIZES])
@pytest.mark.parametrize("axis", [0, 1])
def test_2d_edge_shapes_float32(backend, shape, axis):
    rng = np.random.default_rng(sum(shape))
    x = rng.standard_normal(shape).astype(np.float32) + 5
    m, v = bnfast.mean_var(x, axis=axis)
    assert_stats_close(m, v, x, axis=axis)


@pytest.mark.parametrize("ddof", [0, 1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32])
def test_ddof(backend, ddof, dtype):
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((16, 9)) * 10).astype(dtype)
    m, v = bnfast.mean_var(x, axis=0, ddof=ddof)
    assert_stats_close(m, v, x, axis=0, ddof=ddof)


@pytest.mark.parametrize(
    "x, ddof",
    [
        (np.array([3.0]), 1),  # 0/0 -> nan
        (np.array([1.0, 2.0]), 2),  # m2/0 -> inf
        (np.array([1.0, 2.0]), 5),  # n-ddof < 0: NumPy clamps to 0 -> inf
        (np.array([4.0, 4.0]), 2),  # 0/0 -> nan
    ],
)
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_ddof_at_least_n_follows_numpy(backend, x, ddof):
    with np.errstate(all="ignore"):
        _, v = bnfast.mean_var(x, ddof=ddof)
    _, ref = ref_mean_var(x, ddof=ddof)
    np.testing.assert_array_equal(np.asarray(v), ref)  # nan == nan, inf == inf


# --------------------------------------------------------------------------
# dtypes
# --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "dtype, out",
    [
        (np.float16, np.float16),
        (np.float32, np.float32),
        (np.float64, np.float64),
        (np.int8, np.float64),
        (np.int16, np.float64),
        (np.int32, np.float64),
        (np.int64, np.float64),
        (np.uint8, np.float64),
        (np.uint32, np.float64),
        (np.uint64, np.float64),
        (np.bool_, np.float64),
    ],
)
@pytest.mark.parametrize("axis", [None, 0, 1])
def test_output_dtype_like_np_mean(backend, dtype, out, axis):
    rng = np.random.default_rng(2)
    if dtype is np.bool_:
        x = rng.random((17, 16)) < 0.3
    elif np.dtype(dtype).kind == "f":
        x = (rng.standard_normal((17, 16)) + 1).astype(dtype)
    else:
        x = rng.integers(0, 100, size=(17, 16)).astype(dtype)
    m, v = bnfast.mean_var(x, axis=axis)
    assert np.asarray(m).dtype == np.mean(x, axis=axis).dtype == out
    assert_stats_close(m, v, x, axis=axis, out_dtype=np.dtype(out))


def test_large_integers_exact_in_float64(backend):
    # int64 values up to 2**40: the float64 result of the exact mean/var.
    x = np.array([2**40, 2**40 + 2, 2**40 + 4, 2**40 + 6], dtype=np.int64)
    m, v = bnfast.mean_var(x)
    assert float(m) == 2**40 + 3
    assert float(v) == 5.0


def test_bool_values(backend):
    x = np.array([True, False, True, True])
    m, v = bnfast.mean_var(x)
    assert float(m) == 0.75
    assert float(v) == pytest.approx(0.1875, rel=1e-15)


@pytest.mark.parametrize(
    "x",
    [
        np.ones(4, dtype=np.complex128),
        np.ones(4, dtype=np.complex64),
        np.array([1.0, 2.0], dtype=object),
        np.array(["a", "b"]),
        np.array([b"a", b"b"]),
    ],
    ids=["complex128", "complex64", "object", "str", "bytes"],
)
def test_unsupported_dtypes_raise_type_error(backend, x):
    with pytest.raises(TypeError):
        bnfast.mean_var(x)


def test_accepts_lists(backend):
    m, v = bnfast.mean_var([[1, 2], [3, 5]], axis=0)
    assert np.asarray(m).dtype == np.float64
    np.testing.assert_array_equal(m, [2.0, 3.5])
    np.testing.assert_array_equal(v, [1.0, 2.25])
    m, v = bnfast.mean_var([1.5, 2.5])
    assert float(m) == 2.0 and float(v) == 0.25


# --------------------------------------------------------------------------
# shapes of results
# --------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int32])
def test_full_reduction_returns_scalars(backend, dtype):
    x = np.arange(24, dtype=dtype).reshape(2, 3, 4)
    m, v = bnfast.mean_var(x)
    ref = np.mean(x)
    for r in (m, v):
        assert np.ndim(r) == 0
        assert isinstance(r, (np.generic, np.ndarray))
        assert r.dtype == ref.dtype
    assert float(m) == 11.5
    assert float(v) == pytest.approx(np.var(np.arange(24.0)), rel=1e-6)


@pytest.mark.parametrize("axis", [None, 0, (1, 2), -1])
def test_keepdims_shape(backend, axis):
    x = np.ones((2, 3, 4), dtype=np.float32)
    m, v = bnfast.mean_var(x, axis=axis, keepdims=True)
    expected = np.mean(x, axis=axis, keepdims=True).shape
    assert np.shape(m) == expected and np.shape(v) == expected
    np.testing.assert_array_equal(m, 1.0)
    np.testing.assert_array_equal(v, 0.0)


def test_zero_outputs_returns_empty(backend):
    x = np.zeros((5, 0), dtype=np.float32)
    m, v = bnfast.mean_var(x, axis=0)
    assert np.shape(m) == (0,) and np.shape(v) == (0,)
    assert np.asarray(m).dtype == np.float32
    m, v = bnfast.mean_var(x, axis=0, keepdims=True)
    assert np.shape(m) == (1, 0)


@pytest.mark.parametrize(
    "shape, axis", [((0, 3), 0), ((0,), None), ((0,), 0), ((4, 0, 2), (1, 2)), ((3, 0), None)]
)
def test_reduction_over_zero_elements_raises(backend, shape, axis):
    with pytest.raises(ValueError):
        bnfast.mean_var(np.zeros(shape), axis=axis)


# --------------------------------------------------------------------------
# axis errors
# --------------------------------------------------------------------------
@pytest.mark.parametrize("axis", [2, -3, (0, 2), (5,)])
def test_axis_out_of_range(backend, axis):
    with pytest.raises(np.exceptions.AxisError):
        bnfast.mean_var(np.ones((2, 3)), axis=axis)
    # AxisError is also a ValueError (NumPy convention)
    with pytest.raises(ValueError):
        bnfast.mean_var(np.ones((2, 3)), axis=axis)


def test_numpy_integer_axis(backend):
    x = np.arange(12.0).reshape(3, 4)
    for axis in (np.int64(1), np.int32(-1), (np.intp(0),)):
        m, v = bnfast.mean_var(x, axis=axis)
        assert_stats_close(m, v, x, axis=int(axis[0]) if isinstance(axis, tuple) else int(axis))


@pytest.mark.parametrize("axis", [1.0, "0"])
def test_non_integer_axis_is_type_error(backend, axis):
    with pytest.raises(TypeError):
        bnfast.mean_var(np.ones((2, 3)), axis=axis)


@pytest.mark.parametrize("axis", [(0, 0), (1, -1), (0, 1, 0), (-2, 0)])
def test_duplicate_axes(backend, axis):
    with pytest.raises(ValueError):
        bnfast.mean_var(np.ones((2, 3)), axis=axis)


# --------------------------------------------------------------------------
# NaN / inf
# --------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nan_only_poisons_its_slot(backend, dtype):
    x = np.arange(40, dtype=dtype).reshape(20, 2)
    x[7, 1] = np.nan
    m, v = bnfast.mean_var(x, axis=0)
    assert np.isnan(m[1]) and np.isnan(v[1])
    assert m[0] == 19.0
    assert v[0] == pytest.approx(np.var(np.arange(0, 40, 2.0)), rel=1e-6)
    m, v = bnfast.mean_var(x)
    assert np.isnan(m) and np.isnan(v)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_inf_gives_nonfinite_no_crash(backend, dtype):
    x = np.ones((33, 3), dtype=dtype)
    x[4, 0] = np.inf
    with np.errstate(all="ignore"):
        m, v = bnfast.mean_var(x, axis=0)
    assert not np.isfinite(m[0]) and not np.isfinite(v[0])
    np.testing.assert_array_equal(m[1:], 1.0)
    np.testing.assert_array_equal(v[1:], 0.0)


# --------------------------------------------------------------------------
# layouts
# --------------------------------------------------------------------------
def _layout_variants(x):
    yield "fortran", np.asfortranarray(x)
    yield "step", np.repeat(x, 3, axis=0)[::3]
    yield "negstep", np.ascontiguousarray(x[::-1, :, ::-1])[::-1, :, ::-1]
    t = np.ascontiguousarray(x.transpose(2, 0, 1)).transpose(1, 2, 0)
    yield "transpose", t


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("axis", [None, 0, 1, 2, (0, 2), (1, 2)], ids=str)
def test_layouts_match_contiguous(backend, dtype, axis):
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((15, 17, 33)) * 2 + 1).astype(dtype)
    m0, v0 = bnfast.mean_var(x, axis=axis)
    # float32 results are rounded once from float64 accumulators; float64
    # results may differ by reassociation only (few ulps for n <= 9000).
    rtol = 4 * np.finfo(dtype).eps if dtype == np.float32 else 1e-13
    for name, y in _layout_variants(x):
        assert not (name != "fortran" and y.flags.c_contiguous)
        np.testing.assert_array_equal(y, x)
        m, v = bnfast.mean_var(y, axis=axis)
        np.testing.assert_allclose(m, m0, rtol=rtol, atol=1e-14, err_msg=name)
        np.testing.assert_allclose(v, v0, rtol=rtol, err_msg=name)


def test_negative_strides_1d(backend):
    x = np.linspace(-3, 7, 1001)
    m, v = bnfast.mean_var(x[::-1])
    assert_stats_close(m, v, x[::-1])
    m, v = bnfast.mean_var(x[::-7])
    assert_stats_close(m, v, x[::-7])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_broadcast_zero_stride(backend, dtype):
    row = np.arange(17, dtype=dtype) * dtype(0.5)
    x = np.broadcast_to(row, (1000, 17))
    assert x.strides[0] == 0
    m, v = bnfast.mean_var(x, axis=0)
    # every column is constant -> exact mean and zero variance
    np.testing.assert_array_equal(m, row)
    np.testing.assert_array_equal(v, np.zeros(17, dtype))
    m, v = bnfast.mean_var(x, axis=1)
    assert_stats_close(m, v, x, axis=1)


def test_input_not_modified(backend):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((33, 17)).astype(np.float32)
    before = x.copy()
    bnfast.mean_var(x, axis=0)
    bnfast.mean_var(x)
    np.testing.assert_array_equal(x, before)


# --------------------------------------------------------------------------
# property tests
# --------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:Degrees of freedom:RuntimeWarning")
@given(data=st.data())
def test_property_mean_var(backend, data):
    x = data.draw(array_cases(dtypes=[np.float32, np.float64, np.int32, np.bool_]))
    axis = data.draw(axes_for(x.ndim))
    keepdims = data.draw(st.booleans())
    ddof = data.draw(st.sampled_from([0, 0, 1]))
    n, k = reduced_count(x.shape, axis), output_count(x.shape, axis)
    if n == 0:
        if k == 0:
            return  # zero elements and zero outputs: unspecified
        with pytest.raises(ValueError):
            bnfast.mean_var(x, axis=axis, ddof=ddof, keepdims=keepdims)
        return
    with np.errstate(all="ignore"):
        m, v = bnfast.mean_var(x, axis=axis, ddof=ddof, keepdims=keepdims)
    assert_stats_close(m, v, x, axis=axis, ddof=ddof, keepdims=keepdims)
    # the same values in C order give (nearly) the same answer
    with np.errstate(all="ignore"):
        mc, vc = bnfast.mean_var(np.ascontiguousarray(x), axis=axis, ddof=ddof, keepdims=keepdims)
    out = np.asarray(m).dtype
    rtol = 4 * np.finfo(out).eps if out == np.float32 else 1e-12
    scale = float(np.abs(x.astype(np.float64)).max()) if x.size else 0.0
    np.testing.assert_allclose(m, mc, rtol=rtol, atol=1e-13 * scale, equal_nan=True)
    np.testing.assert_allclose(v, vc, rtol=rtol, atol=1e-13 * scale**2, equal_nan=True)


# ==========================================================================
# bnfast.moments / bnfast.Moments
# ==========================================================================
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
    x = data.draw(
        array_cases(
            dtypes=[np.float32, np.float64],
            min_dims=1,
            max_dims=3,
            max_size=5_000,
            allow_zero=False,
        )
    )
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
            parts.append(
                Moments(np.zeros(out_shape, np.int64), np.zeros(out_shape), np.zeros(out_shape))
            )
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
    x = data.draw(
        array_cases(dtypes=[np.float32, np.float64, np.int32, np.bool_], allow_zero=False)
    )
    axis = data.draw(st.sampled_from([None] + list(range(x.ndim))))
    keepdims = data.draw(st.booleans())
    mo = bnfast.moments(x, axis=axis, keepdims=keepdims)
    cnt, m, m2 = _ref(x, axis, keepdims)
    scale = float(np.abs(x.astype(np.float64)).max())
    assert_moments_close(mo, np.full(np.shape(m), cnt), m, m2, scale)


def test_huge_unsigned_count_is_refused():
    # Regression: a uint64 count above int64's range wrapped to a negative count.
    with pytest.raises(ValueError, match="int64"):
        bnfast.Moments(np.uint64(2**63 + 5), 0.0, 0.0)


def test_weighted_moments_merge_with_float_counts():
    # Float counts (total sample weights, as the Standardizer keeps them) merge
    # like integer ones; a non-finite or non-numeric count is refused.
    a = Moments(np.array([2.5]), np.array([1.0]), np.array([0.5]))
    b = Moments(np.array([1.5]), np.array([3.0]), np.array([0.25]))
    m = a + b
    assert m.count.dtype == np.float64 and m.count[0] == 4.0
    assert m.mean[0] == pytest.approx(1.0 + 2.0 * 1.5 / 4.0)
    assert m.m2[0] == pytest.approx(0.75 + 4.0 * 2.5 * 1.5 / 4.0)
    with pytest.raises(ValueError, match="finite"):
        Moments(np.array([np.inf]), np.array([0.0]), np.array([0.0]))
    with pytest.raises(TypeError, match="count"):
        Moments(np.array(["a"]), np.array([0.0]), np.array([0.0]))
