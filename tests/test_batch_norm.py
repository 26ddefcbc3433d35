"""bnfast.batch_norm (the forward) against a float64 NumPy reference, its
argument validation, and its accuracy, exactness and determinism contracts.
PyTorch parity is in test_batch_norm_torch.py, the backward in
test_batch_norm_backward.py, the C++ fast path in test_batch_norm_fast.py."""

import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import bnfast
from helpers import (
    EDGE_SIZES,
    KERNEL_PATHS,
    LAYOUTS,
    STREAM_BYTES,
    make_data,
    make_values,
    misaligned_empty,
    ref_batch_norm,
    runtime,
    with_layout,
)

SHAPES = [(16, 3), (7, 5, 17), (4, 3, 5, 6), (2, 3, 4, 5, 3), (33, 17), (2, 16, 1, 1), (5, 7, 1)]


def _bshape(x, axis):
    s = [1] * x.ndim
    s[axis % x.ndim] = x.shape[axis % x.ndim]
    return s


def assert_bn_close(y, x, axis, ref, w=None, b=None, dtype=None):
    """Compare a batch_norm output with the float64 reference.

    The output is computed in x's dtype from (x - mean) * invstd * w + b, so
    its error is a few roundings of the terms of that expression:
    16 * eps(dtype) * ((|x| + |mean|) * invstd * |w| + |b|), plus a relative
    term for the error of the statistics (1e-5 for float32 as for torch
    parity, 1e-12 for float64).
    """
    dtype = np.dtype(dtype or x.dtype)
    ref_y, mean, invstd = ref[0], ref[1], ref[2]
    bs = _bshape(x, axis)
    x64 = np.asarray(x, np.float64)
    w64 = np.ones(bs) if w is None else np.abs(np.asarray(w, np.float64)).reshape(bs)
    b64 = np.zeros(bs) if b is None else np.abs(np.asarray(b, np.float64)).reshape(bs)
    terms = (np.abs(x64) + np.abs(mean).reshape(bs)) * invstd.reshape(bs) * w64 + b64
    eps = np.finfo(dtype).eps
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    assert y.dtype == dtype
    assert y.shape == x.shape
    err = np.abs(y.astype(np.float64) - ref_y)
    tol = 16 * eps * terms + rtol * np.abs(ref_y) + (1e-5 if dtype == np.float32 else 1e-12) * w64
    bad = ~(err <= tol)
    assert not bad.any(), (
        f"{bad.sum()} of {bad.size} elements off; worst err {err.max():.3g}, "
        f"first bad index {np.argwhere(bad)[0]}"
    )


def _params(rng, C, dtype, weight=True, bias=True, running=True):
    w = (rng.standard_normal(C) + 1).astype(dtype) if weight else None
    b = rng.standard_normal(C).astype(dtype) if bias else None
    rm = rng.standard_normal(C).astype(dtype) if running else None
    rv = rng.uniform(0.5, 2.0, C).astype(dtype) if running else None
    return w, b, rm, rv


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("axis", [1, -1])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_against_reference(backend, dtype, shape, axis, training):
    rng = np.random.default_rng(len(shape) * 100 + shape[0])
    x = (rng.standard_normal(shape) * 2 + 0.5).astype(dtype)
    C = shape[axis]
    w, b, rm, rv = _params(rng, C, dtype)
    ref = ref_batch_norm(x, axis, training, rm, rv, w, b, eps=1e-5, momentum=0.1)
    rm0, rv0 = rm.copy(), rv.copy()
    y = bnfast.batch_norm(x, rm, rv, w, b, training=training, axis=axis)
    assert_bn_close(y, x, axis, ref, w, b)
    if training:
        tol = 1e-6 if dtype == np.float32 else 1e-13
        np.testing.assert_allclose(rm, ref[3], rtol=tol, atol=tol)
        np.testing.assert_allclose(rv, ref[4], rtol=tol, atol=tol)
    else:
        np.testing.assert_array_equal(rm, rm0)
        np.testing.assert_array_equal(rv, rv0)


@pytest.mark.parametrize("weight", [False, True])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_optional_affine(backend, weight, bias, training):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((17, 7, 16)).astype(np.float32)
    w, b, rm, rv = _params(rng, 7, np.float32, weight, bias)
    ref = ref_batch_norm(x, 1, training, rm, rv, w, b)
    y = bnfast.batch_norm(x, rm, rv, weight=w, bias=b, training=training)
    assert_bn_close(y, x, 1, ref, w, b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_training_without_running_stats(backend, dtype):
    rng = np.random.default_rng(8)
    x = rng.standard_normal((15, 33)).astype(dtype) * 3 - 1
    ref = ref_batch_norm(x, 1, True)
    y = bnfast.batch_norm(x, training=True)
    assert_bn_close(y, x, 1, ref)
    # normalized columns: mean ~0, biased var ~ var/(var+eps) ~ 1
    np.testing.assert_allclose(y.astype(np.float64).mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(y.astype(np.float64).var(0), 1, atol=1e-4)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("axis", [1, -1])
def test_return_stats(backend, dtype, training, axis):
    rng = np.random.default_rng(9)
    x = (rng.standard_normal((9, 5, 17)) * 0.5 + 2).astype(dtype)
    C = x.shape[axis]
    w, b, rm, rv = _params(rng, C, dtype)
    rm_in, rv_in = rm.copy(), rv.copy()
    ref = ref_batch_norm(x, axis, training, rm_in, rv_in, w, b, eps=1e-3)
    res = bnfast.batch_norm(
        x, rm, rv, w, b, training=training, axis=axis, eps=1e-3, return_stats=True
    )
    assert isinstance(res, tuple) and len(res) == 3
    y, mean, invstd = res
    assert_bn_close(y, x, axis, ref, w, b)
    for s in (mean, invstd):
        assert isinstance(s, np.ndarray)
        assert s.shape == (C,) and s.dtype == dtype
    tol = 2e-6 if dtype == np.float32 else 1e-13
    if training:
        np.testing.assert_allclose(mean, ref[1], rtol=tol)
    else:
        np.testing.assert_array_equal(mean, rm_in)  # running mean itself
    np.testing.assert_allclose(invstd, ref[2], rtol=tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_running_stats_updated_in_place(backend, dtype):
    rng = np.random.default_rng(10)
    x = rng.standard_normal((16, 4, 7)).astype(dtype) + 3
    rm = np.zeros(4, dtype)
    rv = np.ones(4, dtype)
    rm_id, rv_id = id(rm), id(rv)
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=(0, 2))
    uvar = x64.var(axis=(0, 2), ddof=1)
    bnfast.batch_norm(x, rm, rv, training=True, momentum=0.25)
    assert id(rm) == rm_id and id(rv) == rv_id
    tol = 1e-6 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(rm, 0.25 * mean, rtol=tol)
    np.testing.assert_allclose(rv, 0.75 + 0.25 * uvar, rtol=tol)
    # a second step compounds
    bnfast.batch_norm(x, rm, rv, training=True, momentum=0.25)
    np.testing.assert_allclose(rm, 0.75 * 0.25 * mean + 0.25 * mean, rtol=tol)
    np.testing.assert_allclose(rv, 0.75 * (0.75 + 0.25 * uvar) + 0.25 * uvar, rtol=tol)


def test_running_stats_strided_views_updated(backend):
    # running stats that are non-contiguous views must be updated through
    # the view (not in a temporary copy), leaving the gaps untouched.
    rng = np.random.default_rng(15)
    x = rng.standard_normal((17, 3, 5)).astype(np.float32) + 2
    rm_base = np.full(6, -9.0, np.float32)
    rv_base = np.full(9, -9.0, np.float32)
    rm, rv = rm_base[::2], rv_base[::-3]
    rm[...] = 0.0
    rv[...] = 1.0
    ref = ref_batch_norm(x, 1, True, rm.copy(), rv.copy())
    bnfast.batch_norm(x, rm, rv, training=True)
    np.testing.assert_allclose(rm_base[::2], ref[3], rtol=1e-6)
    np.testing.assert_allclose(rv_base[::-3], ref[4], rtol=1e-6)
    np.testing.assert_array_equal(rm_base[1::2], -9.0)
    mask = np.ones(9, bool)
    mask[::-3] = False
    np.testing.assert_array_equal(rv_base[mask], -9.0)


def test_momentum_zero_and_one(backend):
    rng = np.random.default_rng(11)
    x = rng.standard_normal((33, 3)) * 2 + 1
    rm, rv = np.full(3, 5.0), np.full(3, 9.0)
    bnfast.batch_norm(x, rm, rv, training=True, momentum=0.0)
    np.testing.assert_array_equal(rm, 5.0)
    np.testing.assert_array_equal(rv, 9.0)
    bnfast.batch_norm(x, rm, rv, training=True, momentum=1.0)
    np.testing.assert_allclose(rm, x.mean(0), rtol=1e-13)
    np.testing.assert_allclose(rv, x.var(0, ddof=1), rtol=1e-13)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_inputs_not_modified(backend, training):
    rng = np.random.default_rng(12)
    x = rng.standard_normal((8, 3, 5, 5)).astype(np.float32)
    w, b, rm, rv = _params(rng, 3, np.float32)
    saved = [a.copy() for a in (x, w, b)]
    run = (rm.copy(), rv.copy())
    bnfast.batch_norm(x, rm, rv, w, b, training=training)
    for a, s in zip((x, w, b), saved):
        np.testing.assert_array_equal(a, s)
    if not training:
        np.testing.assert_array_equal(rm, run[0])
        np.testing.assert_array_equal(rv, run[1])


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("axis", [1, -1])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_out_argument(backend, training, axis, dtype):
    rng = np.random.default_rng(13)
    x = rng.standard_normal((6, 5, 7, 3)).astype(dtype)
    C = x.shape[axis]
    w, b, rm, rv = _params(rng, C, dtype)
    expected = bnfast.batch_norm(x, rm.copy(), rv.copy(), w, b, training=training, axis=axis)
    out = np.full_like(x, np.nan)
    rm1, rv1 = rm.copy(), rv.copy()
    res = bnfast.batch_norm(x, rm1, rv1, w, b, training=training, axis=axis, out=out)
    assert res is out
    np.testing.assert_allclose(
        out, expected, rtol=4 * np.finfo(dtype).eps, atol=4 * np.finfo(dtype).eps
    )
    # return_stats with out: first element is out
    y, mean, invstd = bnfast.batch_norm(
        x, rm.copy(), rv.copy(), w, b, training=training, axis=axis, out=out, return_stats=True
    )
    assert y is out
    # in place: out=x
    xin = x.copy()
    res = bnfast.batch_norm(xin, rm.copy(), rv.copy(), w, b, training=training, axis=axis, out=xin)
    assert res is xin
    np.testing.assert_allclose(
        xin, expected, rtol=4 * np.finfo(dtype).eps, atol=4 * np.finfo(dtype).eps
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("value", [1e4, 0.1, -3.0])
def test_constant_channel_gives_bias_exactly(backend, dtype, value):
    rng = np.random.default_rng(14)
    x = rng.standard_normal((257, 3, 9)).astype(dtype)
    x[:, 1, :] = dtype(value)
    w = np.array([1.5, 2.0, -0.5], dtype)
    b = np.array([0.25, -1.75, 3.0], dtype)
    y, mean, invstd = bnfast.batch_norm(x, weight=w, bias=b, training=True, return_stats=True)
    np.testing.assert_array_equal(y[:, 1, :], np.full((257, 9), b[1], dtype))
    assert mean[1] == dtype(value)
    np.testing.assert_allclose(invstd[1], 1 / np.sqrt(1e-5), rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nan_and_inf_propagate(backend, dtype):
    x = np.tile(np.arange(16, dtype=dtype)[:, None], (1, 4))
    x[3, 1] = np.nan
    x[5, 2] = np.inf
    rm, rv = np.zeros(4, dtype), np.ones(4, dtype)
    with np.errstate(all="ignore"):
        y = bnfast.batch_norm(x, rm, rv, training=True)
    assert np.isnan(y[:, 1]).all()  # mean/var of the channel are NaN
    assert np.isnan(y[:, 2]).all()  # inf - inf
    assert np.isfinite(y[:, [0, 3]]).all()
    assert np.isnan(rm[1]) and np.isnan(rv[1])
    assert np.isfinite(rm[[0, 3]]).all() and np.isfinite(rv[[0, 3]]).all()
    # eval: only the bad elements are affected
    rm, rv = np.zeros(4, dtype), np.ones(4, dtype)
    with np.errstate(all="ignore"):
        y = bnfast.batch_norm(x, rm, rv, training=False)
    assert np.isnan(y[3, 1]) and y[5, 2] == np.inf
    mask = np.ones_like(y, dtype=bool)
    mask[3, 1] = mask[5, 2] = False
    assert np.isfinite(y[mask]).all()


@pytest.mark.parametrize("C", EDGE_SIZES + [1023])
@pytest.mark.parametrize("N", [2, 7, 16, 17, 33])
def test_channel_and_batch_edge_sizes(backend, C, N):
    rng = np.random.default_rng(C * 1000 + N)
    x = rng.standard_normal((N, C)).astype(np.float32) * 4 + 1
    w, b, rm, rv = _params(rng, C, np.float32)
    for axis, xx in ((1, x), (-1, x)):
        ref = ref_batch_norm(xx, axis, True, rm.copy(), rv.copy(), w, b)
        y = bnfast.batch_norm(xx, rm.copy(), rv.copy(), w, b, training=True, axis=axis)
        assert_bn_close(y, xx, axis, ref, w, b)


def test_eps_is_used(backend):
    x = np.array([[0.0], [2.0]])
    y = bnfast.batch_norm(x, training=True, eps=3.0)
    # mean 1, biased var 1 -> (x - 1) / sqrt(1 + 3) = -0.5, 0.5
    np.testing.assert_allclose(y[:, 0], [-0.5, 0.5], rtol=1e-15)
    y = bnfast.batch_norm(x, np.array([0.0]), np.array([1.0]), training=False, eps=3.0)
    np.testing.assert_allclose(y[:, 0], [0.0, 1.0], rtol=1e-15)


# --------------------------------------------------------------------------
# property test
# --------------------------------------------------------------------------
@given(data=st.data())
def test_property_batch_norm(backend, data):
    nd = data.draw(st.integers(2, 5))
    sizes = [1, 2, 3, 7, 15, 16, 17, 33]
    shape, prod = [], 1
    for _ in range(nd):
        d = data.draw(st.sampled_from([s for s in sizes if prod * s <= 20_000]))
        shape.append(d)
        prod *= d
    dtype = np.dtype(data.draw(st.sampled_from([np.float32, np.float64])))
    axis = data.draw(st.sampled_from([1, -1]))
    training = data.draw(st.booleans())
    layout = data.draw(st.sampled_from(LAYOUTS))
    kind = data.draw(st.sampled_from(["normal", "normal", "ints", "const"]))
    has_w, has_b, has_run = (data.draw(st.booleans()) for _ in range(3))
    eps = data.draw(st.sampled_from([1e-5, 1e-3, 0.1]))
    momentum = data.draw(st.sampled_from([0.1, 0.0, 0.5, 1.0]))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    x = with_layout(make_values(rng, tuple(shape), dtype, kind), layout, rng)
    C = x.shape[axis]
    if not training:
        has_run = True
    w, b, rm, rv = _params(rng, C, dtype, has_w, has_b, has_run)
    x_before = np.array(x)
    per_channel = x.size // C
    if training and per_channel <= 1:
        with pytest.raises(
            ValueError, match="Expected more than 1 value per channel when training"
        ):
            bnfast.batch_norm(
                x, rm, rv, w, b, training=training, axis=axis, eps=eps, momentum=momentum
            )
        return
    ref = ref_batch_norm(x, axis, training, rm, rv, w, b, eps=eps, momentum=momentum)
    y, mean, invstd = bnfast.batch_norm(
        x, rm, rv, w, b, training=training, axis=axis, eps=eps, momentum=momentum, return_stats=True
    )
    assert_bn_close(y, x, axis, ref, w, b)
    np.testing.assert_array_equal(x, x_before)
    tol = 2e-6 if dtype == np.float32 else 1e-12
    scale = float(np.abs(x_before.astype(np.float64)).max())
    np.testing.assert_allclose(mean, ref[1], rtol=tol, atol=tol * scale)
    np.testing.assert_allclose(invstd, ref[2], rtol=max(tol, 1e-5 if dtype == np.float32 else 0))
    if training and has_run:
        np.testing.assert_allclose(rm, ref[3], rtol=tol, atol=tol * scale)
        np.testing.assert_allclose(
            rv, ref[4], rtol=max(tol, 1e-5 if dtype == np.float32 else 0), atol=tol * scale**2
        )


# ==========================================================================
# argument validation
# ==========================================================================
def _x(shape=(4, 3), dtype=np.float32):
    return np.random.default_rng(0).standard_normal(shape).astype(dtype)


def _stats(C=3, dtype=np.float32):
    return np.zeros(C, dtype), np.ones(C, dtype)


@pytest.mark.parametrize(
    "dtype", [np.uint8, np.int32, np.int64, np.bool_, np.complex64, np.complex128]
)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_bad_dtype(backend, dtype, training):
    x = np.ones((4, 3), dtype=dtype)
    rm, rv = _stats()
    with pytest.raises(TypeError):
        bnfast.batch_norm(x, rm, rv, training=training)


@pytest.mark.parametrize("shape", [(3,), ()])
def test_ndim_below_2(backend, shape):
    x = np.ones(shape, np.float32)
    rm, rv = _stats()
    with pytest.raises(ValueError):
        bnfast.batch_norm(x, rm, rv, training=False)
    with pytest.raises(ValueError):
        bnfast.batch_norm(x, training=True)


@pytest.mark.parametrize("name", ["weight", "bias", "running_mean", "running_var"])
@pytest.mark.parametrize("length", [2, 4, 0])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_param_length_message(backend, name, length, training):
    x = _x((5, 3))
    kwargs = dict(
        running_mean=np.zeros(3, np.float32),
        running_var=np.ones(3, np.float32),
        weight=np.ones(3, np.float32),
        bias=np.zeros(3, np.float32),
    )
    kwargs[name] = np.ones(length, np.float32)
    msg = re.escape(f"{name} should contain 3 elements not {length}")
    with pytest.raises(ValueError, match=msg):
        bnfast.batch_norm(x, training=training, **kwargs)


def test_param_length_message_channels_last(backend):
    x = _x((5, 2, 7))
    with pytest.raises(ValueError, match=re.escape("weight should contain 7 elements not 2")):
        bnfast.batch_norm(x, weight=np.ones(2, np.float32), training=True, axis=-1)


@pytest.mark.parametrize("shape", [(1, 3), (0, 3), (1, 3, 1), (1, 3, 1, 1), (0, 3, 4)])
def test_one_value_per_channel_when_training(backend, shape):
    x = np.ones(shape, np.float32)
    with pytest.raises(
        ValueError, match="Expected more than 1 value per channel when training, got input size"
    ):
        bnfast.batch_norm(x, training=True)
    rm, rv = _stats()
    with pytest.raises(
        ValueError, match="Expected more than 1 value per channel when training, got input size"
    ):
        bnfast.batch_norm(x, rm, rv, training=True)


def test_one_value_per_channel_allowed_in_eval(backend):
    x = np.array([[1.0, 2.0, 3.0]], np.float32)
    rm, rv = np.array([1.0, 0.0, 3.0], np.float32), np.ones(3, np.float32)
    y = bnfast.batch_norm(x, rm, rv, training=False, eps=0.0)
    np.testing.assert_array_equal(y, [[0.0, 2.0, 0.0]])


def test_eval_requires_running_stats(backend):
    x = _x()
    with pytest.raises(ValueError, match="running_mean"):
        bnfast.batch_norm(x, training=False)
    with pytest.raises(ValueError, match="running_mean"):
        bnfast.batch_norm(x)  # training defaults to False


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_only_one_running_stat(backend, training):
    x = _x()
    rm, rv = _stats()
    with pytest.raises(ValueError):
        bnfast.batch_norm(x, running_mean=rm, training=training)
    with pytest.raises(ValueError):
        bnfast.batch_norm(x, running_var=rv, training=training)


@pytest.mark.parametrize("eps", [-1e-5, -1.0, float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_bad_eps(backend, eps, training):
    x = _x()
    rm, rv = _stats()
    with pytest.raises(ValueError, match="eps"):
        bnfast.batch_norm(x, rm, rv, training=training, eps=eps)


@pytest.mark.parametrize("momentum", [-0.1, 1.5, float("nan"), float("inf")])
def test_bad_momentum(backend, momentum):
    x = _x()
    rm, rv = _stats()
    rm0, rv0 = rm.copy(), rv.copy()
    with pytest.raises(ValueError, match="momentum"):
        bnfast.batch_norm(x, rm, rv, training=True, momentum=momentum)
    # a rejected call must not have touched the running stats
    np.testing.assert_array_equal(rm, rm0)
    np.testing.assert_array_equal(rv, rv0)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_out_errors(backend, training):
    x = _x((4, 3, 2))
    rm, rv = _stats()
    with pytest.raises(ValueError, match="out"):
        bnfast.batch_norm(x, rm, rv, training=training, out=np.empty((4, 3), np.float32))
    with pytest.raises(ValueError, match="out"):
        bnfast.batch_norm(x, rm, rv, training=training, out=np.empty((4, 3, 3), np.float32))
    with pytest.raises(TypeError, match="out"):
        bnfast.batch_norm(x, rm, rv, training=training, out=np.empty((4, 3, 2), np.float64))
    ro = np.empty((4, 3, 2), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        bnfast.batch_norm(x, rm, rv, training=training, out=ro)


@pytest.mark.parametrize("which", ["running_mean", "running_var"])
def test_read_only_running_stats_when_training(backend, which):
    x = _x()
    rm, rv = _stats()
    (rm if which == "running_mean" else rv).flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        bnfast.batch_norm(x, rm, rv, training=True)


def test_read_only_running_stats_fine_in_eval(backend):
    x = _x()
    rm, rv = _stats()
    rm.flags.writeable = False
    rv.flags.writeable = False
    y = bnfast.batch_norm(x, rm, rv, training=False, eps=0.0)
    np.testing.assert_array_equal(y, x)  # (x - 0) / sqrt(1 + 0)


@pytest.mark.parametrize("which", ["running_mean", "running_var"])
@pytest.mark.parametrize("xdtype, sdtype", [(np.float32, np.float64), (np.float64, np.float32)])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_running_stats_dtype_mismatch(backend, which, xdtype, sdtype, training):
    x = _x(dtype=xdtype)
    rm, rv = _stats(dtype=xdtype)
    bad = np.zeros(3, sdtype) if which == "running_mean" else np.ones(3, sdtype)
    kwargs = dict(running_mean=rm, running_var=rv)
    kwargs[which] = bad
    with pytest.raises(TypeError, match=which):
        bnfast.batch_norm(x, training=training, **kwargs)


@pytest.mark.parametrize("which", ["running_mean", "running_var"])
def test_running_stats_not_ndarray_when_training(backend, which):
    x = _x()
    kwargs = dict(running_mean=np.zeros(3, np.float32), running_var=np.ones(3, np.float32))
    kwargs[which] = [0.0, 0.0, 0.0] if which == "running_mean" else [1.0, 1.0, 1.0]
    with pytest.raises(TypeError):
        bnfast.batch_norm(x, training=True, **kwargs)


@pytest.mark.parametrize(
    "shape, axis", [((4, 3), 2), ((4, 3), -3), ((2, 3, 4, 5), 4), ((2, 3, 4, 5), -5)]
)
def test_axis_out_of_range(backend, shape, axis):
    x = _x(shape)
    with pytest.raises(np.exceptions.AxisError):
        bnfast.batch_norm(x, training=True, axis=axis)
    with pytest.raises(ValueError):
        bnfast.batch_norm(x, training=True, axis=axis)


# ==========================================================================
# accuracy, exactness, determinism
# ==========================================================================
def test_float32_large_offset_batch_norm(backend, big_offset_f32):
    x = big_offset_f32.reshape(-1, 8)
    y, mean, invstd = bnfast.batch_norm(x, training=True, return_stats=True)
    x64 = x.astype(np.float64)
    ref_invstd = 1 / np.sqrt(x64.var(axis=0) + 1e-5)
    np.testing.assert_allclose(invstd, ref_invstd, rtol=1e-5)
    np.testing.assert_allclose(mean, x64.mean(axis=0), rtol=1e-6)
    # outputs must be normalized: a bad variance would scale them
    np.testing.assert_allclose(y.astype(np.float64).var(axis=0), 1.0, rtol=1e-3)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(64, 3, 17, 33), (300_000, 3)], ids=["nchw", "large-nc"])
def test_constant_channel_is_bias_large(backend, dtype, shape):
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


@pytest.mark.parametrize("value", [1e4, -1e4, 1234.5678])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_constant_channel_gives_bias_exactly_large_values(backend, dtype, value):
    """A constant channel has mean == value exactly and variance 0, so
    (x - mean) == 0 and the output must be bias exactly (no folded
    scale/shift rounding, which would be off by ~ulp(value*rstd))."""
    rng = np.random.default_rng(3)
    v = dtype(value)
    wc = (rng.standard_normal(6) + 2).astype(dtype)
    bc = rng.standard_normal(6).astype(dtype)
    x = make_data(rng, (5, 6, 7), dtype)
    x[:, 1] = v
    y = bnfast.batch_norm(x, weight=wc, bias=bc, training=True)
    assert np.all(y[:, 1] == bc[1])


def test_threads_are_deterministic(native_backend, det_inputs):
    d = det_inputs

    def run():
        out = []
        rm, rv = np.zeros(8, np.float32), np.ones(8, np.float32)
        y, mean, invstd = bnfast.batch_norm(d["nchw"], rm, rv, training=True, return_stats=True)
        out.append(b"".join(a.tobytes() for a in (y, mean, invstd, rm, rv)))
        rm, rv = np.zeros(33, np.float32), np.ones(33, np.float32)
        y = bnfast.batch_norm(d["nc"], rm, rv, training=True)
        out.append(b"".join(a.tobytes() for a in (y, rm, rv)))
        return out

    with bnfast.threads(1):
        ref = run()
    for n in (2, 3, 4):
        with bnfast.threads(n):
            got = run()
        for name, a, b in zip(["bn-nchw", "bn-nc"], ref, got):
            assert a == b, f"{name}: result with {n} threads differs from 1 thread"


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


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("axis", [1, -1])
def test_native_matches_numpy_backend(native_backend, dtype, training, axis):
    rng = np.random.default_rng(12)
    x = rng.standard_normal((8, 17, 33, 15)).astype(dtype)
    C = x.shape[axis]
    w = (rng.standard_normal(C) + 1).astype(dtype)
    b = rng.standard_normal(C).astype(dtype)
    rm0 = rng.standard_normal(C).astype(dtype)
    rv0 = rng.uniform(0.5, 2, C).astype(dtype)

    def run():
        rm, rv = rm0.copy(), rv0.copy()
        y, mean, invstd = bnfast.batch_norm(
            x, rm, rv, w, b, training=training, axis=axis, return_stats=True
        )
        return y, mean, invstd, rm, rv

    got = run()
    with runtime.using("numpy"):
        ref = run()
    # float32: stats agree to ~1 ulp, the O(1) outputs to a few ulps;
    # float64: rounding order only.
    tol = 1e-6 if dtype == np.float32 else 1e-12
    for name, a, r in zip(["y", "mean", "invstd", "running_mean", "running_var"], got, ref):
        assert a.dtype == r.dtype == dtype, name
        np.testing.assert_allclose(a, r, rtol=tol, atol=tol, err_msg=name)
    # and both are right
    y64 = ref_batch_norm(x, axis, training, rm0, rv0, w, b)[0]
    np.testing.assert_allclose(got[0], y64, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", list(KERNEL_PATHS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_affine_paths_match_numpy_backend(native_backend, name, dtype):
    # The eval and training outputs on every loop of the native affine kernel
    # (the moments kernel's paths, see test_moments_accuracy.py).
    shape, axis, order = KERNEL_PATHS[name]
    if axis is None or len(shape) < 2:
        pytest.skip("batch norm needs a channel axis")
    kept = [i for i in range(len(shape)) if i not in np.atleast_1d(axis)]
    if len(kept) != 1:
        pytest.skip("batch norm keeps exactly one axis")
    ch = kept[0]
    rng = np.random.default_rng(5)
    x = np.asarray((2.0 + rng.standard_normal(shape)).astype(dtype), order=order)
    c = shape[ch]
    w = rng.standard_normal(c).astype(dtype)
    b = rng.standard_normal(c).astype(dtype)
    rm = rng.standard_normal(c).astype(dtype)
    rv = (rng.random(c) + 0.5).astype(dtype)
    for training in (True, False):
        y = (
            bnfast.batch_norm(x, rm, rv, w, b, training=False, axis=ch)
            if not training
            else bnfast.batch_norm(x, None, None, w, b, training=True, axis=ch)
        )
        with runtime.using("numpy"):
            y_ref = (
                bnfast.batch_norm(x, rm, rv, w, b, training=False, axis=ch)
                if not training
                else bnfast.batch_norm(x, None, None, w, b, training=True, axis=ch)
            )
        # Same formula, same per-channel constants; only FMA contraction
        # differs: a couple of ulps of the terms' magnitude.
        eps = np.finfo(dtype).eps
        mag = np.abs(x).max() * np.abs(w).max() * 2 + np.abs(b).max() + 10
        np.testing.assert_allclose(y, y_ref, rtol=0, atol=8 * eps * mag)


# Large outputs (>= 8 MiB) are written with streaming (non-temporal) stores
# after a scalar head up to vector alignment, and (N, C) data with short rows
# runs as one "periodic" flat run. Neither may change a single value.
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("c", [2, 3, 16, 17, 64, 100])
@pytest.mark.parametrize("offset", [0, 1, 3])
def test_eval_periodic_and_streamed_equals_pieces(native_backend, dtype, c, offset):
    rows = STREAM_BYTES // (np.dtype(dtype).itemsize * c) + 7
    rng = np.random.default_rng(c)
    x = rng.standard_normal((rows, c)).astype(dtype)
    rm, rv = rng.standard_normal(c).astype(dtype), rng.uniform(0.5, 2, c).astype(dtype)
    w, b = rng.standard_normal(c).astype(dtype), rng.standard_normal(c).astype(dtype)
    y = misaligned_empty(x.shape, dtype, offset)
    bnfast.batch_norm(x, rm, rv, w, b, out=y)
    # Fortran order sends the same data down the per-channel-run path (no
    # periodic run); the kernels use the same operations (FMA included) on
    # every path of one capability, so the values must match bit for bit.
    ref = bnfast.batch_norm(np.asfortranarray(x), rm, rv, w, b)
    np.testing.assert_array_equal(y, ref)
    for lo in range(0, rows, rows // 5 + 1):  # small pieces: plain stores
        piece = x[lo : lo + 1000]
        np.testing.assert_array_equal(y[lo : lo + 1000], bnfast.batch_norm(piece, rm, rv, w, b))
