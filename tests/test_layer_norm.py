"""bnfast.layer_norm and bnfast.rms_norm (the forward) against PyTorch and
float64 NumPy references over edge shapes, axes, dtypes and non-contiguous
layouts; their argument errors, the accuracy / exactness / thread-determinism
contracts, streaming stores and the C++ fast path (layer_norm_fast).
The backwards are in test_layer_norm_backward.py."""

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
    STREAM_BYTES,
    assert_close,
    assert_forward_close,
    edge_shapes,
    mag,
    make_data,
    misaligned_empty,
    needs_torch,
    normalize_axes,
    param_shape,
    ref_layer_norm,
    ref_rms_norm,
    rtol_for,
    runtime,
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
LN_CASES = [
    ((7, 33), -1),
    ((16, 17), -1),
    ((33, 1), -1),
    ((4096,), -1),
    ((3, 1023), -1),
    ((3, 15, 16), -1),
    ((2, 7, 33), (-2, -1)),
    ((5, 1, 17), (-2, -1)),
    ((2, 3, 16, 15), (-2, -1)),
    ((1, 1), -1),
]


@needs_torch
@pytest.mark.parametrize("affine", ["wb", "w", "none"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,axis", LN_CASES, ids=str)
def test_layer_norm_matches_torch(backend, shape, axis, dtype, affine):
    rng = np.random.default_rng(len(shape) * 100 + shape[-1])
    x = make_data(rng, shape, dtype, offset=0.7, scale=1.3)
    axes = normalize_axes(axis, x.ndim)
    nshape = param_shape(shape, axes)
    w, b = _affine(rng, nshape, dtype, affine)
    eps = 1e-5
    y, mean, rstd = bnfast.layer_norm(x, w, b, axis=axis, eps=eps, return_stats=True)
    yt, mt, rt = torch.native_layer_norm(tt(x), list(nshape), tt(w), tt(b), eps)
    assert y.shape == x.shape and y.dtype == x.dtype
    stat_shape = tuple(s for i, s in enumerate(shape) if i not in axes)
    assert mean.shape == stat_shape and rstd.shape == stat_shape
    _, m64, r64 = ref_layer_norm(x, None, None, axes, eps)
    assert_forward_close(y, to_np(yt), x, m64, r64, axes, dtype, w)
    # also the plain functional API
    yf = torch.nn.functional.layer_norm(tt(x), list(nshape), tt(w), tt(b), eps)
    assert_forward_close(y, to_np(yf), x, m64, r64, axes, dtype, w)
    _stats_close(mean, to_np(mt).reshape(stat_shape), dtype, mag(x), "mean")
    _stats_close(rstd, to_np(rt).reshape(stat_shape), dtype, 0.0, "rstd")


RMS_CASES = [((7, 33), -1), ((16, 17), -1), ((4096,), -1), ((3, 15, 16), (-2, -1)), ((33, 1), -1)]


@needs_torch
@pytest.mark.parametrize("eps", [None, 1e-5, 1e-2])
@pytest.mark.parametrize("weighted", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,axis", RMS_CASES, ids=str)
def test_rms_norm_matches_torch(backend, shape, axis, dtype, weighted, eps):
    rng = np.random.default_rng(shape[-1])
    # small magnitudes make the default eps (finfo.eps) visible in float32
    x = make_data(rng, shape, dtype, offset=0.2, scale=1e-3 if eps is None else 1.0)
    axes = normalize_axes(axis, x.ndim)
    nshape = param_shape(shape, axes)
    w = (rng.standard_normal(nshape) + 1).astype(dtype) if weighted else None
    y, rstd = bnfast.rms_norm(x, w, axis=axis, eps=eps, return_stats=True)
    yt = torch.nn.functional.rms_norm(tt(x), list(nshape), tt(w), eps)
    yr, r64 = ref_rms_norm(x, w, axes, eps)
    assert y.dtype == x.dtype and y.shape == x.shape
    stat_shape = tuple(s for i, s in enumerate(shape) if i not in axes)
    assert rstd.shape == stat_shape and rstd.dtype == x.dtype
    # no cancellation in x*rstd: plain rtol/atol*magnitude of the contract
    rtol = rtol_for(dtype)
    assert_close(y, to_np(yt), rtol, rtol * mag(yt), what="rms_norm vs torch")
    assert_close(y, yr, rtol, rtol * mag(yr), what="rms_norm vs float64")
    assert_close(rstd, r64.reshape(stat_shape), rtol, what="rstd")


# ==========================================================================
# hypothesis properties vs float64 references (no torch needed)
# ==========================================================================
@st.composite
def ln_cases(draw):
    ndim = draw(st.integers(1, 4))
    shape = draw(edge_shapes(ndim))
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
    x = with_layout(make_data(rng, shape, dtype), lay, rng)
    axes = normalize_axes(axis, x.ndim)
    w, b = _affine(rng, param_shape(shape, axes), dtype, affine)
    if w is not None and seed % 3 == 0:  # strided / reversed parameters
        w = with_layout(w, "negstep", rng)
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
    shape = draw(edge_shapes(ndim))
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
    x = with_layout(make_data(rng, shape, dtype), lay, rng)
    axes = normalize_axes(axis, x.ndim)
    w = (rng.standard_normal(param_shape(shape, axes)) + 1).astype(dtype) if weighted else None
    y, rstd = bnfast.rms_norm(x, w, axis=axis, eps=eps, return_stats=True)
    yref, r64 = ref_rms_norm(x, w, axes, eps)
    rtol = rtol_for(dtype)
    assert y.dtype == x.dtype
    assert_close(y, yref, rtol, rtol * mag(yref), what="rms_norm")
    stat_shape = tuple(s for i, s in enumerate(shape) if i not in axes)
    assert_close(rstd, r64.reshape(stat_shape), rtol, what="rstd")


# ==========================================================================
# misc API behaviour
# ==========================================================================
@pytest.mark.parametrize("dtype", DTYPES)
def test_layer_norm_non_trailing_axis(backend, dtype):
    """axis is any int/tuple, not only trailing axes (weight on those axes)."""
    rng = np.random.default_rng(5)
    x = make_data(rng, (7, 16, 3), dtype)
    for axis in (0, 1, (0, 2)):
        axes = normalize_axes(axis, 3)
        w, b = _affine(rng, param_shape(x.shape, axes), dtype, "wb")
        y, mean, rstd = bnfast.layer_norm(x, w, b, axis=axis, return_stats=True)
        yref, m64, r64 = ref_layer_norm(x, w, b, axes)
        assert_forward_close(y, yref, x, m64, r64, axes, dtype, w)
        stat_shape = tuple(s for i, s in enumerate(x.shape) if i not in axes)
        assert mean.shape == stat_shape and rstd.shape == stat_shape


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("fn", ["layer_norm", "rms_norm"])
def test_out_in_place(backend, dtype, fn):
    """out=x overwrites the input with the result (documented in-place use)."""
    rng = np.random.default_rng(1)
    x = make_data(rng, (6, 33), dtype)
    f, ref = {
        "layer_norm": (
            lambda a, out: bnfast.layer_norm(a, out=out),
            lambda a: ref_layer_norm(a)[0],
        ),
        "rms_norm": (lambda a, out: bnfast.rms_norm(a, out=out), lambda a: ref_rms_norm(a)[0]),
    }[fn]
    rtol = rtol_for(dtype)
    a = x.copy()
    expected = ref(a)
    r = f(a, a)
    assert np.shares_memory(r, a)
    assert_close(a, expected, rtol, rtol * 10)


def test_rms_norm_with_infinities_matches_pytorch(backend):
    # mean(x**2) is inf for a row holding +-inf (and no NaN): rstd = 0, the
    # finite elements map to 0 and the infinities to NaN, as in PyTorch.
    x = np.tile(np.array([1.0, 2.0, np.inf, 4.0, -np.inf, 3.0] * 4, dtype=np.float32), (5, 1))
    x[1, 3] = np.nan
    y, rstd = bnfast.rms_norm(x, return_stats=True)
    assert rstd[0] == 0 and np.isnan(rstd[1])
    finite = np.isfinite(x[0])
    assert np.all(y[0][finite] == 0) and np.all(np.isnan(y[0][~finite]))
    assert np.all(np.isnan(y[1]))


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


@pytest.mark.parametrize("value", [1e4, -1e4, 1234.5678])
@pytest.mark.parametrize("dtype", DTYPES)
def test_constant_rows_give_exactly_bias(backend, dtype, value):
    """A constant row has mean == value exactly and variance 0, so
    (x - mean) == 0 and the output must be bias exactly (no folded
    scale/shift rounding, which would be off by ~ulp(value*rstd))."""
    rng = np.random.default_rng(3)
    v = dtype(value)
    # rows 0 and 2 constant
    x = make_data(rng, (4, 33), dtype)
    x[0] = v
    x[2] = -v
    w = (rng.standard_normal(33) + 2).astype(dtype)
    b = rng.standard_normal(33).astype(dtype)
    y = bnfast.layer_norm(x, w, b)
    assert np.array_equal(y[0], b) and np.array_equal(y[2], b), y[0] - b


@pytest.mark.parametrize("dtype", DTYPES)
def test_forward_is_thread_count_independent(backend, dtype):
    """Bit-identical outputs and stats for 1 and 3 threads on > 1M elements
    (no reduction may depend on how work is split between threads)."""
    rng = np.random.default_rng(11)
    x = make_data(rng, (8, 32, 64, 72), dtype, offset=2.0, scale=1.5)  # 1,179,648 elements
    assert x.size > 1_000_000
    rng.standard_normal(32)  # (the group-norm weights of the same data set)
    w72 = (rng.standard_normal(72) + 1).astype(dtype)
    calls = {
        "layer_norm": lambda: bnfast.layer_norm(x, w72, w72, return_stats=True),
        "layer_norm2": lambda: bnfast.layer_norm(x, axis=(-3, -2, -1), return_stats=True),
        "layer_norm_long": lambda: bnfast.layer_norm(x.reshape(2, -1), return_stats=True),
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


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("offset", [0, 5])
def test_streamed_rows_equal_pieces(native_backend, dtype, offset):
    # Outputs >= 8 MiB are written with streaming stores after a scalar head
    # up to vector alignment: the same values as small (plain-store) calls.
    d = 1000  # not a multiple of any vector width
    rows = STREAM_BYTES // (np.dtype(dtype).itemsize * d) + 3
    x = np.random.default_rng(1).standard_normal((rows, d)).astype(dtype) + 3
    w = np.linspace(0.5, 2, d).astype(dtype)
    y = misaligned_empty(x.shape, dtype, offset)
    bnfast.layer_norm(x, w, out=y)
    ref = np.concatenate([bnfast.layer_norm(x[i : i + 64], w) for i in range(0, rows, 64)])
    np.testing.assert_array_equal(y, ref)
    y2 = misaligned_empty(x.shape, dtype, offset)
    bnfast.rms_norm(x, w, out=y2)
    ref2 = np.concatenate([bnfast.rms_norm(x[i : i + 64], w) for i in range(0, rows, 64)])
    np.testing.assert_array_equal(y2, ref2)


# ==========================================================================
# argument errors
# ==========================================================================
@pytest.mark.parametrize(
    "axis,wshape",
    [
        (-1, (ERR_L + 1,)),
        (-1, (ERR_C,)),
        (-1, (1, ERR_L)),
        ((-2, -1), (ERR_L,)),
        ((-2, -1), (ERR_L, ERR_C)),
        ((-2, -1), (ERR_C * ERR_L,)),
    ],
    ids=str,
)
def test_weight_shape_mismatch(backend, axis, wshape):
    x = make_data(np.random.default_rng(0), (ERR_N, ERR_C, ERR_L), np.float32)
    bad = np.ones(wshape, np.float32)
    good_shape = (ERR_L,) if axis == -1 else (ERR_C, ERR_L)
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


def test_weight_shape_error_message(backend):
    """The message should say what was expected (the normalized shape)."""
    x = make_data(np.random.default_rng(0), (ERR_N, ERR_C, ERR_L), np.float32)
    with pytest.raises(ValueError, match=r"weight") as ei:
        bnfast.layer_norm(x, np.ones(ERR_L + 1, np.float32))
    assert str(ERR_L) in str(ei.value)


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint8, np.bool_])
def test_integer_x_is_type_error(backend, dtype):
    x = np.ones((ERR_N, ERR_C, ERR_L), dtype)
    with pytest.raises(TypeError):
        bnfast.layer_norm(x)
    with pytest.raises(TypeError):
        bnfast.rms_norm(x)


@pytest.mark.parametrize("lay", ["C", "F", "step", "transpose"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_inputs_not_modified(backend, dtype, lay):
    rng = np.random.default_rng(4)
    x = with_layout(make_data(rng, (ERR_N, ERR_C, ERR_L), dtype), lay, rng)
    dy = with_layout(make_data(rng, (ERR_N, ERR_C, ERR_L), dtype), lay, rng)
    rng.standard_normal(2 * ERR_C)  # (the channel parameters of the same data set)
    wl = (rng.standard_normal(ERR_L) + 1).astype(dtype)
    bl = rng.standard_normal(ERR_L).astype(dtype)
    arrs = [x, dy, wl, bl]
    before = [a.copy() for a in arrs]
    _, lm, lr = bnfast.layer_norm(x, wl, bl, return_stats=True)
    _, rr = bnfast.rms_norm(x, wl, return_stats=True)
    stats = [lm, lr, rr]
    stats_before = [s.copy() for s in stats]
    bnfast.layer_norm_backward(dy, x, lm, lr, wl)
    bnfast.rms_norm_backward(dy, x, rr, wl)
    for a, b, n in zip(arrs, before, ["x", "dy", "wl", "bl"]):
        assert np.array_equal(a, b, equal_nan=True), f"{n} was modified"
    for a, b in zip(stats, stats_before):
        assert np.array_equal(a, b, equal_nan=True), "a statistic was modified"


# ==========================================================================
# the C++ fast path (layer_norm_fast) == the general path, bit for bit
# ==========================================================================
# ``return_stats=True`` always takes the general path, which makes it the
# reference here; the fast path steps aside (returns None) for everything it
# does not handle, so errors still come from the general path.
@pytest.mark.parametrize("shape", [(4, 64), (1, 1), (3, 1), (2, 3, 17), (33, 16), (5, 1, 8)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rms", [False, True])
def test_fast_path_is_bitwise_the_general_path(native_backend, shape, dtype, rms):
    fast_entry = runtime.core().layer_norm_fast
    rng = np.random.default_rng(5)
    x = (rng.standard_normal(shape) * 2 + 5).astype(dtype)
    d = shape[-1]
    for w, b in [
        (None, None),
        (rng.standard_normal(d).astype(dtype), None),
        (rng.standard_normal(d).astype(dtype), rng.standard_normal(d).astype(dtype)),
    ]:
        if rms:
            for eps in (None, 1e-6):
                fast = fast_entry(x, w, None, -1, eps, True, None)
                assert fast is not None
                ref = bnfast.rms_norm(x, w, eps=eps, return_stats=True)[0]
                np.testing.assert_array_equal(fast, ref)
        else:
            fast = fast_entry(x, w, b, -1, 1e-5, False, None)
            assert fast is not None
            ref = bnfast.layer_norm(x, w, b, return_stats=True)[0]
            np.testing.assert_array_equal(fast, ref)


@pytest.mark.parametrize("shape", [(4, 64), (3, 1), (2, 3, 17), (33, 16)])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("rms", [False, True])
def test_fast_path_half_is_bitwise_the_general_path(native_backend, shape, dtype, rms):
    # float16/bfloat16 x with float32 weight and bias: the fast path takes
    # the call (eps=None: the half dtype's epsilon), every bit as the general path.
    if dtype == "bfloat16":
        dtype = pytest.importorskip("ml_dtypes", reason="bfloat16 needs ml_dtypes").bfloat16
    fast_entry = runtime.core().layer_norm_fast
    rng = np.random.default_rng(5)
    x = (rng.standard_normal(shape) * 2 + 5).astype(dtype)
    d = shape[-1]
    w32, b32 = rng.standard_normal(d).astype(np.float32), rng.standard_normal(d).astype(np.float32)
    for w, b in [(None, None), (w32, None), (w32, b32)]:
        for eps in (None, 1e-6) if rms else (1e-5,):
            fast = fast_entry(x, w, None if rms else b, -1, eps, rms, None)
            assert fast is not None
            if rms:
                ref = bnfast.rms_norm(x, w, eps=eps, return_stats=True)[0]
            else:
                ref = bnfast.layer_norm(x, w, b, eps=eps, return_stats=True)[0]
            assert fast.dtype == ref.dtype == x.dtype
            np.testing.assert_array_equal(fast.view(np.uint16), ref.view(np.uint16))
    # half weights are converted by the general path
    assert fast_entry(x, w32.astype(dtype), None, -1, 1e-5, False, None) is None


def test_fast_path_steps_aside(native_backend):
    x = np.random.default_rng(6).standard_normal((4, 8)).astype(np.float32)
    f = runtime.core().layer_norm_fast
    assert f(x, None, None, 0, 1e-5, False, None) is None  # not the last axis
    assert f(x, None, None, (-1,), 1e-5, False, None) is None  # tuple axis
    assert f(x.T, None, None, -1, 1e-5, False, None) is None  # not C-contiguous
    assert f(x, np.ones(8), None, -1, 1e-5, False, None) is None  # float64 weight
    assert f(x, None, None, -1, -1.0, False, None) is None  # negative eps
    assert f(x, None, None, -1, None, False, None) is None  # eps=None is RMS-only
    assert f(x[:0], None, None, -1, 1e-5, False, None) is None  # empty
    with pytest.raises(ValueError, match="eps"):
        bnfast.layer_norm(x, eps=-1.0)
