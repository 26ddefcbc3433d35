"""The C++ fast entry point of batch norm (batch_norm_fast) gives bit for bit
what the general Python path gives, and steps aside (returning None) for
everything it does not handle, so errors still come from the general path.
(Layer and RMS norm's fast entry point is tested in test_layer_norm.py.)

``return_stats=True`` always takes the general path, which makes it the
reference here.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bnfast
from bnfast import _batch_norm
from helpers import requires_native, runtime

pytestmark = requires_native

try:
    import ml_dtypes

    HALF = [np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16)]
except ImportError:  # float16 cases still run
    HALF = [np.dtype(np.float16)]

SHAPES = [
    (2, 3),
    (4, 16),
    (17, 33),
    (1, 5, 7),
    (3, 1, 4, 4),
    (2, 7, 1, 1),
    (5, 16, 3, 17),
    (64, 1),
    (1, 1, 9),
    (5, 1, 9),
    (4, 1, 5, 5),
]


class _Sub(np.ndarray):
    """A trivial ndarray subclass: the fast path leaves subclasses alone."""


def _fast(name):
    return getattr(runtime.core(), name)


def _bn_both(x, axis, training, dtype, with_running, with_affine, momentum=0.1, eps=1e-5, out=None):
    """The fast entry point's and the general path's (y, running_mean,
    running_var); parameters of ``dtype``."""
    c = x.shape[axis]
    rng = np.random.default_rng(c)
    rm = rng.standard_normal(c).astype(dtype) if with_running else None
    rv = rng.uniform(0.5, 2, c).astype(dtype) if with_running else None
    w = rng.standard_normal(c).astype(dtype) if with_affine else None
    b = rng.standard_normal(c).astype(dtype) if with_affine else None
    rm2 = None if rm is None else rm.copy()
    rv2 = None if rv is None else rv.copy()
    fast = _fast("batch_norm_fast")(x, rm, rv, w, b, training, momentum, eps, axis, out)
    assert fast is not None, "the fast path should handle this call"
    ref = bnfast.batch_norm(
        x,
        rm2,
        rv2,
        w,
        b,
        training=training,
        momentum=momentum,
        eps=eps,
        axis=axis,
        return_stats=True,
    )[0]
    return (fast, rm, rv), (ref, rm2, rv2)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("axis", [1, -1])
def test_batch_norm_fast_is_bitwise_the_general_path(native_backend, shape, dtype, training, axis):
    x = (np.random.default_rng(0).standard_normal(shape) * 3 + 7).astype(dtype)
    if training and x.size // x.shape[axis] <= 1:
        pytest.skip("training needs more than one value per channel")
    if x.shape[axis] == 1:  # one channel: the general path views it differently
        assert (
            _fast("batch_norm_fast")(x, None, None, None, None, training, 0.1, 1e-5, axis, None)
            is None
        )
        return
    for with_running in [True, False] if training else [True]:
        for with_affine in (True, False):
            got, want = _bn_both(x, axis, training, dtype, with_running, with_affine)
            for g, w in zip(got, want):
                if w is not None:
                    np.testing.assert_array_equal(g, w)
                    assert g.dtype == w.dtype


def _bits(a):
    return None if a is None else np.ascontiguousarray(a).view(np.uint8)


@pytest.mark.parametrize("shape", [(4, 16), (17, 33), (5, 16, 3, 17), (2, 8, 130)])
@pytest.mark.parametrize("dtype", HALF, ids=[d.name for d in HALF])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("axis", [1, -1])
def test_batch_norm_fast_half_is_bitwise_the_general_path(
    native_backend, shape, dtype, training, axis
):
    # float16/bfloat16 x with float32 parameters and running statistics
    # (PyTorch's mixed convention): the fast path takes the call, and every
    # bit (signs of zero included) is the general path's.
    x = (np.random.default_rng(0).standard_normal(shape) * 3 + 7).astype(dtype)
    for with_running in [True, False] if training else [True]:
        for with_affine in (True, False):
            got, want = _bn_both(x, axis, training, np.float32, with_running, with_affine)
            for g, w in zip(got, want):
                if w is not None:
                    assert g.dtype == w.dtype
                    np.testing.assert_array_equal(_bits(g), _bits(w))


@pytest.mark.parametrize("dtype", HALF, ids=[d.name for d in HALF])
def test_batch_norm_fast_half_steps_aside_for_half_parameters(native_backend, dtype):
    # Parameters of x's half dtype are converted by the general path.
    x = np.ones((4, 3), dtype)
    fast = _fast("batch_norm_fast")
    half_c = np.ones(3, dtype)
    assert fast(x, half_c, half_c, None, None, False, 0.1, 1e-5, 1, None) is None
    assert fast(x, None, None, half_c, None, True, 0.1, 1e-5, 1, None) is None
    assert fast(x, None, None, np.ones(3), None, True, 0.1, 1e-5, 1, None) is None  # float64


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_batch_norm_fast_large_and_threads(native_backend, threads):
    bnfast.set_num_threads(threads)
    x = np.random.default_rng(1).standard_normal((8, 64, 30, 30)).astype(np.float32)
    (y, rm, rv), (y2, rm2, rv2) = _bn_both(x, 1, True, np.float32, True, True, momentum=0.3)
    np.testing.assert_array_equal(y, y2)
    np.testing.assert_array_equal(rm, rm2)
    np.testing.assert_array_equal(rv, rv2)


def test_batch_norm_fast_out_and_in_place(native_backend):
    x = np.random.default_rng(2).standard_normal((16, 8)).astype(np.float32)
    out = np.empty_like(x)
    y = bnfast.batch_norm(x, training=True, out=out)
    assert y is out
    ref = bnfast.batch_norm(x, training=True, return_stats=True)[0]
    np.testing.assert_array_equal(out, ref)
    xi = x.copy()
    assert bnfast.batch_norm(xi, training=True, out=xi) is xi
    np.testing.assert_array_equal(xi, ref)
    # Partial overlap: the fast path steps aside; the general path copies.
    buf = np.random.default_rng(3).standard_normal(17 * 8).astype(np.float32)
    xs, ys = buf[:128].reshape(16, 8), buf[8:136].reshape(16, 8)
    assert _fast("batch_norm_fast")(xs, None, None, None, None, True, 0.1, 1e-5, 1, ys) is None
    want = bnfast.batch_norm(xs.copy(), training=True)
    np.testing.assert_array_equal(bnfast.batch_norm(xs, training=True, out=ys), want)


@pytest.mark.parametrize(
    "case",
    [
        "noncontig",
        "fortran",
        "subclass",
        "int_x",
        "f16_weight",
        "bool_training",
        "np_float_eps",
        "weight_f64",
        "running_readonly",
        "count1",
        "eps0_train",
        "eval_no_running",
        "momentum_out_of_range",
        "axis_out_of_range",
        "one_running",
        "wrong_len_weight",
        "out_wrong_dtype",
    ],
)
def test_batch_norm_fast_steps_aside(native_backend, case):
    x = np.random.default_rng(4).standard_normal((6, 5)).astype(np.float32)
    rm, rv = np.zeros(5, np.float32), np.ones(5, np.float32)
    args = dict(
        x=x,
        rm=None,
        rv=None,
        w=None,
        b=None,
        training=True,
        momentum=0.1,
        eps=1e-5,
        axis=1,
        out=None,
    )
    if case == "noncontig":
        args["x"] = np.random.default_rng(4).standard_normal((6, 10)).astype(np.float32)[:, ::2]
    elif case == "fortran":
        args["x"] = np.asfortranarray(x)
    elif case == "subclass":
        args["x"] = x.view(_Sub)
    elif case == "int_x":
        args["x"] = np.ones((6, 5), dtype=np.int32)
    elif case == "f16_weight":  # half x takes float32 parameters only
        args["x"] = x.astype(np.float16)
        args["w"] = np.ones(x.shape[1], np.float16)
    elif case == "bool_training":
        args["training"] = 1
    elif case == "np_float_eps":
        args["eps"] = np.float32(1e-5)
    elif case == "weight_f64":
        args["w"] = np.ones(5)
    elif case == "running_readonly":
        rm.flags.writeable = False
        args.update(rm=rm, rv=rv)
    elif case == "count1":
        args["x"] = x[:1]
    elif case == "eps0_train":
        args["eps"] = 0.0
    elif case == "eval_no_running":
        args["training"] = False
    elif case == "momentum_out_of_range":
        args["momentum"] = 1.5
    elif case == "axis_out_of_range":
        args["axis"] = 2
    elif case == "one_running":
        args["rm"] = rm
    elif case == "wrong_len_weight":
        args["w"] = np.ones(4, np.float32)
    elif case == "out_wrong_dtype":
        args["out"] = np.empty((6, 5))
    assert _fast("batch_norm_fast")(*args.values()) is None


# 20 examples under each native capability (60 at one capability before).
@settings(max_examples=20)
@given(
    n=st.sampled_from([2, 3, 15, 16, 17, 33]),
    c=st.sampled_from([2, 7, 16, 17, 64]),
    hw=st.sampled_from([1, 3, 8]),
    training=st.booleans(),
    channels_last=st.booleans(),
)
def test_hypothesis_bn_fast_vs_general(native_backend, n, c, hw, training, channels_last):
    shape = (n, hw, hw, c) if channels_last else (n, c, hw, hw)
    axis = -1 if channels_last else 1
    x = np.random.default_rng(n * c + hw).standard_normal(shape).astype(np.float32)
    (y, rm, rv), (y2, rm2, rv2) = _bn_both(x, axis, training, np.float32, True, True)
    np.testing.assert_array_equal(y, y2)
    np.testing.assert_array_equal(rm, rm2)
    np.testing.assert_array_equal(rv, rv2)


@pytest.mark.parametrize("shape", [(5, 1, 9), (4, 1, 5, 5), (7, 1)])
def test_single_channel_public_call_matches_general_path(native_backend, shape):
    x = np.random.default_rng(0).standard_normal(shape)
    rm, rv = np.zeros(1), np.ones(1)
    rm2, rv2 = rm.copy(), rv.copy()
    y = bnfast.batch_norm(x, rm, rv, training=True)
    ref = bnfast.batch_norm(x, rm2, rv2, training=True, return_stats=True)[0]
    np.testing.assert_array_equal(y, ref)
    np.testing.assert_array_equal(rv, rv2)


def test_overlapping_running_stats_update_like_the_general_path(native_backend):
    x = np.random.default_rng(1).standard_normal((6, 4))
    buf, buf2 = np.arange(5.0) + 1, np.arange(5.0) + 1
    fast = _fast("batch_norm_fast")(x, buf[:4], buf[1:], None, None, True, 0.3, 1e-5, 1, None)
    assert fast is not None
    bnfast.batch_norm(x, buf2[:4], buf2[1:], training=True, momentum=0.3, return_stats=True)
    np.testing.assert_array_equal(buf, buf2)


# --------------------------------------------------------------------------
# batch_norm_backward_fast: the training backward's common call
# --------------------------------------------------------------------------
def _bwd_inputs(shape, axis, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 3 + 7).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    c = x.shape[axis]
    _, mean, invstd = bnfast.batch_norm(x, training=True, axis=axis, return_stats=True)
    w = rng.standard_normal(c).astype(dtype)
    return x, dy, mean, invstd, w


def _bwd_general(dy, x, mean, invstd, w, axis, out=None):
    # The general Python path, which batch_norm_backward takes whenever the
    # fast one steps aside.
    return _batch_norm.backward(dy, x, mean, invstd, w, axis, True, out, "batch_norm_backward")


def _assert_grads_equal(got, ref):
    assert len(got) == len(ref) == 3
    for g, r in zip(got, ref):
        if r is None:
            assert g is None
        else:
            assert g.dtype == r.dtype and g.shape == r.shape
            np.testing.assert_array_equal(g, r)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("axis", [1, -1])
@pytest.mark.parametrize("with_weight", [True, False])
def test_batch_norm_backward_fast_is_bitwise_the_general_path(
    native_backend, shape, dtype, axis, with_weight
):
    if np.prod(shape) // shape[axis] <= 1:
        pytest.skip("training needs more than one value per channel")
    x, dy, mean, invstd, w = _bwd_inputs(shape, axis, dtype)
    w = w if with_weight else None
    fast = _fast("batch_norm_backward_fast")(dy, x, mean, invstd, w, axis, True, None)
    if shape[axis] == 1:  # one channel: the general path views it differently
        assert fast is None
        return
    assert fast is not None, "the fast path should handle this call"
    _assert_grads_equal(fast, _bwd_general(dy, x, mean, invstd, w, axis))
    _assert_grads_equal(bnfast.batch_norm_backward(dy, x, mean, invstd, w, axis=axis), fast)


@pytest.mark.parametrize("target", ["new", "dy", "x", "other", "dy_shifted"])
def test_batch_norm_backward_fast_out(native_backend, target):
    # out=dy is computed in place by the fast path; out=x or an out that
    # partly overlaps dy steps aside (the general path uses a temporary):
    # every case gives the general path's result.
    shape, axis = (4, 6, 5), 1
    x, dy, mean, invstd, w = _bwd_inputs(shape, axis, np.float32, seed=3)
    ref = _bwd_general(dy.copy(), x.copy(), mean, invstd, w, axis)
    buf = np.zeros(x.size + 3, np.float32)
    if target == "dy":
        out = dy
    elif target == "x":
        out = x
    elif target == "other":
        out = np.empty_like(x)
    elif target == "dy_shifted":
        buf[: x.size] = dy.ravel()
        dy = buf[: x.size].reshape(shape)
        out = buf[3:].reshape(shape)
    else:
        out = None
    fast = _fast("batch_norm_backward_fast")(dy, x, mean, invstd, w, axis, True, out)
    if target in ("x", "dy_shifted"):
        assert fast is None
        got = bnfast.batch_norm_backward(dy, x, mean, invstd, w, axis=axis, out=out)
    else:
        assert fast is not None
        got = fast
        if out is not None:
            assert got[0] is out
    _assert_grads_equal(got, ref)


@pytest.mark.parametrize(
    "case",
    [
        "noncontig",
        "subclass",
        "f16",
        "eval",
        "np_bool_training",
        "mean_f64",
        "weight_f64",
        "dy_f64",
        "dy_shape",
        "axis_out_of_range",
        "out_readonly",
        "out_wrong_dtype",
        "stats_wrong_len",
    ],
)
def test_batch_norm_backward_fast_steps_aside(native_backend, case):
    x, dy, mean, invstd, w = _bwd_inputs((6, 5), 1, np.float32, seed=4)
    args = dict(dy=dy, x=x, mean=mean, invstd=invstd, w=w, axis=1, training=True, out=None)
    if case == "noncontig":
        args["x"] = np.repeat(x, 2, axis=1)[:, ::2]
    elif case == "subclass":
        args["x"] = x.view(_Sub)
    elif case == "f16":
        args["x"], args["dy"] = x.astype(np.float16), dy.astype(np.float16)
    elif case == "eval":
        args["training"] = False
    elif case == "np_bool_training":
        args["training"] = np.True_
    elif case == "mean_f64":
        args["mean"] = mean.astype(np.float64)
    elif case == "weight_f64":
        args["w"] = w.astype(np.float64)
    elif case == "dy_f64":
        args["dy"] = dy.astype(np.float64)
    elif case == "dy_shape":
        args["dy"] = dy[:5]
    elif case == "axis_out_of_range":
        args["axis"] = 2
    elif case == "out_readonly":
        out = np.empty_like(x)
        out.flags.writeable = False
        args["out"] = out
    elif case == "out_wrong_dtype":
        args["out"] = np.empty((6, 5))
    elif case == "stats_wrong_len":
        args["mean"] = mean[:4]
    assert _fast("batch_norm_backward_fast")(*args.values()) is None


@settings(max_examples=20)
@given(
    n=st.sampled_from([2, 3, 15, 16, 17, 33]),
    c=st.sampled_from([2, 7, 16, 17, 64]),
    hw=st.sampled_from([1, 3, 8]),
    channels_last=st.booleans(),
    dtype=st.sampled_from([np.float32, np.float64]),
)
def test_hypothesis_bn_backward_fast_vs_general(native_backend, n, c, hw, channels_last, dtype):
    shape = (n, hw, hw, c) if channels_last else (n, c, hw, hw)
    axis = -1 if channels_last else 1
    x, dy, mean, invstd, w = _bwd_inputs(shape, axis, dtype, seed=n * c + hw)
    fast = _fast("batch_norm_backward_fast")(dy, x, mean, invstd, w, axis, True, None)
    assert fast is not None
    _assert_grads_equal(fast, _bwd_general(dy, x, mean, invstd, w, axis))
