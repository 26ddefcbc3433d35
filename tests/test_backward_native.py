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


