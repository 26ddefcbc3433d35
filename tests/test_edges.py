"""Issue 13 at the library's edges: arguments updated in place that cannot
be, wrong exception types, zero channels or features, integer input to
mean_var read in slabs, subnormal data, float32 backward passes of huge
inputs, error messages naming the function called.

Each test fails on the head before issue 13 (the planted-bug check of the
report) and pins the behaviour since.
"""

import fractions
import math
import tracemalloc

import numpy as np
import pytest

import bnfast
from bnfast import nn
from helpers import moments_module

# ---------------------------------------------------------------------------
# running statistics and out=: updated in place, or refused
# ---------------------------------------------------------------------------
X3 = np.arange(24.0).reshape(4, 3, 2)


def _train(op, x, rm, rv):
    if op == "batch_norm":
        return bnfast.batch_norm(x, rm, rv, training=True)
    return bnfast.instance_norm(x, running_mean=rm, running_var=rv)


@pytest.mark.parametrize("op", ["batch_norm", "instance_norm"])
@pytest.mark.parametrize("readonly", [False, True])
def test_big_endian_running_stats_are_refused_while_training(backend, op, readonly):
    # Before: updated in a converted copy, the caller's arrays stayed at 0/1
    # (and a read-only big-endian one was accepted).
    rm, rv = np.zeros(3, ">f8"), np.ones(3, ">f8")
    rm.flags.writeable = not readonly
    with pytest.raises(ValueError, match="running_mean.*byte order") as info:
        _train(op, X3, rm, rv)
    assert op in str(info.value)
    assert "newbyteorder" in str(info.value)  # the fix
    assert np.array_equal(rm, np.zeros(3)) and np.array_equal(rv, np.ones(3))


@pytest.mark.parametrize("op", ["batch_norm", "instance_norm"])
def test_big_endian_running_var_alone_is_refused_before_any_update(backend, op):
    rm, rv = np.zeros(3), np.ones(3, ">f8")
    with pytest.raises(ValueError, match="running_var"):
        _train(op, X3, rm, rv)
    assert np.array_equal(rm, np.zeros(3)), "running_mean was updated before the refusal"


def test_big_endian_running_stats_are_read_in_eval(backend):
    rm, rv = np.array([1.0, 2.0, 3.0]), np.array([4.0, 5.0, 6.0])
    want = bnfast.batch_norm(X3, rm, rv)
    got = bnfast.batch_norm(X3, rm.astype(">f8"), rv.astype(">f8"))
    np.testing.assert_array_equal(got, want)


def test_layer_with_big_endian_state_is_refused(backend):
    layer = nn.BatchNorm(3, dtype=np.float64)
    layer.running_mean = np.zeros(3, ">f8")
    with pytest.raises(ValueError, match="running_mean.*byte order"):
        layer(X3)
    layer.running_mean = np.zeros(3)  # the fix the message gives
    layer(X3)
    assert not np.array_equal(layer.running_mean, np.zeros(3))


def test_big_endian_out_is_refused_naming_it(backend):
    out = np.empty(X3.shape, ">f8")
    with pytest.raises(ValueError, match="out.*byte order"):
        bnfast.layer_norm(X3, out=out)


@pytest.mark.parametrize("op", ["group_norm", "instance_norm"])
def test_bad_flag_is_refused_before_out_is_written(backend, op):
    # Before: return_stats=np.array([True, False]) was evaluated after the
    # result was written into out, then raised numpy's "truth value of an
    # array is ambiguous" (not naming the argument).
    out = np.full_like(X3, 7.0)
    call = {
        "group_norm": lambda: bnfast.group_norm(X3, 3, out=out, return_stats=np.array([1, 0])),
        "instance_norm": lambda: bnfast.instance_norm(X3, out=out, return_stats=np.array([1, 0])),
    }[op]
    with pytest.raises(TypeError, match="return_stats"):
        call()
    assert np.all(out == 7.0)


# ---------------------------------------------------------------------------
# exception types: a ValueError/TypeError naming the argument
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["eps", "momentum"])
def test_huge_int_eps_momentum_are_value_errors(backend, name):
    # Before: OverflowError (int too large to convert to float).
    with pytest.raises(ValueError, match=name):
        bnfast.batch_norm(X3, np.zeros(3), np.ones(3), training=True, **{name: 10**400})


def test_huge_int_ddof_leaves_no_degrees_of_freedom(backend):
    # Before: OverflowError. NumPy's rule: n - ddof <= 0 gives inf (NaN for
    # constant data), with a RuntimeWarning.
    x = np.arange(6.0)
    with pytest.warns(RuntimeWarning, match="Degrees of freedom"):
        assert bnfast.mean_var(x, ddof=10**400)[1] == np.inf
    assert bnfast.moments(x).var(10**400) == np.inf
    assert bnfast.moments(x).var(10**30) == np.inf
    assert bnfast.moments(x).var(-(10**400)) == 0.0


def test_fraction_ddof_gives_float64(backend):
    # Before: numpy's UFuncTypeError (mean_var), an object array (Moments.var).
    x = np.arange(6.0)
    half = fractions.Fraction(1, 2)
    want = np.var(x, ddof=0.5)
    assert bnfast.mean_var(x, ddof=half)[1] == want
    var = bnfast.moments(x).var(half)
    assert np.asarray(var).dtype == np.float64 and var == want


@pytest.mark.parametrize("field", ["mean", "m2"])
def test_moments_field_errors_name_the_field(field):
    args = {"count": 2, "mean": 1.0, "m2": 1.0}
    args[field] = "a"
    with pytest.raises(TypeError, match=field):
        bnfast.Moments(**args)
    args[field] = 10**400
    with pytest.raises(ValueError, match=field):
        bnfast.Moments(**args)


def test_instance_norm_of_zero_channels(backend):
    # Before: ZeroDivisionError; the backward named num_groups.
    x = np.ones((2, 0, 4))
    y, mean, rstd = bnfast.instance_norm(x, return_stats=True)
    assert y.shape == x.shape and mean.shape == rstd.shape == (2, 0)
    dx, dw, db = bnfast.instance_norm_backward(np.ones_like(x), x, mean, rstd, np.ones(0))
    assert dx.shape == x.shape and dw.shape == db.shape == (0,)


def test_instance_norm_backward_names_itself():
    # Before: "group_norm_backward: axis 0 is the batch axis".
    x = np.ones((2, 3, 4))
    stats = np.zeros((2, 3)), np.ones((2, 3))
    with pytest.raises(ValueError, match="^instance_norm_backward: axis 0"):
        bnfast.instance_norm_backward(x, x, *stats, axis=0)
    with pytest.raises(ValueError, match="^instance_norm_backward: mean"):
        bnfast.instance_norm_backward(x, x, np.zeros((2, 2)), stats[1])


def test_diagnose_of_zero_features_prints():
    text = str(bnfast.diagnose(np.zeros((4, 0))))
    assert "0 features" in text


# ---------------------------------------------------------------------------
# mean_var / moments of integer and bool input: bounded slabs
# ---------------------------------------------------------------------------
def test_mean_var_of_uint8_has_bounded_memory(backend):
    # Before: the whole array converted to float64 (8x: 400 MB here). The
    # slabs are 1 MiB of float64; 16 MB leaves room for the kernels'
    # scratch and the merges.
    x = np.random.default_rng(0).integers(0, 256, 50_000_000, dtype=np.uint8)
    tracemalloc.start()
    try:
        mean, var = bnfast.mean_var(x)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16e6, f"peak {peak / 1e6:.1f} MB"
    n, s = x.size, int(x.sum(dtype=np.int64))
    q = int(np.dot(x.astype(np.int64), x.astype(np.int64)))
    assert mean == s / n  # exact integer sums, rounded once
    # exact variance (integer arithmetic): a tree of 382 merges, a few ulps
    exact = float(fractions.Fraction(n * q - s * s, n * n))
    assert abs(var - exact) <= 16 * np.finfo(np.float64).eps * exact


INT_DTYPES = ["bool", "int8", "uint8", "int16", "uint16", "int32", "int64", "uint64"]


def _int_data(dtype, shape, seed):
    rng = np.random.default_rng(seed)
    if dtype == "bool":
        return rng.random(shape) < 0.3
    info = np.iinfo(dtype)
    lo, hi = max(info.min, -(2**40)), min(info.max, 2**40)
    return rng.integers(lo, hi, shape, dtype=dtype, endpoint=True)


@pytest.mark.parametrize("dtype", INT_DTYPES)
@pytest.mark.parametrize(
    "shape, axis",
    [((500, 37), 0), ((500, 37), 1), ((500, 37), None), ((6, 50, 7), (0, 2)), ((9, 40, 30), 1)],
)
def test_integer_slabs_match_exact_statistics(backend, monkeypatch, dtype, shape, axis):
    x = _int_data(dtype, shape, seed=len(shape))
    # exact statistics in integer arithmetic (Python ints, then Fractions)
    xo = x.astype(np.int64).astype(object) if dtype != "uint64" else x.astype(object)
    n = x.size if axis is None else math.prod(int(x.shape[i]) for i in np.atleast_1d(axis))
    sums = np.asarray(xo.sum(axis=axis)).ravel()
    squares = np.asarray((xo * xo).sum(axis=axis)).ravel()
    exact_mean = np.array([float(fractions.Fraction(int(s), n)) for s in sums])
    exact_var = np.array(
        [float(fractions.Fraction(n * int(q) - int(s) ** 2, n * n)) for s, q in zip(sums, squares)]
    )
    # Slabs of 64 values: many blocks per channel, channels cut too.
    monkeypatch.setattr(moments_module, "SLAB_ELEMENTS", 64)
    mean, var = bnfast.mean_var(x, axis=axis)
    m = bnfast.moments(x, axis=axis)
    # Chan merges in a binary tree of depth <= 9 here: each level rounds
    # once, so 32 ulps bound the error (of the data's magnitude for the
    # mean, which may be near 0; the one-pass float64 path is measured up
    # to 48 ulps off on these inputs).
    eps = np.finfo(np.float64).eps
    scale = float(np.abs(x.astype(np.float64)).max()) or 1.0
    for got in (np.ravel(mean), m.mean.ravel()):
        np.testing.assert_allclose(got, exact_mean, rtol=32 * eps, atol=32 * eps * scale)
    np.testing.assert_allclose(np.ravel(var), exact_var, rtol=32 * eps, atol=0)
    want = np.mean(x, axis=axis)
    assert np.asarray(mean).dtype == np.float64 and np.shape(mean) == np.shape(want)


@pytest.mark.parametrize("dtype", ["uint8", "bool", "int32"])
def test_integer_slabs_do_not_depend_on_the_thread_count(native_backend, dtype):
    x = _int_data(dtype, (700, 3000), seed=4)  # 2.1M values: kernels split them
    with bnfast.threads(1):
        one = bnfast.mean_var(x, axis=0), bnfast.mean_var(x)
    with bnfast.threads(4):
        four = bnfast.mean_var(x, axis=0), bnfast.mean_var(x)
    for a, b in zip(one, four):
        assert np.asarray(a[0]).tobytes() == np.asarray(b[0]).tobytes()
        assert np.asarray(a[1]).tobytes() == np.asarray(b[1]).tobytes()


# ---------------------------------------------------------------------------
# subnormal data and scales whose reciprocal leaves float32's range
# ---------------------------------------------------------------------------
def test_subnormal_float32_standardizes_finite(backend, StandardScaler):
    # Before: [inf, nan, -inf] (1 / scale_ overflows float32).
    X = np.array([[2e-40], [1e-40], [0]], np.float32)
    st = bnfast.Standardizer().fit(X)
    got = st.transform(X)
    assert got.dtype == np.float32 and np.all(np.isfinite(got))
    want = StandardScaler().fit(X).transform(X)
    # The data are float32 subnormals with 17 to 18 significant bits (2e-40
    # / 2**-149): the z-scores carry that relative precision, not float32's.
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)
    # exact: (x - mean) / std of the float32 values, in float64
    x64 = X.astype(np.float64)
    exact = (x64 - x64.mean()) / x64.std()
    np.testing.assert_allclose(got, exact, rtol=1e-6, atol=1e-6)


def test_huge_float32_scale_standardizes_with_float32_precision(backend):
    # 1 / scale_ is subnormal in float32 (digits lost) for data near 1e38.
    X = np.array([[3e38], [-3e38], [1e38], [-2e38]], np.float32)
    got = bnfast.Standardizer().fit(X).transform(X)
    x64 = X.astype(np.float64)
    exact = (x64 - x64.mean()) / x64.std()
    np.testing.assert_allclose(got, exact, rtol=2 * np.finfo(np.float32).eps, atol=1e-7)


@pytest.mark.parametrize("op", ["group_norm", "instance_norm"])
def test_subnormal_float32_group_instance_norm_finite(backend, op):
    # Before: [inf, nan, -inf] with eps=0 (rstd overflows float32).
    x = np.array([2e-40, 1e-40, 0.0, 3e-40], np.float32).reshape(1, 2, 2)
    w = np.array([1.5, -0.5])
    if op == "group_norm":
        y, mean, rstd = bnfast.group_norm(x, 1, w, eps=0.0, return_stats=True)
        red = (1, 2)
    else:
        y, mean, rstd = bnfast.instance_norm(x, w, eps=0.0, return_stats=True)
        red = (2,)
    assert np.all(np.isfinite(y))
    x64 = x.astype(np.float64)
    mu = x64.mean(axis=red, keepdims=True)
    exact = (x64 - mu) / np.sqrt(x64.var(axis=red, keepdims=True)) * w[None, :, None]
    np.testing.assert_allclose(y, exact, rtol=1e-6, atol=1e-6)
    assert np.all(np.isinf(rstd))  # (the statistic itself is beyond float32)


# ---------------------------------------------------------------------------
# float32 backward passes of huge inputs
# ---------------------------------------------------------------------------
def _ref_backward(x, dy, w, red, eps):
    """float64 gradient of (x - mean) / sqrt(var + eps) * w over ``red``."""
    x = x.astype(np.float64)
    g = dy.astype(np.float64) * w
    mu = x.mean(axis=red, keepdims=True)
    inv = 1 / np.sqrt(x.var(axis=red, keepdims=True) + eps)
    xh = (x - mu) * inv
    gm = g.mean(axis=red, keepdims=True)
    return inv * (g - gm - xh * (g * xh).mean(axis=red, keepdims=True))


@pytest.mark.parametrize("op", ["batch_norm", "group_norm", "instance_norm"])
@pytest.mark.parametrize("magnitude", [1.0, 1e21, 1e23, 1e30, 1e37])
def test_float32_backward_keeps_its_accuracy_for_huge_inputs(backend, op, magnitude):
    # Before: 6e-4 relative error at 1e21, 27 % at 1e23 (invstd**2 in a
    # float32 factor of the apply step underflowed).
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((8, 4, 50)) * magnitude).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    w = rng.uniform(0.5, 2.0, 4)
    wb = w[None, :, None]
    if op == "batch_norm":
        _, m, inv = bnfast.batch_norm(x, weight=w, training=True, return_stats=True)
        dx = bnfast.batch_norm_backward(dy, x, m, inv, w)[0]
        ref = _ref_backward(x, dy, wb, (0, 2), 1e-5)
    elif op == "group_norm":
        _, m, rs = bnfast.group_norm(x, 2, weight=w, return_stats=True)
        dx = bnfast.group_norm_backward(dy, x, m, rs, 2, w)[0]
        xg, dg = x.reshape(8, 2, 100), (dy * wb).reshape(8, 2, 100)
        ref = _ref_backward(xg, dg, 1.0, (2,), 1e-5).reshape(x.shape)
    else:
        _, m, rs = bnfast.instance_norm(x, weight=w, return_stats=True)
        dx = bnfast.instance_norm_backward(dy, x, m, rs, w)[0]
        ref = _ref_backward(x, dy, wb, (2,), 1e-5)
    # The float64 reductions leave the float32 rounding of the apply step:
    # a few ulps of the largest term (dy * invstd * w and its companions),
    # measured <= 1.2e-7 of max|dx|; 64 ulps of float32 bound it.
    err = np.abs(dx - ref).max() / np.abs(ref).max()
    assert err <= 64 * np.finfo(np.float32).eps, err
    assert math.isfinite(err)
