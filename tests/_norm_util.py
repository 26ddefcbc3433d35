"""float64 NumPy references, torch adapters, tolerances, finite differences and
hypothesis strategies for the layer/group/instance/RMS norm tests.

Everything here is computed in float64 with plain NumPy (or with torch, the
oracle); bnfast is never used to produce a reference value.
"""
import numpy as np
from hypothesis import strategies as st

from _util import _accurate_mean, with_layout

# Sizes that hit singleton dims, SIMD tails and register-width boundaries.
EDGE = [1, 7, 15, 16, 17, 33]
# Layouts from _util.with_layout that keep every value distinct ("broadcast"
# duplicates slices, which makes rows constant and is tested separately).
NORM_LAYOUTS = ["C", "F", "transpose", "step", "negstep"]


# --------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------
def norm_axes(axis, ndim):
    if isinstance(axis, (int, np.integer)):
        axis = (int(axis),)
    return tuple(sorted(a % ndim for a in axis))


def param_shape(shape, axes):
    """Shape of weight/bias of a layer/RMS norm over ``axes``."""
    return tuple(shape[a] for a in axes)


def bcast(param, shape, axes):
    """Reshape a parameter living on ``axes`` so it broadcasts against ``shape``."""
    bs = [shape[i] if i in axes else 1 for i in range(len(shape))]
    return np.asarray(param, np.float64).reshape(bs)


def rtol_for(dtype):
    """Forward tolerance from the spec: 1e-5 for float32, 1e-12 for float64."""
    return 1e-5 if np.dtype(dtype) == np.float32 else 1e-12


def grad_rtol_for(dtype):
    """Backward tolerance from the spec: 1e-4 for float32, 1e-10 for float64."""
    return 1e-4 if np.dtype(dtype) == np.float32 else 1e-10


def assert_close(got, ref, rtol, atol=0.0, extra=None, what="values"):
    """|got - ref| <= rtol*|ref| + atol (+ extra, an array of per-element slack).

    Reports the worst element so a failure is diagnosable.
    """
    got = np.asarray(got)
    ref = np.asarray(ref)
    assert got.shape == ref.shape, f"{what}: shape {got.shape} != expected {ref.shape}"
    g = got.astype(np.float64)
    r = ref.astype(np.float64)
    err = np.abs(g - r)
    tol = rtol * np.abs(r) + atol
    if extra is not None:
        tol = tol + extra
    bad = ~(err <= tol)
    if bad.any():
        i = tuple(np.argwhere(bad)[0])
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {bad.size} elements out of tolerance "
            f"(max err {np.nanmax(err):.3g}, rtol {rtol:g}, atol {atol:.3g}); "
            f"first at {i}: got {g[i]!r} expected {r[i]!r}"
        )


def mag(a):
    a = np.asarray(a, np.float64)
    return float(np.max(np.abs(a))) if a.size else 0.0


def assert_forward_close(y, yref, x, mean, rstd, axes, dtype, w=None, k=16.0):
    """Compare a normalized output with a (float64 or torch) reference.

    Base tolerance rtol = atol/max|yref| = 1e-5 (float32) / 1e-12 (float64)
    as in the spec.  ``amp`` adds the unavoidable rounding of x - mean in the
    input precision (and of the reference's own mean): k ulps of |x|+|mean|
    amplified by rstd*|w|.  It only matters for rows whose spread is small
    compared to their mean (offset data, near-constant rows).
    """
    dtype = np.dtype(dtype)
    rtol = rtol_for(dtype)
    x64 = np.asarray(x, np.float64)
    shape = x64.shape
    m = np.asarray(mean, np.float64)
    r = np.asarray(rstd, np.float64)
    # mean/rstd are given with keepdims (broadcastable to x)
    amp = k * np.finfo(dtype).eps * (np.abs(x64) + np.abs(m)) * r
    if w is not None:
        amp = amp * np.abs(bcast(w, shape, axes)) if axes is not None else amp * np.abs(w)
    assert_close(y, yref, rtol, rtol * max(mag(yref), 1.0), extra=amp, what="forward output")


# --------------------------------------------------------------------------
# float64 forward references (return keepdims stats)
# --------------------------------------------------------------------------
def ref_layer_norm(x, w=None, b=None, axis=-1, eps=1e-5):
    x64 = np.asarray(x, np.float64)
    axes = norm_axes(axis, x64.ndim)
    mean = _accurate_mean(x64, axes)
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
    axes = norm_axes(axis, x64.ndim)
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
    mean = _accurate_mean(g, (2,))
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
    axes = norm_axes(axis, x64.ndim)
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
    axes = norm_axes(axis, x64.ndim)
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
    mean = _accurate_mean(gx, (2,))
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
# finite differences (float64)
# --------------------------------------------------------------------------
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


# --------------------------------------------------------------------------
# torch adapters
# --------------------------------------------------------------------------
def tt(torch, a, grad=False):
    if a is None:
        return None
    t = torch.from_numpy(np.array(a, copy=True, order="C"))
    if grad:
        t.requires_grad_(True)
    return t


def to_np(t):
    return None if t is None else t.detach().numpy()


# --------------------------------------------------------------------------
# hypothesis strategies
# --------------------------------------------------------------------------
@st.composite
def edge_shape(draw, ndim, max_size=6000):
    shape, prod = [], 1
    for _ in range(ndim):
        ok = [d for d in EDGE if prod * d <= max_size]
        d = draw(st.sampled_from(ok))
        shape.append(d)
        prod *= d
    return tuple(shape)


def make_data(rng, shape, dtype, offset=None, scale=None):
    if offset is None:
        offset = float(rng.choice([0.0, 0.5, -3.0]))
    if scale is None:
        scale = float(rng.choice([0.1, 1.0, 4.0]))
    return (offset + scale * rng.standard_normal(shape)).astype(dtype)


def layout(a, name, rng):
    return with_layout(a, name, rng)
