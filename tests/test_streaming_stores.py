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


