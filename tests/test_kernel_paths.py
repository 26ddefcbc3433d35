"""Each loop of the moments and affine kernels, chosen by the strides of the
(A, C, B) view, on sizes around its block boundaries (4096-element chunks,
2**18-element groups, 512-channel tiles, SIMD widths):

- rows along B (NCHW, axis=-1, axis=None), one group and several groups
- channels with unit stride (NHWC, 2-D axis=0), one group and several
- channels with a stride (small B, many channels)
- B == 1 with A as the row (Fortran 2-D)
- plain strided loops
"""

import numpy as np
import pytest

import bnfast

# (shape, axis reduced, order, slicer) -> exercises the named path.
CASES = {
    "rows-1-group": ((3, 5, 4097), (0, 2), "C"),
    "rows-groups": ((2, 3, 150_001), (0, 2), "C"),
    "rows-axis-None": ((600_001,), None, "C"),
    "channels-unit": ((4099, 37), 0, "C"),
    "channels-unit-tiles": ((700, 1100), 0, "C"),
    "channels-unit-groups": ((20_000, 33), 0, "C"),
    "channels-strided": ((3, 1030, 5), (0, 2), "C"),
    "fortran-rows": ((5000, 7), 0, "F"),
    "generic": ((40, 9, 70), (0, 2), "F"),
}


def _data(shape, order, dtype, offset, rng):
    x = offset + rng.standard_normal(shape)
    return np.asarray(x.astype(dtype), order=order)


def _moments_then_affine(impl, x3, mean, m2, w, b):
    """The unfused training output for statistics (mean, m2): the affine
    kernel with the same float64 scale and split centre."""
    dtype = x3.dtype
    n = x3.shape[0] * x3.shape[2]
    scale = (1.0 / np.sqrt(m2 / n + 1e-5) * w).astype(dtype)
    hi = mean.astype(dtype)
    lo = (mean - hi).astype(dtype)
    y_ref = np.empty_like(x3)
    impl.affine(x3, y_ref, hi, lo, scale, b.astype(dtype))
    return y_ref


@pytest.mark.parametrize(
    "shape",
    [(3, 5, 4097), (2, 3, 150_001), (4, 6, 17), (5, 4, 3),
     (2, 9, 150_001), (2, 9, 300_001), (3, 8, 100_003)],
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_batch_norm_statistics_equal_moments(backend, shape, dtype):
    # The training kernel must reproduce the moments kernel's statistics bit
    # for bit (same chunks, groups and merge order), and the output of the
    # unfused moments + affine path, whichever loop the thread count picks:
    # fused per channel where C >= 4 * threads, channels over 1 MiB with a
    # group per thread shared by the threads (the last three shapes at 2
    # threads; groups cut rows in the middle, and (2, 9, 300_001) gives 3
    # groups to 2 threads), moments + affine otherwise.
    from bnfast import _backend

    impl = _backend.impl()
    rng = np.random.default_rng(6)
    x3 = (3.0 + rng.standard_normal(shape)).astype(dtype)
    w = rng.standard_normal(shape[1])
    b = rng.standard_normal(shape[1])
    ref_mean, ref_m2 = impl.moments(x3)
    y_ref = _moments_then_affine(impl, x3, ref_mean, ref_m2, w, b)
    for threads in (1, 2, 3):
        y3 = np.empty_like(x3)
        with bnfast.threads(threads):
            mean, m2 = impl.batch_norm_train(x3, y3, w, b, 1e-5)
        assert mean.tobytes() == ref_mean.tobytes() and m2.tobytes() == ref_m2.tobytes()
        np.testing.assert_array_equal(y3, y_ref)
