"""Input validation shared by every op: inputs that are valid NumPy but
unusual (pickled dtypes, big-endian data, unaligned buffers, subclasses) give
the plain-ndarray answer or a clear error, under every backend."""

import pickle

import numpy as np
import pytest

import bnfast


def _ref(x, axis):
    x64 = np.asarray(x, dtype=np.float64)
    return x64.mean(axis=axis), x64.var(axis=axis)


def test_pickled_dtype_is_accepted(backend):
    # Regression: the bindings compared dtype objects by identity, and a
    # pickled array carries its own dtype object (equal, not identical).
    x = pickle.loads(pickle.dumps(np.random.default_rng(0).random((8, 3, 4)).astype(np.float32)))
    m, v = bnfast.mean_var(x, axis=(0, 2))
    rm, rv = _ref(x, (0, 2))
    np.testing.assert_allclose(m, rm, rtol=1e-6)
    np.testing.assert_allclose(v, rv, rtol=1e-6)
    y = bnfast.batch_norm(x, training=True)
    assert y.dtype == np.float32 and np.isfinite(y).all()


def test_big_endian_gives_native_result(backend):
    # Regression: big-endian data reached the kernels unconverted.
    x = np.random.default_rng(1).random((50, 3)).astype(">f4")
    m, v = bnfast.mean_var(x, axis=0)
    assert m.dtype == np.dtype("=f4") and m.dtype.isnative
    np.testing.assert_allclose(v, _ref(x, 0)[1], rtol=1e-6)
    y = bnfast.batch_norm(x, training=True)
    assert y.dtype.isnative


def test_unaligned_buffers(backend):
    # Regression: unaligned views were handed to the kernels (which need
    # aligned elements) instead of being copied.
    buf = np.zeros(4 * 120 + 1, np.uint8)
    x = np.ndarray((12, 10), np.float32, buffer=buf, offset=1)
    assert not x.flags.aligned
    x[...] = np.random.default_rng(2).random((12, 10))
    m, v = bnfast.mean_var(x, axis=0)
    np.testing.assert_allclose(v, _ref(x, 0)[1], rtol=1e-6)
    out = np.ndarray((12, 10), np.float32, buffer=np.zeros(4 * 120 + 1, np.uint8), offset=1)
    bnfast.batch_norm(x, training=True, out=out)
    np.testing.assert_allclose(
        out, bnfast.batch_norm(np.array(x), training=True), rtol=1e-6, atol=1e-6
    )


def test_masked_array_is_refused(backend):
    # Regression: a masked array's mask was silently ignored.
    x = np.ma.masked_array([1.0, 2.0, 30.0], mask=[0, 0, 1])
    with pytest.raises(TypeError, match="masked"):
        bnfast.mean_var(x)
    with pytest.raises(TypeError, match="masked"):
        bnfast.batch_norm(np.ma.masked_array(np.ones((4, 2))), training=True)


@pytest.mark.filterwarnings("ignore:the matrix subclass:PendingDeprecationWarning")
def test_matrix_subclass_is_treated_as_ndarray(backend):
    # Subclasses other than masked arrays are viewed as plain ndarrays.
    x = np.matrix([[1.0, 2.0], [3.0, 5.0]])
    m, v = bnfast.mean_var(x, axis=0)
    np.testing.assert_allclose(m, [2.0, 3.5])
    np.testing.assert_allclose(v, [1.0, 2.25])
