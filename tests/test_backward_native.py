"""The native batch-norm backward: every loop of its two kernels against
the NumPy twin, the exact-mean correction, out=, and thread invariance."""

import numpy as np
import pytest

import bnfast
from bnfast import _backend

# (shape, channel axis, order): rows along B, channels unit-stride, channels
# strided (small B), single channel, Fortran (generic/swapped), groups > 1.
CASES = [
    ((4, 6, 33), 1, "C"),
    ((300, 37), 1, "C"),
    ((3, 40, 5), 1, "C"),
    ((5000, 1), 1, "C"),
    ((40, 9, 7), 1, "F"),
    ((2, 3, 150_001), 1, "C"),
    ((6, 5, 4, 3), -1, "C"),
]

# The channel path of the reduce: 1024-channel tiles (1023, 1025 and three
# tiles), rows taken two at a time (odd and single-row groups), and short
# rows prefetched ahead (64 channels, many rows: several groups).
REDUCE_CASES = CASES + [
    ((7, 1023), 1, "C"),
    ((5, 1025), 1, "C"),
    ((3, 2050), 1, "C"),
    ((1, 3, 1), 1, "C"),
    ((20_001, 64), 1, "C"),
    ((9, 3, 2, 700), -1, "C"),
]


def _folded_pair(shape, axis, order, dtype, rng, offset=0.0):
    """x (offset + noise) and dy of a case as (A, C, B) views; skips the
    test where the layout has no view, or where only NumPy is built."""
    if len(_backend.choices()) == 1:
        pytest.skip("native module not built")
    from bnfast import _layout

    x = np.asarray((offset + rng.standard_normal(shape)).astype(dtype), order=order)
    dy = np.asarray(rng.standard_normal(shape).astype(dtype), order=order)
    groups = _layout.canonical_groups(x, (axis % x.ndim,))
    x3 = _layout.fold(x, groups)
    dy3 = _layout.fold(dy, groups)
    if x3 is None or dy3 is None:
        pytest.skip("layout needs a copy")
    return x3, dy3


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, axis, order", REDUCE_CASES)
def test_reduce_kernel_matches_twin(shape, axis, order, dtype):
    from bnfast import _numpy

    rng = np.random.default_rng(12)
    x3, dy3 = _folded_pair(shape, axis, order, dtype, rng)
    center = rng.standard_normal(x3.shape[1])
    ref = _numpy.bn_backward_reduce(x3, dy3, center)
    for cap in _backend.supported_capabilities():
        with _backend.using(cap):
            got = _backend.impl().bn_backward_reduce(x3, dy3, center)
        for g, r in zip(got, ref):
            np.testing.assert_allclose(g, r, rtol=1e-12, atol=1e-9)


# (3, 9, 100_000): the fused training backward (one channel per thread, several
# groups, streaming stores) at 1 and 2 threads, the two-pass form at 3; (4, 6, 33)
# is fused at 1 thread only.
FUSED_CASES = [((3, 9, 100_000), 1, "C")]


# Rows wider than 1024 go through the backward's column chunks, 8 rows at a
# time: (19, 2053) and (70, 1500) have partial chunks and partial groups of
# rows, (9, 1031) the same with strided rows.
ROW_CASES = [((7, 33), "C"), ((5, 4097), "C"), ((40, 9), "C"), ((33, 17), "F"), ((3, 300_000), "C"),
             ((19, 2053), "C"), ((70, 1500), "C"), ((9, 1031), "F")]


@pytest.mark.parametrize("shape, order", ROW_CASES)
@pytest.mark.parametrize("rms", [False, True])
def test_row_norm_kernels_match_twin(shape, order, rms):
    # Native row kernels (fused forward, backward with column sums) against
    # the NumPy twin, on contiguous, Fortran (strided rows) and short rows.
    if len(_backend.choices()) == 1:
        pytest.skip("native module not built")
    from bnfast import _numpy

    rng = np.random.default_rng(15)
    x = np.asarray(3 + rng.standard_normal(shape), order=order)[None]
    dy = np.asarray(rng.standard_normal(shape), order=order)[None]
    w = rng.standard_normal(shape[1])
    b = rng.standard_normal(shape[1])
    y_ref = np.empty_like(x)
    mean_ref, m2_ref, rstd = _numpy.row_norm_forward(x, y_ref, w, b, 1e-5, rms)
    dx_ref = np.empty_like(x)
    dw_ref, db_ref = _numpy.row_norm_backward(x, dy, dx_ref, mean_ref, rstd, w, rms)
    for cap in _backend.supported_capabilities():
        with _backend.using(cap):
            impl = _backend.impl()
            y = np.empty_like(x)
            mean, m2, rstd_native = impl.row_norm_forward(x, y, w, b, 1e-5, rms)
            np.testing.assert_allclose(rstd_native, rstd, rtol=1e-14)
            dx = np.empty_like(x)
            dw, db = impl.row_norm_backward(x, dy, dx, mean, rstd, w, rms)
        np.testing.assert_allclose(mean, mean_ref, rtol=1e-14, atol=1e-14)
        np.testing.assert_allclose(m2, m2_ref, rtol=1e-11)
        np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(dx, dx_ref, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(dw, dw_ref, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(db, db_ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("shape", [(3000, 130), (300, 2053)])
@pytest.mark.parametrize("rms", [False, True])
def test_row_norm_backward_bits_do_not_depend_on_threads(native_backend, rms, shape):
    rng = np.random.default_rng(16)
    x = rng.standard_normal(shape).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    w = rng.standard_normal(shape[1]).astype(np.float32)
    if rms:
        _, rstd = bnfast.rms_norm(x, w, return_stats=True)
        run = lambda: bnfast.rms_norm_backward(dy, x, rstd, w)  # noqa: E731
    else:
        _, mean, rstd = bnfast.layer_norm(x, w, return_stats=True)
        run = lambda: bnfast.layer_norm_backward(dy, x, mean, rstd, w)  # noqa: E731
    results = []
    for n in (1, 2, 3):
        with bnfast.threads(n):
            results.append(b"".join(a.tobytes() for a in run() if a is not None))
    assert results[0] == results[1] == results[2]


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


@pytest.mark.parametrize("axis", [1, -1])
def test_group_norm_backward_matches_reference_and_threads(native_backend, axis):
    # Native group-norm backward (channels first: one (1, N*C, S) block;
    # channels last: one block per sample) against float64 NumPy on offset
    # data, and bit-identical for any thread count.
    rng = np.random.default_rng(17)
    x_cf = (100 + rng.standard_normal((6, 12, 9, 31))).astype(np.float32)
    dy_cf = rng.standard_normal(x_cf.shape).astype(np.float32)
    w = rng.standard_normal(12).astype(np.float32)
    x = x_cf if axis == 1 else np.ascontiguousarray(np.moveaxis(x_cf, 1, -1))
    dy = dy_cf if axis == 1 else np.ascontiguousarray(np.moveaxis(dy_cf, 1, -1))
    _, mean, rstd = bnfast.group_norm(x, 4, w, axis=axis, return_stats=True)
    results = []
    for n in (1, 2, 3):
        with bnfast.threads(n):
            dx, dw, db = bnfast.group_norm_backward(dy, x, mean, rstd, 4, w, axis=axis)
        results.append(dx.tobytes() + dw.tobytes() + db.tobytes())
    assert results[0] == results[1] == results[2]
    # float64 reference from the data (exact group statistics)
    x4 = x_cf.astype(np.float64).reshape(6, 4, 3, -1)
    g4 = dy_cf.astype(np.float64).reshape(6, 4, 3, -1)
    xc = x4 - x4.mean(axis=(2, 3), keepdims=True)
    rs = 1 / np.sqrt((xc * xc).mean(axis=(2, 3), keepdims=True) + 1e-5)
    xhat = xc * rs
    g = g4 * w.astype(np.float64).reshape(1, 4, 3, 1)
    ref = rs * (g - g.mean(axis=(2, 3), keepdims=True) - xhat * (g * xhat).mean(axis=(2, 3), keepdims=True))
    ref = ref.reshape(x_cf.shape)
    got = dx if axis == 1 else np.moveaxis(dx, -1, 1)
    # a few float32 ulps of the largest term (|dy| * rstd * |w|)
    mag = np.abs(g).max() * rs.max()
    np.testing.assert_allclose(got, ref, rtol=0, atol=32 * np.finfo(np.float32).eps * mag)
    np.testing.assert_allclose(dw, (g4 * xhat).sum(axis=(0, 3)).ravel(), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(4, 6, 33), (3, 9, 100_000), (5, 12, 17), (300, 37, 1)])
def test_train_kernel_fused_and_two_pass_give_the_same_bits(native_backend, shape, dtype):
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
            sums = _backend.impl().bn_backward_train(x3, dy3, dx3, mean, invstd, weight)
        results.append(dx3.tobytes() + b"".join(s.tobytes() for s in sums))
    assert results[0] == results[1] == results[2]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, axis, order", REDUCE_CASES + FUSED_CASES)
def test_train_kernel_matches_twin(shape, axis, order, dtype):
    from bnfast import _numpy

    rng = np.random.default_rng(16)
    x3, dy3 = _folded_pair(shape, axis, order, dtype, rng, offset=3.0)
    c = x3.shape[1]
    mean = x3.astype(np.float64).mean(axis=(0, 2)).astype(dtype).astype(np.float64)
    invstd = 1.0 / (x3.astype(np.float64).std(axis=(0, 2)) + 0.1)
    weight = rng.standard_normal(c)
    dx_ref = np.empty_like(x3)
    ref = _numpy.bn_backward_train(x3, dy3, dx_ref, mean, invstd, weight)
    eps = np.finfo(dtype).eps
    for cap in _backend.supported_capabilities():
        dx = np.empty_like(x3)
        with _backend.using(cap):
            got = _backend.impl().bn_backward_train(x3, dy3, dx, mean, invstd, weight)
        # The float64 sums differ from NumPy's only in summation order.
        for g, r in zip(got, ref):
            np.testing.assert_allclose(g, r, rtol=1e-12, atol=1e-9)
        # p, q, r are rounded to the dtype once each (an ulp apart at most
        # when the sums differ in the last bits), then three roundings in
        # dx = dy*p + ((x - hi) - lo)*q + r: a few ulps of the largest term.
        scale = np.max(np.abs(dx_ref)) + np.max(np.abs(dy3)) * np.max(np.abs(invstd * weight))
        np.testing.assert_allclose(dx, dx_ref, rtol=0, atol=8 * eps * scale)


@pytest.mark.parametrize("rms", [False, True])
def test_row_norm_backward_out_may_be_dy_or_overlap_x(backend, rms):
    rng = np.random.default_rng(18)
    x = rng.standard_normal((6, 5, 1100)).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    w = rng.standard_normal(1100).astype(np.float32)
    if rms:
        _, rstd = bnfast.rms_norm(x, w, return_stats=True)
        call = lambda dy_, x_, out: bnfast.rms_norm_backward(dy_, x_, rstd, w, out=out)  # noqa: E731
    else:
        _, mean, rstd = bnfast.layer_norm(x, w, return_stats=True)
        call = lambda dy_, x_, out: bnfast.layer_norm_backward(dy_, x_, mean, rstd, w, out=out)  # noqa: E731
    ref = call(dy, x, None)
    out = np.empty_like(x)
    got = call(dy, x, out)
    assert got[0] is out
    for g, r in zip(got, ref):
        np.testing.assert_array_equal(g, r)
    dy_inplace = dy.copy()
    call(dy_inplace, x, dy_inplace)
    np.testing.assert_array_equal(dy_inplace, ref[0])
    x_inplace = x.copy()
    call(dy, x_inplace, x_inplace)
    np.testing.assert_array_equal(x_inplace, ref[0])
    # A shifted overlap with x: computed from the original x all the same.
    buf = np.concatenate([x.ravel(), np.zeros(7, np.float32)])
    x_view = buf[:x.size].reshape(x.shape)
    out_view = buf[7:].reshape(x.shape)
    call(dy, x_view, out_view)
    np.testing.assert_array_equal(out_view, ref[0])
    with pytest.raises(ValueError, match="out"):
        call(dy, x, np.empty((6, 5), np.float32))
    with pytest.raises(TypeError, match="out"):
        call(dy, x, np.empty(x.shape, np.float64))
