"""The C++ fast entry points (batch_norm_fast, row_norm_fast) give bit for
bit what the general Python path gives, and step aside (returning None) for
everything they do not handle, so errors still come from the general path.

``return_stats=True`` always takes the general path, which makes it the
reference here.
"""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import bnfast
from bnfast import _backend

pytestmark = pytest.mark.skipif(
    "avx512" not in _backend.choices() and "scalar" not in _backend.choices(),
    reason="no native backend in this build",
)

SHAPES = [(2, 3), (4, 16), (17, 33), (1, 5, 7), (3, 1, 4, 4), (2, 7, 1, 1), (5, 16, 3, 17),
          (64, 1), (1, 1, 9), (5, 1, 9), (4, 1, 5, 5)]


class _Sub(np.ndarray):
    """A trivial ndarray subclass: the fast path leaves subclasses alone."""


def _fast(name):
    return getattr(_backend.core(), name)


def _bn_both(x, axis, training, dtype, with_running, with_affine, momentum=0.1, eps=1e-5, out=None):
    c = x.shape[axis]
    rng = np.random.default_rng(c)
    rm = rng.standard_normal(c).astype(dtype) if with_running else None
    rv = rng.uniform(0.5, 2, c).astype(dtype) if with_running else None
    w = rng.standard_normal(c).astype(dtype) if with_affine else None
    b = rng.standard_normal(c).astype(dtype) if with_affine else None
    rm2 = None if rm is None else rm.copy()
    rv2 = None if rv is None else rv.copy()
    fast = _fast("batch_norm_fast")(x, rm, rv, w, b, training, momentum, eps, axis, out)
    assert fast is not None, "the fast path should handle this call"
    ref = bnfast.batch_norm(x, rm2, rv2, w, b, training=training, momentum=momentum, eps=eps,
                            axis=axis, return_stats=True)[0]
    return (fast, rm, rv), (ref, rm2, rv2)


@pytest.mark.parametrize("shape", [(4, 64), (1, 1), (3, 1), (2, 3, 17), (33, 16), (5, 1, 8)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rms", [False, True])
def test_row_norm_fast_is_bitwise_the_general_path(native_backend, shape, dtype, rms):
    rng = np.random.default_rng(5)
    x = (rng.standard_normal(shape) * 2 + 5).astype(dtype)
    d = shape[-1]
    for w, b in [(None, None), (rng.standard_normal(d).astype(dtype), None),
                 (rng.standard_normal(d).astype(dtype), rng.standard_normal(d).astype(dtype))]:
        if rms:
            for eps in (None, 1e-6):
                fast = _fast("row_norm_fast")(x, w, None, -1, eps, True, None)
                assert fast is not None
                ref = bnfast.rms_norm(x, w, eps=eps, return_stats=True)[0]
                np.testing.assert_array_equal(fast, ref)
        else:
            fast = _fast("row_norm_fast")(x, w, b, -1, 1e-5, False, None)
            assert fast is not None
            ref = bnfast.layer_norm(x, w, b, return_stats=True)[0]
            np.testing.assert_array_equal(fast, ref)


def test_row_norm_fast_steps_aside(native_backend):
    x = np.random.default_rng(6).standard_normal((4, 8)).astype(np.float32)
    f = _fast("row_norm_fast")
    assert f(x, None, None, 0, 1e-5, False, None) is None          # not the last axis
    assert f(x, None, None, (-1,), 1e-5, False, None) is None      # tuple axis
    assert f(x.T, None, None, -1, 1e-5, False, None) is None       # not C-contiguous
    assert f(x, np.ones(8), None, -1, 1e-5, False, None) is None   # float64 weight
    assert f(x, None, None, -1, -1.0, False, None) is None         # negative eps
    assert f(x, None, None, -1, None, False, None) is None         # eps=None is RMS-only
    assert f(x[:0], None, None, -1, 1e-5, False, None) is None     # empty
    with pytest.raises(ValueError, match="eps"):
        bnfast.layer_norm(x, eps=-1.0)


