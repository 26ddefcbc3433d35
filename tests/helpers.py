"""Shared helpers of the test suite: the library's private modules, float64
references, tolerances, hypothesis strategies and the PyTorch oracle.

Every reference value is computed here with plain NumPy in float64 (or with
PyTorch, the oracle), never with bnfast itself.

This module (with ``cli/cli_helpers.py`` for the command line) is the only
place in ``tests/`` that imports a private bnfast module: a rename of one is a
one-line change below.
"""

import math
import tracemalloc
import warnings

import numpy as np
import pytest
from hypothesis import strategies as st

import bnfast

# --------------------------------------------------------------------------
# the library's private modules (the only imports of them in tests/)
# --------------------------------------------------------------------------
# (re-exported for the test files: hence the noqa F401)
from bnfast import _files as files  # noqa: F401  (atomic_write: every file bnfast writes)
from bnfast import _layout as views  # noqa: F401  (the canonical (A, C, B) views)
from bnfast import _moments as moments_module  # noqa: F401  (mean_var's integer slabs)
from bnfast import _runtime as runtime  # backend choice, capabilities, impl(), core()
from bnfast import _scan as scan  # noqa: F401  (the slab scan of Standardizer/diagnose)
from bnfast import _twin as twin  # noqa: F401  (the NumPy twin of every native kernel)
from bnfast._diagnose import DiagnoseAccumulator  # noqa: F401  (chunked diagnose)

try:
    from bnfast import _core as core  # the native module
except ImportError:  # a NumPy-only build
    core = None

# Every backend/capability this build and CPU can run, and the native ones.
CHOICES = list(runtime.choices())
NATIVE_CHOICES = [c for c in CHOICES if c != "numpy"]
requires_native = pytest.mark.skipif(
    not NATIVE_CHOICES, reason="the native module bnfast._core is not built"
)


# --------------------------------------------------------------------------
# the PyTorch oracle (optional)
# --------------------------------------------------------------------------
try:
    import torch
except ImportError:  # the torch-free tests still run
    torch = None

needs_torch = pytest.mark.skipif(
    torch is None, reason="torch is not installed: PyTorch parity tests skipped"
)


def tt(a, grad=False):
    """A C-contiguous torch tensor holding a copy of ``a`` (None stays None)."""
    if a is None:
        return None
    t = torch.from_numpy(np.array(a, copy=True, order="C"))
    if grad:
        t.requires_grad_(True)
    return t


def to_np(t):
    return None if t is None else t.detach().numpy()


def torch_grads(fwd, dy, arrays):
    """Run ``fwd`` on float64 tensors made from ``arrays`` (None allowed) and
    back-propagate dy.  float64 gives the precise gradient of the same forward
    (torch's own float32 gradients are themselves only good to ~1e-5)."""
    ts = [None if a is None else tt(np.asarray(a, np.float64), grad=True) for a in arrays]
    y = fwd(*ts)
    y.backward(tt(np.asarray(dy, np.float64)))
    return [None if t is None else t.grad.numpy() for t in ts]


# --------------------------------------------------------------------------
# axes
# --------------------------------------------------------------------------
def normalize_axes(axis, ndim):
    """None -> every axis; an int (NumPy integers too) or a sequence of ints ->
    the sorted tuple of non-negative axes."""
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, (int, np.integer)):
        axis = (axis,)
    return tuple(sorted(int(a) % ndim for a in axis))


def reduced_count(shape, axis):
    axes = normalize_axes(axis, len(shape))
    return int(np.prod([shape[a] for a in axes], dtype=np.int64))


def output_count(shape, axis):
    axes = normalize_axes(axis, len(shape))
    return int(np.prod([s for i, s in enumerate(shape) if i not in axes], dtype=np.int64))


def keepdims_shape(shape, axis):
    """Shape that broadcasts a per-kept-position array against ``shape``."""
    red = normalize_axes(axis, len(shape))
    return tuple(1 if i in red else n for i, n in enumerate(shape))


def param_shape(shape, axes):
    """Shape of weight/bias of a layer/RMS norm over ``axes``."""
    return tuple(shape[a] for a in axes)


def bcast(param, shape, axes):
    """Reshape a parameter living on ``axes`` so it broadcasts against ``shape``."""
    bs = [shape[i] if i in axes else 1 for i in range(len(shape))]
    return np.asarray(param, np.float64).reshape(bs)


# --------------------------------------------------------------------------
# tolerances
# --------------------------------------------------------------------------
def rtol_for(dtype):
    """Forward outputs and statistics (the README's accuracy contract):
    1e-5 for float32, 1e-12 for float64."""
    return 1e-5 if np.dtype(dtype) == np.float32 else 1e-12


def grad_rtol_for(dtype):
    """Gradients (the README's accuracy contract): 1e-4 for float32, 1e-10
    for float64 (a gradient is a sum of three O(1) terms that may cancel)."""
    return 1e-4 if np.dtype(dtype) == np.float32 else 1e-10


def std_rtol(dtype):
    """Standardizer attributes and transforms (its accuracy contract): 1e-6
    for float32 input (float64 accumulation, one rounding at the end), 1e-12
    for float64."""
    return 1e-6 if np.dtype(dtype) == np.float32 else 1e-12


EPS64 = float(np.finfo(np.float64).eps)


def mag(a):
    """max|a| in float64 (0 for an empty array)."""
    a = np.asarray(a, np.float64)
    return float(np.max(np.abs(a))) if a.size else 0.0


def assert_close(got, want, rtol, atol=0.0, what="values"):
    """|got - want| <= atol + rtol*|want| elementwise (``atol`` may be an array
    that broadcasts against ``want``).  The shapes must be equal; NaN must
    match NaN and an infinity must match the same infinity.  A failure names
    the number of bad elements and the first one."""
    got = np.asarray(got)
    want = np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != expected {want.shape}"
    g = got.astype(np.float64)
    w = want.astype(np.float64)
    gn, wn = np.isnan(g), np.isnan(w)
    assert np.array_equal(gn, wn), (
        f"{what}: NaN positions differ: got {g[gn != wn][:5]}, expected {w[gn != wn][:5]}"
    )
    gi, wi = np.isinf(g), np.isinf(w)
    assert np.array_equal(g[gi | wi], w[gi | wi]), f"{what}: infinities differ"
    finite = ~(wn | wi)
    tol = np.broadcast_to(np.asarray(atol, np.float64), w.shape) + rtol * np.abs(w)
    with np.errstate(all="ignore"):
        err = np.abs(g - w)
        bad = finite & ~(err <= tol)
    if bad.any():
        i = tuple(np.argwhere(bad)[0])
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {bad.size} elements out of tolerance "
            f"(max err {np.nanmax(np.where(finite, err, np.nan)):.3g}, rtol {rtol:g}); "
            f"first at {i}: got {g[i]!r} expected {w[i]!r} (tolerance {tol[i]:.3g})"
        )


def assert_forward_close(y, yref, x, mean, rstd, axes, dtype, w=None, k=16.0):
    """Compare a normalized output with a (float64 or torch) reference.

    Base tolerance rtol = atol/max|yref| = 1e-5 (float32) / 1e-12 (float64)
    as in the contract.  An extra absolute term covers the unavoidable
    rounding of x - mean in the input precision (and of the reference's own
    mean): k ulps of |x|+|mean| amplified by rstd*|w|.  It only matters for
    rows whose spread is small compared to their mean (offset data,
    near-constant rows).  ``mean``/``rstd`` broadcast against x.
    """
    dtype = np.dtype(dtype)
    rtol = rtol_for(dtype)
    x64 = np.asarray(x, np.float64)
    m = np.asarray(mean, np.float64)
    r = np.asarray(rstd, np.float64)
    amp = k * np.finfo(dtype).eps * (np.abs(x64) + np.abs(m)) * r
    if w is not None:
        amp = amp * np.abs(bcast(w, x64.shape, axes)) if axes is not None else amp * np.abs(w)
    assert_close(y, yref, rtol, rtol * max(mag(yref), 1.0) + amp, what="forward output")


def result_dtype(in_dtype):
    """Output dtype of mean_var, following np.mean."""
    in_dtype = np.dtype(in_dtype)
    if in_dtype in (np.float16, np.float32, np.float64):
        return in_dtype
    return np.dtype(np.float64)


def assert_stats_close(got_mean, got_var, x, axis=None, ddof=0, keepdims=False, out_dtype=None):
    """Compare mean_var results with the float64 reference.

    Tolerances (relative to the float64 two-pass reference):
    * float32/float16 outputs are accumulated in float64 and rounded once, so
      they are within a few ulps of the output type (rtol 1e-6 for float32,
      1e-3 for float16).
    * float64 outputs: rounding errors of a well-conditioned float64
      accumulation of <= ~2e4 terms are far below 1e-12 relative.
    An absolute term proportional to max|x| (mean) / max|x|^2 (variance)
    accounts for the unavoidable cancellation when the result is ~0.
    """
    x = np.asarray(x)
    ref_m, ref_v = ref_mean_var(x, axis, ddof, keepdims)
    if out_dtype is None:
        out_dtype = result_dtype(x.dtype)
    rtol = {np.dtype(np.float16): 1e-3, np.dtype(np.float32): 1e-6}.get(np.dtype(out_dtype), 1e-12)
    scale = float(np.max(np.abs(x.astype(np.float64)))) if x.size else 0.0
    got_mean = np.asarray(got_mean)
    got_var = np.asarray(got_var)
    assert got_mean.dtype == out_dtype, (got_mean.dtype, out_dtype)
    assert got_var.dtype == out_dtype, (got_var.dtype, out_dtype)
    assert got_mean.shape == ref_m.shape
    assert got_var.shape == ref_v.shape
    np.testing.assert_allclose(
        got_mean.astype(np.float64), ref_m, rtol=rtol, atol=1e-13 * scale, equal_nan=True
    )
    np.testing.assert_allclose(
        got_var.astype(np.float64), ref_v, rtol=rtol, atol=1e-13 * scale * scale, equal_nan=True
    )


# --------------------------------------------------------------------------
# float64 references: moments, batch norm
# --------------------------------------------------------------------------
def accurate_mean(x64, axis):
    """float64 mean with one correction step (keepdims=True): NumPy's own
    mean of a strided/broadcast array is a plain running sum whose error
    (~n ulps) would exceed the tolerances for constant data."""
    m0 = np.mean(x64, axis=axis, keepdims=True)
    return m0 + np.mean(x64 - m0, axis=axis, keepdims=True)


def ref_mean_var(x, axis=None, ddof=0, keepdims=False):
    """float64 reference with NumPy's n-ddof<=0 behaviour."""
    x64 = np.asarray(x).astype(np.float64)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = accurate_mean(x64, axis)
        v = np.var(x64 - m, axis=axis, ddof=ddof, keepdims=True)
        if not keepdims:
            m = np.squeeze(m, axis=axis) if axis is not None else m.reshape(())
            v = np.squeeze(v, axis=axis) if axis is not None else v.reshape(())
    return np.asarray(m), np.asarray(v)


def ref_batch_norm(x, axis, training, rm=None, rv=None, w=None, b=None, eps=1e-5, momentum=0.1):
    """float64 reference of torch.nn.functional.batch_norm semantics.

    Returns (y, mean, invstd, new_rm, new_rv) all in float64 (new_r* are None
    when no running stats are given).
    """
    x64 = np.asarray(x, dtype=np.float64)
    ax = axis % x64.ndim
    C = x64.shape[ax]
    red = tuple(i for i in range(x64.ndim) if i != ax)
    bshape = [1] * x64.ndim
    bshape[ax] = C
    new_rm = new_rv = None
    if training:
        n = x64.size // C if C else 0
        mean = accurate_mean(x64, red)
        var = np.mean((x64 - mean) ** 2, axis=red)
        mean = mean.reshape(-1)
        if rm is not None:
            new_rm = (1 - momentum) * np.asarray(rm, np.float64) + momentum * mean
            new_rv = (1 - momentum) * np.asarray(rv, np.float64) + momentum * var * n / (n - 1)
    else:
        mean = np.asarray(rm, np.float64)
        var = np.asarray(rv, np.float64)
    invstd = 1.0 / np.sqrt(var + eps)
    y = (x64 - mean.reshape(bshape)) * invstd.reshape(bshape)
    if w is not None:
        y = y * np.asarray(w, np.float64).reshape(bshape)
    if b is not None:
        y = y + np.asarray(b, np.float64).reshape(bshape)
    return y, mean, invstd, new_rm, new_rv


# --------------------------------------------------------------------------
# float64 references: layer, RMS, group and instance norm (keepdims stats)
# --------------------------------------------------------------------------
def ref_layer_norm(x, w=None, b=None, axis=-1, eps=1e-5):
    x64 = np.asarray(x, np.float64)
    axes = normalize_axes(axis, x64.ndim)
    mean = accurate_mean(x64, axes)
    var = np.mean((x64 - mean) ** 2, axis=axes, keepdims=True)
    rstd = 1.0 / np.sqrt(var + eps)
    y = (x64 - mean) * rstd
    if w is not None:
        y = y * bcast(w, x64.shape, axes)
    if b is not None:
        y = y + bcast(b, x64.shape, axes)
    return y, mean, rstd


def ref_rms_norm(x, w=None, axis=-1, eps=None):
    x = np.asarray(x)
    if eps is None:
        eps = float(np.finfo(x.dtype).eps)
    x64 = x.astype(np.float64)
    axes = normalize_axes(axis, x64.ndim)
    ms = np.mean(x64 * x64, axis=axes, keepdims=True)
    rstd = 1.0 / np.sqrt(ms + eps)
    y = x64 * rstd
    if w is not None:
        y = y * bcast(w, x64.shape, axes)
    return y, rstd


def _channels_first(x64, axis):
    return np.moveaxis(x64, axis % x64.ndim, 1)


def ref_group_norm(x, G, w=None, b=None, eps=1e-5, axis=1):
    """Returns (y, mean (N, G), rstd (N, G)) in float64; y in x's layout."""
    x64 = np.asarray(x, np.float64)
    xc = _channels_first(x64, axis)
    N, C = xc.shape[:2]
    g = xc.reshape(N, G, -1)
    mean = accurate_mean(g, (2,))
    var = np.mean((g - mean) ** 2, axis=2, keepdims=True)
    rstd = 1.0 / np.sqrt(var + eps)
    y = ((g - mean) * rstd).reshape(xc.shape)
    cs = [1] * xc.ndim
    cs[1] = C
    if w is not None:
        y = y * np.asarray(w, np.float64).reshape(cs)
    if b is not None:
        y = y + np.asarray(b, np.float64).reshape(cs)
    return np.moveaxis(y, 1, axis % x64.ndim), mean[..., 0], rstd[..., 0]


def ref_instance_norm(x, w=None, b=None, eps=1e-5, axis=1):
    """Input-statistics instance norm == group norm with G = C."""
    x64 = np.asarray(x, np.float64)
    C = x64.shape[axis % x64.ndim]
    return ref_group_norm(x64, C, w, b, eps, axis)


def group_stats_bcast(stat, x_shape, G, axis):
    """(N, G) stats -> broadcastable to x (channels on ``axis``)."""
    ax = axis % len(x_shape)
    N, C = x_shape[0], x_shape[ax]
    s = np.repeat(np.asarray(stat, np.float64).reshape(N, G), C // G, axis=1)  # (N, C)
    bs = [1] * len(x_shape)
    bs[0], bs[ax] = N, C
    return s.reshape(bs)


# --------------------------------------------------------------------------
# float64 backward references (analytic)
# --------------------------------------------------------------------------
def _norm_backward(dy64, xhat, rstd, gw, red):
    """dx of y = xhat*w + b where xhat is normalized over ``red``."""
    g = dy64 * gw
    mg = np.mean(g, axis=red, keepdims=True)
    mgx = np.mean(g * xhat, axis=red, keepdims=True)
    return rstd * (g - mg - xhat * mgx)


def ref_layer_norm_backward(dy, x, w=None, axis=-1, eps=1e-5):
    x64 = np.asarray(x, np.float64)
    dy64 = np.asarray(dy, np.float64)
    axes = normalize_axes(axis, x64.ndim)
    _, mean, rstd = ref_layer_norm(x64, None, None, axes, eps)
    xhat = (x64 - mean) * rstd
    gw = 1.0 if w is None else bcast(w, x64.shape, axes)
    dx = _norm_backward(dy64, xhat, rstd, gw, axes)
    other = tuple(i for i in range(x64.ndim) if i not in axes)
    dw = np.sum(dy64 * xhat, axis=other)
    db = np.sum(dy64, axis=other)
    return dx, dw, db


def ref_rms_norm_backward(dy, x, w=None, axis=-1, eps=None):
    x = np.asarray(x)
    x64 = x.astype(np.float64)
    dy64 = np.asarray(dy, np.float64)
    axes = normalize_axes(axis, x64.ndim)
    _, rstd = ref_rms_norm(x, None, axes, eps)
    xhat = x64 * rstd
    gw = 1.0 if w is None else bcast(w, x64.shape, axes)
    g = dy64 * gw
    dx = rstd * (g - xhat * np.mean(g * xhat, axis=axes, keepdims=True))
    other = tuple(i for i in range(x64.ndim) if i not in axes)
    dw = np.sum(dy64 * xhat, axis=other)
    return dx, dw


def ref_group_norm_backward(dy, x, G, w=None, axis=1, eps=1e-5):
    x64 = np.asarray(x, np.float64)
    dy64 = np.asarray(dy, np.float64)
    ax = axis % x64.ndim
    xc = _channels_first(x64, ax)
    dyc = _channels_first(dy64, ax)
    N, C = xc.shape[:2]
    gx = xc.reshape(N, G, -1)
    mean = accurate_mean(gx, (2,))
    rstd = 1.0 / np.sqrt(np.mean((gx - mean) ** 2, axis=2, keepdims=True) + eps)
    xhat = ((gx - mean) * rstd).reshape(xc.shape)
    cs = [1] * xc.ndim
    cs[1] = C
    gw = 1.0 if w is None else np.asarray(w, np.float64).reshape(cs)
    g = (dyc * gw).reshape(N, G, -1)
    xh = xhat.reshape(N, G, -1)
    dx = rstd * (g - g.mean(axis=2, keepdims=True) - xh * (g * xh).mean(axis=2, keepdims=True))
    dx = np.moveaxis(dx.reshape(xc.shape), 1, ax)
    red = tuple(i for i in range(xc.ndim) if i != 1)
    dw = np.sum(dyc * xhat, axis=red)
    db = np.sum(dyc, axis=red)
    return dx, dw, db


def ref_instance_norm_backward(dy, x, w=None, axis=1, eps=1e-5):
    C = np.shape(x)[axis % np.ndim(x)]
    return ref_group_norm_backward(dy, x, C, w, axis, eps)


# --------------------------------------------------------------------------
# gradient checks shared by the backward tests
# --------------------------------------------------------------------------
def assert_grad_close(got, ref, dtype, what, terms=0.0):
    """Gradient tolerance: ``grad_rtol_for(dtype)`` relative plus an atol of
    the same order times the largest reference component (gradients are sums
    whose individual components can cancel to ~0, so a purely relative bound
    is meaningless for those components).  ``terms``: magnitude of the
    individual terms (e.g. rstd*|dy*w| for dx): when the true gradient is ~0
    (a normalized size of 1, or exact cancellation) 16 ulps of the terms is
    the rounding noise of any implementation, torch included."""
    rtol = grad_rtol_for(dtype)
    got = np.asarray(got)
    assert got.dtype == np.dtype(dtype), f"{what}: dtype {got.dtype} != {np.dtype(dtype)}"
    atol = rtol * mag(ref) + 16 * np.finfo(dtype).eps * terms
    assert_close(got, ref, rtol, atol, what=what)


def grad_terms(dy, rstd, w):
    """Magnitude of the terms of dx: |dy| * rstd * |w|."""
    return mag(dy) * mag(rstd) * (1.0 if w is None else mag(w))


def sum_terms(dy):
    """Bound on the terms of dweight/dbias = sums of dy*xhat / dy (|xhat| < 4
    for the random data used)."""
    return 4.0 * float(np.sum(np.abs(np.asarray(dy, np.float64))))


def fd_grad(f, a, h=1e-3):
    """Fourth-order central differences of the scalar f with respect to every
    element of ``a`` (modified in place and restored).

    Truncation error O(h^4 f^(5)) ~ 1e-12 and rounding O(eps |f| / h) ~ 1e-13
    for the O(1) inputs used, so a 1e-6 tolerance has a wide margin while any
    wrong formula is off by O(1)."""
    g = np.zeros(a.shape)
    it = np.nditer(a, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        v = a[i]
        vals = []
        for s in (2, 1, -1, -2):
            a[i] = v + s * h
            vals.append(f())
        a[i] = v
        g[i] = (-vals[0] + 8 * vals[1] - 8 * vals[2] + vals[3]) / (12 * h)
    return g


def assert_fd_close(got, fd, what):
    # see fd_grad: 1e-6 relative to the largest gradient component.
    assert_close(got, fd, 1e-6, 1e-6 * max(mag(fd), 1e-3), what=what)


def fd_check(loss, grads, arrays, names):
    """Every gradient in ``grads`` against finite differences of ``loss``."""
    for g, a, n in zip(grads, arrays, names):
        if a is None:
            continue
        assert_fd_close(g, fd_grad(loss, a), f"d{n} vs finite differences")


# --------------------------------------------------------------------------
# float64 references: Standardizer and diagnose
# --------------------------------------------------------------------------
def ref_standardize_stats(X, axis=0, ddof=0, sample_weight=None, nan_policy="omit"):
    """float64 reference (mean, var, count) of shape F of a Standardizer fit.

    Two-pass with one correction step of the mean; weights follow the
    Standardizer (length = X.shape[first reduced axis], broadcast over the
    other reduced axes); NaNs are omitted (or propagate)."""
    X = np.asarray(X, dtype=np.float64)
    red = normalize_axes(axis, X.ndim)
    kept = tuple(i for i in range(X.ndim) if i not in red)
    F = tuple(X.shape[i] for i in kept)
    nf = math.prod(F)
    Z = np.transpose(X, red + kept).reshape(-1, nf)
    if sample_weight is None:
        w = np.ones(Z.shape[0])
    else:
        inner = math.prod(X.shape[i] for i in red[1:])
        w = np.repeat(np.asarray(sample_weight, np.float64), inner)
    nan = np.isnan(Z)
    W = w[:, None] * ~nan
    Zc = np.where(nan, 0.0, Z)
    with np.errstate(all="ignore"):
        cnt = W.sum(0)
        m0 = (W * Zc).sum(0) / cnt
        m = m0 + (W * (Zc - m0)).sum(0) / cnt
        v = (W * (Zc - m) ** 2).sum(0) / (cnt - ddof)
    if nan_policy == "propagate":
        bad = nan.any(0)
        m = np.where(bad, np.nan, m)
        v = np.where(bad, np.nan, v)
    return m.reshape(F), v.reshape(F), cnt.reshape(F)


def fsum_stats(x, axis, weights=None):
    """float64 (count, mean, var) of the finite values along ``axis`` with
    exactly rounded sums (math.fsum), weighted along the first reduced axis
    when weights are given."""
    axes = normalize_axes(axis, x.ndim)
    kept = [i for i in range(x.ndim) if i not in axes]
    xt = np.transpose(x, list(axes) + kept).astype(np.float64)
    flat = xt.reshape(-1, math.prod(x.shape[i] for i in kept))
    if weights is None:
        w = np.ones(flat.shape[0])
    else:
        rest = flat.shape[0] // len(weights)
        w = np.repeat(weights, rest)
    count, mean, var = [], [], []
    for col in flat.T:
        ok = np.isfinite(col)
        v, ww = col[ok], w[ok]
        total = math.fsum(ww)
        m = math.fsum(ww * v) / total if total else np.nan
        count.append(total)
        mean.append(m)
        var.append(math.fsum(ww * (v - m) ** 2) / total if total else np.nan)
    shape = tuple(x.shape[i] for i in kept)
    return (
        np.array(count).reshape(shape),
        np.array(mean).reshape(shape),
        np.array(var).reshape(shape),
    )


def constant_rule(var, mean, n):
    """scikit-learn's constant-feature rule (shared by Standardizer.scale_
    and DataReport.constant): the variance is within rounding noise of the
    mean."""
    with np.errstate(all="ignore"):
        return var <= n * EPS64 * var + (n * mean * EPS64) ** 2


def ref_scale(var, mean, n):
    """sqrt(var) with scikit-learn's constant-feature rule (-> 1.0)."""
    var = np.asarray(var, np.float64)
    mean = np.asarray(mean, np.float64)
    n = np.asarray(n, np.float64)
    with np.errstate(all="ignore"):
        s = np.sqrt(var)
    return np.where(constant_rule(var, mean, n), 1.0, s)


def ref_diagnose(X, axis=0):
    """Every per-feature field of a DataReport, from NumPy nan-functions in
    float64 over the finite values."""
    X = np.asarray(X)
    red = normalize_axes(axis, X.ndim)
    kept = tuple(i for i in range(X.ndim) if i not in red)
    F = tuple(X.shape[i] for i in kept)
    Z = np.transpose(X.astype(np.float64), red + kept).reshape(-1, math.prod(F))
    fin = np.isfinite(Z)
    Zf = np.where(fin, Z, np.nan)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        mean = np.nanmean(Zf, axis=0)
        std = np.sqrt(np.nanmean((Zf - mean) ** 2, axis=0))
        mn = np.nanmin(Zf, axis=0)
        mx = np.nanmax(Zf, axis=0)
        amax = np.nan_to_num(np.nanmax(np.abs(Zf), axis=0))
    out = dict(
        count=fin.sum(0),
        nan_count=np.isnan(Z).sum(0),
        inf_count=np.isinf(Z).sum(0),
        mean=mean,
        std=std,
        min=mn,
        max=mx,
        amax=amax,
        n_samples=Z.shape[0],
        feature_shape=F,
        n_features=math.prod(F),
    )
    return {k: (v.reshape(F) if isinstance(v, np.ndarray) else v) for k, v in out.items()}


# --------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------
# Dimension sizes that hit singleton dims, SIMD tails and register-width
# boundaries (8 float32 lanes for AVX2, 16 for AVX-512; 4/8 for float64).
EDGE_SIZES = [1, 7, 15, 16, 17, 33]
# The same with empty and tiny dims, for the reductions.
DIM_SIZES = [0, 1, 2, 3, 7, 15, 16, 17, 33]
# The native kernels run on one thread up to this many elements and split
# the work between threads above it (kParallelMinElements in the C++).
THREAD_THRESHOLD = 1 << 15
# Memory layouts of with_layout().
LAYOUTS = ["C", "F", "transpose", "step", "negstep", "broadcast"]
# The layouts that keep every value distinct ("broadcast" duplicates slices,
# which makes rows constant and is tested separately).
NORM_LAYOUTS = ["C", "F", "transpose", "step", "negstep"]


# Every loop of the native moments and affine kernels, each chosen by the
# strides of the (A, C, B) view, on sizes around its block boundaries
# (4096-element chunks, 2**18-element groups, 512-channel tiles, SIMD widths):
# - rows along B (NCHW, axis=-1, axis=None), one group and several groups
# - channels with unit stride (NHWC, 2-D axis=0), one group and several
# - channels with a stride (small B, many channels)
# - B == 1 with A as the row (Fortran 2-D)
# - plain strided loops
# (shape, axis reduced, order) -> exercises the named path.
KERNEL_PATHS = {
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


# Outputs of at least this many bytes are written with streaming
# (non-temporal) stores by the native kernels.
STREAM_BYTES = 8 << 20


def make_values(rng, shape, dtype, kind):
    """Values of any dtype: "normal" (offset + scale * randn), "ints" or
    "const"."""
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return rng.random(shape) < (0.5 if kind != "const" else 1.1)
    if dtype.kind in "iu":
        if kind == "const":
            return np.full(shape, 7, dtype=dtype)
        return rng.integers(-1000, 1000, size=shape).astype(dtype)
    if kind == "const":
        return np.full(shape, 0.1, dtype=dtype)
    if kind == "ints":
        return rng.integers(-5, 5, size=shape).astype(dtype)
    # offset/scale pairs keep |mean|/std <= 5e3 so that the float64 reference
    # itself is accurate to well below the tolerances used.
    offset = rng.choice([0.0, 3.0, -50.0])
    scale = rng.choice([1e-2, 1.0, 10.0, 100.0])
    return (offset + scale * rng.standard_normal(shape)).astype(dtype)


def make_data(rng, shape, dtype, offset=None, scale=None):
    """Floating-point data offset + scale * randn (both drawn when None)."""
    if offset is None:
        offset = float(rng.choice([0.0, 0.5, -3.0]))
    if scale is None:
        scale = float(rng.choice([0.1, 1.0, 4.0]))
    return (offset + scale * rng.standard_normal(shape)).astype(dtype)


def _garbage(dtype):
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return np.nan  # reading a wrong element turns the result into NaN
    if dtype == np.bool_:
        return True
    return 12345


def _flip(a, mask):
    return a[tuple(slice(None, None, -1) if f else slice(None) for f in mask)]


def with_layout(a, layout, rng):
    """Return an array with the same values as ``a`` (except 'broadcast',
    which replaces some axes by a broadcast of their first slice) but with
    the memory layout named by ``layout``."""
    if layout == "C":
        return np.ascontiguousarray(a)
    if layout == "F":
        return np.asfortranarray(a)
    if layout == "transpose":
        perm = rng.permutation(a.ndim)
        base = np.ascontiguousarray(np.transpose(a, perm))
        return np.transpose(base, np.argsort(perm))
    if layout == "step":
        steps = rng.integers(1, 4, size=a.ndim)
        offs = rng.integers(0, 3, size=a.ndim)
        base = np.full(
            [o + s * k for o, s, k in zip(offs, a.shape, steps)], _garbage(a.dtype), dtype=a.dtype
        )
        idx = tuple(slice(o, o + s * k, k) for o, s, k in zip(offs, a.shape, steps))
        base[idx] = a
        return base[idx]
    if layout == "negstep":
        mask = rng.random(a.ndim) < 0.7
        if not mask.any():
            mask[0] = True
        return _flip(with_layout(_flip(a, mask), "step", rng), mask)
    if layout == "broadcast":
        mask = rng.random(a.ndim) < 0.5
        if not mask.any():
            mask[rng.integers(a.ndim)] = True
        small = a[tuple(slice(0, 1) if f else slice(None) for f in mask)]
        return np.broadcast_to(small, a.shape)
    raise AssertionError(layout)


def misaligned_empty(shape, dtype, offset_elems):
    """An uninitialized array of ``shape`` starting ``offset_elems`` past a
    64-byte boundary (streaming stores need a scalar head there)."""
    dtype = np.dtype(dtype)
    n = int(np.prod(shape))
    buf = np.empty(n + 64, dtype=dtype)
    start = (-buf.ctypes.data % 64) // dtype.itemsize + offset_elems
    return buf[start : start + n].reshape(shape)


# --------------------------------------------------------------------------
# hypothesis strategies
# --------------------------------------------------------------------------
@st.composite
def shapes(draw, min_dims=1, max_dims=4, max_size=20_000, allow_zero=True):
    """Shapes whose dims are drawn from DIM_SIZES, at most ``max_size`` elements."""
    nd = draw(st.integers(min_dims, max_dims))
    sizes = DIM_SIZES if allow_zero else [d for d in DIM_SIZES if d]
    shape, prod = [], 1
    for _ in range(nd):
        ok = [d for d in sizes if prod * max(d, 1) <= max_size]
        d = draw(st.sampled_from(ok))
        shape.append(d)
        prod *= max(d, 1)
    return tuple(shape)


@st.composite
def edge_shapes(draw, ndim, max_size=6000):
    """Shapes of ``ndim`` dims drawn from EDGE_SIZES (no empty dims)."""
    shape, prod = [], 1
    for _ in range(ndim):
        ok = [d for d in EDGE_SIZES if prod * d <= max_size]
        d = draw(st.sampled_from(ok))
        shape.append(d)
        prod *= d
    return tuple(shape)


@st.composite
def threshold_shapes(draw, min_dims=2, max_dims=4):
    """Shapes of THREAD_THRESHOLD - 1, THREAD_THRESHOLD or THREAD_THRESHOLD + k
    elements (one thread just below and at it, split work just above), with
    SIMD-tail sizes in the inner dims."""
    total = draw(
        st.sampled_from(
            [THREAD_THRESHOLD - 1, THREAD_THRESHOLD, THREAD_THRESHOLD + 1, THREAD_THRESHOLD + 17]
        )
    )
    nd = draw(st.integers(min_dims, max_dims))
    dims = []
    rest = total
    for _ in range(nd - 1):
        divisors = [d for d in (1, 2, 3, 7, 8, 15, 16, 17, 33) if rest % d == 0]
        d = draw(st.sampled_from(divisors))
        dims.append(d)
        rest //= d
    dims.append(rest)
    perm = draw(st.permutations(range(nd)))
    return tuple(dims[i] for i in perm)


@st.composite
def array_cases(
    draw,
    dtypes,
    min_dims=1,
    max_dims=4,
    max_size=20_000,
    allow_zero=True,
    layouts=LAYOUTS,
    kinds=("normal", "normal", "normal", "ints", "const"),
):
    """Arrays of the given dtypes, shapes, value kinds and memory layouts."""
    shape = draw(shapes(min_dims, max_dims, max_size, allow_zero))
    dtype = np.dtype(draw(st.sampled_from(dtypes)))
    kind = draw(st.sampled_from(kinds))
    layout = draw(st.sampled_from(layouts))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    return with_layout(make_values(rng, shape, dtype, kind), layout, rng)


@st.composite
def axes_for(draw, ndim):
    """None, an int (possibly negative) or a tuple of distinct axes."""
    which = draw(st.sampled_from(["none", "int", "tuple"]))
    if which == "none":
        return None
    if which == "int":
        ax = draw(st.integers(0, ndim - 1))
        return ax - ndim if draw(st.booleans()) else ax
    axes = draw(st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True))
    return tuple(a - ndim if draw(st.booleans()) else a for a in axes)


@st.composite
def backward_cases(draw, kind):
    """A backward case of ``kind`` ("layer", "rms", "group", "instance",
    "batch"): shape (channels first for the channel norms), axis, groups,
    dtype, seed, layouts of x and dy, weighted or not."""
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    seed = draw(st.integers(0, 2**32 - 1))
    lay_x = draw(st.sampled_from(NORM_LAYOUTS))
    lay_dy = draw(st.sampled_from(NORM_LAYOUTS))
    weighted = draw(st.booleans())
    if kind in ("layer", "rms"):
        ndim = draw(st.integers(1, 4))
        shape = draw(edge_shapes(ndim))
        axis = draw(st.sampled_from([-1, (-2, -1)] if ndim >= 2 else [-1]))
        return dict(
            shape=shape,
            axis=axis,
            G=None,
            dtype=dtype,
            seed=seed,
            lay_x=lay_x,
            lay_dy=lay_dy,
            weighted=weighted,
        )
    ndim = draw(st.integers(2, 4))
    shape = list(draw(edge_shapes(ndim)))
    G = None
    if kind == "group":
        G = draw(st.sampled_from([1, 2, 3, 4]))
        shape[1] = G * draw(st.sampled_from([1, 3, 4]))
        if shape[0] * (shape[1] // G) * int(np.prod(shape[2:])) == 1:
            shape[0] = 7  # torch (and bnfast) reject a single value per group
    if kind == "instance" and int(np.prod(shape[2:])) < 2:
        shape.append(draw(st.sampled_from([7, 17])))
    if kind == "batch" and shape[0] * int(np.prod(shape[2:])) < 2:
        shape[0] = 7
    axis = draw(st.sampled_from([1, -1]))
    return dict(
        shape=tuple(shape),
        axis=axis,
        G=G,
        dtype=dtype,
        seed=seed,
        lay_x=lay_x,
        lay_dy=lay_dy,
        weighted=weighted,
    )


def prepare_backward_case(case, channels):
    """(rng, x, dy) of a backward_cases() case, in its layouts; with
    ``channels`` the drawn (channels first) shape moves them to ``axis``."""
    rng = np.random.default_rng(case["seed"])
    dtype = case["dtype"]
    x = make_data(rng, case["shape"], dtype)
    dy = make_data(rng, case["shape"], dtype, offset=0.0, scale=1.0)
    if channels:
        x = np.moveaxis(x, 1, case["axis"])
        dy = np.moveaxis(dy, 1, case["axis"])
    x = with_layout(x, case["lay_x"], rng)
    dy = with_layout(dy, case["lay_dy"], rng)
    return rng, x, dy


def check_grads(got, ref, dtype, names, terms=0.0):
    """assert_grad_close for each gradient (a None reference wants None)."""
    for g, r, n in zip(got, ref, names):
        if r is None:
            assert g is None, f"{n} should be None"
        else:
            assert_grad_close(g, r, dtype, n, terms)


# --------------------------------------------------------------------------
# valid backward calls of every family (for the argument-error tests)
# --------------------------------------------------------------------------
# (N, C, L) of the argument-error tests; group norm uses 3 groups.
ERR_N, ERR_C, ERR_L = 4, 6, 7


def backward_setup(name, dtype=np.float64):
    """x and a valid backward call of family member ``name`` ("batch",
    "layer", "rms", "group", "instance"): returns (x, call(dy, x, stats, w),
    stats, weight)."""
    x = make_data(np.random.default_rng(0), (ERR_N, ERR_C, ERR_L), dtype)
    w = np.ones(ERR_C, dtype)
    wl = np.ones(ERR_L, dtype)
    if name == "batch":
        _, bm, bi = bnfast.batch_norm(x, weight=w, training=True, return_stats=True)
        return (
            x,
            (lambda dy, x, s, w: bnfast.batch_norm_backward(dy, x, s[0], s[1], w)),
            (bm, bi),
            w,
        )
    if name == "layer":
        _, lm, lr = bnfast.layer_norm(x, wl, return_stats=True)
        return (
            x,
            (lambda dy, x, s, w: bnfast.layer_norm_backward(dy, x, s[0], s[1], w)),
            (lm, lr),
            wl,
        )
    if name == "group":
        _, gm, gr = bnfast.group_norm(x, 3, w, return_stats=True)
        return (
            x,
            (lambda dy, x, s, w: bnfast.group_norm_backward(dy, x, s[0], s[1], 3, w)),
            (gm, gr),
            w,
        )
    if name == "instance":
        _, im, ir = bnfast.instance_norm(x, w, return_stats=True)
        return (
            x,
            (lambda dy, x, s, w: bnfast.instance_norm_backward(dy, x, s[0], s[1], w)),
            (im, ir),
            w,
        )
    if name == "rms":
        _, rr = bnfast.rms_norm(x, wl, return_stats=True)
        return x, (lambda dy, x, s, w: bnfast.rms_norm_backward(dy, x, s[0], w)), (rr,), wl
    raise AssertionError(name)


def wrong_shapes(shape):
    """Shapes a statistic of ``shape`` must not be accepted with."""
    out = [shape + (2,), (shape[0] + 1,) + shape[1:], (7 * 11,)]
    if len(shape) == 2 and shape[0] != shape[1]:
        out.append(shape[::-1])
    return out


# --------------------------------------------------------------------------
# batch-norm backward cases: (shape, channel axis, order)
# --------------------------------------------------------------------------
# Rows along B, channels unit-stride, channels strided (small B), single
# channel, Fortran (generic/swapped), groups > 1.
BN_BACKWARD_CASES = [
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
BN_REDUCE_CASES = BN_BACKWARD_CASES + [
    ((7, 1023), 1, "C"),
    ((5, 1025), 1, "C"),
    ((3, 2050), 1, "C"),
    ((1, 3, 1), 1, "C"),
    ((20_001, 64), 1, "C"),
    ((9, 3, 2, 700), -1, "C"),
]
# The fused training backward (one channel per thread, several groups,
# streaming stores) at 1 and 2 threads, the two-pass form at 3.
BN_FUSED_CASES = [((3, 9, 100_000), 1, "C")]


# --------------------------------------------------------------------------
# the Standardizer: data, tolerances and checks against float64 references
# --------------------------------------------------------------------------
# Tolerances: std_rtol() (1e-12 relative for float64 input, 1e-6 for float32
# input) for mean_, var_, scale_ and transform outputs.  Absolute terms are
# only used where rounding of the *reference* dominates; each one is
# justified where it is defined (mean_atol, var_atol, tr_atol).
def sklearn_standardizer():
    """bnfast.sklearn.Standardizer, or skip when scikit-learn is absent."""
    pytest.importorskip("sklearn", reason="scikit-learn is not installed")
    import bnfast.sklearn

    return bnfast.sklearn.Standardizer


def mean_atol(X, axis=0):
    """Absolute slack for mean_ comparisons: the reference's float64 sum of
    up to ~1e5 terms (pairwise, NumPy/sklearn) rounds to <= ~17 eps*max|x|
    absolute; this only matters for means that are ~0 relative to the data."""
    X = np.asarray(X, np.float64)
    red = normalize_axes(axis, X.ndim)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mx = np.nanmax(np.abs(X), axis=red) if X.size else 0.0
    return 32 * EPS64 * np.nan_to_num(mx)


def var_atol(X, axis=0):
    """Absolute slack for var_: a reference mean off by ~eps*max|x| gives a
    variance floor of ~(eps*max|x|)**2 for (near-)constant features (e.g.
    sklearn's var_ of a column of 0.1 is ~1e-34, not 0)."""
    return mean_atol(X, axis) ** 2


def tr_atol(mean, scale, dtype, xshape, axis=0):
    """Absolute slack for transform outputs near 0.

    float32: the contract allows |mean_|/scale_ * 2**-23 (sklearn / a float32
    kernel rounds X - mean_ in float32).  float64: both sides round mean_
    itself to a few ulps, which an output near 0 inherits as
    ~|mean_|/scale_ * eps; 8 eps is used."""
    if mean is None:
        return 0.0
    c = 2.0**-23 if np.dtype(dtype) == np.float32 else 8 * EPS64
    scale = 1.0 if scale is None else np.asarray(scale, np.float64)
    with np.errstate(all="ignore"):
        a = np.abs(np.asarray(mean, np.float64)) / scale * c
    a = np.nan_to_num(a)
    return np.asarray(a).reshape(keepdims_shape(xshape, axis)) if np.ndim(a) else a


def std_out_dtype(dtype):
    dtype = np.dtype(dtype)
    return dtype if dtype in (np.float32, np.float64) else np.dtype(np.float64)


def expected_transform(st_, X, axis=0):
    """(X - mean_)/scale_ in float64 from the fitted attributes."""
    y = np.asarray(X, np.float64)
    bs = keepdims_shape(np.shape(X), axis)
    if st_.with_mean:
        y = y - np.asarray(st_.mean_, np.float64).reshape(bs)
    if st_.with_std:
        y = y / np.asarray(st_.scale_, np.float64).reshape(bs)
    return y


def check_transform(st_, X, axis=0):
    """transform and inverse_transform agree with the fitted attributes."""
    X = np.asarray(X)
    y = st_.transform(X)
    assert isinstance(y, np.ndarray)
    assert y.shape == X.shape
    assert y.dtype == std_out_dtype(X.dtype)
    mean = st_.mean_ if st_.with_mean else None
    scale = st_.scale_ if st_.with_std else None
    atol = tr_atol(mean, scale, std_out_dtype(X.dtype), X.shape, axis)
    assert_close(y, expected_transform(st_, X, axis), std_rtol(y.dtype), atol, "transform")
    z = st_.inverse_transform(y)
    assert z.dtype == y.dtype and z.shape == X.shape
    bs = keepdims_shape(X.shape, axis)
    want = np.asarray(y, np.float64)
    if st_.with_std:
        want = want * np.asarray(st_.scale_).reshape(bs)
    if st_.with_mean:
        want = want + np.asarray(st_.mean_).reshape(bs)
    # inverse: an absolute term of a few ulps of |mean_| (the sum of the
    # scaled value and mean_ rounds relative to |mean_| when they cancel).
    c = 2.0**-23 if y.dtype == np.float32 else 8 * EPS64
    inv_atol = 0.0
    if st_.with_mean:
        inv_atol = (np.abs(np.nan_to_num(np.asarray(st_.mean_))) * c).reshape(bs)
    assert_close(z, want, std_rtol(y.dtype), inv_atol, "inverse_transform")
    return y


def check_attrs(st_, X, axis=0, ddof=0, sample_weight=None, nan_policy="omit"):
    """mean_/var_/scale_/n_samples_seen_ against the float64 reference."""
    m, v, n = ref_standardize_stats(X, axis, ddof, sample_weight, nan_policy)
    rtol = std_rtol(np.asarray(X).dtype)
    F = m.shape
    assert tuple(st_.feature_shape_) == F
    assert st_.n_features_in_ == math.prod(F)
    assert isinstance(st_.n_features_in_, (int, np.integer))
    if st_.with_mean or st_.with_std:
        assert st_.mean_.dtype == np.float64 and st_.mean_.shape == F
        assert_close(st_.mean_, m, rtol, mean_atol(X, axis), "mean_")
    else:
        assert st_.mean_ is None
    if st_.with_std:
        assert st_.var_.dtype == np.float64 and st_.var_.shape == F
        assert st_.scale_.dtype == np.float64 and st_.scale_.shape == F
        assert_close(st_.var_, v, rtol, var_atol(X, axis), "var_")
        assert_close(st_.scale_, ref_scale(v, m, n), rtol, 0.0, "scale_")
    else:
        assert st_.var_ is None
        assert st_.scale_ is None
    seen = np.broadcast_to(np.asarray(st_.n_samples_seen_, np.float64), F)
    assert_close(seen, n, 1e-12, 0, "n_samples_seen_")


# (offset, scale) per column: offsets up to 1e4 times the spread; varied scales.
COLS_FIT = [
    (1e4, 1.0),
    (-250.0, 0.01),
    (3.0, 10.0),
    (0.0, 1e3),
    (1e3, 0.5),
    (-7e3, 3.0),
    (0.0, 1.0),
]


# for sklearn partial_fit parity: sklearn's own incremental update loses
# ~offset/scale * 1e-16 relative per chunk, so keep offset/scale <= 100 there.
COLS_PF = [(100.0, 1.0), (-20.0, 0.5), (0.0, 1e3), (5.0, 10.0), (-1.0, 0.01)]


def f32_exact(w, dtype):
    """sklearn casts sample_weight to X's dtype; for float32 X use weights
    that float32 represents exactly so both sides weigh the same values."""
    return w.astype(np.float32).astype(np.float64) if np.dtype(dtype) == np.float32 else w


def make_2d(rng, n, cols=COLS_FIT, dtype=np.float64):
    off = np.array([c[0] for c in cols])
    sc = np.array([c[1] for c in cols])
    return (off + sc * rng.standard_normal((n, len(cols)))).astype(dtype)


def chunk_sizes(kind, n):
    if kind == "rows1":
        return [1] * n
    if kind == "uneven":
        pat = [1, 16, 17, 33, 2, 1, 7, 64, 3]
    elif kind == "with_empty":
        pat = [5, 0, 1, 0, 40]
    else:
        raise AssertionError(kind)
    out, tot, i = [], 0, 0
    while tot < n:
        s = min(pat[i % len(pat)], n - tot)
        out.append(s)
        tot += s
        i += 1
    return out


def chunks(X, sizes):
    start = 0
    for s in sizes:
        yield X[start : start + s]
        start += s
    assert start == X.shape[0]


def assert_same_as_sklearn(bn, sk, X, rtol, sample_weight=None):
    assert_close(bn.mean_, sk.mean_, rtol, mean_atol(X), "mean_ vs sklearn")
    assert_close(bn.var_, sk.var_, rtol, var_atol(X), "var_ vs sklearn")
    assert_close(bn.scale_, sk.scale_, rtol, 0.0, "scale_ vs sklearn")
    F = bn.mean_.shape
    assert_close(
        np.broadcast_to(np.asarray(bn.n_samples_seen_, float), F),
        np.broadcast_to(np.asarray(sk.n_samples_seen_, float), F),
        1e-12,
        0,
        "n_samples_seen_ vs sklearn",
    )
    yb, ys = bn.transform(X), sk.transform(X)
    assert yb.dtype == ys.dtype == X.dtype
    # outputs near 0 inherit the difference of the two mean_ values, which
    # the mean_ check above bounds by mean_atol (sklearn's np.sum of a
    # column of 0.1 is off by ~14 ulps): add that, divided by scale_.
    with np.errstate(all="ignore"):
        atol = tr_atol(bn.mean_, bn.scale_, X.dtype, X.shape) + np.nan_to_num(
            mean_atol(X) / bn.scale_
        )
    assert_close(yb, ys, rtol, atol, "transform vs sklearn")
    zb, zs = bn.inverse_transform(ys), sk.inverse_transform(ys)
    c = 2.0**-23 if X.dtype == np.float32 else 8 * EPS64
    assert_close(zb, zs, rtol, np.abs(np.nan_to_num(bn.mean_)) * c, "inverse_transform vs sklearn")


def no_all_nan_column(X, sizes):
    return all(not np.isnan(c).all(axis=0).any() for c in chunks(X, sizes) if len(c))


def peak_traced_bytes(fn):
    """Peak bytes allocated (as NumPy reports them to tracemalloc) while fn runs."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        fn()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak - base


def short_first_axis_case(case):
    """(x, axis) whose first reduced axis is short (one or two indices) and
    big (16-32 MB as float64): a slab cut along that axis only would be
    (almost) all of x."""
    if case == "uint8-short-first-axis":
        return np.ones((1, 1024, 1024, 3), np.uint8), (0, 1, 2)
    if case == "int16-axis-None":
        return np.ones((2, 2_000_000), np.int16), None
    if case == "float64-axis-None":
        return np.random.default_rng(0).random((2, 2_000_000)), None
    raise AssertionError(case)
