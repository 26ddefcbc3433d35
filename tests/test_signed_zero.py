"""Zero results keep the twin's sign in every backend.

``np.testing.assert_array_equal`` treats -0.0 and +0.0 as equal, so the
native == twin tests elsewhere cannot see a lost sign of zero; these tests
compare sign bits. The kernels once broadcast a per-channel parameter as
``0 + s``, which turns a -0.0 bias into +0.0: eval batch norm of -0.0 with
bias -0.0 gave +0.0 (twin and PyTorch: -0.0).
"""

import numpy as np
import pytest

import bnfast
from helpers import runtime

try:
    import ml_dtypes

    HALF = [np.float16, ml_dtypes.bfloat16]
except ImportError:  # bfloat16 needs ml_dtypes; float16 is tested without it
    HALF = [np.float16]

DTYPES = [np.float32, np.float64, *HALF]
C = 3


def _eval(x):
    params = np.float32 if x.dtype.itemsize < 4 else x.dtype
    rm = np.zeros(C, params)
    rv = np.full(C, 3.0, params)
    w = np.array([0.5, 2.0, 1.0], params)
    b = np.full(C, -0.0, params)
    axis = -1 if x.ndim == 2 or x.shape[-1] == C else 1
    return bnfast.batch_norm(x, rm, rv, w, b, training=False, axis=axis)


def _input(layout, dtype):
    # -0.0 everywhere but a few ones: each result is (-0 - 0 - 0) * scale
    # + (-0) = -0.0 or a nonzero; lengths cover vector pairs, single
    # vectors and scalar tails of every SIMD width.
    if layout == "NCHW":
        x = np.full((2, C, 67), -0.0, np.float32)
    elif layout == "NHWC":
        x = np.full((2, 67, C), -0.0, np.float32)
    else:
        x = np.full((131, C), -0.0, np.float32)
    x.reshape(-1)[::17] = 1.0
    return x.astype(dtype)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC", "2-D"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_eval_batch_norm_keeps_negative_zero(native_backend, layout, dtype):
    x = _input(layout, dtype)
    got = _eval(x).astype(np.float64)
    with runtime.using("numpy"):
        want = _eval(x).astype(np.float64)
    assert np.signbit(want[want == 0]).all()  # the twin: -0.0 throughout
    np.testing.assert_array_equal(np.signbit(got), np.signbit(want))
    np.testing.assert_array_equal(got, want)
