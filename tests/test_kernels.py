"""The native kernels called directly on (A, C, B) views, against their NumPy
twin (the executable specification) under every native capability, one
section per family: moments, affine, batch_norm (forward and backward; group
and instance norm run on the batch-norm backward kernels too), layer_norm
(layer and RMS norm rows).  test_twin_contract.py checks that both modules
expose the same kernels with the same parameters.
"""

import numpy as np
import pytest

import bnfast
from helpers import (
    BN_FUSED_CASES,
    BN_REDUCE_CASES,
    STREAM_BYTES,
    misaligned_empty,
    runtime,
    twin,
    views,
)

DTYPES = [np.float32, np.float64]


def _impl():
    """The active backend's kernel module (``bnfast._core`` under a native
    capability, the twin under "numpy")."""
    return runtime.impl()


def _folded(shape, axis, order, dtype, rng, offset=0.0):
    """x (offset + noise) and dy of a case as (A, C, B) views; skips the
    test where the layout has no view."""
    x = np.asarray((offset + rng.standard_normal(shape)).astype(dtype), order=order)
    dy = np.asarray(rng.standard_normal(shape).astype(dtype), order=order)
    groups = views.canonical_groups(x, (axis % x.ndim,))
    x3 = views.fold(x, groups)
    dy3 = views.fold(dy, groups)
    if x3 is None or dy3 is None:
        pytest.skip("layout needs a copy")
    return x3, dy3


# (A, C, B) views: contiguous, B == 1 (channels last), A == 1 (one row), a
# single channel, SIMD tails in A, C and B, a strided B (NaN in the gaps: a
# kernel reading them gives NaN), a Fortran-ordered block and a reversed A.
VIEW_SHAPES = {
    "contiguous": (5, 7, 33),
    "channels-last": (300, 17, 1),
    "one-row": (1, 16, 1025),
    "one-channel": (9, 1, 15),
    "simd-tails": (15, 17, 33),
    "strided-b": (4, 6, 33),
    "fortran": (40, 9, 7),
    "reversed-a": (8, 5, 16),
}
VIEWS = list(VIEW_SHAPES)


def _view(kind, dtype, rng, offset=3.0):
    shape = VIEW_SHAPES[kind]
    x3 = (offset + rng.standard_normal(shape)).astype(dtype)
    if kind == "strided-b":
        full = np.full(shape[:2] + (2 * shape[2],), np.nan, dtype)
        full[:, :, ::2] = x3
        return full[:, :, ::2]
    if kind == "fortran":
        return np.asfortranarray(x3)
    if kind == "reversed-a":
        return np.ascontiguousarray(x3[::-1])[::-1]
    return x3


# ==========================================================================
# moments
# ==========================================================================
@pytest.mark.parametrize("kind", VIEWS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_moments_kernel_matches_twin(native_backend, kind, dtype):
    rng = np.random.default_rng(1)
    x3 = _view(kind, dtype, rng)
    x3[:, 0, :] = dtype(0.1)  # a constant channel: mean exact, m2 exactly 0 in both
    mean, m2 = _impl().moments(x3)
    ref_mean, ref_m2 = twin.moments(x3)
    assert mean.dtype == m2.dtype == np.float64 and mean.shape == m2.shape == (x3.shape[1],)
    # float64 accumulations of the same values in another order (chunked
    # Chan merges vs a corrected two-pass): a few ulps for the mean, and for
    # M2 (a sum of squares of deviations ~1, no cancellation) ~1e-13 relative
    # for the <= 2e4 terms here; 1e-11 leaves a wide margin.
    np.testing.assert_allclose(mean, ref_mean, rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(m2, ref_m2, rtol=1e-11)
    assert mean[0] == ref_mean[0] == np.float64(dtype(0.1)) and m2[0] == ref_m2[0] == 0.0


@pytest.mark.parametrize(
    "shape",
    [
        (3, 5, 4097),
        (2, 3, 150_001),
        (4, 6, 17),
        (5, 4, 3),
        (2, 9, 150_001),
        (2, 9, 300_001),
        (3, 8, 100_003),
    ],
)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("l2", [1, 1 << 40], ids=["l2-tiny", "l2-huge"])
def test_batch_norm_train_statistics_equal_moments(backend, shape, dtype, l2):
    # The training kernel must reproduce the moments kernel's statistics bit
    # for bit (same chunks, groups and merge order), and the output of the
    # unfused moments + affine path, whichever loop the thread count and the
    # L2 size pick: fused per channel where C >= 4 * threads; channels over
    # 1 MiB shared by the threads, a group per thread, where a thread's
    # share fits the L2 (the last three shapes at 2 threads under
    # l2-huge; groups cut rows in the middle, and (2, 9, 300_001) gives 3
    # groups to 2 threads), whole channels per thread where it does not
    # (l2-tiny); moments + affine otherwise. The L2 size is set, so both
    # loops run on any machine.
    if backend != "numpy":
        core = runtime.core()
        core.set_l2_cache_bytes(l2)
        try:
            _check_train_statistics(shape, dtype)
        finally:
            core.set_l2_cache_bytes(-1)
    elif l2 == 1:  # the twin has one loop
        _check_train_statistics(shape, dtype)


def _check_train_statistics(shape, dtype):
    impl = _impl()
    rng = np.random.default_rng(6)
    x3 = (3.0 + rng.standard_normal(shape)).astype(dtype)
    w = rng.standard_normal(shape[1])
    b = rng.standard_normal(shape[1])
    ref_mean, ref_m2 = impl.moments(x3)
    # the unfused output: the affine kernel with the same float64 scale and
    # split centre
    n = x3.shape[0] * x3.shape[2]
    scale = (1.0 / np.sqrt(ref_m2 / n + 1e-5) * w).astype(dtype)
    hi = ref_mean.astype(dtype)
    lo = (ref_mean - hi).astype(dtype)
    y_ref = np.empty_like(x3)
    impl.affine(x3, y_ref, hi, lo, scale, b.astype(dtype))
    for threads in (1, 2, 3):
        y3 = np.empty_like(x3)
        with bnfast.threads(threads):
            mean, m2 = impl.batch_norm_train(x3, y3, w, b, 1e-5)
        assert mean.tobytes() == ref_mean.tobytes() and m2.tobytes() == ref_m2.tobytes()
        np.testing.assert_array_equal(y3, y_ref)


# ==========================================================================
# affine
# ==========================================================================
@pytest.mark.parametrize("kind", VIEWS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("centred", [True, False])
@pytest.mark.parametrize("per_a", [False, True], ids=["per-channel", "per-(a, c)"])
def test_affine_kernel_matches_twin(native_backend, kind, dtype, centred, per_a):
    rng = np.random.default_rng(2)
    x3 = _view(kind, dtype, rng)
    a, c = x3.shape[:2]
    stride = c if per_a else 0
    n = a * c if per_a else c
    hi = (3.0 + rng.standard_normal(n)).astype(dtype) if centred else None
    lo = (rng.standard_normal(n) * 1e-7).astype(dtype) if centred else None
    scale = rng.standard_normal(n).astype(dtype)
    shift = rng.standard_normal(n).astype(dtype)
    y = np.full_like(x3, np.nan)
    y_ref = np.full_like(x3, np.nan)
    _impl().affine(x3, y, hi, lo, scale, shift, stride)
    twin.affine(x3, y_ref, hi, lo, scale, shift, stride)
    # The same operations per element; the native kernels may contract
    # t * scale + shift into one FMA: a couple of ulps of the terms.
    eps = np.finfo(dtype).eps
    terms = (np.abs(x3).max() + (0 if hi is None else np.abs(hi).max())) * np.abs(scale).max()
    np.testing.assert_allclose(y, y_ref, rtol=0, atol=8 * eps * (terms + np.abs(shift).max()))


# ==========================================================================
# batch_norm: forward and backward kernels
# ==========================================================================
@pytest.mark.parametrize("kind", VIEWS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm_train_kernel_matches_twin(native_backend, kind, dtype, affine):
    rng = np.random.default_rng(3)
    x3 = _view(kind, dtype, rng)
    if x3.shape[0] * x3.shape[2] < 2:
        pytest.skip("training needs two values per channel")
    c = x3.shape[1]
    w = rng.standard_normal(c) if affine else None
    b = rng.standard_normal(c) if affine else None
    y = np.empty_like(x3)
    y_ref = np.empty_like(x3)
    mean, m2 = _impl().batch_norm_train(x3, y, w, b, 1e-5)
    ref_mean, ref_m2 = twin.batch_norm_train(x3, y_ref, w, b, 1e-5)
    # statistics: as test_moments_kernel_matches_twin
    np.testing.assert_allclose(mean, ref_mean, rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(m2, ref_m2, rtol=1e-11)
    # outputs: a couple of ulps of the terms (FMA contraction), plus the
    # rounding of the per-channel scale to the data type, which may land on
    # the neighbouring value when the two m2 differ in their last bits (1 ulp
    # of the scale for float32; <= 1e-11 relative for float64).
    eps = np.finfo(dtype).eps
    invstd = 1.0 / np.sqrt(ref_m2 / (x3.shape[0] * x3.shape[2]) + 1e-5)
    terms = (np.abs(x3).max() + np.abs(ref_mean).max()) * invstd.max()
    terms *= 1.0 if w is None else np.abs(w).max()
    shift = 0.0 if b is None else np.abs(b).max()
    tol = 8 * eps * (terms + shift) + max(2 * eps, 1e-11) * np.abs(y_ref)
    assert np.all(np.abs(y.astype(np.float64) - y_ref) <= tol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, axis, order", BN_REDUCE_CASES)
def test_batch_norm_backward_reduce_kernel_matches_twin(native_backend, shape, axis, order, dtype):
    rng = np.random.default_rng(12)
    x3, dy3 = _folded(shape, axis, order, dtype, rng)
    center = rng.standard_normal(x3.shape[1])
    ref = twin.batch_norm_backward_reduce(x3, dy3, center)
    got = _impl().batch_norm_backward_reduce(x3, dy3, center)
    # float64 sums of the same terms in another order.
    for g, r in zip(got, ref):
        np.testing.assert_allclose(g, r, rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("kind", VIEWS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_norm_backward_apply_kernel_matches_twin(native_backend, kind, dtype):
    rng = np.random.default_rng(4)
    x3 = _view(kind, dtype, rng)
    dy3 = _view(kind, dtype, rng, offset=0.0)
    c = x3.shape[1]
    hi = (3.0 + rng.standard_normal(c)).astype(dtype)
    lo = (rng.standard_normal(c) * 1e-7).astype(dtype)
    s = (0.5 + rng.random(c)).astype(dtype)
    p, q, r = (rng.standard_normal(c).astype(dtype) for _ in range(3))
    dx = np.full_like(x3, np.nan)
    dx_ref = np.full_like(x3, np.nan)
    _impl().batch_norm_backward_apply(x3, dy3, dx, hi, lo, s, p, q, r)
    twin.batch_norm_backward_apply(x3, dy3, dx_ref, hi, lo, s, p, q, r)
    # dx = dy*p + ((((x - hi) - lo)*s)*q + r)*s: the same operations, up to
    # FMA contraction: a couple of ulps of the largest term.
    eps = np.finfo(dtype).eps
    terms = (
        np.abs(dy3).max() * np.abs(p).max()
        + (
            (np.abs(x3).max() + np.abs(hi).max()) * np.abs(s).max() * np.abs(q).max()
            + np.abs(r).max()
        )
        * np.abs(s).max()
    )
    np.testing.assert_allclose(dx, dx_ref, rtol=0, atol=8 * eps * terms)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, axis, order", BN_REDUCE_CASES + BN_FUSED_CASES)
def test_batch_norm_backward_train_kernel_matches_twin(native_backend, shape, axis, order, dtype):
    rng = np.random.default_rng(16)
    x3, dy3 = _folded(shape, axis, order, dtype, rng, offset=3.0)
    c = x3.shape[1]
    mean = x3.astype(np.float64).mean(axis=(0, 2)).astype(dtype).astype(np.float64)
    invstd = 1.0 / (x3.astype(np.float64).std(axis=(0, 2)) + 0.1)
    weight = rng.standard_normal(c)
    dx_ref = np.empty_like(x3)
    ref = twin.batch_norm_backward_train(x3, dy3, dx_ref, mean, invstd, weight)
    eps = np.finfo(dtype).eps
    dx = np.empty_like(x3)
    got = _impl().batch_norm_backward_train(x3, dy3, dx, mean, invstd, weight)
    # The float64 sums differ from NumPy's only in summation order.
    for g, r in zip(got, ref):
        np.testing.assert_allclose(g, r, rtol=1e-12, atol=1e-9)
    # p, q, r are rounded to the dtype once each (an ulp apart at most
    # when the sums differ in the last bits), then three roundings in
    # dx = dy*p + ((x - hi) - lo)*q + r: a few ulps of the largest term.
    scale = np.max(np.abs(dx_ref)) + np.max(np.abs(dy3)) * np.max(np.abs(invstd * weight))
    np.testing.assert_allclose(dx, dx_ref, rtol=0, atol=8 * eps * scale)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(4, 6, 33), (3, 9, 100_000), (5, 12, 17), (300, 37, 1)])
def test_batch_norm_backward_train_fused_and_two_pass_give_the_same_bits(
    native_backend, shape, dtype
):
    # The fused loop (one channel per thread) runs where C >= 4 * threads and
    # rows are long enough; otherwise the two-pass form. Their float64 sums
    # and dx must agree bit for bit (float32 dx alone would hide a last-bit
    # difference in the sums).
    rng = np.random.default_rng(15)
    x3 = (3 + rng.standard_normal(shape)).astype(dtype)
    dy3 = rng.standard_normal(shape).astype(dtype)
    mean = x3.astype(np.float64).mean(axis=(0, 2)).astype(dtype).astype(np.float64)
    invstd = 1.0 / x3.astype(np.float64).std(axis=(0, 2))
    weight = rng.standard_normal(shape[1])
    results = []
    for n in (1, 2, 3):
        dx3 = np.empty_like(x3)
        with bnfast.threads(n):
            sums = _impl().batch_norm_backward_train(x3, dy3, dx3, mean, invstd, weight)
        results.append(dx3.tobytes() + b"".join(s.tobytes() for s in sums))
    assert results[0] == results[1] == results[2]


# Outputs of >= STREAM_BYTES are written with streaming (non-temporal) stores
# after a scalar head up to vector alignment, and (N, C) / NHWC data with short
# rows runs as one "periodic" flat run. Neither may change a single value:
# every element gets the same operations in the data type whichever path
# writes it.
@pytest.mark.parametrize("offset", [0, 7])
def test_batch_norm_train_streamed_equals_plain_affine(native_backend, offset):
    """The fused NCHW training kernel streams its output; redo its apply
    step with the same float64-derived parameters on small pieces (plain
    stores) through the affine kernel and compare bitwise."""
    core = _impl()
    x = np.random.default_rng(2).standard_normal((8, 16, 128, 130)).astype(np.float32) * 2 + 1
    assert x.nbytes >= STREAM_BYTES
    y = misaligned_empty(x.shape, np.float32, offset)
    x3, y3 = x.reshape(8, 16, -1), y.reshape(8, 16, -1)
    mean, m2 = core.batch_norm_train(x3, y3, None, None, 1e-5)
    count = 8 * x3.shape[2]
    invstd = 1.0 / np.sqrt(m2 / count + 1e-5)  # the kernel's float64 formula
    hi = mean.astype(np.float32)
    lo = (mean - hi).astype(np.float32)
    scale = invstd.astype(np.float32)
    shift = np.zeros(16, np.float32)
    for a in range(8):
        piece = np.empty_like(x3[a : a + 1])
        core.affine(x3[a : a + 1], piece, hi, lo, scale, shift)
        np.testing.assert_array_equal(y3[a : a + 1], piece)


@pytest.mark.parametrize("layout", ["rows", "channels"])
@pytest.mark.parametrize("offset", [0, 3])
def test_batch_norm_backward_apply_streamed_equals_pieces(native_backend, layout, offset):
    core = _impl()
    rng = np.random.default_rng(4)
    shape = (40, 16, 3300) if layout == "rows" else (131072, 17, 1)
    x = rng.standard_normal(shape).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    assert x.nbytes >= STREAM_BYTES
    c = shape[1]
    hi, lo, s, p, q, r = (rng.standard_normal(c).astype(np.float32) for _ in range(6))
    dx = misaligned_empty(shape, np.float32, offset)
    core.batch_norm_backward_apply(x, dy, dx, hi, lo, s, p, q, r)
    # Fortran order takes another path (no periodic run, no streaming of
    # whole rows); same operations per element, so the same bits.
    xf, dyf = np.asfortranarray(x), np.asfortranarray(dy)
    ref = np.empty_like(xf)
    core.batch_norm_backward_apply(xf, dyf, ref, hi, lo, s, p, q, r)
    np.testing.assert_array_equal(dx, ref)
    step = max(1, shape[0] // 8)
    for a in range(0, shape[0], step):  # small pieces: plain stores
        piece = np.empty_like(x[a : a + 2])
        core.batch_norm_backward_apply(x[a : a + 2], dy[a : a + 2], piece, hi, lo, s, p, q, r)
        np.testing.assert_array_equal(dx[a : a + 2], piece)


# ==========================================================================
# layer_norm: the row kernels of layer and RMS norm
# ==========================================================================
# Rows wider than 1024 go through the backward's column chunks, 8 rows at a
# time: (19, 2053) and (70, 1500) have partial chunks and partial groups of
# rows, (9, 1031) the same with strided rows.
ROW_CASES = [
    ((7, 33), "C"),
    ((5, 4097), "C"),
    ((40, 9), "C"),
    ((33, 17), "F"),
    ((3, 300_000), "C"),
    ((19, 2053), "C"),
    ((70, 1500), "C"),
    ((9, 1031), "F"),
]


@pytest.mark.parametrize("shape, order", ROW_CASES)
@pytest.mark.parametrize("rms", [False, True])
def test_layer_norm_kernels_match_twin(native_backend, shape, order, rms):
    # Native row kernels (fused forward, backward with column sums) against
    # the NumPy twin, on contiguous, Fortran (strided rows) and short rows.
    rng = np.random.default_rng(15)
    x = np.asarray(3 + rng.standard_normal(shape), order=order)[None]
    dy = np.asarray(rng.standard_normal(shape), order=order)[None]
    w = rng.standard_normal(shape[1])
    b = rng.standard_normal(shape[1])
    y_ref = np.empty_like(x)
    mean_ref, m2_ref, rstd = twin.layer_norm_forward(x, y_ref, w, b, 1e-5, rms)
    dx_ref = np.empty_like(x)
    dw_ref, db_ref = twin.layer_norm_backward(x, dy, dx_ref, mean_ref, rstd, w, rms)
    impl = _impl()
    y = np.empty_like(x)
    mean, m2, rstd_native = impl.layer_norm_forward(x, y, w, b, 1e-5, rms)
    np.testing.assert_allclose(rstd_native, rstd, rtol=1e-14)
    dx = np.empty_like(x)
    dw, db = impl.layer_norm_backward(x, dy, dx, mean, rstd, w, rms)
    np.testing.assert_allclose(mean, mean_ref, rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(m2, m2_ref, rtol=1e-11)
    np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dw, dw_ref, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(db, db_ref, rtol=1e-10, atol=1e-10)


# ==========================================================================
# the per-channel float64 formulas (issue 10): one C++ unit compiled without
# FMA contraction and its twin, the same operations in the same order, so
# the same bits
# ==========================================================================
def _formula(name):
    return getattr(_impl(), name), getattr(twin, name)


def _channel_values(rng):
    """float64 per-channel values with the special cases: 0, tiny, huge, inf, NaN."""
    v = rng.standard_normal(37) * 10.0 ** rng.integers(-8, 8, 37)
    return np.concatenate([v, [0.0, -0.0, 5e-324, 1e300, np.inf, -np.inf, np.nan, 1.0, 3.0]])


def _same_bits(a, b, what):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape, (what, a.dtype, b.dtype, a.shape, b.shape)
    assert a.tobytes() == b.tobytes(), f"{what}: {a} != {b}"


@pytest.mark.parametrize("count, eps", [(1.0, 1e-5), (7.0, 0.0), (1e6, 1e-3)])
def test_invstd_formula_matches_twin_bitwise(native_backend, count, eps):
    native, mine = _formula("invstd")
    m2 = np.abs(_channel_values(np.random.default_rng(1)))
    with np.errstate(all="ignore"):
        _same_bits(native(m2, count, eps), mine(m2, count, eps), "invstd")


@pytest.mark.parametrize("weighted", [True, False])
@pytest.mark.parametrize("biased", [True, False])
def test_eval_fold_formula_matches_twin_bitwise(native_backend, weighted, biased):
    native, mine = _formula("eval_fold")
    rng = np.random.default_rng(2)
    mean = _channel_values(rng)
    inv = np.abs(_channel_values(rng))
    w = _channel_values(rng) if weighted else None
    b = _channel_values(rng) if biased else None
    with np.errstate(all="ignore"):
        for g, r, what in zip(native(mean, inv, w, b), mine(mean, inv, w, b), ["scale", "shift"]):
            _same_bits(g, r, what)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("momentum", [0.0, 0.1, 0.3, 1.0])
def test_running_update_formula_matches_twin_bitwise(native_backend, dtype, momentum):
    native, mine = _formula("running_update")
    rng = np.random.default_rng(3)
    running = (rng.standard_normal(46) * 100).astype(dtype)
    value = _channel_values(rng)
    a, b = running.copy(), running.copy()
    with np.errstate(all="ignore"):
        assert native(a, value, momentum) is None
        assert mine(b, value, momentum) is None
    _same_bits(a, b, "running")


@pytest.mark.parametrize("dtype", DTYPES)
def test_split_center_formula_matches_twin_bitwise(native_backend, dtype):
    native, mine = _formula("split_center")
    mean = _channel_values(np.random.default_rng(4))
    with np.errstate(all="ignore"):
        got, ref = native(mean, np.dtype(dtype)), mine(mean, np.dtype(dtype))
    for g, r, what in zip(got, ref, ["hi", "lo"]):
        assert np.asarray(g).dtype == dtype and np.asarray(g).flags.c_contiguous, what
        _same_bits(g, r, what)


@pytest.mark.parametrize("shape, order", ROW_CASES)
@pytest.mark.parametrize("rms", [False, True])
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("offset", [0.0, 1e4])
def test_layer_norm_backward_float32_is_the_twins(native_backend, shape, order, rms, dtype, offset):
    # float32 and half rows run the backward in float32 (float64 sums of
    # float32 terms, constants rounded once): dx is the twin's bit for bit
    # under every capability and layout; the column gradients sum float32
    # partials of up to 8 rows, within a few float32 ulps of the twin's
    # float64 sums of the same products.
    if dtype == "bfloat16":
        dt = np.dtype(
            pytest.importorskip("ml_dtypes", reason="ml_dtypes is not installed").bfloat16
        )
    else:
        dt = np.dtype(dtype)
    rng = np.random.default_rng(16)
    x = np.asarray(offset + rng.standard_normal(shape), order=order).astype(dt)[None]
    dy = np.asarray(rng.standard_normal(shape), order=order).astype(dt)[None]
    w = rng.standard_normal(shape[1]).astype(np.float32)
    b = np.zeros(shape[1], np.float32)
    y = np.empty_like(x)
    mean, _, rstd = twin.layer_norm_forward(x, y, w, b, 1e-5, rms)
    mean = np.asarray(mean, np.float32).astype(np.float64)  # as stored by layer_norm
    rstd = np.asarray(rstd, np.float32).astype(np.float64)
    dx_ref = np.empty_like(x)
    dw_ref, db_ref = twin.layer_norm_backward(x, dy, dx_ref, mean, rstd, w, rms)
    dx = np.empty_like(x)
    dw, db = _impl().layer_norm_backward(x, dy, dx, mean, rstd, w, rms)
    np.testing.assert_array_equal(
        np.ascontiguousarray(dx).view(np.uint8), np.ascontiguousarray(dx_ref).view(np.uint8)
    )
    # Each partial of up to 8 rows is rounded to float32 up to 8 times, each
    # time by at most eps32/2 of the partial, itself at most the sum of the
    # row terms' magnitudes: 8 eps32 of sum(|terms|) bounds the difference.
    eps = np.finfo(np.float32).eps
    x64, dy64 = x[0].astype(np.float64), dy[0].astype(np.float64)
    centre = 0.0 if rms else mean[:, None] + (x64 - mean[:, None]).mean(axis=1, keepdims=True)
    xhat = np.abs(x64 - centre) * rstd[:, None]
    assert np.all(np.abs(dw - dw_ref) <= 8 * eps * (np.abs(dy64) * xhat).sum(axis=0) * 1.01)
    assert np.all(np.abs(db - db_ref) <= 8 * eps * np.abs(dy64).sum(axis=0))
