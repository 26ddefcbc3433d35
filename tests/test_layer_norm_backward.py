"""bnfast.layer_norm_backward and bnfast.rms_norm_backward: against
torch.autograd, finite differences and analytic float64 references over edge
shapes and layouts; out=, thread-count independence, constant rows and their
argument errors.

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
    normalize_axes,
    param_shape,
    prepare_backward_case,
    ref_layer_norm,
    ref_layer_norm_backward,
    ref_rms_norm,
    ref_rms_norm_backward,
    sum_terms,
    torch,
    torch_grads,
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
LN_CASES = [
    ((7, 33), -1),
    ((16, 17), -1),
    ((3, 1023), -1),
    ((33, 1), -1),
    ((4096,), -1),
    ((2, 7, 16), (-2, -1)),
    ((3, 1, 15), (-2, -1)),
    ((2, 2, 15, 16), (-2, -1)),
]


@needs_torch
@pytest.mark.parametrize("weighted", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,axis", LN_CASES, ids=str)
def test_layer_norm_backward_matches_torch(backend, shape, axis, dtype, weighted):
    F = torch.nn.functional
    rng = np.random.default_rng(sum(shape))
    x = make_data(rng, shape, dtype, offset=-1.0, scale=2.0)
    dy = make_data(rng, shape, dtype, offset=0.2, scale=1.0)
    axes = normalize_axes(axis, x.ndim)
    nshape = param_shape(shape, axes)
    w, b = _params(rng, nshape, dtype, weighted)
    eps = 1e-5
    _, mean, rstd = bnfast.layer_norm(x, w, b, axis=axis, eps=eps, return_stats=True)
    dx, dw, db = bnfast.layer_norm_backward(dy, x, mean, rstd, w, axis=axis)
    gx, gw, gb = torch_grads(
        lambda xt, wt, bt: F.layer_norm(xt, list(nshape), wt, bt, eps), dy, [x, w, b]
    )
    assert_grad_close(dx, gx, dtype, "dx", grad_terms(dy, rstd, w))
    other = tuple(i for i in range(x.ndim) if i not in axes)
    if weighted:
        assert_grad_close(dw, gw, dtype, "dweight", sum_terms(dy))
        assert_grad_close(db, gb, dtype, "dbias", sum_terms(dy))
    else:
        assert dw is None
        assert_grad_close(db, dy.astype(np.float64).sum(axis=other), dtype, "dbias")
    assert np.shape(db) == nshape


RMS_CASES = [((7, 33), -1), ((16, 17), -1), ((4096,), -1), ((3, 15, 16), (-2, -1)), ((33, 1), -1)]


@needs_torch
@pytest.mark.parametrize("eps", [None, 1e-5])
@pytest.mark.parametrize("weighted", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,axis", RMS_CASES, ids=str)
def test_rms_norm_backward_matches_torch(backend, shape, axis, dtype, weighted, eps):
    F = torch.nn.functional
    rng = np.random.default_rng(sum(shape) + 5)
    x = make_data(rng, shape, dtype, offset=0.4, scale=1.0)
    dy = make_data(rng, shape, dtype, offset=0.0, scale=1.0)
    axes = normalize_axes(axis, x.ndim)
    nshape = param_shape(shape, axes)
    w = (rng.standard_normal(nshape) + 1).astype(dtype) if weighted else None
    _, rstd = bnfast.rms_norm(x, w, axis=axis, eps=eps, return_stats=True)
    dx, dw = bnfast.rms_norm_backward(dy, x, rstd, w, axis=axis)
    # torch's default eps follows the dtype of its input: use the float dtype of x explicitly
    teps = float(np.finfo(dtype).eps) if eps is None else eps
    gx, gw = torch_grads(lambda xt, wt: F.rms_norm(xt, list(nshape), wt, teps), dy, [x, w])
    assert_grad_close(dx, gx, dtype, "dx", grad_terms(dy, rstd, w))
    if weighted:
        assert_grad_close(dw, gw, dtype, "dweight", sum_terms(dy))
    else:
        assert dw is None


# ==========================================================================
# float64 finite differences of independent NumPy forwards
# ==========================================================================
@pytest.mark.parametrize(
    "shape,axis", [((3, 7), -1), ((2, 3, 4), (-2, -1)), ((5, 1), -1), ((4, 3), 0)], ids=str
)
def test_layer_norm_backward_finite_differences(backend, shape, axis):
    rng = np.random.default_rng(22)
    x = make_data(rng, shape, np.float64)
    dy = rng.standard_normal(shape)
    nshape = param_shape(shape, normalize_axes(axis, len(shape)))
    w, b = rng.standard_normal(nshape) + 1, rng.standard_normal(nshape)
    _, mean, rstd = bnfast.layer_norm(x, w, b, axis=axis, return_stats=True)
    grads = bnfast.layer_norm_backward(dy, x, mean, rstd, w, axis=axis)
    fd_check(
        lambda: np.sum(ref_layer_norm(x, w, b, axis)[0] * dy),
        grads,
        [x, w, b],
        ["x", "weight", "bias"],
    )


@pytest.mark.parametrize("shape,axis", [((3, 7), -1), ((2, 3, 4), (-2, -1))], ids=str)
def test_rms_norm_backward_finite_differences(backend, shape, axis):
    rng = np.random.default_rng(25)
    x = make_data(rng, shape, np.float64)
    dy = rng.standard_normal(shape)
    w = rng.standard_normal(param_shape(shape, normalize_axes(axis, len(shape)))) + 1
    _, rstd = bnfast.rms_norm(x, w, axis=axis, eps=1e-5, return_stats=True)
    grads = bnfast.rms_norm_backward(dy, x, rstd, w, axis=axis)
    fd_check(lambda: np.sum(ref_rms_norm(x, w, axis, 1e-5)[0] * dy), grads, [x, w], ["x", "weight"])


# ==========================================================================
# hypothesis properties vs analytic float64 references
# ==========================================================================
@settings(max_examples=25)
@given(case=backward_cases("layer"))
def test_layer_norm_backward_property(backend, case):
    rng, x, dy = prepare_backward_case(case, channels=False)
    dtype, axis = case["dtype"], case["axis"]
    axes = normalize_axes(axis, x.ndim)
    w = (
        (rng.standard_normal(param_shape(x.shape, axes)) + 1).astype(dtype)
        if case["weighted"]
        else None
    )
    _, mean, rstd = bnfast.layer_norm(x, w, axis=axis, return_stats=True)
    dx, dw, db = bnfast.layer_norm_backward(dy, x, mean, rstd, w, axis=axis)
    rdx, rdw, rdb = ref_layer_norm_backward(dy, x, w, axis)
    check_grads(
        (dx, dw, db),
        (rdx, rdw if w is not None else None, rdb),
        dtype,
        ["dx", "dweight", "dbias"],
        grad_terms(dy, rstd, w),
    )


@settings(max_examples=25)
@given(case=backward_cases("rms"))
def test_rms_norm_backward_property(backend, case):
    rng, x, dy = prepare_backward_case(case, channels=False)
    dtype, axis = case["dtype"], case["axis"]
    axes = normalize_axes(axis, x.ndim)
    w = (
        (rng.standard_normal(param_shape(x.shape, axes)) + 1).astype(dtype)
        if case["weighted"]
        else None
    )
    _, rstd = bnfast.rms_norm(x, w, axis=axis, return_stats=True)
    dx, dw = bnfast.rms_norm_backward(dy, x, rstd, w, axis=axis)
    rdx, rdw = ref_rms_norm_backward(dy, x, w, axis)
    check_grads(
        (dx, dw),
        (rdx, rdw if w is not None else None),
        dtype,
        ["dx", "dweight"],
        grad_terms(dy, rstd, w),
    )


# ==========================================================================
# out=, threads, constant rows
# ==========================================================================
@pytest.mark.parametrize("rms", [False, True])
def test_out_may_be_dy_or_overlap_x(backend, rms):
    rng = np.random.default_rng(18)
    x = rng.standard_normal((6, 5, 1100)).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    w = rng.standard_normal(1100).astype(np.float32)
    if rms:
        _, rstd = bnfast.rms_norm(x, w, return_stats=True)
        call = lambda dy_, x_, out: bnfast.rms_norm_backward(dy_, x_, rstd, w, out=out)  # noqa: E731
    else:
        _, mean, rstd = bnfast.layer_norm(x, w, return_stats=True)
        call = lambda dy_, x_, out: bnfast.layer_norm_backward(dy_, x_, mean, rstd, w, out=out)  # noqa: E731
    ref = call(dy, x, None)
    out = np.empty_like(x)
    got = call(dy, x, out)
    assert got[0] is out
    for g, r in zip(got, ref):
        np.testing.assert_array_equal(g, r)
    dy_inplace = dy.copy()
    call(dy_inplace, x, dy_inplace)
    np.testing.assert_array_equal(dy_inplace, ref[0])
    x_inplace = x.copy()
    call(dy, x_inplace, x_inplace)
    np.testing.assert_array_equal(x_inplace, ref[0])
    # A shifted overlap with x: computed from the original x all the same.
    buf = np.concatenate([x.ravel(), np.zeros(7, np.float32)])
    x_view = buf[: x.size].reshape(x.shape)
    out_view = buf[7:].reshape(x.shape)
    call(dy, x_view, out_view)
    np.testing.assert_array_equal(out_view, ref[0])
    with pytest.raises(ValueError, match="out"):
        call(dy, x, np.empty((6, 5), np.float32))
    with pytest.raises(TypeError, match="out"):
        call(dy, x, np.empty(x.shape, np.float64))


@pytest.mark.parametrize("shape", [(3000, 130), (300, 2053)])
@pytest.mark.parametrize("rms", [False, True])
def test_backward_bits_do_not_depend_on_threads(native_backend, rms, shape):
    rng = np.random.default_rng(16)
    x = rng.standard_normal(shape).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    w = rng.standard_normal(shape[1]).astype(np.float32)
    if rms:
        _, rstd = bnfast.rms_norm(x, w, return_stats=True)
        run = lambda: bnfast.rms_norm_backward(dy, x, rstd, w)  # noqa: E731
    else:
        _, mean, rstd = bnfast.layer_norm(x, w, return_stats=True)
        run = lambda: bnfast.layer_norm_backward(dy, x, mean, rstd, w)  # noqa: E731
    results = []
    for n in (1, 2, 3):
        with bnfast.threads(n):
            results.append(b"".join(a.tobytes() for a in run() if a is not None))
    assert results[0] == results[1] == results[2]


@pytest.mark.parametrize("rms", [False, True])
def test_backward_bits_do_not_depend_on_out_alignment(native_backend, rms):
    # dx of 8 MiB and more is streamed from its first vector boundary on, so
    # which columns take vectors follows where `out` lies in memory; the
    # gradients (dx and the column sums) must not. 520 columns: a pitch of
    # a whole number of vectors, and a tail past the last vector.
    rng = np.random.default_rng(17)
    shape = (4100, 520)  # 8.1 MiB of float32
    x = (rng.standard_normal(shape) * 3 + 1).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal(shape[1]).astype(np.float32)
    if rms:
        _, rstd = bnfast.rms_norm(x, w, return_stats=True)
        run = lambda out: bnfast.rms_norm_backward(dy, x, rstd, w, out=out)  # noqa: E731
    else:
        _, mean, rstd = bnfast.layer_norm(x, w, return_stats=True)
        run = lambda out: bnfast.layer_norm_backward(dy, x, mean, rstd, w, out=out)  # noqa: E731
    buf = np.empty(x.size + 64, np.float32)
    base = (-(buf.ctypes.data % 64) // 4) % 16  # the first 64-byte boundary
    results = []
    for offset in (0, 1, 7, 15):  # 0..15 elements past the boundary
        out = buf[base + offset : base + offset + x.size].reshape(shape)
        grads = run(out)
        assert grads[0] is out
        results.append(b"".join(a.tobytes() for a in grads if a is not None))
    assert all(r == results[0] for r in results[1:])


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


def test_backward_is_thread_count_independent(backend):
    """README: results are bit-identical for every thread count (> 1M elements)."""
    rng = np.random.default_rng(12)
    x = make_data(rng, (8, 32, 64, 72), np.float32, offset=1.0, scale=2.0)
    dy = make_data(rng, x.shape, np.float32, offset=0.0, scale=1.0)
    rng.standard_normal(32)  # (the channel weights of the same data set)
    w72 = (rng.standard_normal(72) + 1).astype(np.float32)
    _, lm, lr = bnfast.layer_norm(x, w72, return_stats=True)
    _, rr = bnfast.rms_norm(x, w72, return_stats=True)
    calls = {
        "layer": lambda: bnfast.layer_norm_backward(dy, x, lm, lr, w72),
        "rms": lambda: bnfast.rms_norm_backward(dy, x, rr, w72),
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
NAMES = ["layer", "rms"]


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


@pytest.mark.parametrize("name,which", [("layer", 0), ("layer", 1), ("rms", 0)])
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


def test_backward_bad_shape_message_names_argument(backend):
    x, call, stats, w = backward_setup("layer")
    with pytest.raises(ValueError, match="dy"):
        call(np.ones((ERR_N, ERR_C, ERR_L + 1)), x, stats, w)


@pytest.mark.parametrize("name", NAMES)
def test_backward_integer_x_is_type_error(backend, name):
    xf, call, stats, w = backward_setup(name)
    x = np.ones(xf.shape, np.int64)
    with pytest.raises(TypeError):
        call(np.ones(xf.shape), x, stats, w)
