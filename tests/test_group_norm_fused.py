"""The fused group-norm training backward (``group_norm_backward_train``):
the native kernel against its NumPy twin on shapes around the SIMD widths,
the channel tile and its thread split (one (sample, group) or one
channels-last sample per work item, or the two-phase loops when there are
few or large blocks: the same bits either way), half-precision storage,
hypothesis shapes, and the ``out=`` of the public backward functions.

Tolerances: the kernel and the twin add the same float64 terms in other
orders (rtol 1e-12 for the sums, as batch_norm_backward_reduce against its
twin); the parameters are float64 values rounded to x's compute dtype, so
dx may differ by an ulp of its largest term: 8 ulps of the dtype (1e-11 for
float64) of ``|dy| * |rstd| * (1 + |w|) * 8`` (``|xhat|`` <= ~5 here).
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bnfast
from helpers import NATIVE_CHOICES, mag, make_data, runtime, twin


def _stats(x4, groups, dtype):
    """The forward's mean (rounded to x's compute dtype, as stored) and
    rstd of each (sample, group) of an (N, A, C, B) array, float64, N*G."""
    n, a, c, b = x4.shape
    per = c // groups
    blocks = np.moveaxis(x4.astype(np.float64).reshape(n, a, groups, per, b), 2, 1)
    blocks = blocks.reshape(n, groups, -1)
    mean = blocks.mean(axis=2)
    rstd = 1.0 / np.sqrt(blocks.var(axis=2) + 1e-5)
    cdt = np.float64 if np.dtype(dtype) == np.float64 else np.float32
    return mean.astype(cdt).astype(np.float64).ravel(), rstd.ravel()


def _run(impl, x4, dy4, groups, mean, rstd, w):
    dx = np.full(x4.shape, np.nan, x4.dtype)
    sums = impl.group_norm_backward_train(x4, dy4, dx, groups, mean, rstd, w)
    return dx, sums


def _eps(dtype):
    if np.dtype(dtype) == np.float64:
        return 1e-11 / 8
    return float(np.finfo(np.float32).eps) if np.dtype(dtype).itemsize == 4 else None


def _check_against_twin(x4, dy4, groups, weighted, rng, half_eps=None):
    c = x4.shape[2]
    mean, rstd = _stats(x4, groups, x4.dtype)
    w = (rng.standard_normal(c) + 1.0) if weighted else None
    dx, (s_dy, s_xc) = _run(runtime.impl(), x4, dy4, groups, mean, rstd, w)
    dx_ref, (r_dy, r_xc) = _run(twin, x4, dy4, groups, mean, rstd, w)
    sum_scale = mag(dy4.astype(np.float64)) * max(mag(x4.astype(np.float64)), 1.0) * x4[0].size
    np.testing.assert_allclose(s_dy, r_dy, rtol=1e-12, atol=1e-12 * sum_scale)
    np.testing.assert_allclose(s_xc, r_xc, rtol=1e-12, atol=1e-12 * sum_scale)
    eps = half_eps if half_eps is not None else _eps(x4.dtype)
    scale = mag(dy4.astype(np.float64)) * mag(rstd) * (1.0 + (mag(w) if weighted else 1.0)) * 8
    got, want = dx.astype(np.float64), dx_ref.astype(np.float64)
    assert not np.isnan(got).any(), "dx left unwritten"
    bad = ~(np.abs(got - want) <= 8 * eps * scale)
    assert not bad.any(), (
        f"{bad.sum()} of {bad.size} dx differ; worst {np.abs(got - want).max():.3g}"
    )


# (N, A, C, B), groups: channels first (unit-stride rows of B), B around the
# vector widths (8 and 16 float64 lanes x 2 chains, 16 float32 lanes).
FIRST = [
    ((2, 1, 4, 15), 2),
    ((2, 1, 4, 16), 4),
    ((3, 1, 6, 17), 3),
    ((2, 3, 4, 33), 1),
    ((1, 2, 3, 31), 3),
    ((2, 1, 8, 64), 8),
]
# (N, S, C, 1): channels last, C around the vector widths and the tile.
LAST = [
    ((2, 7, 15, 1), 5),
    ((3, 5, 16, 1), 4),
    ((2, 9, 17, 1), 17),
    ((2, 4, 33, 1), 3),
    ((1, 3, 64, 1), 2),
    ((2, 3, 1030, 1), 2),
]


def _data(shape, dtype, seed):
    rng = np.random.default_rng(seed)
    return rng, make_data(rng, shape, dtype), make_data(rng, shape, dtype)


@pytest.mark.parametrize("weighted", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,groups", FIRST + LAST, ids=str)
def test_backward_train_kernel_matches_twin(native_backend, shape, groups, dtype, weighted):
    rng, x4, dy4 = _data(shape, dtype, 3)
    _check_against_twin(x4, dy4, groups, weighted, rng)


def test_backward_train_kernel_strided_views(native_backend):
    """Neither unit-stride rows nor unit-stride channels: the scalar loops."""
    rng, x, dy = _data((2, 3, 6, 40), np.float32, 5)
    _check_against_twin(x[..., ::3], dy[..., ::3], 3, True, rng)
    _check_against_twin(x[:, :, ::2, :5], dy[:, :, ::2, :5], 1, False, rng)


@pytest.mark.parametrize("dtype", [np.float16, "bfloat16"])
@pytest.mark.parametrize("shape,groups", [((2, 1, 4, 33), 2), ((2, 9, 17, 1), 17)], ids=str)
def test_backward_train_kernel_half_storage(native_backend, shape, groups, dtype):
    """float16/bfloat16 read and written directly, float32 parameters."""
    if dtype == "bfloat16":
        ml_dtypes = pytest.importorskip("ml_dtypes")
        dtype = ml_dtypes.bfloat16
    rng, x4, dy4 = _data(shape, np.float32, 8)
    x4, dy4 = x4.astype(dtype), dy4.astype(dtype)
    half_eps = 2.0**-10 if np.dtype(dtype) == np.float16 else 2.0**-7
    _check_against_twin(x4, dy4, groups, True, rng, half_eps=half_eps)


# Shapes whose work split changes with the thread count (above the
# single-thread threshold of 32768 elements): fused blocks at 1 thread,
# the two-phase loops at 2 or 5; blocks over 1 MiB always two-phase.
SPLITS = [
    ((3, 2, 8, 1400), 1),  # 3 (sample, group) blocks
    ((2, 1, 4, 20000), 4),  # 8 blocks of one channel (instance norm)
    ((1, 1, 2, 140000), 1),  # one 2.2 MB block
    ((3, 700, 40, 1), 8),  # 3 channels-last samples
    ((2, 20, 1030, 1), 2),  # 2 samples, 2 channel tiles
    ((5, 300, 24, 1), 24),  # channels last, fused at 2 threads too
]


@pytest.mark.parametrize("shape,groups", SPLITS, ids=str)
def test_backward_train_bit_identical_for_every_split(native_backend, shape, groups):
    rng, x4, dy4 = _data(shape, np.float32, 11)
    mean, rstd = _stats(x4, groups, np.float32)
    w = rng.standard_normal(shape[2]) + 1.0
    results = []
    for threads in (1, 2, 5):
        with bnfast.threads(threads):
            dx, sums = _run(runtime.impl(), x4, dy4, groups, mean, rstd, w)
        results.append((dx.tobytes(), sums[0].tobytes(), sums[1].tobytes()))
    assert results[0] == results[1] == results[2]
    _check_against_twin(x4, dy4, groups, True, rng)


@st.composite
def _cases(draw):
    n = draw(st.integers(1, 4))
    groups = draw(st.integers(1, 4))
    per = draw(st.integers(1, 9))
    a = draw(st.integers(1, 12))
    b = draw(st.integers(1, 40))
    last = draw(st.booleans())
    shape = (n, a * b, groups * per, 1) if last else (n, a, groups * per, b)
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    return shape, groups, dtype, draw(st.booleans()), draw(st.integers(0, 2**16))


@settings(max_examples=60, deadline=None)
@given(case=_cases())
def test_backward_train_kernel_property(case):
    shape, groups, dtype, weighted, seed = case
    if not NATIVE_CHOICES:
        pytest.skip("the native module bnfast._core is not built")
    for choice in NATIVE_CHOICES:
        rng, x4, dy4 = _data(shape, dtype, seed)
        with runtime.using(choice):
            _check_against_twin(x4, dy4, groups, weighted, rng)


# --------------------------------------------------------------------------
# out= of group_norm_backward and instance_norm_backward


def _calls(x, dy, axis):
    c = x.shape[axis]
    w = np.linspace(0.5, 2.0, c).astype(x.dtype)
    _, gm, gr = bnfast.group_norm(x, 2, w, axis=axis, return_stats=True)
    _, im, ir = bnfast.instance_norm(x, w, axis=axis, return_stats=True)
    return {
        "group": lambda d, **k: bnfast.group_norm_backward(d, x, gm, gr, 2, w, axis=axis, **k),
        "instance": lambda d, **k: bnfast.instance_norm_backward(d, x, im, ir, w, axis=axis, **k),
    }


@pytest.mark.parametrize("axis", [1, -1])
def test_backward_out(backend, axis):
    rng = np.random.default_rng(21)
    x = make_data(rng, (3, 4, 5, 6), np.float32)
    dy = make_data(rng, x.shape, np.float32)
    for name, call in _calls(x, dy, axis).items():
        want = call(dy)
        out = np.empty_like(dy)
        got = call(dy, out=out)
        assert got[0] is out, name
        for g, r in zip(got, want):
            np.testing.assert_array_equal(g, r, err_msg=name)
        # dx written over dy (element by element), or into a strided view
        inplace = dy.copy()
        assert call(inplace, out=inplace)[0] is inplace
        np.testing.assert_array_equal(inplace, want[0], err_msg=name)
        strided = np.empty(x.shape[:-1] + (12,), np.float32)[..., ::2]
        call(dy, out=strided)  # (channels last: the kernel's strided loops)
        np.testing.assert_allclose(strided, want[0], rtol=1e-6, atol=1e-6 * mag(want[0]))
        # out overlapping x goes through a temporary
        xin = x.copy()
        c = _calls(xin, dy, axis)[name]
        c(dy, out=xin)
        np.testing.assert_array_equal(xin, want[0], err_msg=name)


def test_backward_out_errors(backend):
    rng = np.random.default_rng(22)
    x = make_data(rng, (2, 4, 5), np.float32)
    for call in _calls(x, x, 1).values():
        with pytest.raises(ValueError):
            call(x, out=np.empty((2, 4, 6), np.float32))
        with pytest.raises((TypeError, ValueError)):
            call(x, out=np.empty(x.shape, np.float64))


# --------------------------------------------------------------------------
# The fused forward (group_norm_forward)


def _forward(impl, x4, groups, w, b, eps=1e-5, zero_var_rstd=False, y4=None):
    y = np.full(x4.shape, np.nan, x4.dtype) if y4 is None else y4
    mean, m2, done = impl.group_norm_forward(x4, y, groups, w, b, eps, zero_var_rstd)
    return y, mean, m2, done


def _check_forward_against_twin(x4, groups, weighted, rng):
    c = x4.shape[2]
    w = (rng.standard_normal(c) + 1.0) if weighted else None
    b = rng.standard_normal(c) if weighted else None
    y, mean, m2, done = _forward(runtime.impl(), x4, groups, w, b)
    y_ref, r_mean, r_m2, r_done = _forward(twin, x4, groups, w, b)
    xm = mag(x4.astype(np.float64))
    np.testing.assert_allclose(mean, r_mean, rtol=1e-14, atol=1e-14 * xm)
    np.testing.assert_allclose(m2, r_m2, rtol=1e-11, atol=1e-300)
    assert done.dtype == np.bool_ and done.all() and r_done.all()
    eps = _eps(x4.dtype)
    xhat = 8.0 * (mag(w) if weighted else 1.0) + (mag(b) if weighted else 0.0)
    got, want = y.astype(np.float64), y_ref.astype(np.float64)
    bad = ~(np.abs(got - want) <= 8 * eps * xhat)
    assert not bad.any(), (
        f"{bad.sum()} of {bad.size} y differ; worst {np.abs(got - want).max():.3g}"
    )


# Channels first with per*B >= 16 (a group one row), < 16 (per-channel
# moments merged), channels last, and the tile.
FORWARD = FIRST + LAST + [((3, 1, 4, 3), 2), ((2, 1, 6, 2), 1)]


@pytest.mark.parametrize("weighted", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,groups", FORWARD, ids=str)
def test_forward_kernel_matches_twin(native_backend, shape, groups, dtype, weighted):
    rng, x4, _ = _data(shape, dtype, 31)
    _check_forward_against_twin(x4, groups, weighted, rng)


def test_forward_kernel_strided_and_in_place(native_backend):
    rng, x, _ = _data((2, 3, 6, 40), np.float32, 32)
    _check_forward_against_twin(x[..., ::3], 3, True, rng)
    _check_forward_against_twin(x[:, :, ::2, :5], 1, False, rng)
    x4 = make_data(rng, (3, 1, 8, 50), np.float32)
    want, *_ = _forward(runtime.impl(), x4, 4, None, None)
    inplace = x4.copy()
    _forward(runtime.impl(), inplace, 4, None, None, y4=inplace)
    np.testing.assert_array_equal(inplace, want)


# Work splits that change with the thread count: few groups (the moments
# with the threads inside each sample), groups over 1 MiB, few
# channels-last samples.
FORWARD_SPLITS = [
    ((3, 1, 8, 1400), 1),
    ((1, 1, 2, 300000), 1),
    ((3, 700, 40, 1), 8),
    ((2, 20, 1030, 1), 2),
    ((6, 1, 32, 400), 32),
]


@pytest.mark.parametrize("shape,groups", FORWARD_SPLITS, ids=str)
def test_forward_bit_identical_for_every_split(native_backend, shape, groups):
    rng, x4, _ = _data(shape, np.float32, 33)
    w, b = rng.standard_normal(shape[2]), rng.standard_normal(shape[2])
    results = []
    for threads in (1, 2, 5):
        with bnfast.threads(threads):
            y, mean, m2, done = _forward(runtime.impl(), x4, groups, w, b)
        results.append((y.tobytes(), mean.tobytes(), m2.tobytes(), done.tobytes()))
    assert results[0] == results[1] == results[2]
    _check_forward_against_twin(x4, groups, True, rng)


@pytest.mark.parametrize("last", [False, True])
def test_forward_groups_beyond_the_dtype_are_left_unwritten(backend, last):
    """eps=0 and subnormal float32 data: rstd overflows float32, so that
    group is mapped in float64 by the caller (done False), and the public
    call gives the float64 map there, the float32 kernel elsewhere."""
    rng = np.random.default_rng(34)
    x = rng.standard_normal((2, 4, 30)).astype(np.float32)
    x[1, 2:] = (rng.standard_normal((2, 30)) * 1e-41).astype(np.float32)  # subnormal
    x4 = np.ascontiguousarray(np.moveaxis(x, 1, -1))[:, :, :, None] if last else x[:, None]
    y, mean, m2, done = _forward(runtime.impl(), x4, 2, None, None, eps=0.0)
    assert done.tolist() == [[True, True], [True, False]]
    assert np.isnan(y[1, :, 2:] if last else y[1, :, 2:]).all()  # left as it was
    xs = np.moveaxis(x, 1, -1) if last else x
    got = bnfast.group_norm(xs, 2, eps=0.0, axis=-1 if last else 1)
    got = np.moveaxis(got, -1, 1) if last else got
    ref = (x[1, 2:].astype(np.float64) - x[1, 2:].astype(np.float64).mean()) / x[1, 2:].astype(
        np.float64
    ).std()
    np.testing.assert_allclose(got[1, 2:], ref.astype(np.float32), rtol=1e-6)
    assert np.isfinite(got).all()


@settings(max_examples=60, deadline=None)
@given(case=_cases())
def test_forward_kernel_property(case):
    shape, groups, dtype, weighted, seed = case
    if not NATIVE_CHOICES:
        pytest.skip("the native module bnfast._core is not built")
    for choice in NATIVE_CHOICES:
        rng, x4, _ = _data(shape, dtype, seed)
        with runtime.using(choice):
            _check_forward_against_twin(x4, groups, weighted, rng)
