"""float16 and bfloat16 through the library (issue 14, items 1 and 2).

Half-precision data is stored as it comes and computed in float32: the
kernels widen each element on load and round each result once, to nearest
even, on store (F16C / AVX-512 conversions in the avx2 / avx512 builds, bit
manipulation in the baseline and for bfloat16). Checked here:

- the conversions themselves, bit for bit against NumPy (float16) and
  ml_dtypes (bfloat16), through the vector and scalar paths of each ISA;
- every op, forward and backward, against a float64 reference within one
  ulp of the output dtype (see ``assert_half_close`` for the tolerance),
  under every backend, over shapes, axes and strides (hypothesis) including
  sizes that straddle the SIMD widths and the threads' block size;
- native against the NumPy twin, and against PyTorch's CPU results;
- the layers, mean_var, Standardizer(dtype=...), diagnose, the sklearn
  adapter and ``normalize --dtype``.

bfloat16 cases run only when ml_dtypes is installed (bnfast never needs it).
"""

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bnfast
from helpers import (
    NATIVE_CHOICES,
    grad_terms,
    mag,
    ref_batch_norm,
    ref_group_norm,
    ref_group_norm_backward,
    ref_instance_norm,
    ref_layer_norm,
    ref_layer_norm_backward,
    ref_rms_norm,
    ref_rms_norm_backward,
    runtime,
    torch,
)

try:
    import ml_dtypes

    BF16 = np.dtype(ml_dtypes.bfloat16)
except ImportError:  # float16 cases still run
    ml_dtypes = None
    BF16 = None

HALF = [np.dtype(np.float16)] + ([BF16] if BF16 is not None else [])
HALF_IDS = [d.name for d in HALF]
EPS32 = float(np.finfo(np.float32).eps)


def needs_bf16(dt):
    if dt is None:
        pytest.skip("ml_dtypes is not installed: bfloat16 cases skipped")


# --------------------------------------------------------------------------
# ulps and tolerances
# --------------------------------------------------------------------------
def _format(dt):
    """(mantissa bits, smallest normal exponent) of a half dtype."""
    return (10, -14) if dt == np.float16 else (7, -126)


def ulp(ref, dt):
    """The spacing of half dtype ``dt`` at |ref| (float64 array)."""
    mant, emin = _format(dt)
    ref = np.abs(np.asarray(ref, np.float64))
    e = np.floor(np.log2(np.maximum(np.where(np.isfinite(ref), ref, 1.0), 2.0**emin)))
    return 2.0 ** (e - mant)


def assert_half_close(got, ref, dt, terms=0.0, what="values", ulps=1.0):
    """``got`` (of half dtype ``dt``) within ``ulps`` ulp of the float64
    reference, plus 16 float32 ulps of ``terms``.

    Why: the exact value rounded to ``dt`` is within half an ulp of it; the
    kernels compute in float32, whose rounding (a few float32 ulps of the
    products and sums before the final rounding, ~2**-21 relative against an
    ulp of 2**-10 / 2**-7) can only move the result to the neighbouring value
    of ``dt``: one ulp in all. Where the result cancels to near zero (a bias
    meeting an equal and opposite normalized value), an ulp of the output is
    smaller than the float32 rounding of its terms: that rounding is the
    ``terms`` part, the same allowance the float32 tests make.
    """
    got = np.asarray(got)
    assert got.dtype == dt, f"{what}: dtype {got.dtype} != {dt}"
    g = got.astype(np.float64)
    ref = np.asarray(ref, np.float64)
    assert g.shape == ref.shape, f"{what}: shape {g.shape} != {ref.shape}"
    np.testing.assert_array_equal(np.isnan(g), np.isnan(ref), err_msg=f"{what}: NaN positions")
    finite = np.isfinite(ref)
    np.testing.assert_array_equal(g[~finite & ~np.isnan(ref)], ref[~finite & ~np.isnan(ref)])
    tol = ulps * ulp(ref, dt) + 16 * EPS32 * terms
    err = np.abs(g - ref)
    bad = finite & ~(err <= tol)
    assert not bad.any(), (
        f"{what}: {int(bad.sum())} of {bad.size} beyond {ulps} ulp (+ float32 noise); "
        f"worst got {g[bad][:3]} want {ref[bad][:3]}"
    )


def assert_f32_sum_close(got, ref, terms, what):
    """Parameter gradients of half input: float32 (the compute dtype), sums
    accumulated in float64 and rounded once: 1 float32 ulp, plus 16 float32
    ulps of the summed terms for sums that cancel."""
    got = np.asarray(got)
    assert got.dtype == np.float32, f"{what}: dtype {got.dtype}"
    ref = np.asarray(ref, np.float64)
    err = np.abs(got.astype(np.float64) - ref)
    tol = 2 * EPS32 * np.abs(ref) + 16 * EPS32 * np.asarray(terms, np.float64)
    assert np.all(err <= tol), f"{what}: got {got}, want {ref}"


def data(rng, shape, dt, offset=0.0, scale=1.0):
    """Random half-precision data (values exactly representable in ``dt``)."""
    return (offset + scale * rng.standard_normal(shape)).astype(dt)


# --------------------------------------------------------------------------
# conversions, bit for bit (every backend: the twin rounds with NumPy)
# --------------------------------------------------------------------------
def _narrowing_cases(dt):
    """float32 values around every rounding hazard of ``dt``: ties (to even
    and away), just above and below them, subnormals and their boundary,
    the overflow threshold, infinities, signed zeros, NaN, and random bits."""
    mant, emin = _format(dt)
    rng = np.random.default_rng(7)
    vals = [0.0, -0.0, np.inf, -np.inf, np.nan, 1.0, -1.0]
    top = float(np.finfo(np.float16).max) if dt == np.float16 else float(np.finfo(np.float32).max)
    for e in range(emin - mant - 2, 16 if dt == np.float16 else 127):
        base = 2.0**e
        for k in (1, 2, 3, 5, 1023):
            m = base * (1 + k * 2.0**-mant)
            half = base * 2.0 ** (-mant - 1)
            for v in (m, m + half, m - half, m + half * 1.0001, m + half * 0.9999):
                if abs(v) < float(np.finfo(np.float32).max):
                    vals += [v, -v]
    vals += [top, 65520.0, 65519.99, 65536.0] if dt == np.float16 else [top]
    bits = rng.integers(0, 2**32, 20000, dtype=np.uint64).astype(np.uint32)
    vals = np.concatenate([np.array(vals, np.float32), bits.view(np.float32)])
    return vals.astype(np.float32)


@pytest.mark.parametrize("dt", HALF, ids=HALF_IDS)
@pytest.mark.parametrize("n", [4095, 4099], ids=["periodic", "vector-runs"])
@pytest.mark.parametrize("rows", [1, 1025], ids=["plain", "streamed"])
def test_narrowing_rounds_to_nearest_even(backend, dt, n, rows):
    # y = 1 * s + (-0.0) with a per-element float32 s: exactly s (-0.0 keeps
    # the sign of zeros), so y is the store of s rounded to dt (pairs of
    # vectors, single vectors and scalar tails). 1025 rows of s make an
    # output over 8 MiB, written with streaming stores (full registers of
    # two vectors from each row's first cache-line boundary on).
    s = _narrowing_cases(dt)
    s = s[: (len(s) // n) * n].reshape(-1, n)
    if rows > 1:
        s = s[:2]  # a few patterns suffice for the streamed stores' layout
    for row in s:
        x3 = np.ones((rows, n, 1), dt)
        assert rows == 1 or x3.nbytes >= 8 << 20
        y3 = np.empty_like(x3)
        runtime.impl().affine(x3, y3, None, None, row, np.full(n, -0.0, np.float32))
        with np.errstate(over="ignore", invalid="ignore"):
            want = np.broadcast_to(row.astype(dt).reshape(1, n, 1), x3.shape)  # nearest even
        got_bits, want_bits = y3.view(np.uint16), want.view(np.uint16)
        nan = np.isnan(want.astype(np.float32))
        np.testing.assert_array_equal(np.isnan(y3.astype(np.float32)), nan)
        np.testing.assert_array_equal(got_bits[~nan], want_bits[~nan])


@pytest.mark.parametrize("dt", HALF, ids=HALF_IDS)
def test_widening_is_exact_for_every_pattern(backend, dt):
    # All 65536 bit patterns through y = x * 1 + (-0.0): the value comes back.
    x = np.arange(2**16, dtype=np.uint32).astype(np.uint16).view(dt).reshape(1, -1, 1)
    y = np.empty_like(x)
    c = x.shape[1]
    runtime.impl().affine(x, y, None, None, np.ones(c, np.float32), np.full(c, -0.0, np.float32))
    nan = np.isnan(x.astype(np.float32))
    np.testing.assert_array_equal(np.isnan(y.astype(np.float32)), nan)
    np.testing.assert_array_equal(y.view(np.uint16)[~nan], x.view(np.uint16)[~nan])


@pytest.mark.parametrize("dt", HALF, ids=HALF_IDS)
@pytest.mark.parametrize("layout", ["rows", "channels"])
def test_widening_to_double_is_exact(backend, dt, layout):
    # Rows of 64 values v, 0, ..., 0: mean v/64 and M2 = v**2 * 63/64 exactly
    # in float64 for every finite v of dt (the float64 loads of pass 2, the
    # float32 ones of pass 1), on the row path and on the channel path.
    with np.errstate(invalid="ignore"):  # (NaN patterns, dropped)
        v = np.arange(2**16, dtype=np.uint32).astype(np.uint16).view(dt).astype(np.float64)
    v = v[np.isfinite(v)][::7]
    x = np.zeros((len(v), 64))
    x[:, 0] = v
    x3 = (
        x.astype(dt)[None] if layout == "rows" else np.ascontiguousarray(x.astype(dt).T)[:, :, None]
    )
    mean, m2 = runtime.impl().moments(x3)
    np.testing.assert_array_equal(mean, v / 64)
    np.testing.assert_array_equal(m2, v * v * 63 / 64)


# --------------------------------------------------------------------------
# ops against float64 references, every backend, hypothesis shapes
# --------------------------------------------------------------------------
# Sizes straddling the SIMD widths (4/8/16 float lanes, 2/4/8 double lanes,
# two vectors per step in the reductions).
LANE_SIZES = [1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 65]


@st.composite
def half_inputs(draw, min_ndim=2):
    """(x, dy) of a half dtype: shape, offset, strides (a reversed or
    sliced axis, a transposed layout) drawn."""
    dt = draw(st.sampled_from(HALF))
    ndim = draw(st.integers(min_ndim, 4))
    shape = [draw(st.integers(1, 4)), draw(st.integers(1, 6))]
    shape += [draw(st.sampled_from(LANE_SIZES)) for _ in range(ndim - 2)]
    if ndim == 2:
        shape[1] = draw(st.sampled_from(LANE_SIZES))
    shape[0] = max(shape[0], 2)
    seed = draw(st.integers(0, 2**16))
    offset = draw(st.sampled_from([0.0, 3.0, -40.0]))
    rng = np.random.default_rng(seed)
    layout = draw(st.sampled_from(["c", "reversed", "sliced", "transposed"]))
    big = list(shape)
    if layout == "sliced":
        big[-1] *= 2
    x = data(rng, big, dt, offset)
    dy = data(rng, big, dt)
    if layout == "sliced":
        x, dy = x[..., ::2], dy[..., ::2]
    elif layout == "reversed":
        x, dy = x[::-1], dy[::-1]
    elif layout == "transposed":
        perm = (0,) + tuple(range(2, ndim)) + (1,)
        x = np.ascontiguousarray(np.transpose(x, perm)).transpose(np.argsort(perm))
        dy = np.ascontiguousarray(np.transpose(dy, perm)).transpose(np.argsort(perm))
    return x, dy


def _params(rng, c, affine):
    if not affine:
        return None, None
    return rng.standard_normal(c).astype(np.float32), rng.standard_normal(c).astype(np.float32)


@settings(max_examples=30)
@given(inp=half_inputs(), affine=st.booleans(), training=st.booleans())
def test_batch_norm_half_within_one_ulp(backend, inp, affine, training):
    x, dy = inp
    dt = x.dtype
    c = x.shape[1]
    if training and x.size // c < 2:
        return
    rng = np.random.default_rng(1)
    w, b = _params(rng, c, affine)
    rm = rng.standard_normal(c).astype(np.float32)
    rv = (0.5 + rng.random(c)).astype(np.float32)
    rm0, rv0 = rm.copy(), rv.copy()
    y, mean, invstd = bnfast.batch_norm(
        x, rm, rv, w, b, training=training, momentum=0.25, return_stats=True
    )
    ref_y, ref_mean, ref_inv, new_rm, new_rv = ref_batch_norm(
        x, 1, training, rm0, rv0, w, b, 1e-5, 0.25
    )
    assert mean.dtype == invstd.dtype == np.float32  # the compute dtype
    terms = (mag(x) + mag(ref_mean)) * mag(ref_inv) * (1.0 if w is None else mag(w))
    assert_half_close(y, ref_y, dt, terms + (0.0 if b is None else mag(b)), "y")
    if training:
        np.testing.assert_allclose(rm, new_rm, rtol=2 * EPS32, atol=2 * EPS32 * mag(new_rm))
        np.testing.assert_allclose(rv, new_rv, rtol=2 * EPS32, atol=1e-6 * mag(new_rv))
    dx, dw, db = bnfast.batch_norm_backward(dy, x, mean, invstd, w, training=training)
    x64, dy64 = x.astype(np.float64), dy.astype(np.float64)
    bshape = [1, c] + [1] * (x.ndim - 2)
    inv = ref_inv.reshape(bshape)
    gw = 1.0 if w is None else w.astype(np.float64).reshape(bshape)
    red = tuple(i for i in range(x.ndim) if i != 1)
    xhat = (x64 - ref_mean.reshape(bshape)) * inv
    if training:  # the gradient through the batch statistics
        g = dy64 * gw
        mg = g.mean(axis=red, keepdims=True)
        ref_dx = inv * (g - mg - xhat * (g * xhat).mean(axis=red, keepdims=True))
    else:  # constants: dx = dy * invstd * weight
        ref_dx = dy64 * inv * gw
    assert_half_close(dx, ref_dx, dt, grad_terms(dy, inv, w), "dx")
    assert_f32_sum_close(db, dy64.sum(axis=red), np.abs(dy64).sum(axis=red), "dbias")
    if w is not None:
        assert_f32_sum_close(
            dw, (dy64 * xhat).sum(axis=red), (np.abs(dy64 * xhat)).sum(axis=red), "dweight"
        )


@settings(max_examples=30)
@given(inp=half_inputs(), affine=st.booleans(), rms=st.booleans())
def test_layer_and_rms_norm_half_within_one_ulp(backend, inp, affine, rms):
    x, dy = inp
    dt = x.dtype
    d = x.shape[-1]
    rng = np.random.default_rng(2)
    w, b = _params(rng, d, affine)
    eps = 1e-5
    if rms:
        y, rstd = bnfast.rms_norm(x, w, eps=eps, return_stats=True)
        ref_y, ref_rstd = ref_rms_norm(x, w, -1, eps)
        terms = mag(x) * mag(ref_rstd) * (1.0 if w is None else mag(w))
        dx, dw = bnfast.rms_norm_backward(dy, x, rstd, w)
        ref_dx, ref_dw = ref_rms_norm_backward(dy, x, w, -1, eps)
        xhat = x.astype(np.float64) * ref_rstd
    else:
        y, mean, rstd = bnfast.layer_norm(x, w, b, eps=eps, return_stats=True)
        assert mean.dtype == np.float32
        ref_y, ref_mean, ref_rstd = ref_layer_norm(x, w, b, -1, eps)
        terms = (mag(x) + mag(ref_mean)) * mag(ref_rstd) * (1.0 if w is None else mag(w))
        terms += 0.0 if b is None else mag(b)
        dx, dw, db = bnfast.layer_norm_backward(dy, x, mean, rstd, w)
        ref_dx, ref_dw, ref_db = ref_layer_norm_backward(dy, x, w, -1, eps)
        xhat = (x.astype(np.float64) - ref_mean) * ref_rstd
        other = tuple(range(x.ndim - 1))
        assert_f32_sum_close(db, ref_db, np.abs(dy.astype(np.float64)).sum(axis=other), "dbias")
    assert rstd.dtype == np.float32
    assert_half_close(y, ref_y, dt, terms, "y")
    assert_half_close(dx, ref_dx, dt, grad_terms(dy, ref_rstd, w) * 4, "dx")
    if w is not None:
        other = tuple(range(x.ndim - 1))
        summed = np.abs(dy.astype(np.float64) * xhat).sum(axis=other)
        assert_f32_sum_close(dw, ref_dw, summed, "dweight")


@settings(max_examples=30)
@given(inp=half_inputs(min_ndim=3), affine=st.booleans(), instance=st.booleans())
def test_group_and_instance_norm_half_within_one_ulp(backend, inp, affine, instance):
    x, dy = inp
    dt = x.dtype
    c = x.shape[1]
    groups = c if instance else max(g for g in (1, 2, 3) if c % g == 0)
    if (x.size // x.shape[0]) // groups < 2:
        return
    rng = np.random.default_rng(3)
    w, b = _params(rng, c, affine)
    if instance:
        y, mean, rstd = bnfast.instance_norm(x, w, b, return_stats=True)
        ref_y, ref_mean, ref_rstd = ref_instance_norm(x, w, b)
    else:
        y, mean, rstd = bnfast.group_norm(x, groups, w, b, return_stats=True)
        ref_y, ref_mean, ref_rstd = ref_group_norm(x, groups, w, b)
    assert mean.dtype == rstd.dtype == np.float32
    terms = (mag(x) + mag(ref_mean)) * mag(ref_rstd) * (1.0 if w is None else mag(w))
    assert_half_close(y, ref_y, dt, terms + (0.0 if b is None else mag(b)), "y")
    if instance:
        dx, dw, db = bnfast.instance_norm_backward(dy, x, mean, rstd, w)
    else:
        dx, dw, db = bnfast.group_norm_backward(dy, x, mean, rstd, groups, w)
    ref_dx, ref_dw, ref_db = ref_group_norm_backward(dy, x, groups, w)
    assert_half_close(dx, ref_dx, dt, grad_terms(dy, ref_rstd, w) * 4, "dx")
    red = tuple(i for i in range(x.ndim) if i != 1)
    summed = np.abs(dy.astype(np.float64)).sum(axis=red)
    assert_f32_sum_close(db, ref_db, summed, "dbias")
    if w is not None:
        assert_f32_sum_close(dw, ref_dw, summed * 8 * mag(ref_rstd) * mag(x), "dweight")


@pytest.mark.parametrize("dt", HALF, ids=HALF_IDS)
@pytest.mark.parametrize("length", [16383, 16385, 2 * 16384 + 9])
@pytest.mark.parametrize("threads", [1, 2])
def test_block_size_straddled(backend, dt, length, threads):
    # Rows longer than the threads' block (16384 elements: parallel_rows
    # splits them into spans) and fused batch-norm slabs of that size.
    rng = np.random.default_rng(4)
    x = data(rng, (2, 3, length), dt, 5.0)
    dy = data(rng, x.shape, dt)
    with bnfast.threads(threads):
        y, mean, rstd = bnfast.layer_norm(x, return_stats=True)
        dx, _, _ = bnfast.layer_norm_backward(dy, x, mean, rstd)
        yb = bnfast.batch_norm(x, training=True)
    ref_y, ref_mean, ref_rstd = ref_layer_norm(x)
    assert_half_close(y, ref_y, dt, (mag(x) + mag(ref_mean)) * mag(ref_rstd), "layer_norm")
    ref_dx, _, _ = ref_layer_norm_backward(dy, x)
    assert_half_close(dx, ref_dx, dt, 4 * grad_terms(dy, ref_rstd, None), "layer_norm dx")
    rb, rmean, rinv, _, _ = ref_batch_norm(x, 1, True)
    assert_half_close(yb, rb, dt, (mag(x) + mag(rmean)) * mag(rinv), "batch_norm")


@pytest.mark.parametrize("dt", HALF, ids=HALF_IDS)
def test_mean_var_reads_half_in_place(backend, dt):
    rng = np.random.default_rng(5)
    x = data(rng, (300, 7), dt, 100.0, 3.0)
    mean, var = bnfast.mean_var(x, axis=0)
    assert mean.dtype == var.dtype == dt  # as NumPy: the input dtype
    x64 = x.astype(np.float64)
    # float64 statistics rounded once to dt: half an ulp; an ulp allows for
    # the rounding of the float64 accumulation landing on a tie's other side.
    assert_half_close(mean, x64.mean(axis=0), dt, what="mean")
    assert_half_close(var, x64.var(axis=0), dt, what="var")
    m = bnfast.moments(x, axis=0)
    np.testing.assert_allclose(m.mean, x64.mean(axis=0), rtol=1e-14)
    np.testing.assert_allclose(m.m2, ((x64 - x64.mean(axis=0)) ** 2).sum(axis=0), rtol=1e-12)


# --------------------------------------------------------------------------
# native against the twin, per capability
# --------------------------------------------------------------------------
@pytest.mark.skipif(not NATIVE_CHOICES, reason="the native module bnfast._core is not built")
@pytest.mark.parametrize("dt", HALF, ids=HALF_IDS)
@pytest.mark.parametrize("shape", [(3, 5, 33), (40, 17), (2, 4, 7, 9), (3, 2, 16385)])
def test_native_matches_twin(native_backend, dt, shape):
    # Both compute in float32 and round once; they may differ in the order
    # of float32 operations (FMA contraction, vector lanes): one ulp of the
    # output where that moves a value across a rounding boundary, plus the
    # float32 noise of results that cancel (assert_half_close).
    rng = np.random.default_rng(6)
    x = data(rng, shape, dt, 2.0)
    dy = data(rng, shape, dt)
    w = rng.standard_normal(shape[1]).astype(np.float32)
    b = rng.standard_normal(shape[1]).astype(np.float32)
    wl = rng.standard_normal(shape[-1]).astype(np.float32)

    def run():
        out = {}
        rm, rv = np.zeros(shape[1], np.float32), np.ones(shape[1], np.float32)
        y, m, i = bnfast.batch_norm(x, rm, rv, w, b, training=True, return_stats=True)
        out["bn"] = y
        out["bn_dx"] = bnfast.batch_norm_backward(dy, x, m, i, w)[0]
        out["bn_eval"] = bnfast.batch_norm(x, rm, rv, w, b)
        y, m, r = bnfast.layer_norm(x, wl, return_stats=True)
        out["ln"] = y
        out["ln_dx"] = bnfast.layer_norm_backward(dy, x, m, r, wl)[0]
        y, r = bnfast.rms_norm(x, wl, return_stats=True)
        out["rms"] = y
        out["rms_dx"] = bnfast.rms_norm_backward(dy, x, r, wl)[0]
        if x.ndim > 2:
            y, m, r = bnfast.group_norm(x, 1, w, b, return_stats=True)
            out["gn"] = y
            out["gn_dx"] = bnfast.group_norm_backward(dy, x, m, r, 1, w)[0]
        return out

    native = run()
    with runtime.using("numpy"):
        twin = run()
    for key, got in native.items():
        ref = twin[key].astype(np.float64)
        assert_half_close(got, ref, dt, mag(ref) + mag(dy) * 8, key)


# --------------------------------------------------------------------------
# PyTorch parity (torch.bfloat16 <-> ml_dtypes.bfloat16 through uint16)
# --------------------------------------------------------------------------
def _to_torch(a, grad=False):
    a = np.ascontiguousarray(a)
    if a.dtype == BF16 and BF16 is not None:
        t = torch.from_numpy(a.view(np.int16).copy()).view(torch.bfloat16)
    else:
        t = torch.from_numpy(a.copy())
    return t.requires_grad_(grad)


def _from_torch(t):
    t = t.detach()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(BF16)
    return t.numpy()


@pytest.mark.skipif(torch is None, reason="torch is not installed: PyTorch parity skipped")
# (PyTorch warns that float32 weights beside half input take its unfused path)
@pytest.mark.filterwarnings("ignore:Mismatch dtype between input and weight")
@pytest.mark.parametrize("dt", HALF, ids=HALF_IDS)
@pytest.mark.parametrize(
    "op", ["batch_norm", "batch_norm_eval", "layer_norm", "rms_norm", "group_norm", "instance_norm"]
)
def test_matches_torch(backend, dt, op):
    # PyTorch's CPU kernels compute half inputs in float32 too (float32
    # weight, bias and running statistics beside half activations): both
    # results are within one ulp of the exact value, so within two ulps of
    # each other, plus the float32 noise of cancelling results (as
    # assert_half_close). Parameter gradients are float32 sums in both.
    F = torch.nn.functional
    rng = np.random.default_rng(8)
    x = data(rng, (8, 6, 5, 9), dt, 1.5, 2.0)
    dy = data(rng, x.shape, dt)
    c, d = x.shape[1], x.shape[-1]
    wc, bc = (rng.standard_normal(c).astype(np.float32) for _ in range(2))
    wd, bd = (rng.standard_normal(d).astype(np.float32) for _ in range(2))
    rm = rng.standard_normal(c).astype(np.float32)
    rv = (0.5 + rng.random(c)).astype(np.float32)
    xt = _to_torch(x, True)
    params = {k: _to_torch(v, True) for k, v in dict(wc=wc, bc=bc, wd=wd, bd=bd).items()}
    if op == "batch_norm":
        rmt, rvt = _to_torch(rm), _to_torch(rv)
        yt = F.batch_norm(xt, rmt, rvt, params["wc"], params["bc"], training=True)
        y, mean, inv = bnfast.batch_norm(x, rm, rv, wc, bc, training=True, return_stats=True)
        grads = bnfast.batch_norm_backward(dy, x, mean, inv, wc)
        np.testing.assert_allclose(rm, rmt.numpy(), rtol=4 * EPS32, atol=1e-6)
        np.testing.assert_allclose(rv, rvt.numpy(), rtol=4 * EPS32, atol=1e-6)
        pw, pb = "wc", "bc"
    elif op == "batch_norm_eval":
        yt = F.batch_norm(xt, _to_torch(rm), _to_torch(rv), params["wc"], params["bc"])
        y, mean, inv = bnfast.batch_norm(x, rm, rv, wc, bc, return_stats=True)
        grads = bnfast.batch_norm_backward(dy, x, mean, inv, wc, training=False)
        pw, pb = "wc", "bc"
    elif op == "layer_norm":
        yt = F.layer_norm(xt, (d,), params["wd"], params["bd"])
        y, mean, rstd = bnfast.layer_norm(x, wd, bd, return_stats=True)
        grads = bnfast.layer_norm_backward(dy, x, mean, rstd, wd)
        pw, pb = "wd", "bd"
    elif op == "rms_norm":
        yt = F.rms_norm(xt, (d,), params["wd"])
        y, rstd = bnfast.rms_norm(x, wd, return_stats=True)
        grads = bnfast.rms_norm_backward(dy, x, rstd, wd) + (None,)
        pw, pb = "wd", None
    elif op == "group_norm":
        yt = F.group_norm(xt, 3, params["wc"], params["bc"])
        y, mean, rstd = bnfast.group_norm(x, 3, wc, bc, return_stats=True)
        grads = bnfast.group_norm_backward(dy, x, mean, rstd, 3, wc)
        pw, pb = "wc", "bc"
    else:
        yt = F.instance_norm(xt, weight=params["wc"], bias=params["bc"])
        y, mean, rstd = bnfast.instance_norm(x, wc, bc, return_stats=True)
        grads = bnfast.instance_norm_backward(dy, x, mean, rstd, wc)
        pw, pb = "wc", "bc"
    assert yt.dtype == xt.dtype
    yt.backward(_to_torch(dy))
    want = _from_torch(yt).astype(np.float64)
    terms = mag(x) * 4 + mag(bc) + mag(bd)
    assert_half_close(y, want, dt, terms, f"{op} y", ulps=2)
    dx, dw, db = grads
    want_dx = _from_torch(xt.grad).astype(np.float64)
    if op == "rms_norm":
        # PyTorch 2.13 differentiates RMS norm of half input as a composite
        # in the half dtype (measured: up to ~200 ulps from the exact
        # gradient, fused or not); its float32 result on the same values is
        # the "compute in float32" oracle, rounded by the comparison.
        xt = _to_torch(x.astype(np.float32), True)
        params[pw] = _to_torch(wd, True)
        yt32 = F.rms_norm(xt, (d,), params[pw], eps=2.0 ** -_format(dt)[0])
        yt32.backward(_to_torch(dy.astype(np.float32)))
        want_dx = xt.grad.numpy().astype(np.float64)
    assert_half_close(dx, want_dx, dt, mag(dy) * 64, f"{op} dx", ulps=2)
    # Parameter gradients: PyTorch rounds partial sums to the input dtype on
    # some CPU paths (layer norm's bfloat16 backward: its float32 dweight is
    # a sum of bfloat16-rounded parts), so it is within an ulp of the input
    # dtype of the summed terms; bnfast's sums are float64, rounded once to
    # float32 (checked against float64 in the tests above).
    eps_dt = 2.0 ** -_format(dt)[0]
    red = tuple(i for i in range(x.ndim) if i != (1 if pw == "wc" else x.ndim - 1))
    summed = np.abs(dy.astype(np.float64)).sum(axis=red) * 8  # |xhat| < 8 here
    for name, got in ((pw, dw), (pb, db)):
        if name is None:
            continue
        assert got.dtype == np.float32
        want = params[name].grad.numpy().astype(np.float64)
        err = np.abs(got - want)
        assert np.all(err <= 2 * eps_dt * summed), f"{op} d{name}: {got} vs torch {want}"


# --------------------------------------------------------------------------
# layers, Standardizer, diagnose, sklearn, command line, errors
# --------------------------------------------------------------------------
@pytest.mark.parametrize("dt", HALF, ids=HALF_IDS)
@pytest.mark.parametrize("layer_dtype", ["float32", "same"])
def test_layers_take_half_input(backend, dt, layer_dtype):
    ldt = dt if layer_dtype == "same" else np.dtype(np.float32)
    rng = np.random.default_rng(9)
    x = data(rng, (4, 6, 5, 8), dt, 1.0)
    dy = data(rng, x.shape, dt)
    layers = [
        bnfast.nn.BatchNorm(6, dtype=ldt),
        bnfast.nn.InstanceNorm(6, affine=True, track_running_stats=True, dtype=ldt),
        bnfast.nn.GroupNorm(3, 6, dtype=ldt),
        bnfast.nn.LayerNorm(8, dtype=ldt),
        bnfast.nn.RMSNorm(8, dtype=ldt),
    ]
    for layer in layers:
        y = layer(x)
        dx = layer.backward(dy)
        assert y.dtype == dx.dtype == dt, type(layer).__name__
        assert layer.grad_weight.dtype == ldt
        if getattr(layer, "running_mean", None) is not None:
            assert layer.running_mean.dtype == ldt
            assert np.all(np.isfinite(layer.running_var.astype(np.float32)))
        layer.eval()
        assert layer(x).dtype == dt
    with pytest.raises(TypeError, match="float32 for float16/bfloat16"):
        bnfast.nn.BatchNorm(6, dtype=np.float64)(x)


@pytest.mark.parametrize("dt", HALF, ids=HALF_IDS)
def test_running_statistics_of_the_input_dtype(backend, dt):
    rng = np.random.default_rng(10)
    x = data(rng, (16, 3, 10), dt, 2.0)
    rm, rv = np.zeros(3, dt), np.ones(3, dt)
    bnfast.batch_norm(x, rm, rv, training=True, momentum=0.5)
    _, _, _, new_rm, new_rv = ref_batch_norm(x, 1, True, np.zeros(3), np.ones(3), momentum=0.5)
    assert_half_close(rm, new_rm, dt, what="running_mean")
    assert_half_close(rv, new_rv, dt, what="running_var")
    with pytest.raises(TypeError, match="float32"):
        bnfast.batch_norm(x, np.zeros(3), np.ones(3), training=True)  # float64 beside half x


def test_bfloat16_errors_and_inputs_are_clear():
    needs_bf16(BF16)
    x = np.ones((4, 3), BF16)
    # accepted where real numbers are: no "structured/void" message
    assert bnfast.mean_var(x)[0].dtype == BF16
    assert "bfloat16" in str(bnfast.diagnose(x))
    with pytest.raises(TypeError, match="float32, float64, float16 or bfloat16"):
        bnfast.layer_norm(np.ones((2, 3), np.int32))
    with pytest.raises(TypeError, match="structured/void"):
        bnfast.mean_var(np.zeros(3, dtype=[("a", "<u2")]))


def test_ml_dtypes_not_imported_by_bnfast():
    code = "import sys, bnfast, bnfast.nn; print('ml_dtypes' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _std_ref(X, axis=0):
    x64 = np.asarray(X, np.float64)
    return (x64 - x64.mean(axis=axis, keepdims=True)) / x64.std(axis=axis, keepdims=True)


@pytest.mark.parametrize("out", ["float32", "float16", "bfloat16", "float64"])
@pytest.mark.parametrize("src", ["uint8", "int64", "float64", "float32", "float16", "bfloat16"])
def test_standardizer_output_dtype(backend, small_slabs, out, src):
    if "bfloat16" in (out, src):
        needs_bf16(BF16)
    src_dt = BF16 if src == "bfloat16" else np.dtype(src)
    out_dt = BF16 if out == "bfloat16" else np.dtype(out)
    rng = np.random.default_rng(11)
    X = (rng.random((500, 4)) * 200 + np.array([0.0, 10.0, 50.0, 0.0])).astype(src_dt)
    st_ = bnfast.Standardizer(dtype=out).fit(X)
    y = st_.transform(X)
    assert y.dtype == out_dt
    ref = _std_ref(X)
    if out_dt.itemsize == 2:
        # computed in float32 (or in float64 for wider data) and rounded once
        assert_half_close(y, ref, out_dt, 8 * mag(ref) + 2, "transform")
    else:
        eps = float(np.finfo(out_dt).eps)
        np.testing.assert_allclose(y, ref, rtol=8 * eps, atol=8 * eps * 200)
    back = st_.inverse_transform(y)
    assert back.dtype == out_dt
    assert X.dtype == src_dt  # input untouched
    # default: float32 stays, everything else float64 (as today)
    default = bnfast.Standardizer().fit(X).transform(X)
    assert default.dtype == (np.float32 if src == "float32" else np.float64)


def test_standardizer_narrowing_keeps_input_precision(backend):
    # float64 data whose offset float32 cannot resolve: the transform to
    # float32 is computed in float64 and rounded once, not on rounded input.
    X = 1e8 + np.arange(1_200_000.0).reshape(-1, 2) * 1e-3  # more than one slab
    y = bnfast.Standardizer(dtype=np.float32).fit(X).transform(X)
    np.testing.assert_allclose(y, _std_ref(X), rtol=4 * EPS32, atol=4 * EPS32)


def test_standardizer_dtype_saved_and_validated(tmp_path):
    st_ = bnfast.Standardizer(dtype=np.float16).fit(np.arange(10.0).reshape(5, 2))
    st_.save(tmp_path / "s.npz")
    loaded = bnfast.Standardizer.load(tmp_path / "s.npz")
    assert loaded.dtype == "float16"
    assert loaded.transform(np.ones((2, 2))).dtype == np.float16
    with pytest.raises(ValueError, match="dtype must be None or one of"):
        bnfast.Standardizer(dtype=np.int32).fit(np.ones((3, 2)))


def test_sklearn_adapter_keeps_bfloat16():
    needs_bf16(BF16)
    sk = pytest.importorskip("bnfast.sklearn", reason="scikit-learn is not installed")
    X = np.random.default_rng(12).standard_normal((50, 3)).astype(BF16)
    assert sk.Standardizer(dtype="bfloat16").fit_transform(X).dtype == BF16
    plain = bnfast.Standardizer().fit(X)
    adapted = sk.Standardizer().fit(X)
    np.testing.assert_array_equal(adapted.mean_, plain.mean_)  # read as bfloat16, not via float64
    assert adapted.transform(X).dtype == np.float64  # the default rule, as the plain class
    assert sk.Standardizer(dtype=np.float16).get_params()["dtype"] == np.float16


@pytest.mark.parametrize("out", ["float32", "float16", "bfloat16"])
def test_cli_normalize_dtype(tmp_path, out):
    if out == "bfloat16":
        needs_bf16(BF16)
    rng = np.random.default_rng(13)
    X = rng.integers(0, 256, (300, 5)).astype(np.uint8)
    np.save(tmp_path / "x.npy", X)
    cmd = [
        sys.executable,
        "-m",
        "bnfast",
        "normalize",
        str(tmp_path / "x.npy"),
        str(tmp_path / "y.npy"),
        "--dtype",
        out,
        "--chunk-mb",
        "0.001",
    ]
    subprocess.run(cmd, check=True, capture_output=True)
    y = np.load(tmp_path / "y.npy")
    out_dt = BF16 if out == "bfloat16" else np.dtype(out)
    if out == "bfloat16":
        assert y.dtype == np.dtype("V2")  # .npy has no bfloat16: read back by a view
        y = y.view(BF16)
    assert y.dtype == out_dt
    if out_dt.itemsize == 2:
        assert_half_close(y, _std_ref(X), out_dt, 4.0, "normalize")
    else:
        np.testing.assert_allclose(y, _std_ref(X), rtol=1e-6, atol=1e-6)
