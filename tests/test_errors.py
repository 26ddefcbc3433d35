"""Argument validation of bnfast.batch_norm (types, messages)."""
import re

import numpy as np
import pytest

import bnfast


def _x(shape=(4, 3), dtype=np.float32):
    return np.random.default_rng(0).standard_normal(shape).astype(dtype)


def _stats(C=3, dtype=np.float32):
    return np.zeros(C, dtype), np.ones(C, dtype)


@pytest.mark.parametrize("dtype", [np.float16, np.int32, np.int64, np.bool_, np.complex64, np.complex128])
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
    kwargs = dict(running_mean=np.zeros(3, np.float32), running_var=np.ones(3, np.float32),
                  weight=np.ones(3, np.float32), bias=np.zeros(3, np.float32))
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
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training, got input size"):
        bnfast.batch_norm(x, training=True)
    rm, rv = _stats()
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training, got input size"):
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


@pytest.mark.parametrize("shape, axis", [((4, 3), 2), ((4, 3), -3), ((2, 3, 4, 5), 4), ((2, 3, 4, 5), -5)])
def test_axis_out_of_range(backend, shape, axis):
    x = _x(shape)
    with pytest.raises(np.exceptions.AxisError):
        bnfast.batch_norm(x, training=True, axis=axis)
    with pytest.raises(ValueError):
        bnfast.batch_norm(x, training=True, axis=axis)
