"""bnfast.mean_var: values, dtypes, axes, keepdims, layouts, edge cases."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

import bnfast
from _util import (
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
