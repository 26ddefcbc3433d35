"""No layout cliffs: channels-last group and instance norm (and their
backwards) run on the group-norm kernels, which take every sample of a
batch in one call (issue 12 item 4). Here: those kernels against their NumPy
twins, channels last against channels first for every op, bit-identical
results for every thread count on shapes around the kernels' thread
thresholds, and PyTorch on channels_last tensors.

Tolerances (the two layouts reduce in different orders, never with
different formulas):
- statistics in float64 (the kernels): as the moments kernel against its
  twin (test_kernels.py): means 1e-14 relative to the data's magnitude, M2
  1e-11 relative -- per-channel moments merged by Chan's formula against
  each group taken whole, which differ in the last float64 bits only;
- the backward sums: float64 sums of the same terms in another order, as
  batch_norm_backward_reduce against its twin (rtol 1e-12, atol 1e-9);
- outputs in x's dtype: the parameters are those float64 values rounded to
  the dtype, which may land on the neighbouring value; ``_tol`` is 8 ulps of
  the dtype (float32) or 1e-11 (float64, the M2 tolerance) of the largest
  term.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bnfast
from helpers import core, mag, make_data, needs_torch, runtime, torch, twin, views

DTYPES = [np.float32, np.float64]


def _impl():
    return runtime.impl()


def _factor(dtype):
    """Relative tolerance of a value rounded from float64 statistics that may
    differ in their last bits (see the module docstring)."""
    return 8 * float(np.finfo(dtype).eps) if np.dtype(dtype) == np.float32 else 1e-11


def _assert_near(got, want, dtype, scale, what):
    got = np.asarray(got, np.float64)
    want = np.asarray(want, np.float64)
    assert got.shape == want.shape, what
    tol = _factor(dtype) * scale
    bad = ~(np.abs(got - want) <= tol)
    assert not bad.any(), (
        f"{what}: {bad.sum()} values differ by more than {tol:.3g}; "
        f"worst {np.nanmax(np.abs(got - want)):.3g}"
    )


def _channels_last(xf):
    """The NHWC copy of a channels-first array (channels on axis -1)."""
    return np.ascontiguousarray(np.moveaxis(xf, 1, -1))


def _strided_channels_first(xf):
    """Shape (N, C, ...) with channels-last memory (torch.channels_last)."""
    return np.moveaxis(_channels_last(xf), -1, 1)


# ==========================================================================
# the kernels against their twins
# ==========================================================================
def _views4(kind, dtype, rng):
    """(N, A, C, B) views the Python layer hands the kernels."""
    if kind == "nhwc":  # the common channels-last case: (N, S, C, 1)
        x = make_data(rng, (3, 5, 7, 24), dtype)
        return views.sample_views(x, 3)[0]
    if kind == "nhwc_wide":  # channels >= 64: the apply's channel-rows path
        x = make_data(rng, (2, 9, 11, 96), dtype)
        return views.sample_views(x, 3)[0]
    if kind == "nchw_sliced":  # channels first, batch not collapsing: (N, 1, C, S)
        x = make_data(rng, (6, 12, 5, 19), dtype)[::2]
        return views.sample_views(x, 1)[0]
    if kind == "strided_channels":  # channel stride 2: the plain loops
        x = make_data(rng, (3, 6, 10, 32), dtype)[..., ::2]
        return views.sample_views(x, 3)[0]
    if kind == "one_channel_per_row":  # A and B both present: (N, H, C, W)
        x = make_data(rng, (2, 7, 6, 17), dtype)
        return views.sample_views(x, 2)[0]
    raise ValueError(kind)


KINDS = ["nhwc", "nhwc_wide", "nchw_sliced", "strided_channels", "one_channel_per_row"]


def _forward_stats(impl, x4, groups):
    """The (mean, m2) the forward kernel computes (y written to a scratch)."""
    y = np.empty(x4.shape, x4.dtype)
    mean, m2, _ = impl.group_norm_forward(x4, y, groups, None, None, 1e-5, False)
    return mean, m2


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", DTYPES + [np.float16])
def test_group_norm_forward_statistics_match_twin(native_backend, kind, dtype):
    rng = np.random.default_rng(5)
    x4 = _views4(kind, dtype, rng)
    c = x4.shape[2]
    for groups in sorted({1, 2, c // 2 if c % (c // 2 or 1) == 0 else 1, c}):
        if groups == 0 or c % groups:
            continue
        mean, m2 = _forward_stats(_impl(), x4, groups)
        ref_mean, ref_m2 = _forward_stats(twin, x4, groups)
        assert mean.shape == (x4.shape[0], groups) and mean.dtype == np.float64
        np.testing.assert_allclose(mean, ref_mean, rtol=1e-14, atol=1e-14 * mag(x4))
        np.testing.assert_allclose(m2, ref_m2, rtol=1e-11)


def test_group_norm_forward_keeps_offset_and_constant_groups(native_backend):
    """Means relative to each group's first channel: offset data keeps its
    variance; a constant group has its value as mean and M2 exactly 0."""
    rng = np.random.default_rng(9)
    x = 1e8 + rng.standard_normal((2, 50, 8))  # (N, S, C), float64
    x[1, :, 4:] = 3.25  # group 1 of sample 1 constant
    x4 = x.reshape(2, 50, 8, 1)
    mean, m2 = _forward_stats(_impl(), x4, 2)
    ref_mean, ref_m2 = _forward_stats(twin, x4, 2)
    np.testing.assert_allclose(m2, ref_m2, rtol=1e-9)
    np.testing.assert_allclose(mean, ref_mean, rtol=1e-15)
    assert mean[1, 1] == 3.25 and m2[1, 1] == 0.0


@pytest.mark.skipif(core is None, reason="the native module bnfast._core is not built")
def test_group_norm_kernels_check_their_arguments():
    x4 = np.zeros((2, 3, 4, 1), np.float32)
    y4 = np.zeros_like(x4)
    with pytest.raises(ValueError, match="4-D"):
        core.group_norm_forward(x4[0], y4[0], 2, None, None, 1e-5, False)
    with pytest.raises(ValueError, match="divide"):
        core.group_norm_forward(x4, y4, 3, None, None, 1e-5, False)
    with pytest.raises(ValueError, match="x's shape"):
        core.group_norm_backward_train(x4, x4[:1], y4, 2, np.zeros(4), np.ones(4), None)
    with pytest.raises(ValueError, match="read-only"):
        ro = np.zeros_like(x4)
        ro.flags.writeable = False
        core.group_norm_forward(x4, ro, 2, None, None, 1e-5, False)
    with pytest.raises(TypeError):
        core.group_norm_backward_train(
            x4, x4, x4.astype(np.float64), 2, np.zeros(4), np.ones(4), None
        )


# ==========================================================================
# channels last == channels first, forward and backward
# ==========================================================================
def _run(xf, dyf, G, w, b, layout, instance):
    """Forward and backward of group norm (or instance norm when
    ``instance``) on xf laid out as ``layout``; results moved back to
    channels first."""
    if layout == "first":
        x, dy, axis = xf, dyf, 1
    elif layout == "last":
        x, dy, axis = _channels_last(xf), _channels_last(dyf), -1
    else:  # "strided": NCHW shape with channels-last memory, axis=1
        x, dy, axis = _strided_channels_first(xf), _strided_channels_first(dyf), 1
    if instance:
        y, mean, rstd = bnfast.instance_norm(x, w, b, axis=axis, return_stats=True)
        dx, dw, db = bnfast.instance_norm_backward(dy, x, mean, rstd, w, axis=axis)
    else:
        y, mean, rstd = bnfast.group_norm(x, G, w, b, axis=axis, return_stats=True)
        dx, dw, db = bnfast.group_norm_backward(dy, x, mean, rstd, G, w, axis=axis)
    if layout == "last":
        y, dx = np.moveaxis(y, -1, 1), np.moveaxis(dx, -1, 1)
    return y, mean, rstd, dx, dw, db


def _compare_layouts(got, ref, xf, dyf, w, b, dtype):
    y, mean, rstd, dx, dw, db = got
    y0, mean0, rstd0, dx0, dw0, db0 = ref
    assert y.dtype == y0.dtype and mean.dtype == mean0.dtype
    shift = 0.0 if b is None else mag(b)
    _assert_near(y, y0, dtype, mag(y0) + shift, "y")
    _assert_near(mean, mean0, dtype, mag(xf), "mean")
    _assert_near(rstd, rstd0, dtype, np.abs(rstd0.astype(np.float64)), "rstd")
    gain = mag(rstd0) * (1.0 if w is None else mag(w))
    _assert_near(dx, dx0, dtype, 16 * (mag(dx0) + mag(dyf) * gain), "dx")
    # dweight, dbias: float64 sums over N x S of |dy| * |xhat| at most.
    reduced = tuple(i for i in range(xf.ndim) if i != 1)
    sum_dy = np.abs(dyf.astype(np.float64)).sum(axis=reduced)
    xhat = mag(xf) * 2 * mag(rstd0)
    _assert_near(db, db0, dtype, sum_dy, "dbias")
    if w is not None:
        _assert_near(dw, dw0, dtype, sum_dy * xhat, "dweight")


@st.composite
def layout_cases(draw):
    n = draw(st.integers(1, 4))
    spatial = draw(
        st.lists(st.sampled_from([1, 2, 3, 7, 8, 9, 15, 16, 17, 33]), min_size=1, max_size=2)
    )
    per = draw(st.sampled_from([1, 2, 3, 8, 16, 17]))  # channels per group
    groups = draw(st.sampled_from([1, 2, 3, 4, 8]))
    if n * per * int(np.prod(spatial)) == 1:
        n = 2  # one value per group: rejected as by PyTorch
    instance = draw(st.booleans())
    if instance and int(np.prod(spatial)) == 1:
        spatial = spatial + [3]
    shape = (n, per * groups, *spatial)
    return (
        shape,
        groups,
        instance,
        draw(st.sampled_from(DTYPES)),
        draw(st.sampled_from(["last", "strided"])),
        draw(st.booleans()),
        draw(st.sampled_from([1, 2])),
        draw(st.integers(0, 2**32 - 1)),
    )


@settings(max_examples=60, deadline=None)
@given(case=layout_cases())
def test_channels_last_equals_channels_first(backend, case):
    shape, G, instance, dtype, layout, affine, threads, seed = case
    rng = np.random.default_rng(seed)
    xf = make_data(rng, shape, dtype)
    dyf = make_data(rng, shape, dtype, offset=0.0)
    C = shape[1]
    w = (rng.standard_normal(C) + 1).astype(dtype) if affine else None
    b = rng.standard_normal(C).astype(dtype) if affine else None
    with bnfast.threads(threads):
        ref = _run(xf, dyf, G, w, b, "first", instance)
        got = _run(xf, dyf, G, w, b, layout, instance)
    _compare_layouts(got, ref, xf, dyf, w, b, dtype)


# Shapes (channels first) around the group-norm kernels' thread choices:
# the parallel threshold (32768 elements in all), samples of 2**18
# elements (threads inside one sample at or above it with few samples,
# over samples below it), the apply's channel-rows path (C >= 64) and
# its per-sample fallback (C < 64).
THREAD_SHAPES = [
    ((2, 64, 72, 64), 8),  # 294912 per sample, 2 samples: threads inside
    ((3, 64, 4096), 4),  # exactly 2**18 per sample: threads inside
    ((16, 64, 8, 8), 4),  # many small samples: over samples
    ((8, 8, 4095), 2),  # just below 2**18 in all, 8 channels: over samples, fallback apply
    ((2, 4, 64, 64), 4),  # 32768 elements in all: one thread
    ((2, 4, 64, 65), 2),  # just above the threshold
    ((2, 3, 300, 300), 3),  # 270000 per sample, 3 channels: inside, fallback apply
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,G", THREAD_SHAPES, ids=str)
def test_channels_last_is_bit_identical_for_every_thread_count(native_backend, shape, G, dtype):
    rng = np.random.default_rng(sum(shape))
    xf = make_data(rng, shape, dtype, offset=1.5, scale=2.0)
    dyf = make_data(rng, shape, dtype, offset=0.0, scale=1.0)
    C = shape[1]
    w = (rng.standard_normal(C) + 1).astype(dtype)
    results = {}
    for t in (1, 2, 3):
        with bnfast.threads(t):
            results[t] = [
                _run(xf, dyf, G, w, w, layout, instance)
                for layout in ("last", "strided")
                for instance in (False, True)
            ]
    for t in (2, 3):
        for run1, run_t in zip(results[1], results[t]):
            for a, c in zip(run1, run_t):
                assert a.tobytes() == c.tobytes(), f"1 vs {t} threads differ"
    # and channels last == channels first
    with bnfast.threads(2):
        ref = _run(xf, dyf, G, w, w, "first", False)
    _compare_layouts(results[2][0], ref, xf, dyf, w, w, dtype)


@pytest.mark.parametrize("dtype", [np.float16, "bfloat16"])
def test_channels_last_half_precision(backend, dtype):
    """float16/bfloat16 x: float32 statistics and parameters in both layouts."""
    if dtype == "bfloat16":
        ml_dtypes = pytest.importorskip("ml_dtypes")
        dtype = ml_dtypes.bfloat16
    rng = np.random.default_rng(3)
    x32 = make_data(rng, (3, 32, 9, 10), np.float32, offset=1.0, scale=2.0)
    dy32 = make_data(rng, x32.shape, np.float32, offset=0.0, scale=1.0)
    xf, dyf = x32.astype(dtype), dy32.astype(dtype)
    w = (rng.standard_normal(32) + 1).astype(np.float32)
    ref = _run(xf, dyf, 4, w, w, "first", False)
    got = _run(xf, dyf, 4, w, w, "last", False)
    assert got[0].dtype == xf.dtype and got[1].dtype == np.float32
    # statistics: float32 from float64 values within 1e-14 of each other
    np.testing.assert_allclose(got[1], ref[1], rtol=2e-7, atol=2e-7 * mag(x32))
    np.testing.assert_allclose(got[2], ref[2], rtol=2e-7)
    # outputs: one rounding to the half type apart at most
    eps = float(np.finfo(np.float16).eps) if dtype == np.float16 else 2.0**-7
    for a, c in ((got[0], ref[0]), (got[3], ref[3])):
        a64, c64 = a.astype(np.float64), c.astype(np.float64)
        assert np.all(np.abs(a64 - c64) <= 2 * eps * (np.abs(c64) + 1.0))


def test_channels_last_special_values(backend):
    """NaN and inf in one channel of a channels-last group spoil only that
    (sample, group), as in channels first."""
    rng = np.random.default_rng(2)
    xf = make_data(rng, (2, 8, 5, 5), np.float64)
    xf[0, 1, 2, 2] = np.nan
    xf[1, 6, 0, 0] = np.inf
    ref = bnfast.group_norm(xf, 4, return_stats=True)
    got = bnfast.group_norm(_channels_last(xf), 4, axis=-1, return_stats=True)
    np.testing.assert_array_equal(np.isnan(got[1]), np.isnan(ref[1]))
    np.testing.assert_array_equal(got[1][np.isinf(ref[1])], ref[1][np.isinf(ref[1])])
    finite = np.isfinite(ref[1])
    np.testing.assert_allclose(got[1][finite], ref[1][finite], rtol=1e-14)
    np.testing.assert_allclose(got[2][finite], ref[2][finite], rtol=1e-11)
    y_ref = ref[0]
    y = np.moveaxis(got[0], -1, 1)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(y_ref))


# ==========================================================================
# PyTorch on channels_last tensors
# ==========================================================================
@needs_torch
@pytest.mark.parametrize("instance", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,G", [((2, 12, 5, 7), 3), ((3, 64, 9, 9), 8), ((1, 17, 4, 4), 17)])
def test_matches_torch_channels_last(backend, shape, G, dtype, instance):
    F = torch.nn.functional
    rng = np.random.default_rng(shape[1])
    xf = make_data(rng, shape, dtype, offset=0.5, scale=1.5)
    dyf = make_data(rng, shape, dtype, offset=0.0, scale=1.0)
    C = shape[1]
    w = (rng.standard_normal(C) + 1).astype(dtype)
    b = rng.standard_normal(C).astype(dtype)

    def leaf(a):
        t = torch.from_numpy(a.astype(np.float64))
        if t.ndim == 4:
            t = t.contiguous(memory_format=torch.channels_last)
        return t.requires_grad_(True)

    xt, wt, bt = leaf(xf), leaf(w), leaf(b)
    assert xt.is_contiguous(memory_format=torch.channels_last)
    yt = F.instance_norm(xt, weight=wt, bias=bt) if instance else F.group_norm(xt, G, wt, bt)
    yt.backward(torch.from_numpy(dyf.astype(np.float64)))
    # bnfast on the same channels-last memory: NHWC with axis=-1 and the
    # NCHW-shaped strided view with axis=1.
    for layout in ("last", "strided"):
        y, _, rstd, dx, dw, db = _run(xf, dyf, G, w, b, layout, instance)
        tol = 1e-5 if dtype == np.float32 else 1e-12
        gtol = 1e-4 if dtype == np.float32 else 1e-10
        yr = yt.detach().numpy()
        np.testing.assert_allclose(y, yr, rtol=0, atol=tol * (mag(yr) + 1))
        gx = xt.grad.numpy()
        gain = mag(rstd) * mag(w)
        np.testing.assert_allclose(dx, gx, rtol=0, atol=gtol * (mag(gx) + mag(dyf) * gain))
        np.testing.assert_allclose(dw, wt.grad.numpy(), rtol=gtol, atol=gtol * xf[:, 0].size)
        np.testing.assert_allclose(db, bt.grad.numpy(), rtol=gtol, atol=gtol * xf[:, 0].size)
