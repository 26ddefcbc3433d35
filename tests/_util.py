"""Reference implementations, tolerances and hypothesis strategies shared by the tests."""
import warnings

import numpy as np
from hypothesis import strategies as st

EDGE_SIZES = [1, 7, 15, 16, 17, 33]


# --------------------------------------------------------------------------
# float64 references
# --------------------------------------------------------------------------
def _accurate_mean(x64, axis):
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
        m = _accurate_mean(x64, axis)
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
        mean = _accurate_mean(x64, red)
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


def float_eps(dtype):
    return float(np.finfo(dtype).eps)


def result_dtype(in_dtype):
    """Output dtype of mean_var, following np.mean."""
    in_dtype = np.dtype(in_dtype)
    if in_dtype in (np.float16, np.float32, np.float64):
        return in_dtype
    return np.dtype(np.float64)


def assert_stats_close(got_mean, got_var, x, axis=None, ddof=0, keepdims=False, out_dtype=None):
    """Compare mean/var with the float64 reference.

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
# hypothesis strategies
# --------------------------------------------------------------------------
# Dimension sizes that hit empty/singleton dims, SIMD tails and register-width
# boundaries (8 float32 lanes for AVX2, 16 for AVX-512).
DIM_SIZES = [0, 1, 2, 3, 7, 15, 16, 17, 33]
LAYOUTS = ["C", "F", "transpose", "step", "negstep", "broadcast"]


@st.composite
def shapes(draw, min_dims=1, max_dims=4, max_size=20_000, allow_zero=True):
    nd = draw(st.integers(min_dims, max_dims))
    sizes = DIM_SIZES if allow_zero else [d for d in DIM_SIZES if d]
    shape, prod = [], 1
    for _ in range(nd):
        ok = [d for d in sizes if prod * max(d, 1) <= max_size]
        d = draw(st.sampled_from(ok))
        shape.append(d)
        prod *= max(d, 1)
    return tuple(shape)


def make_values(rng, shape, dtype, kind):
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
        base = np.full([o + s * k for o, s, k in zip(offs, a.shape, steps)], _garbage(a.dtype), dtype=a.dtype)
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


@st.composite
def array_cases(draw, dtypes, min_dims=1, max_dims=4, max_size=20_000, allow_zero=True,
                layouts=LAYOUTS, kinds=("normal", "normal", "normal", "ints", "const")):
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


def normalize_axes(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, int):
        axis = (axis,)
    return tuple(sorted(a % ndim for a in axis))


def reduced_count(shape, axis):
    axes = normalize_axes(axis, len(shape))
    return int(np.prod([shape[a] for a in axes], dtype=np.int64))


def output_count(shape, axis):
    axes = normalize_axes(axis, len(shape))
    return int(np.prod([s for i, s in enumerate(shape) if i not in axes], dtype=np.int64))
