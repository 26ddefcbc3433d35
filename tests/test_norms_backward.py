"""Backward functions: batch/layer/group/instance/RMS norm.

* parity with torch.autograd of the same forward (skipped without torch),
* float64 finite differences of independent NumPy forwards (no torch),
* hypothesis properties vs analytic float64 references over edge shapes,
  channels first/last, dtypes and non-contiguous x / dy,
* finite gradients for constant rows and thread-count independence.

Tolerances: rtol 1e-4 (float32) / 1e-10 (float64) from the spec, with an
atol of the same order times the largest reference component: gradients are
sums whose individual components can cancel to ~0, so a purely relative
bound is meaningless for those components.
"""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import bnfast
from _norm_util import (
    NORM_LAYOUTS,
    assert_close,
    assert_fd_close,
    edge_shape,
    fd_grad,
    grad_rtol_for,
    layout,
    make_data,
    mag,
    norm_axes,
    param_shape,
    ref_group_norm,
    ref_group_norm_backward,
    ref_instance_norm_backward,
    ref_layer_norm,
    ref_layer_norm_backward,
    ref_rms_norm,
    ref_rms_norm_backward,
    tt,
)
from _util import ref_batch_norm

DTYPES = [np.float32, np.float64]


def _torch():
    return pytest.importorskip("torch", reason="torch is not installed: torch parity tests skipped")


def _grad_close(got, ref, dtype, what, terms=0.0):
    """``terms``: magnitude of the individual terms (e.g. rstd*|dy*w| for dx).
    When the true gradient is ~0 (a normalized size of 1, or exact
    cancellation) 16 ulps of the terms is the rounding noise of any
    implementation, torch included."""
    rtol = grad_rtol_for(dtype)
    got = np.asarray(got)
    assert got.dtype == np.dtype(dtype), f"{what}: dtype {got.dtype} != {np.dtype(dtype)}"
    atol = rtol * mag(ref) + 16 * np.finfo(dtype).eps * terms
    assert_close(got, ref, rtol, atol, what=what)


def _terms(dy, rstd, w):
    return mag(dy) * mag(rstd) * (1.0 if w is None else mag(w))


def _sum_terms(dy):
    """Bound on the terms of dweight/dbias = sums of dy*xhat / dy (|xhat| < 4
    for the random data used)."""
    return 4.0 * float(np.sum(np.abs(np.asarray(dy, np.float64))))


def _torch_grads(torch, fwd, dy, arrays):
    """Run ``fwd`` on float64 tensors made from ``arrays`` (None allowed) and
    back-propagate dy.  float64 is the precise gradient of the same forward
    (torch's own float32 gradients are themselves only good to ~1e-5)."""
    ts = [None if a is None else tt(torch, np.asarray(a, np.float64), grad=True) for a in arrays]
    y = fwd(*ts)
    y.backward(tt(torch, np.asarray(dy, np.float64)))
    return [None if t is None else t.grad.numpy() for t in ts]


def _params(rng, shape, dtype, weighted):
    if not weighted:
        return None, None
    return (rng.standard_normal(shape) + 1).astype(dtype), rng.standard_normal(shape).astype(dtype)


# ==========================================================================
# torch autograd parity
# ==========================================================================
BN_SHAPES = [(16, 7), (7, 33), (4, 16, 17), (2, 15, 1), (3, 5, 4, 4), (1, 3, 1023), (2, 3, 2, 3, 2)]


LN_CASES = [((7, 33), -1), ((16, 17), -1), ((3, 1023), -1), ((33, 1), -1), ((4096,), -1),
            ((2, 7, 16), (-2, -1)), ((3, 1, 15), (-2, -1)), ((2, 2, 15, 16), (-2, -1))]


@pytest.mark.parametrize("weighted", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,axis", LN_CASES, ids=str)
def test_layer_norm_backward_matches_torch(backend, shape, axis, dtype, weighted):
    torch = _torch()
    F = torch.nn.functional
    rng = np.random.default_rng(sum(shape))
    x = make_data(rng, shape, dtype, offset=-1.0, scale=2.0)
    dy = make_data(rng, shape, dtype, offset=0.2, scale=1.0)
    axes = norm_axes(axis, x.ndim)
    nshape = param_shape(shape, axes)
    w, b = _params(rng, nshape, dtype, weighted)
    eps = 1e-5
    _, mean, rstd = bnfast.layer_norm(x, w, b, axis=axis, eps=eps, return_stats=True)
    dx, dw, db = bnfast.layer_norm_backward(dy, x, mean, rstd, w, axis=axis)
    gx, gw, gb = _torch_grads(torch, lambda xt, wt, bt: F.layer_norm(xt, list(nshape), wt, bt, eps),
                              dy, [x, w, b])
    _grad_close(dx, gx, dtype, "dx", _terms(dy, rstd, w))
    other = tuple(i for i in range(x.ndim) if i not in axes)
    if weighted:
        _grad_close(dw, gw, dtype, "dweight", _sum_terms(dy))
        _grad_close(db, gb, dtype, "dbias", _sum_terms(dy))
    else:
        assert dw is None
        _grad_close(db, dy.astype(np.float64).sum(axis=other), dtype, "dbias")
    assert np.shape(db) == nshape


GN_CASES = [((2, 6, 7), 3), ((3, 16, 17), 4), ((1, 33, 15), 11), ((4, 16, 1), 16),
            ((2, 15, 4, 4), 5), ((7, 4), 2), ((2, 32, 33), 1), ((1, 7, 2, 3, 2), 7)]


@pytest.mark.parametrize("weighted", [True, False])
@pytest.mark.parametrize("axis", [1, -1])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,G", GN_CASES, ids=str)
def test_group_norm_backward_matches_torch(backend, shape, G, dtype, axis, weighted):
    torch = _torch()
    F = torch.nn.functional
    rng = np.random.default_rng(sum(shape) * G)
    xf = make_data(rng, shape, dtype, offset=0.3, scale=1.2)
    dyf = make_data(rng, shape, dtype, offset=-0.2, scale=1.0)
    x = np.ascontiguousarray(np.moveaxis(xf, 1, axis))
    dy = np.ascontiguousarray(np.moveaxis(dyf, 1, axis))
    C = shape[1]
    w, b = _params(rng, C, dtype, weighted)
    eps = 1e-5
    _, mean, rstd = bnfast.group_norm(x, G, w, b, eps=eps, axis=axis, return_stats=True)
    dx, dw, db = bnfast.group_norm_backward(dy, x, mean, rstd, G, w, axis=axis)
    gx, gw, gb = _torch_grads(torch, lambda xt, wt, bt: F.group_norm(xt, G, wt, bt, eps), dyf, [xf, w, b])
    _grad_close(dx, np.moveaxis(gx, 1, axis), dtype, "dx", _terms(dy, rstd, w))
    if weighted:
        _grad_close(dw, gw, dtype, "dweight", _sum_terms(dy))
        _grad_close(db, gb, dtype, "dbias", _sum_terms(dy))
    else:
        assert dw is None
        red = tuple(i for i in range(xf.ndim) if i != 1)
        _grad_close(db, dyf.astype(np.float64).sum(axis=red), dtype, "dbias")


IN_SHAPES = [(2, 3, 7), (1, 16, 17), (3, 7, 4, 4), (4, 1, 33), (2, 5, 15, 1), (1, 3, 1024)]


@pytest.mark.parametrize("use_input_stats", [True, False])
@pytest.mark.parametrize("weighted", [True, False])
@pytest.mark.parametrize("axis", [1, -1])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", IN_SHAPES, ids=str)
def test_instance_norm_backward_matches_torch(backend, shape, dtype, axis, weighted, use_input_stats):
    torch = _torch()
    F = torch.nn.functional
    rng = np.random.default_rng(sum(shape) + 17)
    xf = make_data(rng, shape, dtype, offset=1.0, scale=0.9)
    dyf = make_data(rng, shape, dtype, offset=0.0, scale=1.0)
    x = np.ascontiguousarray(np.moveaxis(xf, 1, axis))
    dy = np.ascontiguousarray(np.moveaxis(dyf, 1, axis))
    C = shape[1]
    w, b = _params(rng, C, dtype, weighted)
    rm = rng.standard_normal(C).astype(dtype)
    rv = rng.uniform(0.5, 2.0, C).astype(dtype)
    eps = 1e-5
    rs = {} if use_input_stats else {"running_mean": rm, "running_var": rv}
    _, mean, rstd = bnfast.instance_norm(x, w, b, use_input_stats=use_input_stats, eps=eps, axis=axis,
                                         return_stats=True, **rs)
    dx, dw, db = bnfast.instance_norm_backward(dy, x, mean, rstd, w, axis=axis,
                                               use_input_stats=use_input_stats)

    def fwd(xt, wt, bt):
        r = (None, None) if use_input_stats else (tt(torch, rm.astype(np.float64)), tt(torch, rv.astype(np.float64)))
        return F.instance_norm(xt, r[0], r[1], wt, bt, use_input_stats=use_input_stats, eps=eps)

    gx, gw, gb = _torch_grads(torch, fwd, dyf, [xf, w, b])
    _grad_close(dx, np.moveaxis(gx, 1, axis), dtype, "dx", _terms(dy, rstd, w))
    if weighted:
        _grad_close(dw, gw, dtype, "dweight", _sum_terms(dy))
        _grad_close(db, gb, dtype, "dbias", _sum_terms(dy))
    else:
        assert dw is None
        red = tuple(i for i in range(xf.ndim) if i != 1)
        _grad_close(db, dyf.astype(np.float64).sum(axis=red), dtype, "dbias")


RMS_CASES = [((7, 33), -1), ((16, 17), -1), ((4096,), -1), ((3, 15, 16), (-2, -1)), ((33, 1), -1)]


@pytest.mark.parametrize("eps", [None, 1e-5])
@pytest.mark.parametrize("weighted", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,axis", RMS_CASES, ids=str)
def test_rms_norm_backward_matches_torch(backend, shape, axis, dtype, weighted, eps):
    torch = _torch()
    F = torch.nn.functional
    rng = np.random.default_rng(sum(shape) + 5)
    x = make_data(rng, shape, dtype, offset=0.4, scale=1.0)
    dy = make_data(rng, shape, dtype, offset=0.0, scale=1.0)
    axes = norm_axes(axis, x.ndim)
    nshape = param_shape(shape, axes)
    w = (rng.standard_normal(nshape) + 1).astype(dtype) if weighted else None
    _, rstd = bnfast.rms_norm(x, w, axis=axis, eps=eps, return_stats=True)
    dx, dw = bnfast.rms_norm_backward(dy, x, rstd, w, axis=axis)
    # torch's default eps follows the dtype of its input: use the float dtype of x explicitly
    teps = float(np.finfo(dtype).eps) if eps is None else eps
    gx, gw = _torch_grads(torch, lambda xt, wt: F.rms_norm(xt, list(nshape), wt, teps), dy, [x, w])
    _grad_close(dx, gx, dtype, "dx", _terms(dy, rstd, w))
    if weighted:
        _grad_close(dw, gw, dtype, "dweight", _sum_terms(dy))
    else:
        assert dw is None


# ==========================================================================
# float64 finite differences of independent NumPy forwards
# ==========================================================================
def _fd_check(loss, grads, arrays, names):
    for g, a, n in zip(grads, arrays, names):
        if a is None:
            continue
        assert_fd_close(g, fd_grad(loss, a), f"d{n} vs finite differences")


@pytest.mark.parametrize("shape,axis", [((3, 7), -1), ((2, 3, 4), (-2, -1)), ((5, 1), -1), ((4, 3), 0)], ids=str)
def test_layer_norm_backward_finite_differences(backend, shape, axis):
    rng = np.random.default_rng(22)
    x = make_data(rng, shape, np.float64)
    dy = rng.standard_normal(shape)
    nshape = param_shape(shape, norm_axes(axis, len(shape)))
    w, b = rng.standard_normal(nshape) + 1, rng.standard_normal(nshape)
    _, mean, rstd = bnfast.layer_norm(x, w, b, axis=axis, return_stats=True)
    grads = bnfast.layer_norm_backward(dy, x, mean, rstd, w, axis=axis)
    _fd_check(lambda: np.sum(ref_layer_norm(x, w, b, axis)[0] * dy), grads, [x, w, b],
              ["x", "weight", "bias"])


@pytest.mark.parametrize("axis", [1, -1])
def test_group_norm_backward_finite_differences(backend, axis):
    rng = np.random.default_rng(23)
    x = np.ascontiguousarray(np.moveaxis(make_data(rng, (2, 4, 3), np.float64), 1, axis))
    dy = rng.standard_normal(x.shape)
    w, b = rng.standard_normal(4) + 1, rng.standard_normal(4)
    _, mean, rstd = bnfast.group_norm(x, 2, w, b, axis=axis, return_stats=True)
    grads = bnfast.group_norm_backward(dy, x, mean, rstd, 2, w, axis=axis)
    _fd_check(lambda: np.sum(ref_group_norm(x, 2, w, b, 1e-5, axis)[0] * dy), grads, [x, w, b],
              ["x", "weight", "bias"])


@pytest.mark.parametrize("use_input_stats", [True, False])
@pytest.mark.parametrize("axis", [1, -1])
def test_instance_norm_backward_finite_differences(backend, axis, use_input_stats):
    rng = np.random.default_rng(24)
    x = np.ascontiguousarray(np.moveaxis(make_data(rng, (2, 3, 5), np.float64), 1, axis))
    dy = rng.standard_normal(x.shape)
    w, b = rng.standard_normal(3) + 1, rng.standard_normal(3)
    rm, rv = rng.standard_normal(3), rng.uniform(0.5, 2, 3)
    rs = {} if use_input_stats else {"running_mean": rm, "running_var": rv}
    _, mean, rstd = bnfast.instance_norm(x, w, b, axis=axis, use_input_stats=use_input_stats,
                                         return_stats=True, **rs)
    grads = bnfast.instance_norm_backward(dy, x, mean, rstd, w, axis=axis, use_input_stats=use_input_stats)
    ax = axis % x.ndim
    cs = [1] * x.ndim
    cs[ax] = 3

    def loss():
        if use_input_stats:
            y = ref_group_norm(x, 3, w, b, 1e-5, axis)[0]
        else:
            y = (x - rm.reshape(cs)) / np.sqrt(rv.reshape(cs) + 1e-5) * w.reshape(cs) + b.reshape(cs)
        return np.sum(y * dy)

    _fd_check(loss, grads, [x, w, b], ["x", "weight", "bias"])


@pytest.mark.parametrize("shape,axis", [((3, 7), -1), ((2, 3, 4), (-2, -1))], ids=str)
def test_rms_norm_backward_finite_differences(backend, shape, axis):
    rng = np.random.default_rng(25)
    x = make_data(rng, shape, np.float64)
    dy = rng.standard_normal(shape)
    w = rng.standard_normal(param_shape(shape, norm_axes(axis, len(shape)))) + 1
    _, rstd = bnfast.rms_norm(x, w, axis=axis, eps=1e-5, return_stats=True)
    grads = bnfast.rms_norm_backward(dy, x, rstd, w, axis=axis)
    _fd_check(lambda: np.sum(ref_rms_norm(x, w, axis, 1e-5)[0] * dy), grads, [x, w], ["x", "weight"])


# ==========================================================================
# hypothesis properties vs analytic float64 references
# ==========================================================================
@st.composite
def bwd_cases(draw, kind):
    dtype = draw(st.sampled_from(DTYPES))
    seed = draw(st.integers(0, 2**32 - 1))
    lay_x = draw(st.sampled_from(NORM_LAYOUTS))
    lay_dy = draw(st.sampled_from(NORM_LAYOUTS))
    weighted = draw(st.booleans())
    if kind in ("layer", "rms"):
        ndim = draw(st.integers(1, 4))
        shape = draw(edge_shape(ndim))
        axis = draw(st.sampled_from([-1, (-2, -1)] if ndim >= 2 else [-1]))
        return dict(shape=shape, axis=axis, G=None, dtype=dtype, seed=seed, lay_x=lay_x,
                    lay_dy=lay_dy, weighted=weighted)
    ndim = draw(st.integers(2, 4))
    shape = list(draw(edge_shape(ndim)))
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
    return dict(shape=tuple(shape), axis=axis, G=G, dtype=dtype, seed=seed, lay_x=lay_x,
                lay_dy=lay_dy, weighted=weighted)


def _prepare(case, channels):
    rng = np.random.default_rng(case["seed"])
    dtype = case["dtype"]
    x = make_data(rng, case["shape"], dtype)
    dy = make_data(rng, case["shape"], dtype, offset=0.0, scale=1.0)
    if channels:  # the drawn shape is channels first; move them to ``axis``
        x = np.moveaxis(x, 1, case["axis"])
        dy = np.moveaxis(dy, 1, case["axis"])
    x = layout(x, case["lay_x"], rng)
    dy = layout(dy, case["lay_dy"], rng)
    return rng, x, dy


def _check_all(got, ref, dtype, names, terms=0.0):
    for g, r, n in zip(got, ref, names):
        if r is None:
            assert g is None, f"{n} should be None"
        else:
            _grad_close(g, r, dtype, n, terms)


@settings(max_examples=25)
@given(case=bwd_cases("layer"))
def test_layer_norm_backward_property(backend, case):
    rng, x, dy = _prepare(case, channels=False)
    dtype, axis = case["dtype"], case["axis"]
    axes = norm_axes(axis, x.ndim)
    w = (rng.standard_normal(param_shape(x.shape, axes)) + 1).astype(dtype) if case["weighted"] else None
    _, mean, rstd = bnfast.layer_norm(x, w, axis=axis, return_stats=True)
    dx, dw, db = bnfast.layer_norm_backward(dy, x, mean, rstd, w, axis=axis)
    rdx, rdw, rdb = ref_layer_norm_backward(dy, x, w, axis)
    _check_all((dx, dw, db), (rdx, rdw if w is not None else None, rdb), dtype, ["dx", "dweight", "dbias"], _terms(dy, rstd, w))


@settings(max_examples=25)
@given(case=bwd_cases("rms"))
def test_rms_norm_backward_property(backend, case):
    rng, x, dy = _prepare(case, channels=False)
    dtype, axis = case["dtype"], case["axis"]
    axes = norm_axes(axis, x.ndim)
    w = (rng.standard_normal(param_shape(x.shape, axes)) + 1).astype(dtype) if case["weighted"] else None
    _, rstd = bnfast.rms_norm(x, w, axis=axis, return_stats=True)
    dx, dw = bnfast.rms_norm_backward(dy, x, rstd, w, axis=axis)
    rdx, rdw = ref_rms_norm_backward(dy, x, w, axis)
    _check_all((dx, dw), (rdx, rdw if w is not None else None), dtype, ["dx", "dweight"], _terms(dy, rstd, w))


@settings(max_examples=25)
@given(case=bwd_cases("group"))
def test_group_norm_backward_property(backend, case):
    rng, x, dy = _prepare(case, channels=True)
    dtype, axis, G = case["dtype"], case["axis"], case["G"]
    C = x.shape[axis]
    w = (rng.standard_normal(C) + 1).astype(dtype) if case["weighted"] else None
    _, mean, rstd = bnfast.group_norm(x, G, w, axis=axis, return_stats=True)
    dx, dw, db = bnfast.group_norm_backward(dy, x, mean, rstd, G, w, axis=axis)
    rdx, rdw, rdb = ref_group_norm_backward(dy, x, G, w, axis)
    _check_all((dx, dw, db), (rdx, rdw if w is not None else None, rdb), dtype, ["dx", "dweight", "dbias"], _terms(dy, rstd, w))


@settings(max_examples=25)
@given(case=bwd_cases("instance"))
def test_instance_norm_backward_property(backend, case):
    rng, x, dy = _prepare(case, channels=True)
    dtype, axis = case["dtype"], case["axis"]
    C = x.shape[axis]
    w = (rng.standard_normal(C) + 1).astype(dtype) if case["weighted"] else None
    _, mean, rstd = bnfast.instance_norm(x, w, axis=axis, return_stats=True)
    dx, dw, db = bnfast.instance_norm_backward(dy, x, mean, rstd, w, axis=axis)
    rdx, rdw, rdb = ref_instance_norm_backward(dy, x, w, axis)
    _check_all((dx, dw, db), (rdx, rdw if w is not None else None, rdb), dtype, ["dx", "dweight", "dbias"], _terms(dy, rstd, w))


# ==========================================================================
# constant rows: finite gradients
# ==========================================================================
@pytest.mark.parametrize("dtype", DTYPES)
def test_constant_rows_have_finite_gradients(backend, dtype):
    """var == 0 exactly, so rstd = 1/sqrt(eps) (finite): every gradient must be
    finite (a 0/0 from an implementation dividing by var or std would be NaN)."""
    rng = np.random.default_rng(9)
    v = dtype(1e4)
    eps = 1e-5

    def finite(*arrs):
        for a in arrs:
            if a is not None:
                assert np.all(np.isfinite(a)), a

    x = make_data(rng, (4, 33), dtype)
    x[1] = v
    dy = make_data(rng, x.shape, dtype)
    w = (rng.standard_normal(33) + 1).astype(dtype)
    _, m, r = bnfast.layer_norm(x, w, eps=eps, return_stats=True)
    finite(*bnfast.layer_norm_backward(dy, x, m, r, w))
    _, r = bnfast.rms_norm(x, w, eps=eps, return_stats=True)
    finite(*bnfast.rms_norm_backward(dy, x, r, w))
    x[:] = v  # a whole constant input
    _, m, r = bnfast.layer_norm(x, w, eps=eps, return_stats=True)
    finite(*bnfast.layer_norm_backward(dy, x, m, r, w))

    x = make_data(rng, (3, 6, 17), dtype)
    x[0, 2:4] = v
    x[1, 5] = v
    dy = make_data(rng, x.shape, dtype)
    wc = (rng.standard_normal(6) + 1).astype(dtype)
    _, m, r = bnfast.group_norm(x, 3, wc, eps=eps, return_stats=True)
    finite(*bnfast.group_norm_backward(dy, x, m, r, 3, wc))
    _, m, r = bnfast.instance_norm(x, wc, eps=eps, return_stats=True)
    finite(*bnfast.instance_norm_backward(dy, x, m, r, wc))
    xb = x.copy()
    xb[:, 1] = v
    _, m, r = bnfast.batch_norm(xb, weight=wc, training=True, eps=eps, return_stats=True)
    gb = bnfast.batch_norm_backward(dy, xb, m, r, wc)
    finite(*gb)
    # for a constant channel xhat == 0: dx = invstd*w*(dy - mean(dy)), dweight == 0
    ref_dx = (dy[:, 1].astype(np.float64) - dy[:, 1].astype(np.float64).mean()) / np.sqrt(eps) * wc[1]
    assert_close(gb[0][:, 1], ref_dx, grad_rtol_for(dtype), grad_rtol_for(dtype) * mag(ref_dx))
    assert gb[1][1] == 0


# ==========================================================================
# determinism
# ==========================================================================
def test_backward_is_thread_count_independent(backend):
    """README: results are bit-identical for every thread count (> 1M elements)."""
    rng = np.random.default_rng(12)
    x = make_data(rng, (8, 32, 64, 72), np.float32, offset=1.0, scale=2.0)
    dy = make_data(rng, x.shape, np.float32, offset=0.0, scale=1.0)
    w32 = (rng.standard_normal(32) + 1).astype(np.float32)
    w72 = (rng.standard_normal(72) + 1).astype(np.float32)
    _, lm, lr = bnfast.layer_norm(x, w72, return_stats=True)
    _, gm, gr = bnfast.group_norm(x, 4, w32, return_stats=True)
    _, im, ir = bnfast.instance_norm(x, w32, return_stats=True)
    _, bm, br = bnfast.batch_norm(x, weight=w32, training=True, return_stats=True)
    _, rr = bnfast.rms_norm(x, w72, return_stats=True)
    calls = {
        "layer": lambda: bnfast.layer_norm_backward(dy, x, lm, lr, w72),
        "group": lambda: bnfast.group_norm_backward(dy, x, gm, gr, 4, w32),
        "instance": lambda: bnfast.instance_norm_backward(dy, x, im, ir, w32),
        "batch": lambda: bnfast.batch_norm_backward(dy, x, bm, br, w32),
        "rms": lambda: bnfast.rms_norm_backward(dy, x, rr, w72),
    }
    for name, call in calls.items():
        with bnfast.threads(1):
            r1 = call()
        with bnfast.threads(3):
            r3 = call()
        for a, c in zip(r1, r3):
            assert a.tobytes() == c.tobytes(), f"{name}: 1 vs 3 threads differ"
