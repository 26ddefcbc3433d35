"""float32 -> bfloat16 narrowing of the native stores, bit for bit (issue 14).

Every path that writes bfloat16 (the vector pairs, single vectors and
scalar tails of contiguous runs, periodic runs of short rows, per-element
parameter runs, and the streamed variants of large outputs) rounds each
float32 result to nearest, ties to even, exactly as ml_dtypes does, and a
NaN stays a quiet NaN keeping the upper half of its bits (the portable
rule of cpp/kernels/simd.hpp; ml_dtypes returns a canonical NaN instead, so
NaN payloads are compared against that rule).

The results are driven through the affine kernel, y = x * s + (-0.0) with
a float32 scale s per channel and x in {+-1, +-2, +-0.5}: y is the float32
product (exact except where it leaves float32's range, where NumPy's float32
product rounds it the same way), and -0.0 keeps the sign of zeros. The s
run through every float32 hazard of the narrowing: for every exponent
(subnormals and inf/NaN included) and both signs, the upper mantissa bits
at 0, 1, the binade's middle and its top (a carry into the next binade, or
from the largest finite value into inf), the lowest bit of the result odd
and even, and the lower 16 bits at 0, 1, just below, at and just above the
tie and at the top; NaN payloads in the lower half only (a careless
rounding makes them inf) or the upper; plus random bit patterns.
"""

import numpy as np
import pytest

from helpers import runtime

ml_dtypes = pytest.importorskip("ml_dtypes", reason="bfloat16 needs ml_dtypes")
BF16 = np.dtype(ml_dtypes.bfloat16)


def _patterns() -> np.ndarray:
    """float32 bit patterns (uint32) around every rounding hazard."""
    exp = np.arange(256, dtype=np.uint64)
    sign = np.array([0, 1], np.uint64)
    hi7 = np.array([0x00, 0x01, 0x3F, 0x40, 0x7E, 0x7F], np.uint64)  # result mantissa
    lsb = np.array([0, 1], np.uint64)  # the result's lowest bit: ties go to even
    low = np.array([0x0000, 0x0001, 0x7FFF, 0x8000, 0x8001, 0xFFFF], np.uint64)
    s, e, h, b, lo = np.meshgrid(sign, exp, hi7, lsb, low, indexing="ij")
    # hi7's lowest bit is the result's lowest bit: set it from lsb
    h = (h & ~np.uint64(1)) | b
    u = (s << 31) | (e << 23) | (h << 16) | lo
    rng = np.random.default_rng(14)
    extra = [0x7F800001, 0xFF800001, 0x7FBFFFFF, 0x7FC00000, 0x7FFFFFFF, 0xFFFFFFFF]
    extra += [0x7F80FFFF, 0x7F810000, 0x7F7FFFFF, 0x7F7F8000, 0x7F7F7FFF, 0x00000000]
    extra += [0x80000000, 0x00000001, 0x00008000, 0x00018000, 0x007FFFFF, 0x807FFFFF]
    rand = rng.integers(0, 2**32, 20000, dtype=np.uint64)
    allu = np.concatenate([u.ravel(), np.array(extra, np.uint64), rand])
    return np.unique(allu).astype(np.uint32)


PATTERNS = _patterns()


def bf16_rule(y32: np.ndarray) -> np.ndarray:
    """The 16-bit patterns the native stores give: round to nearest even in
    integer arithmetic; NaN -> its upper half with the quiet bit set."""
    u = y32.view(np.uint32).astype(np.uint64)
    rounded = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) & 0xFFFF
    quiet = (u >> 16) | 0x40
    return np.where(np.isnan(y32), quiet, rounded).astype(np.uint16)


def test_rule_is_ml_dtypes_rounding():
    # The reference itself, against ml_dtypes on every non-NaN pattern.
    y32 = PATTERNS.view(np.float32)
    nan = np.isnan(y32)
    want = y32[~nan].astype(BF16).view(np.uint16)
    np.testing.assert_array_equal(bf16_rule(y32)[~nan], want)
    assert np.isnan(bf16_rule(y32)[nan].view(BF16).astype(np.float32)).all()


def _check(y, y32, backend):
    y32 = np.ascontiguousarray(y32).ravel()
    got = np.ascontiguousarray(y).view(np.uint16).ravel()
    want = bf16_rule(y32)
    nan = np.isnan(y32)
    if backend == "numpy":  # the twin stores through ml_dtypes: canonical NaN
        assert np.isnan(got[nan].view(BF16).astype(np.float32)).all()
        got, want, y32 = got[~nan], want[~nan], y32[~nan]
    bad = np.flatnonzero(got != want)
    first = ", ".join(
        f"{int(y32[i : i + 1].view(np.uint32)[0]):#010x} -> {got[i]:#06x} (want {want[i]:#06x})"
        for i in bad[:4]
    )
    assert bad.size == 0, f"{bad.size} of {got.size} rounded wrong; first: {first}"


SIGNS = np.array([1.0, -1.0, 2.0, -0.5], np.float32)


def _run(x3, scale, backend):
    """y = x * scale[c] + (-0.0) through the kernel, and the float32 value."""
    # C order: each layout below names the kernel loop it drives (a
    # broadcast's astype keeps its strides and would take another loop)
    assert x3.flags.c_contiguous
    y3 = np.empty_like(x3)
    c = x3.shape[1]
    runtime.impl().affine(x3, y3, None, None, scale, np.full(c, -0.0, np.float32))
    with np.errstate(all="ignore"):
        y32 = x3.astype(np.float32) * scale[None, :, None] + np.float32(-0.0)
    _check(y3, y32, backend)


def _chunks(n):
    p = PATTERNS.view(np.float32)
    for i in range(0, len(p), n):
        part = p[i : i + n]
        if len(part) < n:  # pad the last chunk with the first patterns
            part = np.concatenate([part, p[: n - len(part)]])
        yield np.ascontiguousarray(part)


@pytest.mark.parametrize(
    "layout",
    [
        "runs",  # (1, C, 61): contiguous runs, pairs + one vector + scalar tail
        "vec",  # (1, C >= 4096, 1): per-element parameters along one run
        "periodic",  # (4, 4095, 1): short rows back to back
    ],
)
def test_narrowing_every_hazard(backend, layout):
    if layout == "runs":
        b = SIGNS[np.arange(61) % 4]
        for s in _chunks(1024):
            _run(np.broadcast_to(b, (1, 1024, 61)).astype(BF16, order="C"), s, backend)
    elif layout == "vec":
        for s in _chunks(8192):
            _run(np.ones((1, 8192, 1), BF16), s, backend)
    else:
        for s in _chunks(4095):
            _run(SIGNS[:, None, None].repeat(4095, 1).astype(BF16), s, backend)


@pytest.mark.parametrize("layout", ["runs", "periodic"])
def test_narrowing_streamed(backend, layout):
    # Outputs of at least 8 MiB are written with streaming stores (runs of
    # at least 1 KiB from their first cache-line boundary on).
    if layout == "runs":
        b = SIGNS[np.arange(1085) % 4]
        x3 = np.broadcast_to(b, (1, 4096, 1085)).astype(BF16, order="C")
        assert x3.nbytes >= 8 << 20
        for s in _chunks(4096):
            _run(x3, s, backend)
    else:
        x3 = SIGNS[np.arange(1025) % 4][:, None, None].repeat(4095, 1).astype(BF16)
        assert x3.nbytes >= 8 << 20
        for s in _chunks(4095):
            _run(x3, s, backend)
