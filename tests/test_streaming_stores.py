"""Large outputs (>= 8 MiB) are written with streaming (non-temporal) stores
after a scalar head up to vector alignment, and (N, C) / NHWC data with
short rows runs as one "periodic" flat run. Neither may change a single
value: every element gets the same operations in the data type whichever
path writes it. These tests compare big (streamed) calls bitwise with the
same computation done in small (plain-store) pieces, at every capability,
with aligned and misaligned outputs.
"""
import numpy as np
import pytest

import bnfast
from bnfast import _backend

STREAM_BYTES = 8 << 20


def _misaligned_like(shape, dtype, offset_elems):
    """An output array of ``shape`` starting ``offset_elems`` past a 64-byte
    boundary (streaming needs a scalar head there)."""
    dtype = np.dtype(dtype)
    n = int(np.prod(shape))
    buf = np.empty(n + 64, dtype=dtype)
    start = (-buf.ctypes.data % 64) // dtype.itemsize + offset_elems
    return buf[start:start + n].reshape(shape)


@pytest.mark.parametrize("offset", [0, 7])
def test_fused_batch_norm_train_streamed_equals_plain_affine(native_backend, offset):
    """The fused NCHW training kernel streams its output; redo its apply
    step with the same float64-derived parameters on small pieces (plain
    stores) through the affine kernel and compare bitwise."""
    core = _backend.core()
    x = np.random.default_rng(2).standard_normal((8, 16, 128, 130)).astype(np.float32) * 2 + 1
    assert x.nbytes >= STREAM_BYTES
    y = _misaligned_like(x.shape, np.float32, offset)
    x3, y3 = x.reshape(8, 16, -1), y.reshape(8, 16, -1)
    mean, m2 = core.batch_norm_train(x3, y3, None, None, 1e-5)
    count = 8 * x3.shape[2]
    invstd = 1.0 / np.sqrt(m2 / count + 1e-5)  # the kernel's float64 formula
    hi = mean.astype(np.float32)
    lo = (mean - hi).astype(np.float32)
    scale = invstd.astype(np.float32)
    shift = np.zeros(16, np.float32)
    for a in range(8):
        piece = np.empty_like(x3[a:a + 1])
        core.affine(x3[a:a + 1], piece, hi, lo, scale, shift)
        np.testing.assert_array_equal(y3[a:a + 1], piece)


@pytest.mark.parametrize("c", [3, 64])
def test_standardizer_transform_streamed_equals_pieces(native_backend, c):
    rows = STREAM_BYTES // (4 * c) + 11
    x = (np.random.default_rng(3).standard_normal((rows, c)) * 5 + 100).astype(np.float32)
    s = bnfast.Standardizer().fit(x)
    y = s.transform(x)
    np.testing.assert_array_equal(y, s.transform(np.asfortranarray(x)))
    for lo in range(0, rows, rows // 4 + 1):
        np.testing.assert_array_equal(y[lo:lo + 500], s.transform(x[lo:lo + 500]))
    np.testing.assert_allclose(s.inverse_transform(y), x, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("layout", ["rows", "channels"])
@pytest.mark.parametrize("offset", [0, 3])
def test_backward_apply_streamed_equals_pieces(native_backend, layout, offset):
    core = _backend.core()
    rng = np.random.default_rng(4)
    shape = (40, 16, 3300) if layout == "rows" else (131072, 17, 1)
    x = rng.standard_normal(shape).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    assert x.nbytes >= STREAM_BYTES
    c = shape[1]
    hi, lo, p, q, r = (rng.standard_normal(c).astype(np.float32) for _ in range(5))
    dx = _misaligned_like(shape, np.float32, offset)
    core.bn_backward_apply(x, dy, dx, hi, lo, p, q, r)
    # Fortran order takes another path (no periodic run, no streaming of
    # whole rows); same operations per element, so the same bits.
    xf, dyf = np.asfortranarray(x), np.asfortranarray(dy)
    ref = np.empty_like(xf)
    core.bn_backward_apply(xf, dyf, ref, hi, lo, p, q, r)
    np.testing.assert_array_equal(dx, ref)
    step = max(1, shape[0] // 8)
    for a in range(0, shape[0], step):  # small pieces: plain stores
        piece = np.empty_like(x[a:a + 2])
        core.bn_backward_apply(x[a:a + 2], dy[a:a + 2], piece, hi, lo, p, q, r)
        np.testing.assert_array_equal(dx[a:a + 2], piece)
