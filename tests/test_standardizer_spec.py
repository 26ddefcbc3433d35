"""Independent specification tests for bnfast.Standardizer and the
bnfast.sklearn adapter (issue 5 spec, written from the spec only).

References are plain NumPy float64 computations (never bnfast) and, where
scikit-learn is installed, sklearn.preprocessing.StandardScaler.

Tolerances (spec "Accuracy contract"): 1e-12 relative for float64 input and
1e-6 relative for float32 input, for mean_, var_, scale_ and transform
output.  Absolute terms are only used where rounding of the *reference*
dominates; each one is justified where it is defined (see ``_mean_atol``,
``_var_atol`` and ``_tr_atol``).
"""
import contextlib
import math
import pathlib
import subprocess
import sys
import tracemalloc
import warnings

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import bnfast
from bnfast import _runtime

EPS64 = float(np.finfo(np.float64).eps)
NATIVE = [c for c in _runtime.choices() if c != "numpy"]


def _rtol(dtype):
    return 1e-6 if np.dtype(dtype) == np.float32 else 1e-12


# ---------------------------------------------------------------------------
# sklearn (optional)
# ---------------------------------------------------------------------------
@pytest.fixture
def StandardScaler():
    pytest.importorskip("sklearn", reason="scikit-learn is not installed")
    from sklearn.preprocessing import StandardScaler as SS

    return SS


def _sk_std():
    pytest.importorskip("sklearn", reason="scikit-learn is not installed")
    import bnfast.sklearn

    return bnfast.sklearn.Standardizer


# ---------------------------------------------------------------------------
# float64 references
# ---------------------------------------------------------------------------
def _norm_axes(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, (int, np.integer)):
        axis = (int(axis),)
    return tuple(sorted(a % ndim for a in axis))


def _bshape(shape, axis):
    """Shape that broadcasts a feature-shaped array against X (keepdims)."""
    red = _norm_axes(axis, len(shape))
    return tuple(1 if i in red else n for i, n in enumerate(shape))


def ref_stats(X, axis=0, ddof=0, sample_weight=None, nan_policy="omit"):
    """float64 reference (mean, var, count) of shape F.

    Two-pass with one correction step of the mean; weights follow the
    spec (length = X.shape[first reduced axis], broadcast over the other
    reduced axes); NaNs are omitted (or propagate)."""
    X = np.asarray(X, dtype=np.float64)
    red = _norm_axes(axis, X.ndim)
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


def ref_scale(var, mean, n):
    """sqrt(var) with scikit-learn's constant-feature rule (-> 1.0)."""
    var = np.asarray(var, np.float64)
    mean = np.asarray(mean, np.float64)
    n = np.asarray(n, np.float64)
    with np.errstate(all="ignore"):
        s = np.sqrt(var)
        const = var <= n * EPS64 * var + (n * mean * EPS64) ** 2
    return np.where(const, 1.0, s)


def assert_close(got, want, rtol, atol=0.0, what=""):
    """|got - want| <= atol + rtol*|want| elementwise (atol may be an array);
    NaN must match NaN, inf must match inf."""
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    gn, wn = np.isnan(got), np.isnan(want)
    assert np.array_equal(gn, wn), f"{what}: NaN positions differ: got {got[gn != wn][:5]}, want {want[gn != wn][:5]}"
    gi, wi = np.isinf(got), np.isinf(want)
    assert np.array_equal(got[gi | wi], want[gi | wi]), f"{what}: inf positions differ"
    fin = ~(wn | wi)
    atol = np.broadcast_to(np.asarray(atol, np.float64), want.shape)
    with np.errstate(all="ignore"):
        err = np.abs(got - want)
        bad = fin & ~(err <= atol + rtol * np.abs(want))
    if bad.any():
        i = np.argwhere(bad)[0]
        i = tuple(i)
        raise AssertionError(
            f"{what}: {bad.sum()} of {bad.size} values out of tolerance (rtol={rtol}); "
            f"first at {i}: got {got[i]!r}, want {want[i]!r}, atol {atol[i]!r}, "
            f"rel err {err[i] / max(abs(want[i]), 1e-300):.3e}"
        )


def _mean_atol(X, axis=0):
    """Absolute slack for mean_ comparisons: the reference's float64 sum of
    up to ~1e5 terms (pairwise, NumPy/sklearn) rounds to <= ~17 eps*max|x|
    absolute; this only matters for means that are ~0 relative to the data."""
    X = np.asarray(X, np.float64)
    red = _norm_axes(axis, X.ndim)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mx = np.nanmax(np.abs(X), axis=red) if X.size else 0.0
    return 32 * EPS64 * np.nan_to_num(mx)


def _var_atol(X, axis=0):
    """Absolute slack for var_: a reference mean off by ~eps*max|x| gives a
    variance floor of ~(eps*max|x|)**2 for (near-)constant features (e.g.
    sklearn's var_ of a column of 0.1 is ~1e-34, not 0)."""
    return _mean_atol(X, axis) ** 2


def _tr_atol(mean, scale, dtype, xshape, axis=0):
    """Absolute slack for transform outputs near 0.

    float32: the spec allows |mean_|/scale_ * 2**-23 (sklearn / a float32
    kernel rounds X - mean_ in float32).  float64: both sides round mean_
    itself to a few ulps, which an output near 0 inherits as
    ~|mean_|/scale_ * eps; 8 eps is used."""
    if mean is None:
        return 0.0
    c = 2.0 ** -23 if np.dtype(dtype) == np.float32 else 8 * EPS64
    scale = 1.0 if scale is None else np.asarray(scale, np.float64)
    with np.errstate(all="ignore"):
        a = np.abs(np.asarray(mean, np.float64)) / scale * c
    a = np.nan_to_num(a)
    return np.asarray(a).reshape(_bshape(xshape, axis)) if np.ndim(a) else a


def _out_dtype(dtype):
    dtype = np.dtype(dtype)
    return dtype if dtype in (np.float32, np.float64) else np.dtype(np.float64)


def expected_transform(st_, X, axis=0):
    """(X - mean_)/scale_ in float64 from the fitted attributes."""
    y = np.asarray(X, np.float64)
    bs = _bshape(np.shape(X), axis)
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
    assert y.dtype == _out_dtype(X.dtype)
    mean = st_.mean_ if st_.with_mean else None
    scale = st_.scale_ if st_.with_std else None
    atol = _tr_atol(mean, scale, _out_dtype(X.dtype), X.shape, axis)
    assert_close(y, expected_transform(st_, X, axis), _rtol(y.dtype), atol, "transform")
    z = st_.inverse_transform(y)
    assert z.dtype == y.dtype and z.shape == X.shape
    bs = _bshape(X.shape, axis)
    want = np.asarray(y, np.float64)
    if st_.with_std:
        want = want * np.asarray(st_.scale_).reshape(bs)
    if st_.with_mean:
        want = want + np.asarray(st_.mean_).reshape(bs)
    # inverse: an absolute term of a few ulps of |mean_| (the sum of the
    # scaled value and mean_ rounds relative to |mean_| when they cancel).
    c = 2.0 ** -23 if y.dtype == np.float32 else 8 * EPS64
    inv_atol = 0.0 if not st_.with_mean else (np.abs(np.nan_to_num(np.asarray(st_.mean_))) * c).reshape(bs)
    assert_close(z, want, _rtol(y.dtype), inv_atol, "inverse_transform")
    return y


def check_attrs(st_, X, axis=0, ddof=0, sample_weight=None, nan_policy="omit"):
    """mean_/var_/scale_/n_samples_seen_ against the float64 reference."""
    m, v, n = ref_stats(X, axis, ddof, sample_weight, nan_policy)
    rtol = _rtol(np.asarray(X).dtype)
    F = m.shape
    assert tuple(st_.feature_shape_) == F
    assert st_.n_features_in_ == math.prod(F)
    assert isinstance(st_.n_features_in_, (int, np.integer))
    if st_.with_mean or st_.with_std:
        assert st_.mean_.dtype == np.float64 and st_.mean_.shape == F
        assert_close(st_.mean_, m, rtol, _mean_atol(X, axis), "mean_")
    else:
        assert st_.mean_ is None
    if st_.with_std:
        assert st_.var_.dtype == np.float64 and st_.var_.shape == F
        assert st_.scale_.dtype == np.float64 and st_.scale_.shape == F
        assert_close(st_.var_, v, rtol, _var_atol(X, axis), "var_")
        assert_close(st_.scale_, ref_scale(v, m, n), rtol, 0.0, "scale_")
    else:
        assert st_.var_ is None
        assert st_.scale_ is None
    assert_close(np.broadcast_to(np.asarray(st_.n_samples_seen_, np.float64), F), n, 1e-12, 0, "n_samples_seen_")


# ---------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------
# (offset, scale) per column: offsets up to 1e4 times the spread; varied scales.
COLS_FIT = [(1e4, 1.0), (-250.0, 0.01), (3.0, 10.0), (0.0, 1e3), (1e3, 0.5), (-7e3, 3.0), (0.0, 1.0)]
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
        yield X[start:start + s]
        start += s
    assert start == X.shape[0]


def assert_same_as_sklearn(bn, sk, X, rtol, sample_weight=None):
    assert_close(bn.mean_, sk.mean_, rtol, _mean_atol(X), "mean_ vs sklearn")
    assert_close(bn.var_, sk.var_, rtol, _var_atol(X), "var_ vs sklearn")
    assert_close(bn.scale_, sk.scale_, rtol, 0.0, "scale_ vs sklearn")
    F = bn.mean_.shape
    assert_close(np.broadcast_to(np.asarray(bn.n_samples_seen_, float), F),
                 np.broadcast_to(np.asarray(sk.n_samples_seen_, float), F), 1e-12, 0, "n_samples_seen_ vs sklearn")
    yb, ys = bn.transform(X), sk.transform(X)
    assert yb.dtype == ys.dtype == X.dtype
    # outputs near 0 inherit the difference of the two mean_ values, which
    # the mean_ check above bounds by _mean_atol (sklearn's np.sum of a
    # column of 0.1 is off by ~14 ulps): add that, divided by scale_.
    with np.errstate(all="ignore"):
        atol = _tr_atol(bn.mean_, bn.scale_, X.dtype, X.shape) + np.nan_to_num(_mean_atol(X) / bn.scale_)
    assert_close(yb, ys, rtol, atol, "transform vs sklearn")
    zb, zs = bn.inverse_transform(ys), sk.inverse_transform(ys)
    c = 2.0 ** -23 if X.dtype == np.float32 else 8 * EPS64
    assert_close(zb, zs, rtol, np.abs(np.nan_to_num(bn.mean_)) * c, "inverse_transform vs sklearn")


# ---------------------------------------------------------------------------
# parity with scikit-learn's StandardScaler (2-D)
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n", [1, 2, 17, 257])
def test_fit_matches_sklearn(StandardScaler, dtype, n):
    X = make_2d(np.random.default_rng(n), n, dtype=dtype)
    bn = bnfast.Standardizer().fit(X)
    sk = StandardScaler().fit(X)
    assert_same_as_sklearn(bn, sk, X, _rtol(dtype))
    check_attrs(bn, X)
    check_transform(bn, X)
    n_seen = bn.n_samples_seen_
    assert isinstance(n_seen, (int, np.integer)) and not isinstance(n_seen, bool) and n_seen == n


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kind", ["rows1", "uneven", "with_empty"])
def test_partial_fit_chunks_match_sklearn(StandardScaler, dtype, kind):
    X = make_2d(np.random.default_rng(5), 300, COLS_PF, dtype)
    bn, sk = bnfast.Standardizer(), StandardScaler()
    for c in chunks(X, chunk_sizes(kind, len(X))):
        assert bn.partial_fit(c) is bn
        if len(c):
            sk.partial_fit(c)
    assert_same_as_sklearn(bn, sk, X, _rtol(dtype))
    check_attrs(bn, X)
    # the merged state equals a single fit
    one = bnfast.Standardizer().fit(X)
    assert_close(bn.mean_, one.mean_, 1e-13, _mean_atol(X), "partial vs fit mean_")
    assert_close(bn.var_, one.var_, 1e-13, _var_atol(X), "partial vs fit var_")
    assert bn.n_samples_seen_ == one.n_samples_seen_ == 300
    assert isinstance(bn.n_samples_seen_, (int, np.integer)) and np.ndim(bn.n_samples_seen_) == 0


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_partial_fit_large_offset_is_exact(dtype):
    # 1e4 + randn, one row at a time: the result must still match an exact
    # float64 reference to 1e-12 (sklearn's own incremental update drifts to
    # ~5e-13 here, so the reference is plain float64 two-pass).
    X = make_2d(np.random.default_rng(7), 400, [(1e4, 1.0), (-5e3, 0.1), (2e4, 30.0)], dtype)
    bn = bnfast.Standardizer()
    for c in chunks(X, chunk_sizes("rows1", 400)):
        bn.partial_fit(c)
    check_attrs(bn, X)
    check_transform(bn, X)


def test_partial_fit_after_fit_merges_and_fit_forgets():
    rng = np.random.default_rng(1)
    A, B = make_2d(rng, 50), make_2d(rng, 70)
    s = bnfast.Standardizer().fit(A).partial_fit(B)
    check_attrs(s, np.concatenate([A, B]))
    assert s.fit(B) is s
    check_attrs(s, B)
    # fit forgets even the feature shape
    C = rng.standard_normal((20, 3))
    s.fit(C)
    check_attrs(s, C)
    assert s.n_features_in_ == 3


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sample_weight_matches_sklearn(StandardScaler, dtype):
    rng = np.random.default_rng(11)
    X = make_2d(rng, 200, dtype=dtype)
    w = f32_exact(rng.uniform(0, 3, 200), dtype)
    w[[3, 50, 51]] = 0.0
    bn = bnfast.Standardizer().fit(X, sample_weight=w)
    sk = StandardScaler().fit(X, sample_weight=w)
    assert_same_as_sklearn(bn, sk, X, _rtol(dtype))
    check_attrs(bn, X, sample_weight=w)
    n_seen = bn.n_samples_seen_
    assert np.ndim(n_seen) == 0 and isinstance(n_seen, (float, np.floating))
    assert n_seen == pytest.approx(w.sum(), rel=1e-13)
    assert np.asarray(bn.moments_.count).dtype == np.float64  # total weight
    assert np.allclose(np.asarray(bn.moments_.count, np.float64), w.sum(), rtol=1e-13)


def test_sample_weight_partial_fit_matches_sklearn(StandardScaler):
    rng = np.random.default_rng(12)
    X = make_2d(rng, 240, COLS_PF)
    w = rng.uniform(0.1, 2, 240)
    bn, sk = bnfast.Standardizer(), StandardScaler()
    start = 0
    for s in chunk_sizes("uneven", 240):
        bn.partial_fit(X[start:start + s], sample_weight=w[start:start + s])
        sk.partial_fit(X[start:start + s], sample_weight=w[start:start + s])
        start += s
    assert_same_as_sklearn(bn, sk, X, 1e-12)
    check_attrs(bn, X, sample_weight=w)


@pytest.mark.parametrize("ddof", [0, 1])
def test_weight_two_equals_repeated_row(ddof):
    rng = np.random.default_rng(13)
    X = make_2d(rng, 60)
    w = rng.integers(1, 4, 60)
    a = bnfast.Standardizer(ddof=ddof).fit(X, sample_weight=w.astype(np.float64))
    b = bnfast.Standardizer(ddof=ddof).fit(np.repeat(X, w, axis=0))
    assert_close(a.mean_, b.mean_, 1e-12, _mean_atol(X), "mean_")
    assert_close(a.var_, b.var_, 1e-12, _var_atol(X), "var_")
    assert_close(a.scale_, b.scale_, 1e-12, 0, "scale_")
    assert float(a.n_samples_seen_) == float(b.n_samples_seen_) == float(w.sum())
    assert_close(a.transform(X), b.transform(X), 1e-12, _tr_atol(a.mean_, a.scale_, X.dtype, X.shape), "transform")
    # integer weights are accepted too and mean the same thing
    c = bnfast.Standardizer(ddof=ddof).fit(X, sample_weight=w)
    assert_close(c.var_, a.var_, 1e-14, 0, "int weights")


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_nan_omit_matches_sklearn(StandardScaler, dtype, weighted):
    rng = np.random.default_rng(21)
    X = make_2d(rng, 150, dtype=dtype)
    X[rng.random(X.shape) < 0.15] = np.nan
    X[:, 6] = np.nan  # an all-NaN feature -> NaN mean_/var_/scale_ (as sklearn)
    w = f32_exact(rng.uniform(0.2, 2, 150), dtype) if weighted else None
    bn = bnfast.Standardizer().fit(X, sample_weight=w)
    sk = StandardScaler().fit(X, sample_weight=w)
    assert_same_as_sklearn(bn, sk, X, _rtol(dtype))
    check_attrs(bn, X, sample_weight=w)
    assert np.isnan(bn.mean_[6]) and np.isnan(bn.var_[6]) and np.isnan(bn.scale_[6])
    n_seen = np.asarray(bn.n_samples_seen_)
    assert n_seen.shape == (7,)
    assert n_seen.dtype == (np.float64 if weighted else np.int64)
    if not weighted:
        np.testing.assert_array_equal(n_seen, (~np.isnan(X)).sum(0))
    y = bn.transform(X)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(X))  # NaN stays NaN, nothing else becomes NaN


def _no_all_nan_column(X, sizes):
    return all(not np.isnan(c).all(axis=0).any() for c in chunks(X, sizes) if len(c))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_nan_omit_partial_fit_matches_sklearn(StandardScaler):
    rng = np.random.default_rng(22)
    X = make_2d(rng, 300, COLS_PF)
    X[rng.random(X.shape) < 0.2] = np.nan
    sizes = [16, 17, 33, 40, 64, 16, 114]
    # sklearn's own partial_fit turns a feature into NaN for good once a chunk
    # has no value of it (0/0 in its update), so parity needs every chunk to
    # see every feature; the all-NaN-chunk case is tested against float64 below.
    assert _no_all_nan_column(X, sizes)
    bn, sk = bnfast.Standardizer(), StandardScaler()
    for c in chunks(X, sizes):
        bn.partial_fit(c)
        sk.partial_fit(c)
    assert_same_as_sklearn(bn, sk, X, 1e-12)
    check_attrs(bn, X)
    np.testing.assert_array_equal(np.asarray(bn.n_samples_seen_), (~np.isnan(X)).sum(0))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("weighted", [False, True])
def test_nan_omit_partial_fit_chunks_without_values_exact(weighted):
    rng = np.random.default_rng(23)
    X = make_2d(rng, 200)
    X[rng.random(X.shape) < 0.2] = np.nan
    X[:30, 1] = np.nan  # the first chunks see no value of feature 1
    X[100:140, 3] = np.nan  # some middle chunks see no value of feature 3
    w = rng.uniform(0.5, 2, 200) if weighted else None
    bn = bnfast.Standardizer()
    start = 0
    for n in chunk_sizes("uneven", 200):
        bn.partial_fit(X[start:start + n], sample_weight=None if w is None else w[start:start + n])
        start += n
    check_attrs(bn, X, sample_weight=w)
    assert not np.isnan(bn.mean_).any() and not np.isnan(bn.var_).any()
    check_transform(bn, X)


def test_constant_features_float64(StandardScaler):
    rng = np.random.default_rng(31)
    n = 100
    X = np.empty((n, 6))
    X[:, 0] = 1e8
    X[:, 1] = 0.1
    X[:, 2] = 0.0
    X[:, 3] = 1e8 + np.spacing(1e8) * rng.integers(-1, 2, n)  # near-constant (1 ulp noise)
    X[:, 4] = -3.3
    X[:, 5] = 5 + rng.standard_normal(n)
    bn = bnfast.Standardizer().fit(X)
    sk = StandardScaler().fit(X)
    np.testing.assert_array_equal(bn.scale_[:5], 1.0)
    assert bn.scale_[5] != 1.0
    assert_same_as_sklearn(bn, sk, X, 1e-12)
    y = bn.transform(X)
    assert np.isfinite(y).all()
    assert np.abs(y[:, :5]).max() <= 1e-6  # constants map to ~0 (1e8 +- 1 ulp -> ~1.5e-8)
    check_attrs(bn, X)


def test_constant_features_float32(StandardScaler):
    rng = np.random.default_rng(32)
    X = np.empty((1000, 4), np.float32)
    X[:, 0] = 0.1
    X[:, 1] = np.float32(1e4 / 3)
    X[:, 2] = 1e8
    X[:, 3] = 2 + rng.standard_normal(1000)
    bn = bnfast.Standardizer().fit(X)
    sk = StandardScaler().fit(X)
    np.testing.assert_array_equal(bn.scale_[:3], 1.0)
    assert_same_as_sklearn(bn, sk, X, 1e-6)
    y = bn.transform(X)
    assert y.dtype == np.float32
    assert np.isfinite(y).all()
    assert np.abs(y[:, :3]).max() <= 1e-3


def test_tiny_but_genuine_std_keeps_its_scale():
    # scikit-learn's rule only flags variance within rounding noise of the
    # mean; data that really lives at 1e-17 keeps its scale (as sklearn).
    X = np.zeros((10, 2))
    X[::2, 0] = 1e-17
    X[1::2, 0] = -1e-17
    X[:, 1] = np.arange(10.0)
    s = bnfast.Standardizer().fit(X)
    assert s.var_[0] == pytest.approx(1e-34, rel=1e-12)
    assert s.scale_[0] == pytest.approx(1e-17, rel=1e-12)
    assert s.scale_[1] == pytest.approx(np.std(np.arange(10.0)), rel=1e-14)
    y = s.transform(X)
    assert np.isfinite(y).all()
    np.testing.assert_allclose(y[:, 0], np.where(np.arange(10) % 2 == 0, 1.0, -1.0), rtol=1e-12)


@pytest.mark.parametrize("with_mean", [True, False])
@pytest.mark.parametrize("with_std", [True, False])
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int32])
def test_with_mean_with_std_match_sklearn(StandardScaler, with_mean, with_std, dtype):
    rng = np.random.default_rng(41)
    if dtype == np.int32:
        X = rng.integers(-1000, 5000, (90, 4)).astype(np.int32)
    else:
        X = make_2d(rng, 90, dtype=dtype)
    bn = bnfast.Standardizer(with_mean=with_mean, with_std=with_std).fit(X)
    sk = StandardScaler(with_mean=with_mean, with_std=with_std).fit(X)
    if not with_mean and not with_std:
        assert bn.mean_ is None
    else:
        assert_close(bn.mean_, sk.mean_, _rtol(dtype), _mean_atol(X), "mean_")
    if with_std:
        assert_close(bn.var_, sk.var_, _rtol(dtype), _var_atol(X), "var_")
        assert_close(bn.scale_, sk.scale_, _rtol(dtype), 0, "scale_")
    else:
        assert bn.var_ is None and bn.scale_ is None
    assert float(np.max(bn.n_samples_seen_)) == float(np.max(sk.n_samples_seen_)) == 90
    yb, ys = bn.transform(X), sk.transform(X)
    assert yb.dtype == _out_dtype(dtype) == ys.dtype
    atol = _tr_atol(bn.mean_ if with_mean else None, bn.scale_, yb.dtype, X.shape)
    if with_mean:  # mean_ difference bounded by _mean_atol, inherited by outputs near 0
        atol = atol + _mean_atol(X) / (bn.scale_ if with_std else 1.0)
    assert_close(yb, ys, _rtol(yb.dtype), atol, "transform")
    check_transform(bn, X)
    if not with_mean and not with_std:
        np.testing.assert_array_equal(yb, X.astype(yb.dtype))


@pytest.mark.parametrize("ddof", [0, 1, 2, 0.5])
def test_ddof(ddof):
    X = make_2d(np.random.default_rng(51), 40)
    s = bnfast.Standardizer(ddof=ddof).fit(X)
    check_attrs(s, X, ddof=ddof)
    # var_ = M2 / (n - ddof): relation to ddof=0
    s0 = bnfast.Standardizer().fit(X)
    assert_close(s.var_, s0.var_ * 40 / (40 - ddof), 1e-13, 0, "ddof scaling")
    check_transform(s, X)


def test_fitted_attribute_types_and_moments():
    rng = np.random.default_rng(52)
    X = make_2d(rng, 33)
    s = bnfast.Standardizer().fit(X)
    assert s.feature_shape_ == (7,)
    assert isinstance(s.feature_shape_, tuple)
    assert s.n_features_in_ == 7
    mo = s.moments_
    assert isinstance(mo, bnfast.Moments)
    assert mo.shape == (7,)
    assert mo.count.dtype == np.int64
    np.testing.assert_array_equal(mo.count, 33)
    np.testing.assert_array_equal(mo.mean, s.mean_)
    assert_close(mo.var(0), s.var_, 1e-15, 0, "moments_.var")
    m, v, _ = ref_stats(X)
    assert_close(mo.m2, v * 33, 1e-12, _var_atol(X) * 33, "moments_.m2")


def test_fit_transform_equals_fit_then_transform():
    rng = np.random.default_rng(53)
    X = make_2d(rng, 64)
    w = rng.uniform(0, 2, 64)
    a = bnfast.Standardizer().fit_transform(X, sample_weight=w)
    s = bnfast.Standardizer().fit(X, sample_weight=w)
    np.testing.assert_array_equal(a, s.transform(X))
    y = np.arange(64) % 2
    b = bnfast.Standardizer().fit_transform(X, y)  # y is accepted and ignored
    np.testing.assert_array_equal(b, bnfast.Standardizer().fit(X).transform(X))


# ---------------------------------------------------------------------------
# backends and threads
# ---------------------------------------------------------------------------
def _fit_cases():
    rng = np.random.default_rng(61)
    X64 = make_2d(rng, 517)
    X32 = make_2d(rng, 333, dtype=np.float32)
    Xn = make_2d(rng, 200)
    Xn[rng.random(Xn.shape) < 0.1] = np.nan
    w = rng.uniform(0, 2, 517)
    img = (3 + 2 * rng.standard_normal((6, 5, 17, 9))).astype(np.float32)
    wi = rng.uniform(0.5, 1.5, 6)
    return [
        ("f64", X64, {}, {}),
        ("f32", X32, {}, {}),
        ("nan", Xn, {}, {}),
        ("weights", X64, {}, {"sample_weight": w}),
        ("nchw", img, {"axis": (0, 2, 3)}, {}),
        ("nchw-w", img, {"axis": (0, 2, 3)}, {"sample_weight": wi}),
        ("nhwc", img, {"axis": (0, 1, 2)}, {}),
        ("none", X32, {"axis": None}, {}),
        ("ddof", X64, {"ddof": 1}, {}),
    ]


def _chunked_fit(X, params, kw):
    s = bnfast.Standardizer(**params)
    sizes = chunk_sizes("uneven", X.shape[0])
    start = 0
    for n in sizes:
        k = {k: v[start:start + n] for k, v in kw.items()}
        s.partial_fit(X[start:start + n], **k)
        start += n
    return s


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_backends_agree_with_numpy_backend(backend):
    for name, X, params, kw in _fit_cases():
        with _runtime.using("numpy"):
            ref = bnfast.Standardizer(**params).fit(X, **kw)
            ref_y = ref.transform(X)
            ref_pf = _chunked_fit(X, params, kw)
        got = bnfast.Standardizer(**params).fit(X, **kw)
        got_pf = _chunked_fit(X, params, kw)
        rtol = _rtol(X.dtype)
        axis = params.get("axis", 0)
        for a, b in ((got, ref), (got_pf, ref), (got_pf, ref_pf)):
            for attr in ("mean_", "var_", "scale_"):
                atol = {"mean_": _mean_atol(X, axis), "var_": _var_atol(X, axis)}.get(attr, 0.0)
                assert_close(getattr(a, attr), getattr(b, attr), rtol, atol, f"{name} {backend} {attr}")
            # counts are exact; sums of weights may differ in the last bit with the summation order
            assert_close(a.n_samples_seen_, b.n_samples_seen_, 1e-14, 0, f"{name} n_samples_seen_")
        y = got.transform(X)
        assert y.dtype == ref_y.dtype
        assert_close(y, ref_y, rtol, _tr_atol(ref.mean_, ref.scale_, y.dtype, X.shape, axis), f"{name} {backend} transform")
        check_attrs(got, X, axis=axis, ddof=params.get("ddof", 0), sample_weight=kw.get("sample_weight"))


@pytest.mark.skipif(not NATIVE, reason="no native backend in this build")
@pytest.mark.parametrize("cap", NATIVE)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_native_statistics_bit_identical_across_threads(cap, dtype):
    rng = np.random.default_rng(62)
    X = (7 + rng.standard_normal((60_000, 12))).astype(dtype)
    img = (1 + rng.standard_normal((16, 8, 64, 64))).astype(dtype)
    with _runtime.using(cap):
        for data, ax in ((X, 0), (img, (0, 2, 3))):
            res = []
            for t in (1, 2, 3):
                bnfast.set_num_threads(t)
                s = bnfast.Standardizer(axis=ax).fit(data)
                res.append((s, s.transform(data)))
            s0, y0 = res[0]
            for s, y in res[1:]:
                # statistics: bit-identical for any thread count (spec)
                np.testing.assert_array_equal(s.mean_, s0.mean_)
                np.testing.assert_array_equal(s.var_, s0.var_)
                np.testing.assert_array_equal(s.scale_, s0.scale_)
                # elementwise transform: the stated tolerance
                assert_close(y, y0, _rtol(dtype), _tr_atol(s0.mean_, s0.scale_, dtype, data.shape, ax), "threads")


# ---------------------------------------------------------------------------
# axis semantics
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(
    "layout, axis",
    [("nchw", (0, 2, 3)), ("nchw", (0, -2, -1)), ("nchw", (-4, 2, 3)), ("nchw", (3, 0, 2)),
     ("nhwc", (0, 1, 2)), ("nhwc", (0, -3, -2))],
)
def test_image_axes(dtype, layout, axis):
    rng = np.random.default_rng(71)
    C = 5
    shape = (6, C, 7, 9) if layout == "nchw" else (6, 7, 9, C)
    cax = 1 if layout == "nchw" else 3
    X = rng.standard_normal(shape)
    offs = np.array([0.0, 1e3, -40.0, 7.0, 2e4])
    scs = np.array([1.0, 0.1, 10.0, 3.0, 100.0])
    bs = [1, 1, 1, 1]
    bs[cax] = C
    X = (X * scs.reshape(bs) + offs.reshape(bs)).astype(dtype)
    s = bnfast.Standardizer(axis=axis).fit(X)
    assert s.feature_shape_ == (C,)
    assert s.n_features_in_ == C
    assert s.mean_.shape == (C,)
    assert int(np.max(s.n_samples_seen_)) == X.size // C
    # manual float64 per-channel computation
    Xc = np.moveaxis(X.astype(np.float64), cax, 0).reshape(C, -1)
    m = Xc.mean(1)
    m = m + (Xc - m[:, None]).mean(1)
    v = ((Xc - m[:, None]) ** 2).mean(1)
    rtol = _rtol(dtype)
    # mean of values ~0: float64 sums round to ~eps*max|x| absolute (see _mean_atol)
    assert_close(s.mean_, m, rtol, 32 * EPS64 * np.abs(Xc).max(1), "channel mean")
    assert_close(s.var_, v, rtol, 0, "channel var")
    assert_close(s.scale_, np.sqrt(v), rtol, 0, "channel scale")
    y = s.transform(X)
    assert y.shape == X.shape and y.dtype == X.dtype
    want = (X.astype(np.float64) - m.reshape(bs)) / np.sqrt(v).reshape(bs)
    atol = (np.abs(m) / np.sqrt(v) * (2.0 ** -23 if dtype == np.float32 else 8 * EPS64)).reshape(bs)
    assert_close(y, want, rtol, atol, "channel transform")
    # per-channel broadcast: channel 4 of y depends only on channel 4 of X
    ch = [slice(None)] * 4
    ch[cax] = 4
    assert_close(y[tuple(ch)], (X[tuple(ch)].astype(np.float64) - m[4]) / np.sqrt(v[4]), rtol,
                 abs(m[4]) / np.sqrt(v[4]) * 2.0 ** -23, "channel 4")
    # reduced axes may have other lengths in transform
    X2 = X[:2, ...][..., :3] if layout == "nchw" else X[:2, :3]
    assert_close(s.transform(X2), expected_transform(s, X2, axis), rtol,
                 _tr_atol(s.mean_, s.scale_, dtype, X2.shape, axis), "transform other sizes")
    check_transform(s, X, axis)


def test_negative_axes_equal_positive():
    rng = np.random.default_rng(72)
    X = 3 + rng.standard_normal((4, 3, 5, 6))
    a = bnfast.Standardizer(axis=(0, 2, 3)).fit(X)
    b = bnfast.Standardizer(axis=(-4, -2, -1)).fit(X)
    np.testing.assert_array_equal(a.mean_, b.mean_)
    np.testing.assert_array_equal(a.var_, b.var_)
    np.testing.assert_array_equal(a.transform(X), b.transform(X))
    c = bnfast.Standardizer(axis=-2).fit(X[0, 0])  # 2-D, axis=-2 == axis=0
    d = bnfast.Standardizer(axis=0).fit(X[0, 0])
    np.testing.assert_array_equal(c.mean_, d.mean_)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_axis_none_global(dtype):
    rng = np.random.default_rng(73)
    X = (50 + 4 * rng.standard_normal((7, 9, 11))).astype(dtype)
    s = bnfast.Standardizer(axis=None).fit(X)
    assert s.feature_shape_ == ()
    assert s.n_features_in_ == 1
    assert np.shape(s.mean_) == () and np.shape(s.scale_) == ()
    assert int(s.n_samples_seen_) == X.size
    m, v, _ = ref_stats(X, None)
    assert_close(s.mean_, m, _rtol(dtype), 0, "global mean")
    assert_close(s.var_, v, _rtol(dtype), 0, "global var")
    check_transform(s, X, None)
    # feature shape () -> other sizes can be transformed (same ndim: see report)
    Z = (50 + rng.standard_normal((3, 2, 5))).astype(dtype)
    assert_close(s.transform(Z), (Z.astype(np.float64) - m) / np.sqrt(v), _rtol(dtype),
                 abs(m) / np.sqrt(v) * 2.0 ** -23, "global transform other shape")


def test_axis_1_reduces_columns():
    # axis names the REDUCED axes: axis=1 on (n, f) gives one statistic per row
    rng = np.random.default_rng(74)
    X = make_2d(rng, 8)
    s = bnfast.Standardizer(axis=1).fit(X)
    assert s.feature_shape_ == (8,)
    assert_close(s.mean_, X.mean(1), 1e-12, _mean_atol(X, 1), "row means")
    check_attrs(s, X, axis=1)
    check_transform(s, X, axis=1)


def test_3d_sequence_axes_and_feature_shape():
    rng = np.random.default_rng(75)
    X = 2 + rng.standard_normal((10, 4, 3))
    s = bnfast.Standardizer(axis=(0, 1)).fit(X)
    assert s.feature_shape_ == (3,)
    check_attrs(s, X, axis=(0, 1))
    t = bnfast.Standardizer(axis=0).fit(X)  # feature shape (4, 3)
    assert t.feature_shape_ == (4, 3) and t.n_features_in_ == 12
    assert t.mean_.shape == (4, 3)
    check_attrs(t, X, axis=0)
    check_transform(t, X, axis=0)


def test_sample_weight_broadcast_over_other_reduced_axes():
    rng = np.random.default_rng(76)
    X = 1 + rng.standard_normal((5, 3, 4, 4))
    w = np.array([1.0, 2.0, 0.5, 0.0, 3.0])
    s = bnfast.Standardizer(axis=(0, 2, 3)).fit(X, sample_weight=w)
    check_attrs(s, X, axis=(0, 2, 3), sample_weight=w)
    # weight 2 == the sample repeated
    r = bnfast.Standardizer(axis=(0, 2, 3)).fit(np.repeat(X, [1, 2, 0, 0, 0], axis=0))
    s2 = bnfast.Standardizer(axis=(0, 2, 3)).fit(X[:2], sample_weight=np.array([1.0, 2.0]))
    assert_close(s2.mean_, r.mean_, 1e-12, 1e-15, "w2 mean")
    assert_close(s2.var_, r.var_, 1e-12, 0, "w2 var")


def test_partial_fit_reduced_axes_any_length():
    rng = np.random.default_rng(77)
    A = 3 + rng.standard_normal((4, 2, 5, 6))
    B = 3 + rng.standard_normal((1, 2, 7, 3))
    E = np.empty((0, 2, 5, 6))
    s = bnfast.Standardizer(axis=(0, 2, 3)).partial_fit(A).partial_fit(E).partial_fit(B)
    allv = np.concatenate([np.moveaxis(A, 1, 0).reshape(2, -1), np.moveaxis(B, 1, 0).reshape(2, -1)], axis=1)
    assert_close(s.mean_, allv.mean(1), 1e-12, 1e-15, "mean")
    assert_close(s.var_, allv.var(1), 1e-12, 0, "var")
    assert int(np.max(s.n_samples_seen_)) == allv.shape[1]


def test_partial_fit_zero_rows_is_noop():
    X = make_2d(np.random.default_rng(78), 20)
    s = bnfast.Standardizer().fit(X)
    before = (s.mean_.copy(), s.var_.copy(), s.n_samples_seen_)
    s.partial_fit(X[:0])
    np.testing.assert_array_equal(s.mean_, before[0])
    np.testing.assert_array_equal(s.var_, before[1])
    assert s.n_samples_seen_ == before[2]


# ---------------------------------------------------------------------------
# nan_policy, inf, dtypes, parameters, errors
# ---------------------------------------------------------------------------
def _with_nan():
    X = make_2d(np.random.default_rng(81), 30)
    X[3, 1] = np.nan
    X[7, 4] = np.nan
    return X


def test_nan_policy_propagate():
    X = _with_nan()
    s = bnfast.Standardizer(nan_policy="propagate").fit(X)
    for j in (1, 4):
        assert np.isnan(s.mean_[j]) and np.isnan(s.var_[j]) and np.isnan(s.scale_[j])
    ok = [0, 2, 3, 5, 6]
    m, v, _ = ref_stats(X[:, ok])
    assert_close(s.mean_[ok], m, 1e-12, _mean_atol(X[:, ok]), "mean_")
    assert_close(s.var_[ok], v, 1e-12, 0, "var_")
    # partial_fit: a later chunk with NaN poisons that feature only
    t = bnfast.Standardizer(nan_policy="propagate").partial_fit(X[:5]).partial_fit(X[5:])
    assert np.isnan(t.mean_[[1, 4]]).all() and not np.isnan(t.mean_[ok]).any()


def test_nan_policy_raise():
    X = _with_nan()
    with pytest.raises(ValueError):
        bnfast.Standardizer(nan_policy="raise").fit(X)
    s = bnfast.Standardizer(nan_policy="raise").partial_fit(X[:3])
    with pytest.raises(ValueError):
        s.partial_fit(X[3:])
    clean = np.nan_to_num(X)
    r = bnfast.Standardizer(nan_policy="raise").fit(clean)
    check_attrs(r, clean)
    # only fit/partial_fit raise: transform keeps NaN as NaN under every policy
    y = r.transform(X)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(X))
    assert_close(y, expected_transform(r, X), 1e-12, _tr_atol(r.mean_, r.scale_, X.dtype, X.shape), "transform")


def test_nan_omit_is_default():
    assert bnfast.Standardizer().get_params()["nan_policy"] == "omit"
    X = _with_nan()
    s = bnfast.Standardizer().fit(X)
    assert not np.isnan(s.mean_).any()
    np.testing.assert_array_equal(s.n_samples_seen_, [30, 29, 30, 30, 29, 30, 30])
    assert np.asarray(s.n_samples_seen_).dtype == np.int64


@pytest.mark.parametrize("policy", ["omit", "propagate", "raise"])
@pytest.mark.parametrize("val", [np.inf, -np.inf])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_inf_raises(policy, val, dtype):
    X = make_2d(np.random.default_rng(82), 20, dtype=dtype)
    X[5, 2] = val
    with pytest.raises(ValueError, match="(?i)inf"):
        bnfast.Standardizer(nan_policy=policy).fit(X)
    s = bnfast.Standardizer(nan_policy=policy).partial_fit(X[:5])
    with pytest.raises(ValueError, match="(?i)inf"):
        s.partial_fit(X[5:])
    with pytest.raises(ValueError, match="(?i)inf"):
        bnfast.Standardizer(nan_policy=policy).fit_transform(X)


@pytest.mark.parametrize(
    "bad",
    [np.ones((4, 2), np.complex128), np.ones((4, 2), np.complex64),
     np.array([[1, "a"], [2, 3]], dtype=object), np.array([["a", "b"], ["c", "d"]])],
    ids=["c128", "c64", "object", "str"],
)
def test_bad_dtypes_typeerror(bad):
    with pytest.raises(TypeError):
        bnfast.Standardizer().fit(bad)
    with pytest.raises(TypeError):
        bnfast.Standardizer().partial_fit(bad)
    s = bnfast.Standardizer().fit(np.ones((4, 2)) * [[1.0], [2.0], [3.0], [4.0]])
    with pytest.raises(TypeError):
        s.transform(bad)


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64, np.uint8, np.uint16, np.bool_, np.float16])
def test_other_real_dtypes_give_float64(dtype):
    rng = np.random.default_rng(83)
    X = rng.integers(0, 2 if dtype == np.bool_ else 100, (40, 3)).astype(dtype)
    s = bnfast.Standardizer().fit(X)
    check_attrs(s, X)
    y = s.transform(X)
    assert y.dtype == np.float64
    assert s.inverse_transform(y).dtype == np.float64
    assert s.inverse_transform(X).dtype == np.float64
    check_transform(s, X)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_dtypes_preserved(dtype):
    X = make_2d(np.random.default_rng(84), 30, dtype=dtype)
    s = bnfast.Standardizer().fit(X)
    assert s.transform(X).dtype == dtype
    assert s.inverse_transform(X).dtype == dtype
    assert s.fit_transform(X).dtype == dtype
    assert s.mean_.dtype == s.var_.dtype == s.scale_.dtype == np.float64


def test_constructor_keyword_only_and_stores_unchanged():
    with pytest.raises(TypeError):
        bnfast.Standardizer(0)  # noqa
    odd = dict(axis="nonsense", with_mean=0, with_std="yes", ddof="x", nan_policy="maybe", copy=None)
    s = bnfast.Standardizer(**odd)  # no validation in __init__ (sklearn rule)
    assert s.get_params() == odd
    assert s.get_params(deep=True) == odd
    assert bnfast.Standardizer().get_params() == dict(
        axis=0, with_mean=True, with_std=True, ddof=0, nan_policy="omit", copy=True)


@pytest.mark.parametrize(
    "params, exc",
    [
        (dict(nan_policy="ignore"), ValueError),
        (dict(nan_policy=None), ValueError),
        (dict(ddof="1"), TypeError),
        (dict(ddof=None), TypeError),
        (dict(ddof=1 + 2j), TypeError),
        (dict(axis=1.5), TypeError),
        (dict(axis="0"), TypeError),
        (dict(axis=(0, 1.0)), TypeError),
        (dict(axis=2), np.exceptions.AxisError),
        (dict(axis=-3), np.exceptions.AxisError),
        (dict(axis=(0, 5)), np.exceptions.AxisError),
        (dict(axis=(0, 0)), ValueError),
        (dict(axis=(1, -1)), ValueError),
    ],
    ids=str,
)
def test_bad_params_raise_at_fit(params, exc):
    X = np.arange(12.0).reshape(4, 3)
    s = bnfast.Standardizer(**params)  # never raises here
    with pytest.raises(exc):
        s.fit(X)
    with pytest.raises(exc):
        bnfast.Standardizer(**params).partial_fit(X)
    assert issubclass(np.exceptions.AxisError, ValueError)


def test_set_params():
    s = bnfast.Standardizer()
    assert s.set_params(with_mean=False, ddof=1) is s
    assert s.get_params()["with_mean"] is False and s.get_params()["ddof"] == 1
    assert s.with_mean is False
    with pytest.raises(ValueError):
        s.set_params(bogus=3)
    X = make_2d(np.random.default_rng(85), 20)
    s.fit(X)
    check_attrs(s, X, ddof=1)


def test_feature_shape_mismatch_transform():
    s = bnfast.Standardizer().fit(np.random.default_rng(0).standard_normal((10, 4)))
    for meth in (s.transform, s.inverse_transform):
        with pytest.raises(ValueError) as ei:
            meth(np.ones((5, 3)))
        msg = str(ei.value)
        assert "3" in msg and "4" in msg, msg
        with pytest.raises(ValueError):
            meth(np.ones((5, 4, 1)))
        with pytest.raises(ValueError):
            meth(np.ones(4))


def test_feature_shape_mismatch_partial_fit():
    rng = np.random.default_rng(1)
    s = bnfast.Standardizer().partial_fit(rng.standard_normal((10, 4)))
    with pytest.raises(ValueError) as ei:
        s.partial_fit(rng.standard_normal((10, 3)))
    msg = str(ei.value)
    assert "3" in msg and "4" in msg, msg
    with pytest.raises(ValueError):
        s.partial_fit(rng.standard_normal((10, 4, 2)))  # ndim differs
    # the failed calls left the state untouched
    assert s.n_samples_seen_ == 10
    t = bnfast.Standardizer(axis=(0, 2, 3)).partial_fit(rng.standard_normal((2, 3, 4, 4)))
    with pytest.raises(ValueError):
        t.partial_fit(rng.standard_normal((2, 5, 4, 4)))
    with pytest.raises(ValueError):
        t.transform(rng.standard_normal((2, 5, 4, 4)))


def test_not_fitted_errors(tmp_path):
    assert issubclass(bnfast.NotFittedError, ValueError)
    assert issubclass(bnfast.NotFittedError, AttributeError)
    s = bnfast.Standardizer()
    X = np.ones((3, 2))
    for call in (lambda: s.transform(X), lambda: s.inverse_transform(X), lambda: s.save(tmp_path / "s.npz")):
        with pytest.raises(bnfast.NotFittedError):
            call()
        with pytest.raises(ValueError):
            call()
        with pytest.raises(AttributeError):
            call()
    assert not (tmp_path / "s.npz").exists()


@pytest.mark.parametrize(
    "w, exc",
    [
        (np.ones(9), ValueError),
        (np.ones(11), ValueError),
        (np.ones((10, 1)), ValueError),
        (np.ones((10, 2)), ValueError),
        (np.r_[np.ones(9), -1.0], ValueError),
        (np.r_[np.ones(9), np.nan], ValueError),
        (np.r_[np.ones(9), np.inf], ValueError),
    ],
    ids=["short", "long", "col", "2d", "negative", "nan", "inf"],
)
def test_sample_weight_errors(w, exc):
    X = np.random.default_rng(2).standard_normal((10, 3))
    with pytest.raises(exc):
        bnfast.Standardizer().fit(X, sample_weight=w)
    with pytest.raises(exc):
        bnfast.Standardizer().partial_fit(X, sample_weight=w)


def test_sample_weight_length_follows_first_reduced_axis():
    X = np.random.default_rng(3).standard_normal((4, 3, 5))
    s = bnfast.Standardizer(axis=(1, 2)).fit(X, sample_weight=np.ones(3))  # first reduced axis = 1
    check_attrs(s, X, axis=(1, 2), sample_weight=np.ones(3))
    with pytest.raises(ValueError):
        bnfast.Standardizer(axis=(1, 2)).fit(X, sample_weight=np.ones(4))


# ---------------------------------------------------------------------------
# copies, in-place, out=
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int64])
def test_input_never_modified(dtype):
    rng = np.random.default_rng(91)
    X = (make_2d(rng, 50) if dtype != np.int64 else rng.integers(-50, 50, (50, 7))).astype(dtype)
    X0 = X.copy()
    w = rng.uniform(0, 1, 50)
    s = bnfast.Standardizer()
    s.fit(X)
    s.partial_fit(X, sample_weight=w)
    s.fit(X, sample_weight=w)
    y = s.transform(X)
    z = s.inverse_transform(X)
    f = bnfast.Standardizer().fit_transform(X)
    np.testing.assert_array_equal(X, X0)
    for r in (y, z, f):
        assert not np.shares_memory(r, X)
    # read-only input works everywhere
    X.flags.writeable = False
    s.fit(X)
    s.partial_fit(X)
    np.testing.assert_array_equal(s.transform(X), bnfast.Standardizer().fit(X0).partial_fit(X0).transform(X0))
    bnfast.Standardizer(copy=False).fit(X).transform(X)
    np.testing.assert_array_equal(X, X0)


def test_nan_input_not_modified():
    X = _with_nan()
    X0 = X.copy()
    s = bnfast.Standardizer().fit(X)
    s.transform(X)
    bnfast.Standardizer(nan_policy="propagate").fit(X)
    np.testing.assert_array_equal(X, X0)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("order", ["C", "F"])
def test_copy_false_in_place(dtype, order):
    X = np.asarray(make_2d(np.random.default_rng(92), 40, dtype=dtype), order=order)
    s = bnfast.Standardizer(copy=False).fit(X)
    want = bnfast.Standardizer().fit(X).transform(X)
    y = s.transform(X)
    assert y is X
    np.testing.assert_array_equal(X, want)
    z = s.inverse_transform(X)
    assert z is X
    # fit_transform = fit then transform: in place too
    X2 = X.copy(order="A")
    assert bnfast.Standardizer(copy=False).fit_transform(X2) is X2
    assert_close(z, make_2d(np.random.default_rng(92), 40, dtype=dtype), _rtol(dtype),
                 np.abs(s.mean_) * (2.0 ** -22 if dtype == np.float32 else 16 * EPS64), "round trip in place")


def test_copy_false_with_int_or_readonly_input_returns_new_array():
    Xi = np.arange(40).reshape(10, 4)
    s = bnfast.Standardizer(copy=False).fit(Xi)
    y = s.transform(Xi)
    assert y.dtype == np.float64 and y is not Xi
    np.testing.assert_array_equal(Xi, np.arange(40).reshape(10, 4))
    Xr = np.arange(40.0).reshape(10, 4)
    Xr.flags.writeable = False
    y = s.transform(Xr)
    assert y is not Xr
    np.testing.assert_array_equal(Xr, np.arange(40.0).reshape(10, 4))
    np.testing.assert_array_equal(y, bnfast.Standardizer().fit(Xi).transform(Xi))


def test_copy_true_default_returns_new_array():
    X = make_2d(np.random.default_rng(93), 20)
    s = bnfast.Standardizer().fit(X)
    y = s.transform(X)
    assert y is not X and not np.shares_memory(y, X)


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int32])
def test_out_parameter(dtype):
    rng = np.random.default_rng(94)
    X = (make_2d(rng, 25) if dtype != np.int32 else rng.integers(-9, 9, (25, 7))).astype(dtype)
    s = bnfast.Standardizer().fit(X)
    odt = _out_dtype(dtype)
    want = s.transform(X)
    out = np.empty(X.shape, odt)
    r = s.transform(X, out=out)
    assert r is out
    np.testing.assert_array_equal(out, want)
    out2 = np.empty(X.shape, odt)
    r = s.inverse_transform(want, out=out2)
    assert r is out2
    np.testing.assert_array_equal(out2, s.inverse_transform(want))
    # wrong dtype -> TypeError
    wrong = np.float32 if odt == np.float64 else np.float64
    with pytest.raises(TypeError):
        s.transform(X, out=np.empty(X.shape, wrong))
    with pytest.raises(TypeError):
        s.transform(X, out=np.empty(X.shape, np.int64))
    # wrong shape -> ValueError
    with pytest.raises(ValueError):
        s.transform(X, out=np.empty((X.shape[0] + 1, X.shape[1]), odt))
    with pytest.raises(ValueError):
        s.transform(X, out=np.empty(X.shape[::-1], odt))
    # read-only -> ValueError
    ro = np.empty(X.shape, odt)
    ro.flags.writeable = False
    with pytest.raises(ValueError):
        s.transform(X, out=ro)
    if dtype == np.int32:
        with pytest.raises(TypeError):
            s.transform(X, out=X)  # int out is not the output dtype


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_out_is_x_in_place(dtype):
    X = make_2d(np.random.default_rng(95), 25, dtype=dtype)
    s = bnfast.Standardizer().fit(X)  # copy=True, but out=X asks for in place
    want = s.transform(X)
    r = s.transform(X, out=X)
    assert r is X
    np.testing.assert_array_equal(X, want)
    back = s.inverse_transform(want)
    r = s.inverse_transform(X, out=X)
    assert r is X
    np.testing.assert_array_equal(X, back)


def test_out_non_contiguous():
    X = make_2d(np.random.default_rng(96), 25)
    s = bnfast.Standardizer().fit(X)
    big = np.zeros((25, 14))
    out = big[:, ::2]
    r = s.transform(X, out=out)
    assert r is out
    np.testing.assert_array_equal(out, s.transform(X))
    np.testing.assert_array_equal(big[:, 1::2], 0.0)


# ---------------------------------------------------------------------------
# memory: fit never makes a full-size copy
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def big_arrays():
    rng = np.random.default_rng(101)
    n = 4_000_000
    X = rng.random((n, 4))
    X *= 3.0
    X += 1e4
    Xn = X.copy()
    Xn[::7, 1] = np.nan
    Xn[::11, 3] = np.nan
    X32 = rng.random((n, 4), dtype=np.float32)
    w = rng.random(n // 2)
    for a in (X, Xn, X32, w):
        a.flags.writeable = False  # any in-place modification would raise
    return {"f64": X, "f64-nan": Xn, "f32": X32, "f64-weighted": X.reshape(n // 2, 8), "w": w,
            "partial-f64-nan": Xn}


def _peak_during(fn):
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        fn()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak - base


@pytest.mark.parametrize(
    "case, which",
    [(c, "default") for c in ("f64", "f64-nan", "f32", "f64-weighted", "partial-f64-nan")]
    + [(c, "numpy") for c in ("f64", "f64-nan", "partial-f64-nan")],  # numpy backend: f64 cases only (time)
)
def test_fit_makes_no_full_size_copy(big_arrays, case, which):
    """Spec: "Fitting never makes a full-size copy of X (temporaries are
    bounded by a chunk size)".  NumPy reports its allocations to tracemalloc.

    Two checks on X (128 MB, 64 MB for float32) and its first half:
    * growth: peak(X) - peak(X_half) < 25% of the extra bytes, i.e. the
      temporaries do not scale with X (a float64 copy would grow by 100%, a
      float32 copy by 50%);
    * absolute: peak(X) < 25% of X.nbytes; with sample_weight < 75% (the
      weighted path may keep a few chunk-sized temporaries plus a float64
      copy of the 1-D weights, neither of which is a copy of X).
    """
    X = big_arrays[case]
    w = big_arrays["w"] if case == "f64-weighted" else None
    ctx = _runtime.using("numpy") if which == "numpy" else contextlib.nullcontext()

    def run(A, wa):
        s = bnfast.Standardizer()
        if case.startswith("partial"):
            h = A.shape[0] // 2
            fn = lambda: s.partial_fit(A[:h]).partial_fit(A[h:])  # noqa: E731
        else:
            fn = lambda: s.fit(A, sample_weight=wa)  # noqa: E731
        return s, _peak_during(fn)

    half = X.shape[0] // 2
    with ctx:
        _, peak_half = run(X[:half], None if w is None else w[:half])
        s, peak = run(X, w)
    grow = peak - peak_half
    extra = X.nbytes - X[:half].nbytes
    msg = (f"peak traced memory {peak / 1e6:.1f} MB for X of {X.nbytes / 1e6:.1f} MB, "
           f"{peak_half / 1e6:.1f} MB for its first half")
    assert grow < 0.25 * extra, msg
    assert peak < (0.75 if w is not None else 0.25) * X.nbytes, msg
    # and the answer is right (spot check against a float64 reference of a column)
    col = np.asarray(X[:, 1], np.float64)
    m = np.nanmean(col) if w is None else np.sum(w * col) / np.sum(w)
    assert s.mean_[1] == pytest.approx(m, rel=_rtol(X.dtype))


# ---------------------------------------------------------------------------
# save / load
# ---------------------------------------------------------------------------
def _assert_same_state(a, b):
    assert a.get_params() == b.get_params()
    for attr in ("mean_", "var_", "scale_"):
        va, vb = getattr(a, attr), getattr(b, attr)
        if va is None:
            assert vb is None, attr
        else:
            np.testing.assert_array_equal(va, vb)
            assert np.asarray(vb).dtype == np.float64
    np.testing.assert_array_equal(a.n_samples_seen_, b.n_samples_seen_)
    assert np.asarray(a.n_samples_seen_).dtype == np.asarray(b.n_samples_seen_).dtype
    assert np.ndim(a.n_samples_seen_) == np.ndim(b.n_samples_seen_)
    assert a.feature_shape_ == b.feature_shape_ and isinstance(b.feature_shape_, tuple)
    assert a.n_features_in_ == b.n_features_in_
    assert a.moments_ == b.moments_


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize(
    "case",
    ["plain", "nan", "weighted", "nchw", "none", "no-mean-no-std", "no-std", "ddof-propagate"],
)
@pytest.mark.parametrize("pathkind", [str, pathlib.Path])
def test_save_load_round_trip(tmp_path, case, pathkind):
    rng = np.random.default_rng(111)
    X = make_2d(rng, 40)
    params, kw, Xt = {}, {}, X
    if case == "nan":
        X[rng.random(X.shape) < 0.2] = np.nan
    elif case == "weighted":
        kw = {"sample_weight": rng.uniform(0, 2, 40)}
    elif case == "nchw":
        Xt = X = (1 + rng.standard_normal((3, 4, 5, 5))).astype(np.float32)
        params = {"axis": (0, -2, -1)}
    elif case == "none":
        params = {"axis": None}
    elif case == "no-mean-no-std":
        params = {"with_mean": False, "with_std": False}
    elif case == "no-std":
        params = {"with_std": False, "copy": False}  # transforms below get copies
    elif case == "ddof-propagate":
        X[2, 2] = np.nan
        params = {"ddof": 1, "nan_policy": "propagate"}
    s = bnfast.Standardizer(**params).fit(X, **kw)
    p = pathkind(tmp_path / "std.npz")
    s.save(p)
    assert (tmp_path / "std.npz").exists()
    with np.load(tmp_path / "std.npz", allow_pickle=False) as z:
        for k in z.files:
            assert z[k].dtype != object
    t = bnfast.Standardizer.load(p)
    assert type(t) is bnfast.Standardizer
    _assert_same_state(s, t)
    np.testing.assert_array_equal(t.transform(Xt.copy()), s.transform(Xt.copy()))
    np.testing.assert_array_equal(t.inverse_transform(Xt.copy()), s.inverse_transform(Xt.copy()))
    # the loaded state continues exactly like the original
    more = Xt[:7] + 1
    s.partial_fit(more)
    t.partial_fit(more)
    _assert_same_state(s, t)


def test_load_rejects_other_files(tmp_path):
    rnd = tmp_path / "random.npz"
    np.savez(rnd, a=np.arange(3), mean=np.ones(4))
    with pytest.raises(ValueError, match="random.npz"):
        bnfast.Standardizer.load(rnd)
    txt = tmp_path / "notes.txt"
    txt.write_text("hello, not an archive\n")
    with pytest.raises(ValueError, match="notes.txt"):
        bnfast.Standardizer.load(txt)
    npy = tmp_path / "arr.npy"
    np.save(npy, np.arange(5.0))
    with pytest.raises(ValueError, match="arr.npy"):
        bnfast.Standardizer.load(npy)
    with pytest.raises(FileNotFoundError):
        bnfast.Standardizer.load(tmp_path / "missing.npz")


def test_saved_file_is_not_pickled(tmp_path):
    s = bnfast.Standardizer(axis=(0, 2)).fit(np.random.default_rng(5).standard_normal((4, 3, 6)))
    s.save(tmp_path / "a.npz")
    with np.load(tmp_path / "a.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    assert arrays
    assert all(a.dtype.kind != "O" for a in arrays.values())


# ---------------------------------------------------------------------------
# scikit-learn interoperability of the plain class
# ---------------------------------------------------------------------------
def test_clone_plain_standardizer():
    pytest.importorskip("sklearn", reason="scikit-learn is not installed")
    from sklearn.base import clone

    s = bnfast.Standardizer(axis=(0, 2, 3), ddof=1, with_mean=False, nan_policy="raise", copy=False)
    s.fit(np.random.default_rng(0).standard_normal((2, 3, 4, 4)))
    c = clone(s)
    assert type(c) is bnfast.Standardizer and c is not s
    assert c.get_params() == s.get_params()
    with pytest.raises(bnfast.NotFittedError):
        c.transform(np.ones((2, 3, 4, 4)))


def _clf_data(offsets=True):
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=300, n_features=6, n_informative=4, random_state=0)
    X = X * np.array([1.0, 100.0, 0.01, 5.0, 1e3, 2.0])
    if offsets:
        X = X + np.array([1e4, -50.0, 3.0, 0.0, 7e3, 1.0])
    return X, y


def test_plain_standardizer_in_pipeline(StandardScaler):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    X, y = _clf_data()
    pb = Pipeline([("std", bnfast.Standardizer()), ("lr", LogisticRegression())]).fit(X, y)
    ps = Pipeline([("std", StandardScaler()), ("lr", LogisticRegression())]).fit(X, y)
    np.testing.assert_array_equal(pb.predict(X), ps.predict(X))
    np.testing.assert_allclose(pb.predict_proba(X), ps.predict_proba(X), rtol=1e-6, atol=1e-9)
    assert_close(pb.named_steps["std"].mean_, ps.named_steps["std"].mean_, 1e-12, _mean_atol(X), "pipeline mean_")


# ---------------------------------------------------------------------------
# bnfast.sklearn adapter
# ---------------------------------------------------------------------------
def test_sklearn_adapter_check_estimator():
    SkStd = _sk_std()
    from sklearn.utils.estimator_checks import check_estimator

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = check_estimator(SkStd(), on_fail=None, on_skip=None)
    failed = [(r["check_name"], repr(r["exception"])[:300]) for r in results if r["status"] == "failed"]
    assert not failed, "check_estimator failures:\n" + "\n".join(f"{n}: {e}" for n, e in failed)
    assert any(r["status"] == "passed" for r in results)


def test_sklearn_adapter_base_classes_and_parity(StandardScaler):
    SkStd = _sk_std()
    from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin, clone

    s = SkStd()
    assert isinstance(s, BaseEstimator) and isinstance(s, TransformerMixin) and isinstance(s, OneToOneFeatureMixin)
    assert s.get_params() == bnfast.Standardizer().get_params()
    X = make_2d(np.random.default_rng(121), 80)
    X[5, 2] = np.nan
    w = np.random.default_rng(1).uniform(0, 2, 80)
    s.fit(X, sample_weight=w)
    sk = StandardScaler().fit(X, sample_weight=w)
    assert_same_as_sklearn(s, sk, X, 1e-12)
    p = bnfast.Standardizer().fit(X, sample_weight=w)
    np.testing.assert_array_equal(s.transform(X), p.transform(X))
    c = clone(s)
    assert c.get_params() == s.get_params() and not hasattr(c, "mean_")
    assert s.n_features_in_ == 7


def test_sklearn_adapter_pipeline_and_gridsearch(StandardScaler):
    SkStd = _sk_std()
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import Pipeline

    X, y = _clf_data(offsets=False)  # (uncentred 1e4 offsets would make lbfgs crawl)
    grid = {"std__with_mean": [True, False], "lr__C": [0.1, 1.0]}
    gb = GridSearchCV(Pipeline([("std", SkStd()), ("lr", LogisticRegression(max_iter=500))]), grid, cv=3).fit(X, y)
    gs = GridSearchCV(Pipeline([("std", StandardScaler()), ("lr", LogisticRegression(max_iter=500))]), grid, cv=3).fit(X, y)
    np.testing.assert_allclose(gb.cv_results_["mean_test_score"], gs.cv_results_["mean_test_score"], rtol=1e-12)
    assert gb.best_params_ == gs.best_params_
    np.testing.assert_array_equal(gb.predict(X), gs.predict(X))


def test_sklearn_adapter_feature_names():
    SkStd = _sk_std()
    X = np.random.default_rng(0).standard_normal((10, 3))
    s = SkStd().fit(X)
    assert list(s.get_feature_names_out()) == ["x0", "x1", "x2"]
    assert list(s.get_feature_names_out(["a", "b", "c"])) == ["a", "b", "c"]
    with pytest.raises(ValueError):
        s.get_feature_names_out(["a", "b"])


def test_sklearn_adapter_set_output_pandas():
    SkStd = _sk_std()
    pd = pytest.importorskip("pandas", reason="pandas is not installed")
    df = pd.DataFrame({"a": [1.0, 2.0, 4.0], "b": [3.0, 3.5, 9.0]})
    out = SkStd().set_output(transform="pandas").fit_transform(df)
    assert list(out.columns) == ["a", "b"]
    np.testing.assert_allclose(out.to_numpy(), bnfast.Standardizer().fit_transform(df.to_numpy()), rtol=1e-12)


def test_sklearn_adapter_import_error_without_sklearn():
    code = (
        "import sys\n"
        "for m in [k for k in sys.modules if k == 'sklearn' or k.startswith('sklearn.')]: del sys.modules[m]\n"
        "sys.modules['sklearn'] = None\n"
        "import bnfast\n"
        "try:\n"
        "    import bnfast.sklearn\n"
        "except ImportError as e:\n"
        "    print('IMPORTERROR', e)\n"
        "else:\n"
        "    print('NOERROR')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/tmp", timeout=60)
    assert "IMPORTERROR" in r.stdout, r.stdout + r.stderr
    assert "scikit-learn" in r.stdout.lower() or "sklearn" in r.stdout.lower(), r.stdout


# ---------------------------------------------------------------------------
# hypothesis: chunked partial_fit == fit == sklearn on random 2-D shapes
# ---------------------------------------------------------------------------
SIZES = [1, 2, 3, 15, 16, 17, 32, 33, 34]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@settings(max_examples=30, deadline=None)
@given(
    n=st.sampled_from(SIZES + [65]),
    f=st.sampled_from(SIZES),
    dtype=st.sampled_from([np.float64, np.float32]),
    seed=st.integers(0, 2**32 - 1),
    cuts=st.lists(st.integers(0, 65), max_size=6),
    nan_frac=st.sampled_from([0.0, 0.0, 0.1]),
    weighted=st.booleans(),
)
def test_hypothesis_chunked_fit_sklearn(StandardScaler, n, f, dtype, seed, cuts, nan_frac, weighted):
    rng = np.random.default_rng(seed)
    off = rng.choice([0.0, 5.0, -50.0, 100.0], size=f)
    sc = rng.choice([1.0, 3.0, 10.0, 100.0], size=f)
    X = (off + sc * rng.standard_normal((n, f))).astype(dtype)
    if nan_frac:
        X[rng.random(X.shape) < nan_frac] = np.nan
    w = f32_exact(rng.uniform(0.1, 2.0, n), dtype) if weighted else None
    rtol = _rtol(dtype)
    kw = {} if w is None else {"sample_weight": w}

    one = bnfast.Standardizer().fit(X, **kw)
    sk = StandardScaler().fit(X, **kw)
    if np.isnan(X).all(axis=0).any():
        # sklearn and the spec agree on NaN stats; just compare attributes
        assert_close(one.mean_, sk.mean_, rtol, _mean_atol(X), "mean_")
    else:
        assert_same_as_sklearn(one, sk, X, rtol)
    check_attrs(one, X, sample_weight=w)

    bounds = sorted({c for c in cuts if c < n} | {0, n})
    sizes = [b - a for a, b in zip(bounds[:-1], bounds[1:])]
    pf, skpf = bnfast.Standardizer(), StandardScaler()
    for a, b in zip(bounds[:-1], bounds[1:]):
        ckw = {} if w is None else {"sample_weight": w[a:b]}
        pf.partial_fit(X[a:b], **ckw)
        skpf.partial_fit(X[a:b], **ckw)
    check_attrs(pf, X, sample_weight=w)
    assert_close(pf.mean_, one.mean_, 1e-13, _mean_atol(X), "partial vs one mean_")
    assert_close(pf.var_, one.var_, 1e-12, _var_atol(X), "partial vs one var_")
    # sklearn's partial_fit goes NaN once a chunk holds no value of a feature
    # (see test_nan_omit_partial_fit_matches_sklearn): compare only otherwise
    if _no_all_nan_column(X, sizes):
        m_atol = _mean_atol(X)
        if weighted and dtype == np.float32:
            # sklearn's weighted partial_fit of float32 data rounds the running
            # mean at float32 level (~2e-9 of max|x| seen; its fit does not).
            m_atol = 2.0 ** -22 * np.nanmax(np.abs(X), axis=0)
        assert_close(pf.scale_, skpf.scale_, rtol, 0, "partial scale_ vs sklearn partial")
        assert_close(pf.mean_, skpf.mean_, rtol, m_atol, "partial mean_ vs sklearn partial")
        assert_close(pf.var_, skpf.var_, rtol, _var_atol(X), "partial var_ vs sklearn partial")
        yb = pf.transform(X)
        ys = skpf.transform(X)
        atol = _tr_atol(pf.mean_, pf.scale_, X.dtype, X.shape) + m_atol / pf.scale_
        assert_close(yb, ys, rtol, atol, "partial transform vs sklearn")
