"""bnfast.Standardizer: fit, partial_fit, transform and inverse_transform
against float64 references (plain NumPy, math.fsum where exactness matters):
attributes, weights, axes, NaN policies, dtypes, the slab scan behind fit
(slab boundaries, layouts), backends and threads, under every backend.
Parameters, copies, save/load and memory are in test_standardize_api.py;
scikit-learn parity in test_standardize_sklearn.py.

Tolerances: helpers.std_rtol (1e-12 relative for float64 input, 1e-6 for
float32 input), absolute terms justified in helpers (mean_atol, var_atol,
tr_atol).
"""

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bnfast
from helpers import (
    EPS64,
    STREAM_BYTES,
    assert_close,
    check_attrs,
    check_transform,
    chunk_sizes,
    chunks,
    expected_transform,
    fsum_stats,
    make_2d,
    mean_atol,
    ref_standardize_stats,
    runtime,
    scan,
    std_rtol,
    tr_atol,
    var_atol,
)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_partial_fit_large_offset_is_exact(backend, dtype):
    # 1e4 + randn, one row at a time: the result must still match an exact
    # float64 reference to 1e-12 (sklearn's own incremental update drifts to
    # ~5e-13 here, so the reference is plain float64 two-pass).
    X = make_2d(np.random.default_rng(7), 400, [(1e4, 1.0), (-5e3, 0.1), (2e4, 30.0)], dtype)
    bn = bnfast.Standardizer()
    for c in chunks(X, chunk_sizes("rows1", 400)):
        bn.partial_fit(c)
    check_attrs(bn, X)
    check_transform(bn, X)


def test_partial_fit_after_fit_merges_and_fit_forgets(backend):
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


@pytest.mark.parametrize("ddof", [0, 1])
def test_weight_two_equals_repeated_row(backend, ddof):
    rng = np.random.default_rng(13)
    X = make_2d(rng, 60)
    w = rng.integers(1, 4, 60)
    a = bnfast.Standardizer(ddof=ddof).fit(X, sample_weight=w.astype(np.float64))
    b = bnfast.Standardizer(ddof=ddof).fit(np.repeat(X, w, axis=0))
    assert_close(a.mean_, b.mean_, 1e-12, mean_atol(X), "mean_")
    assert_close(a.var_, b.var_, 1e-12, var_atol(X), "var_")
    assert_close(a.scale_, b.scale_, 1e-12, 0, "scale_")
    assert float(a.n_samples_seen_) == float(b.n_samples_seen_) == float(w.sum())
    assert_close(
        a.transform(X),
        b.transform(X),
        1e-12,
        tr_atol(a.mean_, a.scale_, X.dtype, X.shape),
        "transform",
    )
    # integer weights are accepted too and mean the same thing
    c = bnfast.Standardizer(ddof=ddof).fit(X, sample_weight=w)
    assert_close(c.var_, a.var_, 1e-14, 0, "int weights")


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("weighted", [False, True])
def test_nan_omit_partial_fit_chunks_without_values_exact(backend, weighted):
    rng = np.random.default_rng(23)
    X = make_2d(rng, 200)
    X[rng.random(X.shape) < 0.2] = np.nan
    X[:30, 1] = np.nan  # the first chunks see no value of feature 1
    X[100:140, 3] = np.nan  # some middle chunks see no value of feature 3
    w = rng.uniform(0.5, 2, 200) if weighted else None
    bn = bnfast.Standardizer()
    start = 0
    for n in chunk_sizes("uneven", 200):
        bn.partial_fit(
            X[start : start + n], sample_weight=None if w is None else w[start : start + n]
        )
        start += n
    check_attrs(bn, X, sample_weight=w)
    assert not np.isnan(bn.mean_).any() and not np.isnan(bn.var_).any()
    check_transform(bn, X)


def test_tiny_but_genuine_std_keeps_its_scale(backend):
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


@pytest.mark.parametrize("ddof", [0, 1, 2, 0.5])
def test_ddof(backend, ddof):
    X = make_2d(np.random.default_rng(51), 40)
    s = bnfast.Standardizer(ddof=ddof).fit(X)
    check_attrs(s, X, ddof=ddof)
    # var_ = M2 / (n - ddof): relation to ddof=0
    s0 = bnfast.Standardizer().fit(X)
    assert_close(s.var_, s0.var_ * 40 / (40 - ddof), 1e-13, 0, "ddof scaling")
    check_transform(s, X)


def test_fitted_attribute_types_and_moments(backend):
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
    m, v, _ = ref_standardize_stats(X)
    assert_close(mo.m2, v * 33, 1e-12, var_atol(X) * 33, "moments_.m2")


def test_fit_transform_equals_fit_then_transform(backend):
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
        k = {k: v[start : start + n] for k, v in kw.items()}
        s.partial_fit(X[start : start + n], **k)
        start += n
    return s


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_backends_agree_with_numpy_backend(backend):
    for name, X, params, kw in _fit_cases():
        with runtime.using("numpy"):
            ref = bnfast.Standardizer(**params).fit(X, **kw)
            ref_y = ref.transform(X)
            ref_pf = _chunked_fit(X, params, kw)
        got = bnfast.Standardizer(**params).fit(X, **kw)
        got_pf = _chunked_fit(X, params, kw)
        rtol = std_rtol(X.dtype)
        axis = params.get("axis", 0)
        for a, b in ((got, ref), (got_pf, ref), (got_pf, ref_pf)):
            for attr in ("mean_", "var_", "scale_"):
                atol = {"mean_": mean_atol(X, axis), "var_": var_atol(X, axis)}.get(attr, 0.0)
                assert_close(
                    getattr(a, attr), getattr(b, attr), rtol, atol, f"{name} {backend} {attr}"
                )
            # counts are exact; sums of weights may differ in the last bit with the summation order
            assert_close(a.n_samples_seen_, b.n_samples_seen_, 1e-14, 0, f"{name} n_samples_seen_")
        y = got.transform(X)
        assert y.dtype == ref_y.dtype
        assert_close(
            y,
            ref_y,
            rtol,
            tr_atol(ref.mean_, ref.scale_, y.dtype, X.shape, axis),
            f"{name} {backend} transform",
        )
        check_attrs(
            got, X, axis=axis, ddof=params.get("ddof", 0), sample_weight=kw.get("sample_weight")
        )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_native_statistics_bit_identical_across_threads(native_backend, dtype):
    rng = np.random.default_rng(62)
    X = (7 + rng.standard_normal((60_000, 12))).astype(dtype)
    img = (1 + rng.standard_normal((16, 8, 64, 64))).astype(dtype)
    for data, ax in ((X, 0), (img, (0, 2, 3))):
        res = []
        for t in (1, 2, 3):
            bnfast.set_num_threads(t)
            s = bnfast.Standardizer(axis=ax).fit(data)
            res.append((s, s.transform(data)))
        s0, y0 = res[0]
        for s, y in res[1:]:
            # statistics: bit-identical for any thread count
            np.testing.assert_array_equal(s.mean_, s0.mean_)
            np.testing.assert_array_equal(s.var_, s0.var_)
            np.testing.assert_array_equal(s.scale_, s0.scale_)
            # elementwise transform: the stated tolerance
            assert_close(
                y,
                y0,
                std_rtol(dtype),
                tr_atol(s0.mean_, s0.scale_, dtype, data.shape, ax),
                "threads",
            )


# ---------------------------------------------------------------------------
# axis semantics
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(
    "layout, axis",
    [
        ("nchw", (0, 2, 3)),
        ("nchw", (0, -2, -1)),
        ("nchw", (-4, 2, 3)),
        ("nchw", (3, 0, 2)),
        ("nhwc", (0, 1, 2)),
        ("nhwc", (0, -3, -2)),
    ],
)
def test_image_axes(backend, dtype, layout, axis):
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
    rtol = std_rtol(dtype)
    # mean of values ~0: float64 sums round to ~eps*max|x| absolute (see mean_atol)
    assert_close(s.mean_, m, rtol, 32 * EPS64 * np.abs(Xc).max(1), "channel mean")
    assert_close(s.var_, v, rtol, 0, "channel var")
    assert_close(s.scale_, np.sqrt(v), rtol, 0, "channel scale")
    y = s.transform(X)
    assert y.shape == X.shape and y.dtype == X.dtype
    want = (X.astype(np.float64) - m.reshape(bs)) / np.sqrt(v).reshape(bs)
    atol = (np.abs(m) / np.sqrt(v) * (2.0**-23 if dtype == np.float32 else 8 * EPS64)).reshape(bs)
    assert_close(y, want, rtol, atol, "channel transform")
    # per-channel broadcast: channel 4 of y depends only on channel 4 of X
    ch = [slice(None)] * 4
    ch[cax] = 4
    assert_close(
        y[tuple(ch)],
        (X[tuple(ch)].astype(np.float64) - m[4]) / np.sqrt(v[4]),
        rtol,
        abs(m[4]) / np.sqrt(v[4]) * 2.0**-23,
        "channel 4",
    )
    # reduced axes may have other lengths in transform
    X2 = X[:2, ...][..., :3] if layout == "nchw" else X[:2, :3]
    assert_close(
        s.transform(X2),
        expected_transform(s, X2, axis),
        rtol,
        tr_atol(s.mean_, s.scale_, dtype, X2.shape, axis),
        "transform other sizes",
    )
    check_transform(s, X, axis)


def test_negative_axes_equal_positive(backend):
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
def test_axis_none_global(backend, dtype):
    rng = np.random.default_rng(73)
    X = (50 + 4 * rng.standard_normal((7, 9, 11))).astype(dtype)
    s = bnfast.Standardizer(axis=None).fit(X)
    assert s.feature_shape_ == ()
    assert s.n_features_in_ == 1
    assert np.shape(s.mean_) == () and np.shape(s.scale_) == ()
    assert int(s.n_samples_seen_) == X.size
    m, v, _ = ref_standardize_stats(X, None)
    assert_close(s.mean_, m, std_rtol(dtype), 0, "global mean")
    assert_close(s.var_, v, std_rtol(dtype), 0, "global var")
    check_transform(s, X, None)
    # feature shape () -> other sizes can be transformed (of the same ndim)
    Z = (50 + rng.standard_normal((3, 2, 5))).astype(dtype)
    assert_close(
        s.transform(Z),
        (Z.astype(np.float64) - m) / np.sqrt(v),
        std_rtol(dtype),
        abs(m) / np.sqrt(v) * 2.0**-23,
        "global transform other shape",
    )


def test_axis_1_reduces_columns(backend):
    # axis names the REDUCED axes: axis=1 on (n, f) gives one statistic per row
    rng = np.random.default_rng(74)
    X = make_2d(rng, 8)
    s = bnfast.Standardizer(axis=1).fit(X)
    assert s.feature_shape_ == (8,)
    assert_close(s.mean_, X.mean(1), 1e-12, mean_atol(X, 1), "row means")
    check_attrs(s, X, axis=1)
    check_transform(s, X, axis=1)


def test_3d_sequence_axes_and_feature_shape(backend):
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


def test_sample_weight_broadcast_over_other_reduced_axes(backend):
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


def test_partial_fit_reduced_axes_any_length(backend):
    rng = np.random.default_rng(77)
    A = 3 + rng.standard_normal((4, 2, 5, 6))
    B = 3 + rng.standard_normal((1, 2, 7, 3))
    E = np.empty((0, 2, 5, 6))
    s = bnfast.Standardizer(axis=(0, 2, 3)).partial_fit(A).partial_fit(E).partial_fit(B)
    allv = np.concatenate(
        [np.moveaxis(A, 1, 0).reshape(2, -1), np.moveaxis(B, 1, 0).reshape(2, -1)], axis=1
    )
    assert_close(s.mean_, allv.mean(1), 1e-12, 1e-15, "mean")
    assert_close(s.var_, allv.var(1), 1e-12, 0, "var")
    assert int(np.max(s.n_samples_seen_)) == allv.shape[1]


def test_partial_fit_zero_rows_is_noop(backend):
    X = make_2d(np.random.default_rng(78), 20)
    s = bnfast.Standardizer().fit(X)
    before = (s.mean_.copy(), s.var_.copy(), s.n_samples_seen_)
    s.partial_fit(X[:0])
    np.testing.assert_array_equal(s.mean_, before[0])
    np.testing.assert_array_equal(s.var_, before[1])
    assert s.n_samples_seen_ == before[2]


def test_sample_weight_length_follows_first_reduced_axis(backend):
    X = np.random.default_rng(3).standard_normal((4, 3, 5))
    s = bnfast.Standardizer(axis=(1, 2)).fit(X, sample_weight=np.ones(3))  # first reduced axis = 1
    check_attrs(s, X, axis=(1, 2), sample_weight=np.ones(3))
    with pytest.raises(ValueError):
        bnfast.Standardizer(axis=(1, 2)).fit(X, sample_weight=np.ones(4))


# ---------------------------------------------------------------------------
# nan_policy, inf, dtypes
# ---------------------------------------------------------------------------
def _with_nan():
    X = make_2d(np.random.default_rng(81), 30)
    X[3, 1] = np.nan
    X[7, 4] = np.nan
    return X


def test_nan_policy_propagate(backend):
    X = _with_nan()
    s = bnfast.Standardizer(nan_policy="propagate").fit(X)
    for j in (1, 4):
        assert np.isnan(s.mean_[j]) and np.isnan(s.var_[j]) and np.isnan(s.scale_[j])
    ok = [0, 2, 3, 5, 6]
    m, v, _ = ref_standardize_stats(X[:, ok])
    assert_close(s.mean_[ok], m, 1e-12, mean_atol(X[:, ok]), "mean_")
    assert_close(s.var_[ok], v, 1e-12, 0, "var_")
    # partial_fit: a later chunk with NaN poisons that feature only
    t = bnfast.Standardizer(nan_policy="propagate").partial_fit(X[:5]).partial_fit(X[5:])
    assert np.isnan(t.mean_[[1, 4]]).all() and not np.isnan(t.mean_[ok]).any()


def test_nan_policy_raise(backend):
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
    assert_close(
        y,
        expected_transform(r, X),
        1e-12,
        tr_atol(r.mean_, r.scale_, X.dtype, X.shape),
        "transform",
    )


def test_nan_omit_is_default(backend):
    assert bnfast.Standardizer().get_params()["nan_policy"] == "omit"
    X = _with_nan()
    s = bnfast.Standardizer().fit(X)
    assert not np.isnan(s.mean_).any()
    np.testing.assert_array_equal(s.n_samples_seen_, [30, 29, 30, 30, 29, 30, 30])
    assert np.asarray(s.n_samples_seen_).dtype == np.int64


def test_nan_input_not_modified(backend):
    X = _with_nan()
    X0 = X.copy()
    s = bnfast.Standardizer().fit(X)
    s.transform(X)
    bnfast.Standardizer(nan_policy="propagate").fit(X)
    np.testing.assert_array_equal(X, X0)


@pytest.mark.parametrize("policy", ["omit", "propagate", "raise"])
@pytest.mark.parametrize("val", [np.inf, -np.inf])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_inf_raises(backend, policy, val, dtype):
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
    "dtype", [np.int8, np.int32, np.int64, np.uint8, np.uint16, np.bool_, np.float16]
)
def test_other_real_dtypes_give_float64(backend, dtype):
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
def test_float_dtypes_preserved(backend, dtype):
    X = make_2d(np.random.default_rng(84), 30, dtype=dtype)
    s = bnfast.Standardizer().fit(X)
    assert s.transform(X).dtype == dtype
    assert s.inverse_transform(X).dtype == dtype
    assert s.fit_transform(X).dtype == dtype
    assert s.mean_.dtype == s.var_.dtype == s.scale_.dtype == np.float64


# ---------------------------------------------------------------------------
# the slab scan (slabs of 64 values: many boundaries) against exact fsum references
# ---------------------------------------------------------------------------
def _data(rng, shape, dtype, nan_frac=0.0, offset=1e3):
    x = offset + rng.standard_normal(shape) * rng.uniform(0.5, 3, size=shape[-1])
    if nan_frac:
        x[rng.random(shape) < nan_frac] = np.nan
    return x.astype(dtype)


# 2-D float64: mean/var relative 1e-13 (the scan's corrected two-pass plus
# a Chan merge per slab is a few ulps from the exact fsum result).
@pytest.mark.parametrize("rows", [1, 16, 17, 63, 64, 65, 1000])
@pytest.mark.parametrize("nan_frac", [0.0, 0.2])
def test_fit_matches_exact_reference_across_slabs(backend, small_slabs, rows, nan_frac):
    rng = np.random.default_rng(rows)
    x = _data(rng, (rows, 5), np.float64, nan_frac)
    s = bnfast.Standardizer().fit(x)
    count, mean, var = fsum_stats(x, 0)
    np.testing.assert_array_equal(np.broadcast_to(s.n_samples_seen_, (5,)), count)
    np.testing.assert_allclose(s.mean_, mean, rtol=1e-13, equal_nan=True)
    np.testing.assert_allclose(s.var_, var, rtol=1e-11, atol=1e-12, equal_nan=True)


@pytest.mark.parametrize("layout", ["C", "F", "sliced", "transposed3d"])
def test_nan_columns_scan_every_layout(backend, small_slabs, layout):
    rng = np.random.default_rng(1)
    base = _data(rng, (40, 6, 5), np.float64, 0.1)
    if layout == "C":
        x, axis = base, (0, 2)
    elif layout == "F":
        x, axis = np.asfortranarray(base), (0, 2)
    elif layout == "sliced":
        x, axis = base[::2, ::-1, 1:], (0, 2)
    else:
        x, axis = np.transpose(base, (2, 0, 1)), (0, 1)
    s = bnfast.Standardizer(axis=axis).fit(x)
    count, mean, var = fsum_stats(x, axis)
    np.testing.assert_array_equal(s.moments_.count, count)
    np.testing.assert_allclose(s.mean_, mean, rtol=1e-13)
    np.testing.assert_allclose(s.var_, var, rtol=1e-11)


def test_scan_features_equals_full_scan(backend, small_slabs):
    rng = np.random.default_rng(2)
    x = _data(rng, (70, 9), np.float64)
    x[rng.random(70) < 0.1, 2] = np.nan
    x[5, 6] = np.nan
    mask = np.isnan(x).any(axis=0)
    assert mask.any() and not mask.all()
    full = scan.scan(x, (0,))
    sub = scan.scan_features(x, (0,), mask)
    np.testing.assert_array_equal(sub.nan_count, full.nan_count[mask])
    np.testing.assert_array_equal(sub.moments.count, full.moments.count[mask])
    np.testing.assert_allclose(sub.moments.mean, full.moments.mean[mask], rtol=1e-14)
    np.testing.assert_allclose(sub.moments.m2, full.moments.m2[mask], rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int64, np.float16, bool])
def test_integer_and_half_inputs_fit_in_slabs(backend, small_slabs, dtype):
    rng = np.random.default_rng(3)
    x = rng.integers(0, 200, size=(130, 4)).astype(dtype)
    s = bnfast.Standardizer().fit(x)
    count, mean, var = fsum_stats(x, 0)
    np.testing.assert_allclose(s.mean_, mean, rtol=1e-13)
    np.testing.assert_allclose(s.var_, var, rtol=1e-11)
    y = s.transform(x)
    assert y.dtype == np.float64
    ref = (x.astype(np.float64) - mean) / np.where(s.scale_ == 1, 1, np.sqrt(var))
    np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)


def test_weighted_scan_equals_repetition(backend, small_slabs):
    rng = np.random.default_rng(4)
    x = _data(rng, (50, 3, 4), np.float64, 0.1)
    w = rng.integers(0, 4, size=50).astype(np.float64)
    w[0] = 1.0
    weighted = bnfast.Standardizer(axis=(0, 2)).fit(x, sample_weight=w)
    repeated = bnfast.Standardizer(axis=(0, 2)).fit(np.repeat(x, w.astype(int), axis=0))
    np.testing.assert_allclose(weighted.moments_.count, repeated.moments_.count, rtol=0)
    np.testing.assert_allclose(weighted.mean_, repeated.mean_, rtol=1e-13)
    np.testing.assert_allclose(weighted.var_, repeated.var_, rtol=1e-11)
    count, mean, var = fsum_stats(x, (0, 2), weights=w)
    np.testing.assert_allclose(weighted.mean_, mean, rtol=1e-13)
    np.testing.assert_allclose(weighted.var_, var, rtol=1e-11)
    assert weighted.moments_.count.dtype == np.float64


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_fit_and_transform_do_not_depend_on_threads(native_backend, threads):
    rng = np.random.default_rng(5)
    x = _data(rng, (3000, 37), np.float32, 0.01)
    bnfast.set_num_threads(1)
    ref = bnfast.Standardizer().fit(x)
    y_ref = ref.transform(x)
    bnfast.set_num_threads(threads)
    s = bnfast.Standardizer().fit(x)
    np.testing.assert_array_equal(s.mean_, ref.mean_)
    np.testing.assert_array_equal(s.var_, ref.var_)
    np.testing.assert_array_equal(s.transform(x), y_ref)


def test_backends_agree_on_transform(backend):
    rng = np.random.default_rng(6)
    x = _data(rng, (257, 3, 17), np.float32, 0.02)
    s = bnfast.Standardizer(axis=(0, 2)).fit(x)
    y = s.transform(x)
    mean = s.mean_[None, :, None]
    ref = (x.astype(np.float64) - mean) / s.scale_[None, :, None]
    # float32 output: the centring x - mean is exact to float32 rounding of
    # the result (hi/lo split), then one multiply: 2 ulps of |y| plus the
    # rounding of x itself relative to the scale.
    np.testing.assert_allclose(
        y, ref, rtol=3e-7, atol=2 * 2**-24 * 1e3 / s.scale_.min(), equal_nan=True
    )
    back = s.inverse_transform(y)
    np.testing.assert_allclose(back, x, rtol=2e-6, equal_nan=True)


def test_partial_fit_chunks_equal_one_fit_bitwise_for_clean_data(backend):
    """Chan merges of chunk moments reproduce a single fit to rounding."""
    rng = np.random.default_rng(7)
    x = _data(rng, (1000, 8), np.float64)
    one = bnfast.Standardizer().fit(x)
    many = bnfast.Standardizer()
    for chunk in np.array_split(x, 13):
        many.partial_fit(chunk)
    np.testing.assert_allclose(many.mean_, one.mean_, rtol=1e-15)
    np.testing.assert_allclose(many.var_, one.var_, rtol=1e-13)
    assert many.n_samples_seen_ == 1000


def test_constant_offset_feature_gets_scale_one_and_zero_output(backend):
    x = np.full((100, 2), 1e8)
    x[:, 1] = np.linspace(-1, 1, 100)
    s = bnfast.Standardizer().fit(x)
    assert s.scale_[0] == 1.0 and s.var_[0] == 0.0
    y = s.transform(x)
    assert np.all(y[:, 0] == 0.0)
    x32 = np.full((100, 1), 0.1, dtype=np.float32)
    y32 = bnfast.Standardizer().fit_transform(x32)
    assert np.all(y32 == 0.0)


# 20 examples under each backend (40 when it ran once).
@settings(max_examples=20)
@given(
    rows=st.sampled_from([1, 2, 15, 16, 17, 33, 100]),
    cols=st.sampled_from([1, 7, 16, 17]),
    nan_frac=st.sampled_from([0.0, 0.1, 0.5]),
    seed=st.integers(0, 2**31),
)
def test_hypothesis_fit_vs_reference(backend, rows, cols, nan_frac, seed):
    rng = np.random.default_rng(seed)
    x = _data(rng, (rows, cols), np.float64, nan_frac)
    s = bnfast.Standardizer().fit(x)
    count, mean, var = fsum_stats(x, 0)
    np.testing.assert_array_equal(s.moments_.count, count)
    np.testing.assert_allclose(s.mean_, mean, rtol=1e-13, equal_nan=True)
    np.testing.assert_allclose(s.var_, var, rtol=1e-11, atol=1e-12, equal_nan=True)


@pytest.mark.parametrize("c", [3, 64])
def test_standardizer_transform_streamed_equals_pieces(native_backend, c):
    rows = STREAM_BYTES // (4 * c) + 11
    x = (np.random.default_rng(3).standard_normal((rows, c)) * 5 + 100).astype(np.float32)
    s = bnfast.Standardizer().fit(x)
    y = s.transform(x)
    np.testing.assert_array_equal(y, s.transform(np.asfortranarray(x)))
    for lo in range(0, rows, rows // 4 + 1):
        np.testing.assert_array_equal(y[lo : lo + 500], s.transform(x[lo : lo + 500]))
    np.testing.assert_allclose(s.inverse_transform(y), x, rtol=1e-5, atol=1e-4)


# ---------------------------------------------------------------------------
# regressions
# ---------------------------------------------------------------------------
def test_warning_as_error_leaves_a_consistent_state(backend):
    # Regression: the ddof warning came before every attribute was set, so a
    # warning turned into an error left moments_ new and mean_/scale_ stale.
    s = bnfast.Standardizer(ddof=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(RuntimeWarning, match="ddof"):
            s.fit(np.ones((3, 2)))  # count 3 <= ddof 5
    assert s.n_samples_seen_ == 3 and s.moments_.count[0] == 3
    assert np.all(s.scale_ == 1.0) and np.isnan(s.var_).all()
    np.testing.assert_array_equal(s.transform(np.ones((1, 2))), [[0.0, 0.0]])


def test_first_chunk_without_samples_or_weight_is_refused_later_ones_are_no_ops(backend):
    # Regression: an empty or weightless first chunk was accepted; weightless
    # later chunks must change nothing.
    s = bnfast.Standardizer()
    with pytest.raises(ValueError, match="no samples"):
        s.partial_fit(np.empty((0, 3)))
    with pytest.raises(ValueError, match="zero weight"):
        s.partial_fit(np.ones((2, 3)), sample_weight=np.zeros(2))
    assert not hasattr(s, "moments_")
    x = np.random.default_rng(1).random((10, 3))
    s.partial_fit(x, sample_weight=np.ones(10))
    mean = s.mean_.copy()
    s.partial_fit(np.full((4, 3), 99.0), sample_weight=np.zeros(4))  # no weight: no-op
    np.testing.assert_array_equal(s.mean_, mean)


def test_changing_axis_after_fit_does_not_reinterpret_the_statistics(backend):
    # Regression: transform read the axes from the parameters, so
    # set_params(axis=...) after a fit reinterpreted the fitted statistics.
    x = np.random.default_rng(5).random((4, 4))
    s = bnfast.Standardizer(axis=0).fit(x)
    ref = s.transform(x)
    s.set_params(axis=1)  # takes effect at the next fit(), as in scikit-learn
    np.testing.assert_array_equal(s.transform(x), ref)
    s.fit(x)
    np.testing.assert_allclose(s.mean_, x.mean(axis=1), rtol=1e-14)
