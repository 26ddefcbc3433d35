"""bnfast.batch_norm_backward: against a float64 formula, torch.autograd,
finite differences and analytic references over edge shapes and layouts; its
argument errors, out=, thread-count independence and constant channels.

Gradient tolerances: see helpers.assert_grad_close.
"""

import numpy as np
import pytest
from hypothesis import given, settings

import bnfast
from helpers import (
    BN_BACKWARD_CASES,
    BN_FUSED_CASES,
    BN_REDUCE_CASES,
    ERR_C,
    ERR_L,
    ERR_N,
    assert_close,
    assert_grad_close,
    backward_cases,
    backward_setup,
    check_grads,
    fd_check,
    grad_rtol_for,
    grad_terms,
    mag,
    make_data,
    needs_torch,
    prepare_backward_case,
    ref_batch_norm,
    ref_layer_norm,
    ref_layer_norm_backward,
    sum_terms,
    torch,
    torch_grads,
    tt,
    with_layout,
    wrong_shapes,
)

DTYPES = [np.float32, np.float64]


# ==========================================================================
# against a float64 formula
# ==========================================================================
@pytest.mark.parametrize("shape, axis, order", BN_BACKWARD_CASES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_backward_matches_float64_formula(backend, shape, axis, order, dtype):
    rng = np.random.default_rng(11)
    x = np.asarray((50 + rng.standard_normal(shape)).astype(dtype), order=order)
    dy = np.asarray(rng.standard_normal(shape).astype(dtype), order=order)
    c = shape[axis]
    w = rng.standard_normal(c).astype(dtype)
    _, mean, invstd = bnfast.batch_norm(x, training=True, axis=axis, return_stats=True)
    dx, dw, db = bnfast.batch_norm_backward(dy, x, mean, invstd, w, axis=axis)
    # float64 reference from the data itself (exact batch mean, not the
    # rounded one the forward returned).
    ax = axis % x.ndim
    red = tuple(i for i in range(x.ndim) if i != ax)
    x64, g64 = x.astype(np.float64), dy.astype(np.float64)
    xc = x64 - x64.mean(axis=red, keepdims=True)
    inv = 1 / np.sqrt((xc * xc).mean(axis=red, keepdims=True) + 1e-5)
    n = x.size // c
    bshape = [1] * x.ndim
    bshape[ax] = c
    wb = w.astype(np.float64).reshape(bshape)
    sum_dy = g64.sum(axis=red, keepdims=True)
    sum_dy_xc = (g64 * xc).sum(axis=red, keepdims=True)
    ref_dx = (g64 - sum_dy / n - xc * sum_dy_xc * inv**2 / n) * inv * wb
    # dx is a sum of three O(|dy| * invstd * |w|) terms rounded once in the
    # data type (and invstd itself rounded): a few ulps of that magnitude.
    eps = np.finfo(dtype).eps
    magnitude = (np.abs(g64).max() + 3) * inv.max() * np.abs(wb).max()
    np.testing.assert_allclose(dx, ref_dx, rtol=0, atol=64 * eps * magnitude)
    np.testing.assert_allclose(
        db,
        sum_dy.ravel(),
        rtol=1e-6 if dtype == np.float32 else 1e-12,
        atol=eps * np.abs(g64).sum() / c,
    )
    ref_dw = (sum_dy_xc * inv).ravel()
    np.testing.assert_allclose(
        dw,
        ref_dw,
        rtol=1e-5 if dtype == np.float32 else 1e-11,
        atol=16 * eps * np.abs(ref_dw).max(),
    )


# ==========================================================================
# torch autograd parity
# ==========================================================================
BN_SHAPES = [(16, 7), (7, 33), (4, 16, 17), (2, 15, 1), (3, 5, 4, 4), (1, 3, 1023), (2, 3, 2, 3, 2)]


def _params(rng, shape, dtype, weighted):
    if not weighted:
        return None, None
    return (rng.standard_normal(shape) + 1).astype(dtype), rng.standard_normal(shape).astype(dtype)


@needs_torch
@pytest.mark.parametrize("weighted", [True, False])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("axis", [1, -1])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", BN_SHAPES, ids=str)
def test_backward_matches_torch(backend, shape, dtype, axis, training, weighted):
    F = torch.nn.functional
    rng = np.random.default_rng(sum(shape) + 3 * len(shape))
    xf = make_data(rng, shape, dtype, offset=0.5, scale=1.7)
    dyf = make_data(rng, shape, dtype, offset=0.1, scale=1.0)
    x = np.ascontiguousarray(np.moveaxis(xf, 1, axis))
    dy = np.ascontiguousarray(np.moveaxis(dyf, 1, axis))
    C = shape[1]
    w, b = _params(rng, C, dtype, weighted)
    rm = rng.standard_normal(C).astype(dtype)
    rv = rng.uniform(0.5, 2.0, C).astype(dtype)
    eps = 1e-5
    _, mean, invstd = bnfast.batch_norm(
        x, rm.copy(), rv.copy(), w, b, training=training, eps=eps, axis=axis, return_stats=True
    )
    dx, dw, db = bnfast.batch_norm_backward(dy, x, mean, invstd, w, axis=axis, training=training)
    if not training:  # the documented eval stats: running_mean, 1/sqrt(running_var + eps)
        inv = (1 / np.sqrt(rv.astype(np.float64) + eps)).astype(dtype)
        dx2, _, _ = bnfast.batch_norm_backward(dy, x, rm, inv, w, axis=axis, training=False)
        assert_grad_close(dx2, dx, dtype, "dx with explicit running stats")

    def fwd(xt, wt, bt):
        return F.batch_norm(
            xt,
            tt(rm.astype(np.float64)),
            tt(rv.astype(np.float64)),
            wt,
            bt,
            training=training,
            eps=eps,
        )

    gx, gw, gb = torch_grads(fwd, dyf, [xf, w, b])
    assert dx.shape == x.shape
    assert_grad_close(dx, np.moveaxis(gx, 1, axis), dtype, "dx", grad_terms(dy, invstd, w))
    if weighted:
        assert_grad_close(dw, gw, dtype, "dweight", sum_terms(dy))
        assert_grad_close(db, gb, dtype, "dbias", sum_terms(dy))
    else:
        assert dw is None
        red = tuple(i for i in range(x.ndim) if i != axis % x.ndim)
        assert_grad_close(db, dy.astype(np.float64).sum(axis=red), dtype, "dbias")


# ==========================================================================
# finite differences and analytic references
# ==========================================================================
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("axis", [1, -1])
def test_backward_finite_differences(backend, axis, training):
    rng = np.random.default_rng(21)
    x = make_data(rng, (4, 3, 2), np.float64)
    x = np.ascontiguousarray(np.moveaxis(x, 1, axis))
    dy = rng.standard_normal(x.shape)
    w, b = rng.standard_normal(3) + 1, rng.standard_normal(3)
    rm, rv = rng.standard_normal(3), rng.uniform(0.5, 2, 3)
    _, mean, invstd = bnfast.batch_norm(
        x, rm.copy(), rv.copy(), w, b, training=training, axis=axis, return_stats=True
    )
    grads = bnfast.batch_norm_backward(dy, x, mean, invstd, w, axis=axis, training=training)

    def loss():
        return np.sum(ref_batch_norm(x, axis, training, rm, rv, w, b)[0] * dy)

    fd_check(loss, grads, [x, w, b], ["x", "weight", "bias"])


@settings(max_examples=25)
@given(case=backward_cases("batch"))
def test_backward_property(backend, case):
    """Batch norm == instance-style normalization over every axis but the channel one."""
    rng, x, dy = prepare_backward_case(case, channels=True)
    dtype, axis = case["dtype"], case["axis"]
    C = x.shape[axis]
    w = (rng.standard_normal(C) + 1).astype(dtype) if case["weighted"] else None
    _, mean, invstd = bnfast.batch_norm(x, weight=w, training=True, axis=axis, return_stats=True)
    dx, dw, db = bnfast.batch_norm_backward(dy, x, mean, invstd, w, axis=axis)
    # reference: a layer norm over all non-channel axes has the same gradients
    ax = axis % x.ndim
    red = tuple(i for i in range(x.ndim) if i != ax)
    xm = np.moveaxis(np.asarray(x, np.float64), ax, -1)
    dym = np.moveaxis(np.asarray(dy, np.float64), ax, -1)
    red_m = tuple(range(x.ndim - 1))
    rdx, _, _ = ref_layer_norm_backward(dym, xm, None, red_m)  # w constant per group: scales dx
    if w is not None:
        rdx = rdx * np.asarray(w, np.float64)
    rdx = np.moveaxis(rdx, -1, ax)
    _, m64, r64 = ref_layer_norm(xm, None, None, red_m)
    xhat = (xm - m64) * r64
    rdw = (dym * xhat).sum(axis=red_m) if w is not None else None
    rdb = dym.sum(axis=red_m)
    assert red  # at least one reduced axis
    check_grads(
        (dx, dw, db), (rdx, rdw, rdb), dtype, ["dx", "dweight", "dbias"], grad_terms(dy, invstd, w)
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_constant_channel_has_finite_gradients(backend, dtype):
    """var == 0 exactly, so invstd = 1/sqrt(eps) (finite): every gradient must
    be finite (a 0/0 from an implementation dividing by var or std would be
    NaN)."""
    rng = np.random.default_rng(9)
    v = dtype(1e4)
    eps = 1e-5
    x = make_data(rng, (3, 6, 17), dtype)
    x[0, 2:4] = v
    x[1, 5] = v
    dy = make_data(rng, x.shape, dtype)
    wc = (rng.standard_normal(6) + 1).astype(dtype)
    xb = x.copy()
    xb[:, 1] = v
    _, m, r = bnfast.batch_norm(xb, weight=wc, training=True, eps=eps, return_stats=True)
    gb = bnfast.batch_norm_backward(dy, xb, m, r, wc)
    for a in gb:
        assert np.all(np.isfinite(a)), a
    # for a constant channel xhat == 0: dx = invstd*w*(dy - mean(dy)), dweight == 0
    dy1 = dy[:, 1].astype(np.float64)
    ref_dx = (dy1 - dy1.mean()) / np.sqrt(eps) * wc[1]
    assert_close(gb[0][:, 1], ref_dx, grad_rtol_for(dtype), grad_rtol_for(dtype) * mag(ref_dx))
    assert gb[1][1] == 0


# ==========================================================================
# out=, eval, threads
# ==========================================================================
def test_out_may_be_dy_or_overlap_x(backend):
    rng = np.random.default_rng(13)
    x = rng.standard_normal((6, 5, 7)).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    w = rng.standard_normal(5).astype(np.float32)
    _, m, inv = bnfast.batch_norm(x, training=True, return_stats=True)
    ref = bnfast.batch_norm_backward(dy, x, m, inv, w)[0]
    out = np.empty_like(x)
    assert bnfast.batch_norm_backward(dy, x, m, inv, w, out=out)[0] is out
    np.testing.assert_array_equal(out, ref)
    dy_inplace = dy.copy()
    bnfast.batch_norm_backward(dy_inplace, x, m, inv, w, out=dy_inplace)
    np.testing.assert_array_equal(dy_inplace, ref)
    x_inplace = x.copy()
    bnfast.batch_norm_backward(dy, x_inplace, m, inv, w, out=x_inplace)
    np.testing.assert_array_equal(x_inplace, ref)
    with pytest.raises(ValueError, match="out"):
        bnfast.batch_norm_backward(dy, x, m, inv, w, out=np.empty((6, 5)))


def test_eval_backward_ignores_nan_in_x(backend):
    # Eval gradient is dy * invstd * w: a NaN in x must not leak into dx.
    x = np.ones((4, 3, 5), np.float32)
    x[0, 0, 0] = np.nan
    dy = np.ones_like(x)
    mean = np.zeros(3, np.float32)
    invstd = np.full(3, 2.0, np.float32)
    dx, _, _ = bnfast.batch_norm_backward(dy, x, mean, invstd, training=False)
    np.testing.assert_array_equal(dx, np.full_like(x, 2.0))


# (3, 9, 100_000): the fused training backward (one channel per thread, several
# groups, streaming stores) at 1 and 2 threads, the two-pass form at 3; (4, 6, 33)
# is fused at 1 thread only.
@pytest.mark.parametrize(
    "shape, axis, order", BN_BACKWARD_CASES[:6] + BN_REDUCE_CASES[-2:] + BN_FUSED_CASES
)
def test_backward_bits_do_not_depend_on_threads(native_backend, shape, axis, order):
    rng = np.random.default_rng(14)
    x = np.asarray(rng.standard_normal(shape).astype(np.float32), order=order)
    dy = np.asarray(rng.standard_normal(shape).astype(np.float32), order=order)
    _, m, inv = bnfast.batch_norm(x, training=True, axis=axis, return_stats=True)
    results = []
    for n in (1, 2, 3):
        with bnfast.threads(n):
            dx, dw, db = bnfast.batch_norm_backward(
                dy, x, m, inv, np.ones(shape[axis], np.float32), axis=axis
            )
        results.append(dx.tobytes() + dw.tobytes() + db.tobytes())
    assert results[0] == results[1] == results[2]


def test_backward_is_thread_count_independent(backend):
    """README: results are bit-identical for every thread count (> 1M elements)."""
    rng = np.random.default_rng(12)
    x = make_data(rng, (8, 32, 64, 72), np.float32, offset=1.0, scale=2.0)
    dy = make_data(rng, x.shape, np.float32, offset=0.0, scale=1.0)
    w32 = (rng.standard_normal(32) + 1).astype(np.float32)
    _, bm, br = bnfast.batch_norm(x, weight=w32, training=True, return_stats=True)
    with bnfast.threads(1):
        r1 = bnfast.batch_norm_backward(dy, x, bm, br, w32)
    with bnfast.threads(3):
        r3 = bnfast.batch_norm_backward(dy, x, bm, br, w32)
    for a, c in zip(r1, r3):
        assert a.tobytes() == c.tobytes(), "batch: 1 vs 3 threads differ"


# ==========================================================================
# argument errors, inputs never modified
# ==========================================================================
def test_backward_valid_call_works(backend):
    """Baseline for the error tests below: the unmodified call succeeds."""
    x, call, stats, w = backward_setup("batch")
    res = call(np.ones_like(x), x, stats, w)
    assert res[0].shape == x.shape


@pytest.mark.parametrize(
    "dy_shape",
    [
        (ERR_N, ERR_C, ERR_L + 1),
        (ERR_N + 1, ERR_C, ERR_L),
        (ERR_N, ERR_C * ERR_L),
        (ERR_L, ERR_C, ERR_N),
        (ERR_N, ERR_C, ERR_L, 1),
    ],
    ids=str,
)
def test_backward_dy_shape_mismatch(backend, dy_shape):
    x, call, stats, w = backward_setup("batch")
    with pytest.raises(ValueError):
        call(np.ones(dy_shape), x, stats, w)


@pytest.mark.parametrize("which", [0, 1])
def test_backward_stats_shape_mismatch(backend, which):
    x, call, stats, w = backward_setup("batch")
    for bad_shape in wrong_shapes(stats[which].shape):
        s = list(stats)
        s[which] = np.ones(bad_shape)
        with pytest.raises(ValueError):
            call(np.ones_like(x), x, tuple(s), w)


def test_backward_weight_shape_mismatch(backend):
    x, call, stats, w = backward_setup("batch")
    with pytest.raises(ValueError):
        call(np.ones_like(x), x, stats, np.ones(w.size + 1))


def test_backward_integer_x_is_type_error(backend):
    xf, call, stats, w = backward_setup("batch")
    x = np.ones(xf.shape, np.int64)
    with pytest.raises(TypeError):
        call(np.ones(xf.shape), x, stats, w)


@pytest.mark.parametrize("lay", ["C", "F", "step", "transpose"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_inputs_not_modified(backend, dtype, lay):
    rng = np.random.default_rng(4)
    x = with_layout(make_data(rng, (ERR_N, ERR_C, ERR_L), dtype), lay, rng)
    dy = with_layout(make_data(rng, (ERR_N, ERR_C, ERR_L), dtype), lay, rng)
    wc = (rng.standard_normal(ERR_C) + 1).astype(dtype)
    bc = rng.standard_normal(ERR_C).astype(dtype)
    rm = rng.standard_normal(ERR_C).astype(dtype)
    rv = rng.uniform(0.5, 2, ERR_C).astype(dtype)
    arrs = [x, dy, wc, bc, rm, rv]
    before = [a.copy() for a in arrs]
    _, bm, bi = bnfast.batch_norm(x, weight=wc, bias=bc, training=True, return_stats=True)
    stats = [bm, bi]
    stats_before = [s.copy() for s in stats]
    bnfast.batch_norm_backward(dy, x, bm, bi, wc)
    bnfast.batch_norm_backward(dy, x, rm, 1 / np.sqrt(rv + 1e-5), wc, training=False)
    for a, b, n in zip(arrs, before, ["x", "dy", "wc", "bc", "rm", "rv"]):
        assert np.array_equal(a, b, equal_nan=True), f"{n} was modified"
    for a, b in zip(stats, stats_before):
        assert np.array_equal(a, b, equal_nan=True), "a statistic was modified"
