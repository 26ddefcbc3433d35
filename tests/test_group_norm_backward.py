"""bnfast.group_norm_backward and bnfast.instance_norm_backward: against
torch.autograd, finite differences and analytic float64 references over edge
shapes, channels first/last and layouts; thread-count independence, constant
groups and their argument errors.  (Group and instance norm run on the
batch-norm backward kernels: see test_kernels.py.)

Gradient tolerances: see helpers.assert_grad_close.
"""

import numpy as np
import pytest
from hypothesis import given, settings

import bnfast
from helpers import (
    ERR_C,
    ERR_L,
    ERR_N,
    assert_grad_close,
    backward_cases,
    backward_setup,
    check_grads,
    fd_check,
    grad_terms,
    make_data,
    needs_torch,
    prepare_backward_case,
    ref_group_norm,
    ref_group_norm_backward,
    ref_instance_norm_backward,
    sum_terms,
    torch,
    torch_grads,
    tt,
    wrong_shapes,
)

DTYPES = [np.float32, np.float64]


def _params(rng, shape, dtype, weighted):
    if not weighted:
        return None, None
    return (rng.standard_normal(shape) + 1).astype(dtype), rng.standard_normal(shape).astype(dtype)


# ==========================================================================
# torch autograd parity
# ==========================================================================
GN_CASES = [
    ((2, 6, 7), 3),
    ((3, 16, 17), 4),
    ((1, 33, 15), 11),
    ((4, 16, 1), 16),
    ((2, 15, 4, 4), 5),
    ((7, 4), 2),
    ((2, 32, 33), 1),
    ((1, 7, 2, 3, 2), 7),
]


@needs_torch
@pytest.mark.parametrize("weighted", [True, False])
@pytest.mark.parametrize("axis", [1, -1])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,G", GN_CASES, ids=str)
def test_group_norm_backward_matches_torch(backend, shape, G, dtype, axis, weighted):
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
    gx, gw, gb = torch_grads(lambda xt, wt, bt: F.group_norm(xt, G, wt, bt, eps), dyf, [xf, w, b])
    assert_grad_close(dx, np.moveaxis(gx, 1, axis), dtype, "dx", grad_terms(dy, rstd, w))
    if weighted:
        assert_grad_close(dw, gw, dtype, "dweight", sum_terms(dy))
        assert_grad_close(db, gb, dtype, "dbias", sum_terms(dy))
    else:
        assert dw is None
        red = tuple(i for i in range(xf.ndim) if i != 1)
        assert_grad_close(db, dyf.astype(np.float64).sum(axis=red), dtype, "dbias")


IN_SHAPES = [(2, 3, 7), (1, 16, 17), (3, 7, 4, 4), (4, 1, 33), (2, 5, 15, 1), (1, 3, 1024)]


@needs_torch
@pytest.mark.parametrize("use_input_stats", [True, False])
@pytest.mark.parametrize("weighted", [True, False])
@pytest.mark.parametrize("axis", [1, -1])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", IN_SHAPES, ids=str)
def test_instance_norm_backward_matches_torch(
    backend, shape, dtype, axis, weighted, use_input_stats
):
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
    _, mean, rstd = bnfast.instance_norm(
        x, w, b, use_input_stats=use_input_stats, eps=eps, axis=axis, return_stats=True, **rs
    )
    dx, dw, db = bnfast.instance_norm_backward(
        dy, x, mean, rstd, w, axis=axis, use_input_stats=use_input_stats
    )

    def fwd(xt, wt, bt):
        r = (
            (None, None)
            if use_input_stats
            else (tt(rm.astype(np.float64)), tt(rv.astype(np.float64)))
        )
        return F.instance_norm(xt, r[0], r[1], wt, bt, use_input_stats=use_input_stats, eps=eps)

    gx, gw, gb = torch_grads(fwd, dyf, [xf, w, b])
    assert_grad_close(dx, np.moveaxis(gx, 1, axis), dtype, "dx", grad_terms(dy, rstd, w))
    if weighted:
        assert_grad_close(dw, gw, dtype, "dweight", sum_terms(dy))
        assert_grad_close(db, gb, dtype, "dbias", sum_terms(dy))
    else:
        assert dw is None
        red = tuple(i for i in range(xf.ndim) if i != 1)
        assert_grad_close(db, dyf.astype(np.float64).sum(axis=red), dtype, "dbias")


# ==========================================================================
# float64 finite differences of independent NumPy forwards
# ==========================================================================
@pytest.mark.parametrize("axis", [1, -1])
def test_group_norm_backward_finite_differences(backend, axis):
    rng = np.random.default_rng(23)
    x = np.ascontiguousarray(np.moveaxis(make_data(rng, (2, 4, 3), np.float64), 1, axis))
    dy = rng.standard_normal(x.shape)
    w, b = rng.standard_normal(4) + 1, rng.standard_normal(4)
    _, mean, rstd = bnfast.group_norm(x, 2, w, b, axis=axis, return_stats=True)
    grads = bnfast.group_norm_backward(dy, x, mean, rstd, 2, w, axis=axis)
    fd_check(
        lambda: np.sum(ref_group_norm(x, 2, w, b, 1e-5, axis)[0] * dy),
        grads,
        [x, w, b],
        ["x", "weight", "bias"],
    )


@pytest.mark.parametrize("use_input_stats", [True, False])
@pytest.mark.parametrize("axis", [1, -1])
def test_instance_norm_backward_finite_differences(backend, axis, use_input_stats):
    rng = np.random.default_rng(24)
    x = np.ascontiguousarray(np.moveaxis(make_data(rng, (2, 3, 5), np.float64), 1, axis))
    dy = rng.standard_normal(x.shape)
    w, b = rng.standard_normal(3) + 1, rng.standard_normal(3)
    rm, rv = rng.standard_normal(3), rng.uniform(0.5, 2, 3)
    rs = {} if use_input_stats else {"running_mean": rm, "running_var": rv}
    _, mean, rstd = bnfast.instance_norm(
        x, w, b, axis=axis, use_input_stats=use_input_stats, return_stats=True, **rs
    )
    grads = bnfast.instance_norm_backward(
        dy, x, mean, rstd, w, axis=axis, use_input_stats=use_input_stats
    )
    ax = axis % x.ndim
    cs = [1] * x.ndim
    cs[ax] = 3

    def loss():
        if use_input_stats:
            y = ref_group_norm(x, 3, w, b, 1e-5, axis)[0]
        else:
            y = (x - rm.reshape(cs)) / np.sqrt(rv.reshape(cs) + 1e-5) * w.reshape(cs) + b.reshape(
                cs
            )
        return np.sum(y * dy)

    fd_check(loss, grads, [x, w, b], ["x", "weight", "bias"])


# ==========================================================================
# hypothesis properties vs analytic float64 references
# ==========================================================================
@settings(max_examples=25)
@given(case=backward_cases("group"))
def test_group_norm_backward_property(backend, case):
    rng, x, dy = prepare_backward_case(case, channels=True)
    dtype, axis, G = case["dtype"], case["axis"], case["G"]
    C = x.shape[axis]
    w = (rng.standard_normal(C) + 1).astype(dtype) if case["weighted"] else None
    _, mean, rstd = bnfast.group_norm(x, G, w, axis=axis, return_stats=True)
    dx, dw, db = bnfast.group_norm_backward(dy, x, mean, rstd, G, w, axis=axis)
    rdx, rdw, rdb = ref_group_norm_backward(dy, x, G, w, axis)
    check_grads(
        (dx, dw, db),
        (rdx, rdw if w is not None else None, rdb),
        dtype,
        ["dx", "dweight", "dbias"],
        grad_terms(dy, rstd, w),
    )


@settings(max_examples=25)
@given(case=backward_cases("instance"))
def test_instance_norm_backward_property(backend, case):
    rng, x, dy = prepare_backward_case(case, channels=True)
    dtype, axis = case["dtype"], case["axis"]
    C = x.shape[axis]
    w = (rng.standard_normal(C) + 1).astype(dtype) if case["weighted"] else None
    _, mean, rstd = bnfast.instance_norm(x, w, axis=axis, return_stats=True)
    dx, dw, db = bnfast.instance_norm_backward(dy, x, mean, rstd, w, axis=axis)
    rdx, rdw, rdb = ref_instance_norm_backward(dy, x, w, axis)
    check_grads(
        (dx, dw, db),
        (rdx, rdw if w is not None else None, rdb),
        dtype,
        ["dx", "dweight", "dbias"],
        grad_terms(dy, rstd, w),
    )


# ==========================================================================
# threads, constant groups
# ==========================================================================
@pytest.mark.parametrize("axis", [1, -1])
def test_group_norm_backward_matches_reference_and_threads(native_backend, axis):
    # Native group-norm backward (channels first: one (1, N*C, S) block;
    # channels last: one block per sample) against float64 NumPy on offset
    # data, and bit-identical for any thread count.
    rng = np.random.default_rng(17)
    x_cf = (100 + rng.standard_normal((6, 12, 9, 31))).astype(np.float32)
    dy_cf = rng.standard_normal(x_cf.shape).astype(np.float32)
    w = rng.standard_normal(12).astype(np.float32)
    x = x_cf if axis == 1 else np.ascontiguousarray(np.moveaxis(x_cf, 1, -1))
    dy = dy_cf if axis == 1 else np.ascontiguousarray(np.moveaxis(dy_cf, 1, -1))
    _, mean, rstd = bnfast.group_norm(x, 4, w, axis=axis, return_stats=True)
    results = []
    for n in (1, 2, 3):
        with bnfast.threads(n):
            dx, dw, db = bnfast.group_norm_backward(dy, x, mean, rstd, 4, w, axis=axis)
        results.append(dx.tobytes() + dw.tobytes() + db.tobytes())
    assert results[0] == results[1] == results[2]
    # float64 reference from the data (exact group statistics)
    x4 = x_cf.astype(np.float64).reshape(6, 4, 3, -1)
    g4 = dy_cf.astype(np.float64).reshape(6, 4, 3, -1)
    xc = x4 - x4.mean(axis=(2, 3), keepdims=True)
    rs = 1 / np.sqrt((xc * xc).mean(axis=(2, 3), keepdims=True) + 1e-5)
    xhat = xc * rs
    g = g4 * w.astype(np.float64).reshape(1, 4, 3, 1)
    ref = rs * (
        g - g.mean(axis=(2, 3), keepdims=True) - xhat * (g * xhat).mean(axis=(2, 3), keepdims=True)
    )
    ref = ref.reshape(x_cf.shape)
    got = dx if axis == 1 else np.moveaxis(dx, -1, 1)
    # a few float32 ulps of the largest term (|dy| * rstd * |w|)
    mag = np.abs(g).max() * rs.max()
    np.testing.assert_allclose(got, ref, rtol=0, atol=32 * np.finfo(np.float32).eps * mag)
    np.testing.assert_allclose(dw, (g4 * xhat).sum(axis=(0, 3)).ravel(), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("dtype", DTYPES)
def test_constant_groups_have_finite_gradients(backend, dtype):
    """var == 0 exactly, so rstd = 1/sqrt(eps) (finite): every gradient must be
    finite (a 0/0 from an implementation dividing by var or std would be NaN)."""
    rng = np.random.default_rng(9)
    v = dtype(1e4)
    eps = 1e-5

    def finite(*arrs):
        for a in arrs:
            if a is not None:
                assert np.all(np.isfinite(a)), a

    x = make_data(rng, (3, 6, 17), dtype)
    x[0, 2:4] = v
    x[1, 5] = v
    dy = make_data(rng, x.shape, dtype)
    wc = (rng.standard_normal(6) + 1).astype(dtype)
    _, m, r = bnfast.group_norm(x, 3, wc, eps=eps, return_stats=True)
    finite(*bnfast.group_norm_backward(dy, x, m, r, 3, wc))
    _, m, r = bnfast.instance_norm(x, wc, eps=eps, return_stats=True)
    finite(*bnfast.instance_norm_backward(dy, x, m, r, wc))


def test_backward_is_thread_count_independent(backend):
    """README: results are bit-identical for every thread count (> 1M elements)."""
    rng = np.random.default_rng(12)
    x = make_data(rng, (8, 32, 64, 72), np.float32, offset=1.0, scale=2.0)
    dy = make_data(rng, x.shape, np.float32, offset=0.0, scale=1.0)
    w32 = (rng.standard_normal(32) + 1).astype(np.float32)
    _, gm, gr = bnfast.group_norm(x, 4, w32, return_stats=True)
    _, im, ir = bnfast.instance_norm(x, w32, return_stats=True)
    calls = {
        "group": lambda: bnfast.group_norm_backward(dy, x, gm, gr, 4, w32),
        "instance": lambda: bnfast.instance_norm_backward(dy, x, im, ir, w32),
    }
    for name, call in calls.items():
        with bnfast.threads(1):
            r1 = call()
        with bnfast.threads(3):
            r3 = call()
        for a, c in zip(r1, r3):
            assert a.tobytes() == c.tobytes(), f"{name}: 1 vs 3 threads differ"


# ==========================================================================
# argument errors
# ==========================================================================
def test_group_norm_backward_channels_not_divisible(backend):
    x = make_data(np.random.default_rng(0), (ERR_N, ERR_C, ERR_L), np.float32)
    dy = np.ones_like(x)
    mean = np.zeros((ERR_N, 4), np.float32)
    rstd = np.ones((ERR_N, 4), np.float32)
    with pytest.raises(ValueError):
        bnfast.group_norm_backward(dy, x, mean, rstd, 4)


NAMES = ["group", "instance"]


@pytest.mark.parametrize("name", NAMES)
def test_backward_valid_call_works(backend, name):
    """Baseline for the error tests below: the unmodified call succeeds."""
    x, call, stats, w = backward_setup(name)
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
@pytest.mark.parametrize("name", NAMES)
def test_backward_dy_shape_mismatch(backend, name, dy_shape):
    x, call, stats, w = backward_setup(name)
    with pytest.raises(ValueError):
        call(np.ones(dy_shape), x, stats, w)


@pytest.mark.parametrize("name,which", [(n, i) for n in NAMES for i in (0, 1)])
def test_backward_stats_shape_mismatch(backend, name, which):
    x, call, stats, w = backward_setup(name)
    for bad_shape in wrong_shapes(stats[which].shape):
        s = list(stats)
        s[which] = np.ones(bad_shape)
        with pytest.raises(ValueError):
            call(np.ones_like(x), x, tuple(s), w)


@pytest.mark.parametrize("name", NAMES)
def test_backward_weight_shape_mismatch(backend, name):
    x, call, stats, w = backward_setup(name)
    with pytest.raises(ValueError):
        call(np.ones_like(x), x, stats, np.ones(w.size + 1))


@pytest.mark.parametrize("name", NAMES)
def test_backward_integer_x_is_type_error(backend, name):
    xf, call, stats, w = backward_setup(name)
    x = np.ones(xf.shape, np.int64)
    with pytest.raises(TypeError):
        call(np.ones(xf.shape), x, stats, w)
