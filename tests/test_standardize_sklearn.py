"""bnfast.Standardizer against scikit-learn's StandardScaler (fit,
partial_fit, sample weights, NaN, constant features, with_mean/with_std,
pipelines) and the bnfast.sklearn adapter (check_estimator, clone,
GridSearchCV, feature names), under every backend.  Skipped without
scikit-learn."""

import subprocess
import sys
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import bnfast
from helpers import (
    COLS_PF,
    assert_close,
    assert_same_as_sklearn,
    check_attrs,
    check_transform,
    chunk_sizes,
    chunks,
    f32_exact,
    make_2d,
    mean_atol,
    no_all_nan_column,
    sklearn_standardizer,
    std_out_dtype,
    std_rtol,
    tr_atol,
    var_atol,
)


# ---------------------------------------------------------------------------
# parity with scikit-learn's StandardScaler (2-D)
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n", [1, 2, 17, 257])
def test_fit_matches_sklearn(backend, StandardScaler, dtype, n):
    X = make_2d(np.random.default_rng(n), n, dtype=dtype)
    bn = bnfast.Standardizer().fit(X)
    sk = StandardScaler().fit(X)
    assert_same_as_sklearn(bn, sk, X, std_rtol(dtype))
    check_attrs(bn, X)
    check_transform(bn, X)
    n_seen = bn.n_samples_seen_
    assert isinstance(n_seen, (int, np.integer)) and not isinstance(n_seen, bool) and n_seen == n


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("kind", ["rows1", "uneven", "with_empty"])
def test_partial_fit_chunks_match_sklearn(backend, StandardScaler, dtype, kind):
    X = make_2d(np.random.default_rng(5), 300, COLS_PF, dtype)
    bn, sk = bnfast.Standardizer(), StandardScaler()
    for c in chunks(X, chunk_sizes(kind, len(X))):
        assert bn.partial_fit(c) is bn
        if len(c):
            sk.partial_fit(c)
    assert_same_as_sklearn(bn, sk, X, std_rtol(dtype))
    check_attrs(bn, X)
    # the merged state equals a single fit
    one = bnfast.Standardizer().fit(X)
    assert_close(bn.mean_, one.mean_, 1e-13, mean_atol(X), "partial vs fit mean_")
    assert_close(bn.var_, one.var_, 1e-13, var_atol(X), "partial vs fit var_")
    assert bn.n_samples_seen_ == one.n_samples_seen_ == 300
    assert isinstance(bn.n_samples_seen_, (int, np.integer)) and np.ndim(bn.n_samples_seen_) == 0


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sample_weight_matches_sklearn(backend, StandardScaler, dtype):
    rng = np.random.default_rng(11)
    X = make_2d(rng, 200, dtype=dtype)
    w = f32_exact(rng.uniform(0, 3, 200), dtype)
    w[[3, 50, 51]] = 0.0
    bn = bnfast.Standardizer().fit(X, sample_weight=w)
    sk = StandardScaler().fit(X, sample_weight=w)
    assert_same_as_sklearn(bn, sk, X, std_rtol(dtype))
    check_attrs(bn, X, sample_weight=w)
    n_seen = bn.n_samples_seen_
    assert np.ndim(n_seen) == 0 and isinstance(n_seen, (float, np.floating))
    assert n_seen == pytest.approx(w.sum(), rel=1e-13)
    assert np.asarray(bn.moments_.count).dtype == np.float64  # total weight
    assert np.allclose(np.asarray(bn.moments_.count, np.float64), w.sum(), rtol=1e-13)


def test_sample_weight_partial_fit_matches_sklearn(backend, StandardScaler):
    rng = np.random.default_rng(12)
    X = make_2d(rng, 240, COLS_PF)
    w = rng.uniform(0.1, 2, 240)
    bn, sk = bnfast.Standardizer(), StandardScaler()
    start = 0
    for s in chunk_sizes("uneven", 240):
        bn.partial_fit(X[start : start + s], sample_weight=w[start : start + s])
        sk.partial_fit(X[start : start + s], sample_weight=w[start : start + s])
        start += s
    assert_same_as_sklearn(bn, sk, X, 1e-12)
    check_attrs(bn, X, sample_weight=w)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_nan_omit_matches_sklearn(backend, StandardScaler, dtype, weighted):
    rng = np.random.default_rng(21)
    X = make_2d(rng, 150, dtype=dtype)
    X[rng.random(X.shape) < 0.15] = np.nan
    X[:, 6] = np.nan  # an all-NaN feature -> NaN mean_/var_/scale_ (as sklearn)
    w = f32_exact(rng.uniform(0.2, 2, 150), dtype) if weighted else None
    bn = bnfast.Standardizer().fit(X, sample_weight=w)
    sk = StandardScaler().fit(X, sample_weight=w)
    assert_same_as_sklearn(bn, sk, X, std_rtol(dtype))
    check_attrs(bn, X, sample_weight=w)
    assert np.isnan(bn.mean_[6]) and np.isnan(bn.var_[6]) and np.isnan(bn.scale_[6])
    n_seen = np.asarray(bn.n_samples_seen_)
    assert n_seen.shape == (7,)
    assert n_seen.dtype == (np.float64 if weighted else np.int64)
    if not weighted:
        np.testing.assert_array_equal(n_seen, (~np.isnan(X)).sum(0))
    y = bn.transform(X)
    np.testing.assert_array_equal(
        np.isnan(y), np.isnan(X)
    )  # NaN stays NaN, nothing else becomes NaN


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_nan_omit_partial_fit_matches_sklearn(backend, StandardScaler):
    rng = np.random.default_rng(22)
    X = make_2d(rng, 300, COLS_PF)
    X[rng.random(X.shape) < 0.2] = np.nan
    sizes = [16, 17, 33, 40, 64, 16, 114]
    # sklearn's own partial_fit turns a feature into NaN for good once a chunk
    # has no value of it (0/0 in its update), so parity needs every chunk to
    # see every feature; the all-NaN-chunk case is tested against float64 below.
    assert no_all_nan_column(X, sizes)
    bn, sk = bnfast.Standardizer(), StandardScaler()
    for c in chunks(X, sizes):
        bn.partial_fit(c)
        sk.partial_fit(c)
    assert_same_as_sklearn(bn, sk, X, 1e-12)
    check_attrs(bn, X)
    np.testing.assert_array_equal(np.asarray(bn.n_samples_seen_), (~np.isnan(X)).sum(0))


def test_constant_features_float64(backend, StandardScaler):
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


def test_constant_features_float32(backend, StandardScaler):
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


@pytest.mark.parametrize("with_mean", [True, False])
@pytest.mark.parametrize("with_std", [True, False])
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int32])
def test_with_mean_with_std_match_sklearn(backend, StandardScaler, with_mean, with_std, dtype):
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
        assert_close(bn.mean_, sk.mean_, std_rtol(dtype), mean_atol(X), "mean_")
    if with_std:
        assert_close(bn.var_, sk.var_, std_rtol(dtype), var_atol(X), "var_")
        assert_close(bn.scale_, sk.scale_, std_rtol(dtype), 0, "scale_")
    else:
        assert bn.var_ is None and bn.scale_ is None
    assert float(np.max(bn.n_samples_seen_)) == float(np.max(sk.n_samples_seen_)) == 90
    yb, ys = bn.transform(X), sk.transform(X)
    assert yb.dtype == std_out_dtype(dtype) == ys.dtype
    atol = tr_atol(bn.mean_ if with_mean else None, bn.scale_, yb.dtype, X.shape)
    if with_mean:  # mean_ difference bounded by mean_atol, inherited by outputs near 0
        atol = atol + mean_atol(X) / (bn.scale_ if with_std else 1.0)
    assert_close(yb, ys, std_rtol(yb.dtype), atol, "transform")
    check_transform(bn, X)
    if not with_mean and not with_std:
        np.testing.assert_array_equal(yb, X.astype(yb.dtype))


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


def test_plain_standardizer_in_pipeline(backend, StandardScaler):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    X, y = _clf_data()
    pb = Pipeline([("std", bnfast.Standardizer()), ("lr", LogisticRegression())]).fit(X, y)
    ps = Pipeline([("std", StandardScaler()), ("lr", LogisticRegression())]).fit(X, y)
    np.testing.assert_array_equal(pb.predict(X), ps.predict(X))
    np.testing.assert_allclose(pb.predict_proba(X), ps.predict_proba(X), rtol=1e-6, atol=1e-9)
    assert_close(
        pb.named_steps["std"].mean_,
        ps.named_steps["std"].mean_,
        1e-12,
        mean_atol(X),
        "pipeline mean_",
    )


# ---------------------------------------------------------------------------
# the bnfast.sklearn adapter
# ---------------------------------------------------------------------------
def test_sklearn_adapter_check_estimator(backend):
    SkStd = sklearn_standardizer()
    from sklearn.utils.estimator_checks import check_estimator

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = check_estimator(SkStd(), on_fail=None, on_skip=None)
    failed = [
        (r["check_name"], repr(r["exception"])[:300]) for r in results if r["status"] == "failed"
    ]
    assert not failed, "check_estimator failures:\n" + "\n".join(f"{n}: {e}" for n, e in failed)
    assert any(r["status"] == "passed" for r in results)


def test_sklearn_adapter_base_classes_and_parity(backend, StandardScaler):
    SkStd = sklearn_standardizer()
    from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin, clone

    s = SkStd()
    assert (
        isinstance(s, BaseEstimator)
        and isinstance(s, TransformerMixin)
        and isinstance(s, OneToOneFeatureMixin)
    )
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


def test_sklearn_adapter_pipeline_and_gridsearch(backend, StandardScaler):
    SkStd = sklearn_standardizer()
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import Pipeline

    X, y = _clf_data(offsets=False)  # (uncentred 1e4 offsets would make lbfgs crawl)
    grid = {"std__with_mean": [True, False], "lr__C": [0.1, 1.0]}
    gb = GridSearchCV(
        Pipeline([("std", SkStd()), ("lr", LogisticRegression(max_iter=500))]), grid, cv=3
    ).fit(X, y)
    gs = GridSearchCV(
        Pipeline([("std", StandardScaler()), ("lr", LogisticRegression(max_iter=500))]), grid, cv=3
    ).fit(X, y)
    np.testing.assert_allclose(
        gb.cv_results_["mean_test_score"], gs.cv_results_["mean_test_score"], rtol=1e-12
    )
    assert gb.best_params_ == gs.best_params_
    np.testing.assert_array_equal(gb.predict(X), gs.predict(X))


def test_sklearn_adapter_feature_names():
    SkStd = sklearn_standardizer()
    X = np.random.default_rng(0).standard_normal((10, 3))
    s = SkStd().fit(X)
    assert list(s.get_feature_names_out()) == ["x0", "x1", "x2"]
    assert list(s.get_feature_names_out(["a", "b", "c"])) == ["a", "b", "c"]
    with pytest.raises(ValueError):
        s.get_feature_names_out(["a", "b"])


def test_sklearn_adapter_set_output_pandas(backend):
    SkStd = sklearn_standardizer()
    pd = pytest.importorskip("pandas", reason="pandas is not installed")
    df = pd.DataFrame({"a": [1.0, 2.0, 4.0], "b": [3.0, 3.5, 9.0]})
    out = SkStd().set_output(transform="pandas").fit_transform(df)
    assert list(out.columns) == ["a", "b"]
    np.testing.assert_allclose(
        out.to_numpy(), bnfast.Standardizer().fit_transform(df.to_numpy()), rtol=1e-12
    )


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
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd="/tmp", timeout=60
    )
    assert "IMPORTERROR" in r.stdout, r.stdout + r.stderr
    assert "scikit-learn" in r.stdout.lower() or "sklearn" in r.stdout.lower(), r.stdout


def test_sklearn_adapter_transform_keeps_nan_under_raise_policy(backend):
    # Regression: the adapter's transform rejected NaN under nan_policy="raise"
    # (only fit and partial_fit raise; transform keeps NaN as NaN).
    pytest.importorskip("sklearn", reason="scikit-learn not installed")
    from bnfast.sklearn import Standardizer

    s = Standardizer(nan_policy="raise").fit(np.random.default_rng(6).random((10, 2)))
    y = s.transform(np.array([[np.nan, 0.5]]))
    assert np.isnan(y[0, 0]) and np.isfinite(y[0, 1])


# ---------------------------------------------------------------------------
# hypothesis: chunked partial_fit == fit == sklearn on random 2-D shapes
# ---------------------------------------------------------------------------
SIZES = [1, 2, 3, 15, 16, 17, 32, 33, 34]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
# 15 examples under each backend (30 when it ran once).
@settings(max_examples=15, deadline=None)
@given(
    n=st.sampled_from(SIZES + [65]),
    f=st.sampled_from(SIZES),
    dtype=st.sampled_from([np.float64, np.float32]),
    seed=st.integers(0, 2**32 - 1),
    cuts=st.lists(st.integers(0, 65), max_size=6),
    nan_frac=st.sampled_from([0.0, 0.0, 0.1]),
    weighted=st.booleans(),
)
def test_hypothesis_chunked_fit_sklearn(
    backend, StandardScaler, n, f, dtype, seed, cuts, nan_frac, weighted
):
    rng = np.random.default_rng(seed)
    off = rng.choice([0.0, 5.0, -50.0, 100.0], size=f)
    sc = rng.choice([1.0, 3.0, 10.0, 100.0], size=f)
    X = (off + sc * rng.standard_normal((n, f))).astype(dtype)
    if nan_frac:
        X[rng.random(X.shape) < nan_frac] = np.nan
    w = f32_exact(rng.uniform(0.1, 2.0, n), dtype) if weighted else None
    rtol = std_rtol(dtype)
    kw = {} if w is None else {"sample_weight": w}

    one = bnfast.Standardizer().fit(X, **kw)
    sk = StandardScaler().fit(X, **kw)
    if np.isnan(X).all(axis=0).any():
        # sklearn and bnfast agree on NaN stats; just compare attributes
        assert_close(one.mean_, sk.mean_, rtol, mean_atol(X), "mean_")
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
    assert_close(pf.mean_, one.mean_, 1e-13, mean_atol(X), "partial vs one mean_")
    assert_close(pf.var_, one.var_, 1e-12, var_atol(X), "partial vs one var_")
    # sklearn's partial_fit goes NaN once a chunk holds no value of a feature
    # (see test_nan_omit_partial_fit_matches_sklearn): compare only otherwise
    if no_all_nan_column(X, sizes):
        m_atol = mean_atol(X)
        if weighted and dtype == np.float32:
            # sklearn's weighted partial_fit of float32 data rounds the running
            # mean at float32 level (~2e-9 of max|x| seen; its fit does not).
            m_atol = 2.0**-22 * np.nanmax(np.abs(X), axis=0)
        assert_close(pf.scale_, skpf.scale_, rtol, 0, "partial scale_ vs sklearn partial")
        assert_close(pf.mean_, skpf.mean_, rtol, m_atol, "partial mean_ vs sklearn partial")
        assert_close(pf.var_, skpf.var_, rtol, var_atol(X), "partial var_ vs sklearn partial")
        yb = pf.transform(X)
        ys = skpf.transform(X)
        atol = tr_atol(pf.mean_, pf.scale_, X.dtype, X.shape) + m_atol / pf.scale_
        assert_close(yb, ys, rtol, atol, "partial transform vs sklearn")
