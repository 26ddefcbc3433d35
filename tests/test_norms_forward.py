"""Forward of bnfast.layer_norm / rms_norm / group_norm / instance_norm.

* parity with torch.nn.functional (skipped without torch),
* hypothesis properties against float64 NumPy references (_norm_util) over
  edge shapes, axes, dtypes and non-contiguous layouts,
* the accuracy / exactness / thread-determinism contracts.
Every test that calls a forward function runs under the ``backend`` fixture.
"""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import bnfast
from _norm_util import (
    NORM_LAYOUTS,
    assert_close,
    assert_forward_close,
    bcast,
    edge_shape,
    group_stats_bcast,
    layout,
    make_data,
    mag,
    norm_axes,
    param_shape,
    ref_group_norm,
    ref_instance_norm,
    ref_layer_norm,
    ref_rms_norm,
    rtol_for,
    tt,
    to_np,
)

DTYPES = [np.float32, np.float64]


def _torch():
    return pytest.importorskip("torch", reason="torch is not installed: torch parity tests skipped")


def _affine(rng, shape, dtype, which):
    w = (rng.standard_normal(shape) + 1).astype(dtype) if which in ("wb", "w") else None
    b = rng.standard_normal(shape).astype(dtype) if which == "wb" else None
    return w, b


def _stats_close(got, ref, dtype, scale, what):
    """Statistics: rtol 1e-5 / 1e-12 (spec), atol of the same order times the
    data magnitude (a mean near 0 is a cancellation of terms of size |x|)."""
    rtol = rtol_for(dtype)
    assert np.asarray(got).dtype == np.dtype(dtype), f"{what} dtype {np.asarray(got).dtype}"
    assert_close(got, ref, rtol, rtol * scale, what=what)


# ==========================================================================
# torch parity
# ==========================================================================
LN_CASES = [
    ((7, 33), -1), ((16, 17), -1), ((33, 1), -1), ((4096,), -1), ((3, 1023), -1),
    ((3, 15, 16), -1), ((2, 7, 33), (-2, -1)), ((5, 1, 17), (-2, -1)), ((2, 3, 16, 15), (-2, -1)),
    ((1, 1), -1),
]


@pytest.mark.parametrize("affine", ["wb", "w", "none"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,axis", LN_CASES, ids=str)
def test_layer_norm_matches_torch(backend, shape, axis, dtype, affine):
    torch = _torch()
    rng = np.random.default_rng(len(shape) * 100 + shape[-1])
    x = make_data(rng, shape, dtype, offset=0.7, scale=1.3)
    axes = norm_axes(axis, x.ndim)
    nshape = param_shape(shape, axes)
    w, b = _affine(rng, nshape, dtype, affine)
    eps = 1e-5
    y, mean, rstd = bnfast.layer_norm(x, w, b, axis=axis, eps=eps, return_stats=True)
    yt, mt, rt = torch.native_layer_norm(tt(torch, x), list(nshape), tt(torch, w), tt(torch, b), eps)
    assert y.shape == x.shape and y.dtype == x.dtype
    stat_shape = tuple(s for i, s in enumerate(shape) if i not in axes)
    assert mean.shape == stat_shape and rstd.shape == stat_shape
    _, m64, r64 = ref_layer_norm(x, None, None, axes, eps)
    assert_forward_close(y, to_np(yt), x, m64, r64, axes, dtype, w)
    # also the plain functional API
    yf = torch.nn.functional.layer_norm(tt(torch, x), list(nshape), tt(torch, w), tt(torch, b), eps)
    assert_forward_close(y, to_np(yf), x, m64, r64, axes, dtype, w)
    _stats_close(mean, to_np(mt).reshape(stat_shape), dtype, mag(x), "mean")
    _stats_close(rstd, to_np(rt).reshape(stat_shape), dtype, 0.0, "rstd")


RMS_CASES = [((7, 33), -1), ((16, 17), -1), ((4096,), -1), ((3, 15, 16), (-2, -1)), ((33, 1), -1)]


@pytest.mark.parametrize("eps", [None, 1e-5, 1e-2])
@pytest.mark.parametrize("weighted", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,axis", RMS_CASES, ids=str)
def test_rms_norm_matches_torch(backend, shape, axis, dtype, weighted, eps):
    torch = _torch()
    rng = np.random.default_rng(shape[-1])
    # small magnitudes make the default eps (finfo.eps) visible in float32
    x = make_data(rng, shape, dtype, offset=0.2, scale=1e-3 if eps is None else 1.0)
    axes = norm_axes(axis, x.ndim)
    nshape = param_shape(shape, axes)
    w = (rng.standard_normal(nshape) + 1).astype(dtype) if weighted else None
    y, rstd = bnfast.rms_norm(x, w, axis=axis, eps=eps, return_stats=True)
    yt = torch.nn.functional.rms_norm(tt(torch, x), list(nshape), tt(torch, w), eps)
    yr, r64 = ref_rms_norm(x, w, axes, eps)
    assert y.dtype == x.dtype and y.shape == x.shape
    stat_shape = tuple(s for i, s in enumerate(shape) if i not in axes)
    assert rstd.shape == stat_shape and rstd.dtype == x.dtype
    # no cancellation in x*rstd: plain rtol/atol*magnitude of the spec
    rtol = rtol_for(dtype)
    assert_close(y, to_np(yt), rtol, rtol * mag(yt), what="rms_norm vs torch")
    assert_close(y, yr, rtol, rtol * mag(yr), what="rms_norm vs float64")
    assert_close(rstd, r64.reshape(stat_shape), rtol, what="rstd")


GN_CASES = [
    ((2, 6, 7), 3), ((3, 16, 17), 4), ((1, 33, 15), 11), ((4, 16, 1), 16), ((2, 15, 4, 4), 5),
    ((2, 8, 3, 7), 1), ((7, 4), 2), ((2, 32, 33), 8), ((1, 7, 2, 3, 2), 7),
]


@pytest.mark.parametrize("affine", ["wb", "none"])
@pytest.mark.parametrize("axis", [1, -1])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,G", GN_CASES, ids=str)
def test_group_norm_matches_torch(backend, shape, G, dtype, axis, affine):
    torch = _torch()
    rng = np.random.default_rng(shape[1] * 7 + G)
    xf = make_data(rng, shape, dtype, offset=-0.4, scale=2.0)  # channels first
    x = np.ascontiguousarray(np.moveaxis(xf, 1, axis))  # channels on ``axis``
    C = shape[1]
    w, b = _affine(rng, (C,), dtype, affine)
    eps = 1e-5
    y, mean, rstd = bnfast.group_norm(x, G, w, b, eps=eps, axis=axis, return_stats=True)
    N = shape[0]
    HxW = int(np.prod(shape[2:], dtype=np.int64))
    yt, mt, rt = torch.native_group_norm(tt(torch, xf), tt(torch, w), tt(torch, b), N, C, HxW, G, eps)
    yt2 = torch.nn.functional.group_norm(tt(torch, xf), G, tt(torch, w), tt(torch, b), eps)
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


IN_SHAPES = [(2, 3, 7), (1, 16, 17), (3, 7, 4, 4), (4, 1, 33), (2, 5, 15, 1), (2, 2, 2, 3, 3), (1, 3, 1024)]


@pytest.mark.parametrize("mode", ["input", "input+running", "running"])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("axis", [1, -1])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", IN_SHAPES, ids=str)
def test_instance_norm_matches_torch(backend, shape, dtype, axis, affine, mode):
    torch = _torch()
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
    rm_t, rv_t = tt(torch, rm), tt(torch, rv)
    yt = F.instance_norm(tt(torch, xf), rm_t, rv_t, tt(torch, w), tt(torch, b),
                         use_input_stats=use_input_stats, momentum=momentum, eps=eps)
    rm_b = None if rm is None else rm.copy()
    rv_b = None if rv is None else rv.copy()
    y, mean, rstd = bnfast.instance_norm(
        x, w, b, running_mean=rm_b, running_var=rv_b, use_input_stats=use_input_stats,
        momentum=momentum, eps=eps, axis=axis, return_stats=True,
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
def ln_cases(draw):
    ndim = draw(st.integers(1, 4))
    shape = draw(edge_shape(ndim))
    dtype = draw(st.sampled_from(DTYPES))
    k = draw(st.sampled_from([1, 2] if ndim >= 2 else [1]))
    axis = -1 if k == 1 else (-2, -1)
    if k == 2 and draw(st.booleans()):
        axis = (ndim - 2, ndim - 1)  # same axes, non-negative spelling
    lay = draw(st.sampled_from(NORM_LAYOUTS))
    affine = draw(st.sampled_from(["wb", "w", "none"]))
    use_out = draw(st.sampled_from([None, "C", "F"]))
    seed = draw(st.integers(0, 2**32 - 1))
    return shape, dtype, axis, lay, affine, use_out, seed


@settings(max_examples=30)
@given(case=ln_cases())
def test_layer_norm_property(backend, case):
    shape, dtype, axis, lay, affine, use_out, seed = case
    rng = np.random.default_rng(seed)
    x = layout(make_data(rng, shape, dtype), lay, rng)
    axes = norm_axes(axis, x.ndim)
    w, b = _affine(rng, param_shape(shape, axes), dtype, affine)
    if w is not None and seed % 3 == 0:  # strided / reversed parameters
        w = layout(w, "negstep", rng)
    x0 = x.copy()
    out = None if use_out is None else np.empty(shape, dtype, order=use_out)
    y, mean, rstd = bnfast.layer_norm(x, w, b, axis=axis, eps=1e-5, out=out, return_stats=True)
    if out is not None:
        assert y is out
    assert np.array_equal(x, x0)
    yref, m64, r64 = ref_layer_norm(x, w, b, axes, 1e-5)
    assert_forward_close(y, yref, x, m64, r64, axes, dtype, w)
    stat_shape = tuple(s for i, s in enumerate(shape) if i not in axes)
    _stats_close(mean, m64.reshape(stat_shape), dtype, mag(x), "mean")
    _stats_close(rstd, r64.reshape(stat_shape), dtype, 0.0, "rstd")


@st.composite
def rms_cases(draw):
    ndim = draw(st.integers(1, 4))
    shape = draw(edge_shape(ndim))
    dtype = draw(st.sampled_from(DTYPES))
    axis = draw(st.sampled_from([-1, (-2, -1)] if ndim >= 2 else [-1]))
    lay = draw(st.sampled_from(NORM_LAYOUTS))
    weighted = draw(st.booleans())
    eps = draw(st.sampled_from([None, 1e-6, 0.1]))
    seed = draw(st.integers(0, 2**32 - 1))
    return shape, dtype, axis, lay, weighted, eps, seed


@settings(max_examples=30)
@given(case=rms_cases())
def test_rms_norm_property(backend, case):
    shape, dtype, axis, lay, weighted, eps, seed = case
    rng = np.random.default_rng(seed)
    x = layout(make_data(rng, shape, dtype), lay, rng)
    axes = norm_axes(axis, x.ndim)
    w = (rng.standard_normal(param_shape(shape, axes)) + 1).astype(dtype) if weighted else None
    y, rstd = bnfast.rms_norm(x, w, axis=axis, eps=eps, return_stats=True)
    yref, r64 = ref_rms_norm(x, w, axes, eps)
    rtol = rtol_for(dtype)
    assert y.dtype == x.dtype
    assert_close(y, yref, rtol, rtol * mag(yref), what="rms_norm")
    stat_shape = tuple(s for i, s in enumerate(shape) if i not in axes)
    assert_close(rstd, r64.reshape(stat_shape), rtol, what="rstd")


@st.composite
def channel_cases(draw, groups=True):
    ndim = draw(st.integers(2, 4))
    shape = list(draw(edge_shape(ndim)))
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
    x = layout(np.moveaxis(xf, 1, axis), lay, rng)
    C = shape_cf[1]
    w, b = _affine(rng, (C,), dtype, "wb" if affine else "none")
    if affine and seed % 3 == 0:  # strided parameters
        w, b = layout(w, "step", rng), layout(b, "negstep", rng)
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
    x = layout(np.moveaxis(xf, 1, axis), lay, rng)
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
# misc API behaviour
# ==========================================================================
@pytest.mark.parametrize("dtype", DTYPES)
def test_layer_norm_non_trailing_axis(backend, dtype):
    """axis is any int/tuple, not only trailing axes (weight on those axes)."""
    rng = np.random.default_rng(5)
    x = make_data(rng, (7, 16, 3), dtype)
    for axis in (0, 1, (0, 2)):
        axes = norm_axes(axis, 3)
        w, b = _affine(rng, param_shape(x.shape, axes), dtype, "wb")
        y, mean, rstd = bnfast.layer_norm(x, w, b, axis=axis, return_stats=True)
        yref, m64, r64 = ref_layer_norm(x, w, b, axes)
        assert_forward_close(y, yref, x, m64, r64, axes, dtype, w)
        stat_shape = tuple(s for i, s in enumerate(x.shape) if i not in axes)
        assert mean.shape == stat_shape and rstd.shape == stat_shape


@pytest.mark.parametrize("dtype", DTYPES)
def test_out_in_place(backend, dtype):
    """out=x overwrites the input with the result (documented in-place use)."""
    rng = np.random.default_rng(1)
    x = make_data(rng, (6, 33), dtype)
    cases = [
        (lambda a, out: bnfast.layer_norm(a, out=out), lambda a: ref_layer_norm(a)[0]),
        (lambda a, out: bnfast.rms_norm(a, out=out), lambda a: ref_rms_norm(a)[0]),
        (lambda a, out: bnfast.group_norm(a, 3, out=out), lambda a: ref_group_norm(a, 3)[0]),
        (lambda a, out: bnfast.instance_norm(a[None], out=out[None])[0],
         lambda a: ref_instance_norm(a[None])[0][0]),
    ]
    rtol = rtol_for(dtype)
    for f, ref in cases:
        a = x.copy()
        expected = ref(a)
        r = f(a, a)
        assert np.shares_memory(r, a)
        assert_close(a, expected, rtol, rtol * 10)


# ==========================================================================
# contracts
# ==========================================================================
def test_layer_norm_large_offset_variance_float32(backend):
    """Variance implied by rstd for randn*0.01 + 100 in float32 is within
    1e-3 relative of the float64 variance of the same float32 values (a
    float32 E[x^2]-E[x]^2 or float32 accumulation would be off by >100%)."""
    rng = np.random.default_rng(123)
    x = (rng.standard_normal((64, 4096)) * 0.01 + 100).astype(np.float32)
    eps = 1e-5
    y, mean, rstd = bnfast.layer_norm(x, eps=eps, return_stats=True)
    implied = 1.0 / rstd.astype(np.float64) ** 2 - eps
    ref = np.var(x.astype(np.float64), axis=-1)
    assert_close(implied, ref, 1e-3, what="implied variance")
    assert_close(mean, x.astype(np.float64).mean(axis=-1), 1e-6, what="mean")
    # the output is then a standardized row: mean 0, std sqrt(var/(var+eps))
    y64 = y.astype(np.float64)
    assert np.all(np.abs(y64.mean(axis=-1)) < 1e-2)
    assert_close(y64.std(axis=-1), np.sqrt(ref / (ref + eps)), 1e-2, what="output std")


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
def test_constant_rows_give_exactly_bias(backend, dtype, value):
    """A constant row/group/channel has mean == value exactly and variance 0,
    so (x - mean) == 0 and the output must be bias exactly (no folded
    scale/shift rounding, which would be off by ~ulp(value*rstd))."""
    rng = np.random.default_rng(3)
    v = dtype(value)
    # layer norm: rows 0 and 2 constant
    x = make_data(rng, (4, 33), dtype)
    x[0] = v
    x[2] = -v
    w = (rng.standard_normal(33) + 2).astype(dtype)
    b = rng.standard_normal(33).astype(dtype)
    y = bnfast.layer_norm(x, w, b)
    assert np.array_equal(y[0], b) and np.array_equal(y[2], b), y[0] - b
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
    # batch norm training: channel 1 constant over the whole batch
    x = make_data(rng, (5, 6, 7), dtype)
    x[:, 1] = v
    y = bnfast.batch_norm(x, weight=wc, bias=bc, training=True)
    assert np.all(y[:, 1] == bc[1])


@pytest.mark.parametrize("dtype", DTYPES)
def test_forward_is_thread_count_independent(backend, dtype):
    """Bit-identical outputs and stats for 1 and 3 threads on > 1M elements
    (no reduction may depend on how work is split between threads)."""
    rng = np.random.default_rng(11)
    x = make_data(rng, (8, 32, 64, 72), dtype, offset=2.0, scale=1.5)  # 1,179,648 elements
    assert x.size > 1_000_000
    xl = np.ascontiguousarray(np.moveaxis(x, 1, -1))
    w32 = (rng.standard_normal(32) + 1).astype(dtype)
    w72 = (rng.standard_normal(72) + 1).astype(dtype)
    calls = {
        "layer_norm": lambda: bnfast.layer_norm(x, w72, w72, return_stats=True),
        "layer_norm2": lambda: bnfast.layer_norm(x, axis=(-3, -2, -1), return_stats=True),
        "layer_norm_long": lambda: bnfast.layer_norm(x.reshape(2, -1), return_stats=True),
        "group_norm": lambda: bnfast.group_norm(x, 4, w32, w32, return_stats=True),
        "group_norm_last": lambda: bnfast.group_norm(xl, 8, w32, w32, axis=-1, return_stats=True),
        "instance_norm": lambda: bnfast.instance_norm(x, w32, w32, return_stats=True),
        "instance_norm_last": lambda: bnfast.instance_norm(xl, axis=-1, return_stats=True),
        "rms_norm": lambda: bnfast.rms_norm(x, w72, return_stats=True),
        "rms_norm_long": lambda: bnfast.rms_norm(x.reshape(2, -1), return_stats=True),
    }
    for name, call in calls.items():
        with bnfast.threads(1):
            r1 = call()
        with bnfast.threads(3):
            r3 = call()
        for a, c in zip(r1, r3):
            assert a.tobytes() == c.tobytes(), f"{name}: 1 vs 3 threads differ"
