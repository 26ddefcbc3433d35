"""Argument errors of the new norm functions and their backwards, and the
guarantee that inputs are never modified (except ``out`` and running stats)."""
import numpy as np
import pytest

import bnfast
from _norm_util import make_data, with_layout

N, C, L = 4, 6, 7


def _x(dtype=np.float32, shape=(N, C, L), seed=0):
    return make_data(np.random.default_rng(seed), shape, dtype)


# ==========================================================================
# group divisibility
# ==========================================================================
@pytest.mark.parametrize("axis", [1, -1])
@pytest.mark.parametrize("G", [4, 5, 12])
def test_group_norm_channels_not_divisible(backend, axis, G):
    x = _x()
    if axis == -1:
        x = np.ascontiguousarray(np.moveaxis(x, 1, -1))
    with pytest.raises(ValueError, match="divisible by num_groups"):
        bnfast.group_norm(x, G, axis=axis)


def test_group_norm_backward_channels_not_divisible(backend):
    x = _x()
    dy = np.ones_like(x)
    mean = np.zeros((N, 4), np.float32)
    rstd = np.ones((N, 4), np.float32)
    with pytest.raises(ValueError):
        bnfast.group_norm_backward(dy, x, mean, rstd, 4)


# ==========================================================================
# parameter shapes
# ==========================================================================
@pytest.mark.parametrize(
    "axis,wshape",
    [(-1, (L + 1,)), (-1, (C,)), (-1, (1, L)), ((-2, -1), (L,)), ((-2, -1), (L, C)), ((-2, -1), (C * L,))],
    ids=str,
)
def test_layer_norm_weight_shape_mismatch(backend, axis, wshape):
    x = _x()
    bad = np.ones(wshape, np.float32)
    good_shape = (L,) if axis == -1 else (C, L)
    good = np.ones(good_shape, np.float32)
    with pytest.raises(ValueError):
        bnfast.layer_norm(x, bad, axis=axis)
    with pytest.raises(ValueError):
        bnfast.layer_norm(x, good, bad, axis=axis)
    with pytest.raises(ValueError):
        bnfast.rms_norm(x, bad, axis=axis)
    # the good shapes work (so the raises above are about the shape)
    bnfast.layer_norm(x, good, good, axis=axis)
    bnfast.rms_norm(x, good, axis=axis)


@pytest.mark.parametrize("fn", ["group_norm", "instance_norm"])
def test_channel_param_shape_mismatch(backend, fn):
    x = _x()
    call = (lambda w, b: bnfast.group_norm(x, 3, w, b)) if fn == "group_norm" else \
        (lambda w, b: bnfast.instance_norm(x, w, b))
    good = np.ones(C, np.float32)
    for bad in (np.ones(C + 1, np.float32), np.ones(L, np.float32), np.ones((1, C), np.float32)):
        with pytest.raises(ValueError):
            call(bad, good)
        with pytest.raises(ValueError):
            call(good, bad)
    call(good, good)


def test_layer_norm_weight_shape_error_message(backend):
    """The message should say what was expected (the normalized shape)."""
    x = _x()
    with pytest.raises(ValueError, match=r"weight") as ei:
        bnfast.layer_norm(x, np.ones(L + 1, np.float32))
    assert str(L) in str(ei.value)


# ==========================================================================
# backward shape checks
# ==========================================================================
def _backward_calls(dtype=np.float64):
    """name -> (call(dy, x, stats...), x, stats tuple, weight) for a valid setup."""
    x = _x(dtype)
    w = np.ones(C, dtype)
    wl = np.ones(L, dtype)
    _, bm, bi = bnfast.batch_norm(x, weight=w, training=True, return_stats=True)
    _, lm, lr = bnfast.layer_norm(x, wl, return_stats=True)
    _, gm, gr = bnfast.group_norm(x, 3, w, return_stats=True)
    _, im, ir = bnfast.instance_norm(x, w, return_stats=True)
    _, rr = bnfast.rms_norm(x, wl, return_stats=True)
    return x, {
        "batch": (lambda dy, x, s, w: bnfast.batch_norm_backward(dy, x, s[0], s[1], w), (bm, bi), w),
        "layer": (lambda dy, x, s, w: bnfast.layer_norm_backward(dy, x, s[0], s[1], w), (lm, lr), wl),
        "group": (lambda dy, x, s, w: bnfast.group_norm_backward(dy, x, s[0], s[1], 3, w), (gm, gr), w),
        "instance": (lambda dy, x, s, w: bnfast.instance_norm_backward(dy, x, s[0], s[1], w), (im, ir), w),
        "rms": (lambda dy, x, s, w: bnfast.rms_norm_backward(dy, x, s[0], w), (rr,), wl),
    }


NAMES = ["batch", "layer", "group", "instance", "rms"]


@pytest.mark.parametrize("name", NAMES)
def test_backward_valid_call_works(backend, name):
    """Baseline for the error tests below: the unmodified call succeeds."""
    x, calls = _backward_calls()
    call, stats, w = calls[name]
    res = call(np.ones_like(x), x, stats, w)
    assert res[0].shape == x.shape


@pytest.mark.parametrize("dy_shape", [(N, C, L + 1), (N + 1, C, L), (N, C * L), (L, C, N), (N, C, L, 1)],
                         ids=str)
@pytest.mark.parametrize("name", NAMES)
def test_backward_dy_shape_mismatch(backend, name, dy_shape):
    x, calls = _backward_calls()
    call, stats, w = calls[name]
    with pytest.raises(ValueError):
        call(np.ones(dy_shape), x, stats, w)


def _wrong_shapes(shape):
    out = [shape + (2,), (shape[0] + 1,) + shape[1:], (7 * 11,)]
    if len(shape) == 2 and shape[0] != shape[1]:
        out.append(shape[::-1])
    return out


@pytest.mark.parametrize("name,which", [(n, i) for n in NAMES for i in ((0,) if n == "rms" else (0, 1))])
def test_backward_stats_shape_mismatch(backend, name, which):
    x, calls = _backward_calls()
    call, stats, w = calls[name]
    for bad_shape in _wrong_shapes(stats[which].shape):
        s = list(stats)
        s[which] = np.ones(bad_shape)
        with pytest.raises(ValueError):
            call(np.ones_like(x), x, tuple(s), w)


@pytest.mark.parametrize("name", NAMES)
def test_backward_weight_shape_mismatch(backend, name):
    x, calls = _backward_calls()
    call, stats, w = calls[name]
    with pytest.raises(ValueError):
        call(np.ones_like(x), x, stats, np.ones(w.size + 1))


def test_backward_bad_shape_message_names_argument(backend):
    x, calls = _backward_calls()
    call, stats, w = calls["layer"]
    with pytest.raises(ValueError, match="dy"):
        call(np.ones((N, C, L + 1)), x, stats, w)


# ==========================================================================
# dtype errors
# ==========================================================================
@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint8, np.bool_])
def test_forward_integer_x_is_type_error(backend, dtype):
    x = np.ones((N, C, L), dtype)
    for call in (
        lambda: bnfast.layer_norm(x),
        lambda: bnfast.rms_norm(x),
        lambda: bnfast.group_norm(x, 3),
        lambda: bnfast.instance_norm(x),
    ):
        with pytest.raises(TypeError):
            call()


@pytest.mark.parametrize("name", NAMES)
def test_backward_integer_x_is_type_error(backend, name):
    xf, calls = _backward_calls()
    call, stats, w = calls[name]
    x = np.ones(xf.shape, np.int64)
    with pytest.raises(TypeError):
        call(np.ones(xf.shape), x, stats, w)


# ==========================================================================
# inputs are never modified
# ==========================================================================
def _snapshot(*arrs):
    return [None if a is None else a.copy() for a in arrs]


def _unchanged(before, after, names):
    for b, a, n in zip(before, after, names):
        if b is not None:
            assert np.array_equal(a, b, equal_nan=True), f"{n} was modified"


@pytest.mark.parametrize("lay", ["C", "F", "step", "transpose"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_inputs_not_modified(backend, dtype, lay):
    rng = np.random.default_rng(4)
    x = with_layout(make_data(rng, (N, C, L), dtype), lay, rng)
    dy = with_layout(make_data(rng, (N, C, L), dtype), lay, rng)
    wc = (rng.standard_normal(C) + 1).astype(dtype)
    bc = rng.standard_normal(C).astype(dtype)
    wl = (rng.standard_normal(L) + 1).astype(dtype)
    bl = rng.standard_normal(L).astype(dtype)
    rm = rng.standard_normal(C).astype(dtype)
    rv = rng.uniform(0.5, 2, C).astype(dtype)
    names = ["x", "dy", "wc", "bc", "wl", "bl", "rm", "rv"]
    arrs = [x, dy, wc, bc, wl, bl, rm, rv]
    before = _snapshot(*arrs)

    _, lm, lr = bnfast.layer_norm(x, wl, bl, return_stats=True)
    _, rr = bnfast.rms_norm(x, wl, return_stats=True)
    _, gm, gr = bnfast.group_norm(x, 3, wc, bc, return_stats=True)
    _, im, ir = bnfast.instance_norm(x, wc, bc, return_stats=True)
    _, em, er = bnfast.instance_norm(x, wc, bc, running_mean=rm, running_var=rv, use_input_stats=False,
                                     return_stats=True)
    _, bm, bi = bnfast.batch_norm(x, weight=wc, bias=bc, training=True, return_stats=True)
    _unchanged(before, arrs, names)  # forward (eval instance norm: running stats untouched too)

    stats = [lm, lr, rr, gm, gr, im, ir, em, er, bm, bi]
    sb = _snapshot(*stats)
    bnfast.layer_norm_backward(dy, x, lm, lr, wl)
    bnfast.rms_norm_backward(dy, x, rr, wl)
    bnfast.group_norm_backward(dy, x, gm, gr, 3, wc)
    bnfast.instance_norm_backward(dy, x, im, ir, wc)
    bnfast.instance_norm_backward(dy, x, em, er, wc, use_input_stats=False)
    bnfast.batch_norm_backward(dy, x, bm, bi, wc)
    bnfast.batch_norm_backward(dy, x, rm, 1 / np.sqrt(rv + 1e-5), wc, training=False)
    _unchanged(before, arrs, names)
    _unchanged(sb, stats, [f"stat{i}" for i in range(len(stats))])


def test_instance_norm_updates_only_running_stats(backend):
    rng = np.random.default_rng(8)
    x = make_data(rng, (N, C, L), np.float32)
    rm = np.zeros(C, np.float32)
    rv = np.ones(C, np.float32)
    x0 = x.copy()
    bnfast.instance_norm(x, running_mean=rm, running_var=rv, use_input_stats=True, momentum=0.5)
    assert np.array_equal(x, x0)
    assert not np.array_equal(rm, np.zeros(C)) and not np.array_equal(rv, np.ones(C))
