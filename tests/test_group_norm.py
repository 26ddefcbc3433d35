"""bnfast.group_norm and bnfast.instance_norm (the forward) against PyTorch
and float64 NumPy references over edge shapes, channels first/last, dtypes and
non-contiguous layouts; running statistics, argument errors and the accuracy /
exactness / thread-determinism contracts.  The backwards are in
test_group_norm_backward.py."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bnfast
from helpers import (
    ERR_C,
    ERR_L,
    ERR_N,
    NORM_LAYOUTS,
    assert_close,
    assert_forward_close,
    bcast,
    edge_shapes,
    group_stats_bcast,
    mag,
    make_data,
    needs_torch,
    ref_group_norm,
    ref_instance_norm,
    rtol_for,
    to_np,
    torch,
    tt,
    with_layout,
)

DTYPES = [np.float32, np.float64]


def _affine(rng, shape, dtype, which):
    w = (rng.standard_normal(shape) + 1).astype(dtype) if which in ("wb", "w") else None
    b = rng.standard_normal(shape).astype(dtype) if which == "wb" else None
    return w, b


def _stats_close(got, ref, dtype, scale, what):
    """Statistics: rtol 1e-5 / 1e-12 (contract), atol of the same order times
    the data magnitude (a mean near 0 is a cancellation of terms of size |x|)."""
    rtol = rtol_for(dtype)
    assert np.asarray(got).dtype == np.dtype(dtype), f"{what} dtype {np.asarray(got).dtype}"
    assert_close(got, ref, rtol, rtol * scale, what=what)


# ==========================================================================
# torch parity
# ==========================================================================
GN_CASES = [
    ((2, 6, 7), 3),
    ((3, 16, 17), 4),
    ((1, 33, 15), 11),
    ((4, 16, 1), 16),
    ((2, 15, 4, 4), 5),
    ((2, 8, 3, 7), 1),
    ((7, 4), 2),
    ((2, 32, 33), 8),
    ((1, 7, 2, 3, 2), 7),
]


@needs_torch
@pytest.mark.parametrize("affine", ["wb", "none"])
@pytest.mark.parametrize("axis", [1, -1])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,G", GN_CASES, ids=str)
def test_group_norm_matches_torch(backend, shape, G, dtype, axis, affine):
    rng = np.random.default_rng(shape[1] * 7 + G)
    xf = make_data(rng, shape, dtype, offset=-0.4, scale=2.0)  # channels first
    x = np.ascontiguousarray(np.moveaxis(xf, 1, axis))  # channels on ``axis``
    C = shape[1]
    w, b = _affine(rng, (C,), dtype, affine)
    eps = 1e-5
    y, mean, rstd = bnfast.group_norm(x, G, w, b, eps=eps, axis=axis, return_stats=True)
    N = shape[0]
    HxW = int(np.prod(shape[2:], dtype=np.int64))
    yt, mt, rt = torch.native_group_norm(tt(xf), tt(w), tt(b), N, C, HxW, G, eps)
    yt2 = torch.nn.functional.group_norm(tt(xf), G, tt(w), tt(b), eps)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert mean.shape == (N, G) and rstd.shape == (N, G)
    yref, m64, r64 = ref_group_norm(x, G, None, None, eps, axis)
    mb = group_stats_bcast(m64, x.shape, G, axis)
    rb = group_stats_bcast(r64, x.shape, G, axis)
    wb = None if w is None else bcast(w, x.shape, (axis % x.ndim,))
    for ref in (yt, yt2):
        assert_forward_close(y, np.moveaxis(to_np(ref), 1, axis), x, mb, rb, None, dtype, wb)
    _stats_close(mean, to_np(mt), dtype, mag(x), "mean")
    _stats_close(rstd, to_np(rt), dtype, 0.0, "rstd")


IN_SHAPES = [
    (2, 3, 7),
    (1, 16, 17),
    (3, 7, 4, 4),
    (4, 1, 33),
    (2, 5, 15, 1),
    (2, 2, 2, 3, 3),
    (1, 3, 1024),
]


@needs_torch
@pytest.mark.parametrize("mode", ["input", "input+running", "running"])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("axis", [1, -1])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", IN_SHAPES, ids=str)
def test_instance_norm_matches_torch(backend, shape, dtype, axis, affine, mode):
    F = torch.nn.functional
    rng = np.random.default_rng(shape[1] * 31 + len(shape))
    xf = make_data(rng, shape, dtype, offset=1.5, scale=0.8)
    x = np.ascontiguousarray(np.moveaxis(xf, 1, axis))
    N, C = shape[:2]
    w, b = _affine(rng, (C,), dtype, "wb" if affine else "none")
    use_input_stats = mode != "running"
    rm = rv = None
    if mode != "input":
        rm = rng.standard_normal(C).astype(dtype)
        rv = rng.uniform(0.5, 2.0, C).astype(dtype)
    momentum, eps = 0.3, 1e-5
    rm_t, rv_t = tt(rm), tt(rv)
    yt = F.instance_norm(
        tt(xf),
        rm_t,
        rv_t,
        tt(w),
        tt(b),
        use_input_stats=use_input_stats,
        momentum=momentum,
        eps=eps,
    )
    rm_b = None if rm is None else rm.copy()
    rv_b = None if rv is None else rv.copy()
    y, mean, rstd = bnfast.instance_norm(
        x,
        w,
        b,
        running_mean=rm_b,
        running_var=rv_b,
        use_input_stats=use_input_stats,
        momentum=momentum,
        eps=eps,
        axis=axis,
        return_stats=True,
    )
    assert y.shape == x.shape and y.dtype == x.dtype
    ax = axis % x.ndim
    cshape = [1] * x.ndim
    cshape[ax] = C
    if use_input_stats:
        _, m64, r64 = ref_instance_norm(x, None, None, eps, axis)
        assert mean.shape == (N, C) and rstd.shape == (N, C)
        _stats_close(mean, m64, dtype, mag(x), "mean")
        _stats_close(rstd, r64, dtype, 0.0, "rstd")
        mb = group_stats_bcast(m64, x.shape, C, axis)
        rb = group_stats_bcast(r64, x.shape, C, axis)
    else:
        assert mean.shape == (C,) and rstd.shape == (C,)
        _stats_close(mean, rm, dtype, 0.0, "mean (running)")
        _stats_close(rstd, 1 / np.sqrt(rv.astype(np.float64) + eps), dtype, 0.0, "rstd (running)")
        mb = rm.astype(np.float64).reshape(cshape)
        rb = (1 / np.sqrt(rv.astype(np.float64) + eps)).reshape(cshape)
    wb = None if w is None else np.abs(w.astype(np.float64)).reshape(cshape)
    assert_forward_close(y, np.moveaxis(to_np(yt), 1, axis), x, mb, rb, None, dtype, wb)
    if rm is not None:
        if use_input_stats:  # updated in place exactly like torch's tensors
            # running var uses the unbiased variance; rtol 1e-5 / 1e-12 as the forward
            _stats_close(rm_b, to_np(rm_t), dtype, mag(x), "running_mean")
            _stats_close(rv_b, to_np(rv_t), dtype, 0.0, "running_var")
            assert not np.array_equal(rm_b, rm)
        else:  # eval: untouched
            assert np.array_equal(rm_b, rm) and np.array_equal(rv_b, rv)


# ==========================================================================
# hypothesis properties vs float64 references (no torch needed)
# ==========================================================================
@st.composite
def channel_cases(draw, groups=True):
    ndim = draw(st.integers(2, 4))
    shape = list(draw(edge_shapes(ndim)))
    if groups:
        G = draw(st.sampled_from([1, 2, 3, 4, 5]))
        shape[1] = G * draw(st.sampled_from([1, 3, 4, 7]))
        if shape[0] * (shape[1] // G) * int(np.prod(shape[2:])) == 1:
            shape[0] = 7  # torch (and bnfast) reject a single value per group
    else:
        G = None
        if ndim == 2 or int(np.prod(shape[2:])) == 1:
            shape.append(draw(st.sampled_from([7, 16, 17])))  # instance norm needs spatial > 1
    shape = tuple(shape)
    axis = draw(st.sampled_from([1, -1]))
    dtype = draw(st.sampled_from(DTYPES))
    lay = draw(st.sampled_from(NORM_LAYOUTS))
    affine = draw(st.booleans())
    seed = draw(st.integers(0, 2**32 - 1))
    return shape, G, axis, dtype, lay, affine, seed


@settings(max_examples=30)
@given(case=channel_cases())
def test_group_norm_property(backend, case):
    shape_cf, G, axis, dtype, lay, affine, seed = case
    rng = np.random.default_rng(seed)
    xf = make_data(rng, shape_cf, dtype)
    x = with_layout(np.moveaxis(xf, 1, axis), lay, rng)
    C = shape_cf[1]
    w, b = _affine(rng, (C,), dtype, "wb" if affine else "none")
    if affine and seed % 3 == 0:  # strided parameters
        w, b = with_layout(w, "step", rng), with_layout(b, "negstep", rng)
    y, mean, rstd = bnfast.group_norm(x, G, w, b, axis=axis, return_stats=True)
    yref, m64, r64 = ref_group_norm(x, G, w, b, 1e-5, axis)
    mb = group_stats_bcast(m64, x.shape, G, axis)
    rb = group_stats_bcast(r64, x.shape, G, axis)
    wb = None if w is None else bcast(w, x.shape, (axis % x.ndim,))
    assert y.dtype == x.dtype and y.shape == x.shape
    assert_forward_close(y, yref, x, mb, rb, None, dtype, wb)
    _stats_close(mean, m64, dtype, mag(x), "mean")
    _stats_close(rstd, r64, dtype, 0.0, "rstd")


@settings(max_examples=30)
@given(case=channel_cases(groups=False))
def test_instance_norm_property(backend, case):
    shape_cf, _, axis, dtype, lay, affine, seed = case
    rng = np.random.default_rng(seed)
    xf = make_data(rng, shape_cf, dtype)
    x = with_layout(np.moveaxis(xf, 1, axis), lay, rng)
    C = shape_cf[1]
    w, b = _affine(rng, (C,), dtype, "wb" if affine else "none")
    out = np.empty(x.shape, dtype, order="F") if seed % 2 else None
    y, mean, rstd = bnfast.instance_norm(x, w, b, axis=axis, out=out, return_stats=True)
    if out is not None:
        assert y is out
    yref, m64, r64 = ref_instance_norm(x, w, b, 1e-5, axis)
    mb = group_stats_bcast(m64, x.shape, C, axis)
    rb = group_stats_bcast(r64, x.shape, C, axis)
    wb = None if w is None else bcast(w, x.shape, (axis % x.ndim,))
    assert_forward_close(y, yref, x, mb, rb, None, dtype, wb)
    _stats_close(mean, m64, dtype, mag(x), "mean")
    _stats_close(rstd, r64, dtype, 0.0, "rstd")


# ==========================================================================
# misc API behaviour, running statistics
# ==========================================================================
def test_instance_norm_updates_only_running_stats(backend):
    rng = np.random.default_rng(8)
    x = make_data(rng, (ERR_N, ERR_C, ERR_L), np.float32)
    rm = np.zeros(ERR_C, np.float32)
    rv = np.ones(ERR_C, np.float32)
    x0 = x.copy()
    bnfast.instance_norm(x, running_mean=rm, running_var=rv, use_input_stats=True, momentum=0.5)
    assert np.array_equal(x, x0)
    assert not np.array_equal(rm, np.zeros(ERR_C)) and not np.array_equal(rv, np.ones(ERR_C))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fn", ["group_norm", "instance_norm"])
def test_out_in_place(backend, dtype, fn):
    """out=x overwrites the input with the result (documented in-place use)."""
    rng = np.random.default_rng(1)
    x = make_data(rng, (6, 33), dtype)
    f, ref = {
        "group_norm": (
            lambda a, out: bnfast.group_norm(a, 3, out=out),
            lambda a: ref_group_norm(a, 3)[0],
        ),
        "instance_norm": (
            lambda a, out: bnfast.instance_norm(a[None], out=out[None])[0],
            lambda a: ref_instance_norm(a[None])[0][0],
        ),
    }[fn]
    rtol = rtol_for(dtype)
    a = x.copy()
    expected = ref(a)
    r = f(a, a)
    assert np.shares_memory(r, a)
    assert_close(a, expected, rtol, rtol * 10)


# ==========================================================================
# contracts
# ==========================================================================
@pytest.mark.parametrize("fn", ["group_norm", "instance_norm"])
def test_channel_norms_large_offset_variance_float32(backend, fn):
    """Same accuracy contract for the per-(sample, group/channel) statistics."""
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((4, 8, 1024)) * 0.01 + 100).astype(np.float32)
    eps = 1e-5
    if fn == "group_norm":
        _, mean, rstd = bnfast.group_norm(x, 4, eps=eps, return_stats=True)
        ref = np.var(x.astype(np.float64).reshape(4, 4, -1), axis=-1)
    else:
        _, mean, rstd = bnfast.instance_norm(x, eps=eps, return_stats=True)
        ref = np.var(x.astype(np.float64), axis=-1)
    implied = 1.0 / rstd.astype(np.float64) ** 2 - eps
    assert_close(implied, ref, 1e-3, what="implied variance")


@pytest.mark.parametrize("value", [1e4, -1e4, 1234.5678])
@pytest.mark.parametrize("dtype", DTYPES)
def test_constant_groups_give_exactly_bias(backend, dtype, value):
    """A constant group/channel has mean == value exactly and variance 0, so
    (x - mean) == 0 and the output must be bias exactly (no folded
    scale/shift rounding, which would be off by ~ulp(value*rstd))."""
    rng = np.random.default_rng(3)
    v = dtype(value)
    # group norm: group 1 (channels 2, 3) of sample 1 constant, NCL and NLC
    x = make_data(rng, (3, 6, 17), dtype)
    x[1, 2:4] = v
    wc = (rng.standard_normal(6) + 2).astype(dtype)
    bc = rng.standard_normal(6).astype(dtype)
    y = bnfast.group_norm(x, 3, wc, bc)
    assert np.array_equal(y[1, 2:4], np.broadcast_to(bc[2:4, None], (2, 17)))
    xl = np.ascontiguousarray(np.moveaxis(x, 1, -1))
    y = bnfast.group_norm(xl, 3, wc, bc, axis=-1)
    assert np.array_equal(y[1, :, 2:4], np.broadcast_to(bc[2:4], (17, 2)))
    # instance norm: channel 4 of sample 0 constant
    x = make_data(rng, (2, 6, 16, 3), dtype)
    x[0, 4] = v
    y = bnfast.instance_norm(x, wc, bc)
    assert np.all(y[0, 4] == bc[4])


@pytest.mark.parametrize("dtype", DTYPES)
def test_forward_is_thread_count_independent(backend, dtype):
    """Bit-identical outputs and stats for 1 and 3 threads on > 1M elements
    (no reduction may depend on how work is split between threads)."""
    rng = np.random.default_rng(11)
    x = make_data(rng, (8, 32, 64, 72), dtype, offset=2.0, scale=1.5)  # 1,179,648 elements
    assert x.size > 1_000_000
    xl = np.ascontiguousarray(np.moveaxis(x, 1, -1))
    w32 = (rng.standard_normal(32) + 1).astype(dtype)
    calls = {
        "group_norm": lambda: bnfast.group_norm(x, 4, w32, w32, return_stats=True),
        "group_norm_last": lambda: bnfast.group_norm(xl, 8, w32, w32, axis=-1, return_stats=True),
        "instance_norm": lambda: bnfast.instance_norm(x, w32, w32, return_stats=True),
        "instance_norm_last": lambda: bnfast.instance_norm(xl, axis=-1, return_stats=True),
    }
    for name, call in calls.items():
        with bnfast.threads(1):
            r1 = call()
        with bnfast.threads(3):
            r3 = call()
        for a, c in zip(r1, r3):
            assert a.tobytes() == c.tobytes(), f"{name}: 1 vs 3 threads differ"


# ==========================================================================
# argument errors
# ==========================================================================
@pytest.mark.parametrize("axis", [1, -1])
@pytest.mark.parametrize("G", [4, 5, 12])
def test_group_norm_channels_not_divisible(backend, axis, G):
    x = make_data(np.random.default_rng(0), (ERR_N, ERR_C, ERR_L), np.float32)
    if axis == -1:
        x = np.ascontiguousarray(np.moveaxis(x, 1, -1))
    with pytest.raises(ValueError, match="divisible by num_groups"):
        bnfast.group_norm(x, G, axis=axis)


@pytest.mark.parametrize("fn", ["group_norm", "instance_norm"])
def test_channel_param_shape_mismatch(backend, fn):
    x = make_data(np.random.default_rng(0), (ERR_N, ERR_C, ERR_L), np.float32)
    call = (
        (lambda w, b: bnfast.group_norm(x, 3, w, b))
        if fn == "group_norm"
        else (lambda w, b: bnfast.instance_norm(x, w, b))
    )
    good = np.ones(ERR_C, np.float32)
    for bad in (
        np.ones(ERR_C + 1, np.float32),
        np.ones(ERR_L, np.float32),
        np.ones((1, ERR_C), np.float32),
    ):
        with pytest.raises(ValueError):
            call(bad, good)
        with pytest.raises(ValueError):
            call(good, bad)
    call(good, good)


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint8, np.bool_])
def test_integer_x_is_type_error(backend, dtype):
    x = np.ones((ERR_N, ERR_C, ERR_L), dtype)
    with pytest.raises(TypeError):
        bnfast.group_norm(x, 3)
    with pytest.raises(TypeError):
        bnfast.instance_norm(x)


@pytest.mark.parametrize("lay", ["C", "F", "step", "transpose"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_inputs_not_modified(backend, dtype, lay):
    # Inputs are never modified (eval instance norm: running stats untouched too).
    rng = np.random.default_rng(4)
    x = with_layout(make_data(rng, (ERR_N, ERR_C, ERR_L), dtype), lay, rng)
    dy = with_layout(make_data(rng, (ERR_N, ERR_C, ERR_L), dtype), lay, rng)
    wc = (rng.standard_normal(ERR_C) + 1).astype(dtype)
    bc = rng.standard_normal(ERR_C).astype(dtype)
    rng.standard_normal(2 * ERR_L)  # (the row parameters of the same data set)
    rm = rng.standard_normal(ERR_C).astype(dtype)
    rv = rng.uniform(0.5, 2, ERR_C).astype(dtype)
    arrs = [x, dy, wc, bc, rm, rv]
    names = ["x", "dy", "wc", "bc", "rm", "rv"]
    before = [a.copy() for a in arrs]
    _, gm, gr = bnfast.group_norm(x, 3, wc, bc, return_stats=True)
    _, im, ir = bnfast.instance_norm(x, wc, bc, return_stats=True)
    _, em, er = bnfast.instance_norm(
        x, wc, bc, running_mean=rm, running_var=rv, use_input_stats=False, return_stats=True
    )
    for a, b, n in zip(arrs, before, names):
        assert np.array_equal(a, b, equal_nan=True), f"{n} was modified by a forward"
    stats = [gm, gr, im, ir, em, er]
    stats_before = [s.copy() for s in stats]
    bnfast.group_norm_backward(dy, x, gm, gr, 3, wc)
    bnfast.instance_norm_backward(dy, x, im, ir, wc)
    bnfast.instance_norm_backward(dy, x, em, er, wc, use_input_stats=False)
    for a, b, n in zip(arrs, before, names):
        assert np.array_equal(a, b, equal_nan=True), f"{n} was modified by a backward"
    for i, (a, b) in enumerate(zip(stats, stats_before)):
        assert np.array_equal(a, b, equal_nan=True), f"stat{i} was modified"
