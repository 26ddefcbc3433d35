"""scipy.sparse CSR/CSC input of Standardizer(with_mean=False) (issue 14,
item 5): exact statistics with the implicit zeros counted as data (never
densified), sparse output in the input's format, NaN and sample weights as
scikit-learn's StandardScaler, and clear errors for what cannot work."""

import warnings
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import bnfast

sparse = pytest.importorskip("scipy.sparse", reason="sparse input needs scipy")

EPS = np.finfo(np.float64).eps
FORMATS = ["csr_matrix", "csc_matrix", "csr_array", "csc_array"]


def make(fmt, dense):
    return getattr(sparse, fmt)(dense)


def random_dense(n=60, m=5, density=0.3, seed=0, nan=0.0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, m)) * rng.uniform(0.5, 20, m) + rng.uniform(-5, 5, m)
    x[rng.random((n, m)) > density] = 0.0
    if nan:
        x[rng.random((n, m)) < nan] = np.nan
    return x


def exact_stats(column, weights=None):
    """Mean and (population) variance in rational arithmetic; NaN left out."""
    w = np.ones(len(column)) if weights is None else weights
    pairs = [(Fraction(v), Fraction(wi)) for v, wi in zip(column, w) if not np.isnan(v)]
    total = sum(wi for _, wi in pairs)
    mean = sum(v * wi for v, wi in pairs) / total
    return mean, sum(wi * (v - mean) ** 2 for v, wi in pairs) / total, total


@pytest.mark.parametrize("fmt", FORMATS)
def test_statistics_are_exact_with_implicit_zeros(backend, fmt):
    dense = random_dense(nan=0.1)
    dense[:, 0] = 0.0
    dense[::3, 0] = 1e6 + 0.25  # large offset, many implicit zeros
    # Every row stored, large offset, small spread: a plain two-pass (no
    # correction of the first mean) is off by ~1e-9 relative here.
    dense[:, 1] = 1e8 + np.random.default_rng(12).standard_normal(dense.shape[0]) * 1e-3
    st = bnfast.Standardizer(with_mean=False).fit(make(fmt, dense))
    for j in range(dense.shape[1]):
        mean, var, count = exact_stats(dense[:, j])
        # Corrected two-pass over the stored values, then one Chan merge with
        # the zeros: a few roundings, relative to the result.
        assert abs(Fraction(st.mean_[j]) - mean) <= 4 * EPS * abs(mean)
        assert abs(Fraction(st.var_[j]) - var) <= 16 * EPS * var
        assert st.n_samples_seen_[j] == count
    assert st.n_samples_seen_.dtype == np.int64


@pytest.mark.parametrize("fmt", FORMATS)
def test_weighted_statistics_are_exact(backend, fmt):
    dense = random_dense(nan=0.1, seed=1)
    w = np.random.default_rng(2).uniform(0, 3, dense.shape[0])
    st = bnfast.Standardizer(with_mean=False).fit(make(fmt, dense), sample_weight=w)
    for j in range(dense.shape[1]):
        mean, var, total = exact_stats(dense[:, j], w)
        assert abs(Fraction(st.mean_[j]) - mean) <= 8 * EPS * abs(mean)
        assert abs(Fraction(st.var_[j]) - var) <= 32 * EPS * var
        # the total weight of the implicit zeros is a difference of sums
        # of <= 60 weights: a few roundings of the total
        assert abs(Fraction(st.n_samples_seen_[j]) - total) <= 64 * EPS * total


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("weighted", [False, True])
def test_matches_scikit_learn_standard_scaler(backend, fmt, weighted):
    skp = pytest.importorskip("sklearn.preprocessing", reason="the reference is scikit-learn")
    dense = random_dense(n=80, nan=0.1, seed=3)
    X = make(fmt, dense)
    w = np.random.default_rng(4).uniform(0.1, 2, 80) if weighted else None
    ours = bnfast.Standardizer(with_mean=False).fit(X, sample_weight=w)
    ref = skp.StandardScaler(with_mean=False).fit(X, sample_weight=w)
    # Both are float64 two-pass computations over <= 80 values: the
    # difference is rounding, well under 1e-12 relative.
    np.testing.assert_allclose(ours.var_, ref.var_, rtol=1e-12)
    np.testing.assert_allclose(ours.scale_, ref.scale_, rtol=1e-12)
    np.testing.assert_allclose(ours.n_samples_seen_, ref.n_samples_seen_, rtol=1e-12)
    Y, Y_ref = ours.transform(X), ref.transform(X)
    assert type(Y) is type(X) and Y.format == X.format
    np.testing.assert_allclose(Y.toarray(), Y_ref.toarray(), rtol=1e-12)
    back = ours.inverse_transform(Y)
    assert type(back) is type(X)
    np.testing.assert_allclose(back.toarray(), dense, rtol=1e-14, atol=0)


@pytest.mark.parametrize("fmt", FORMATS)
def test_transform_equals_the_dense_path(backend, fmt):
    dense = random_dense(nan=0.05, seed=5)
    X = make(fmt, dense)
    st = bnfast.Standardizer(with_mean=False).fit(X)
    # Stored values only, scaled by the same float64 factor: the dense
    # transform of the same fit bit for bit (implicit zeros stay zeros).
    np.testing.assert_array_equal(st.transform(X).toarray(), st.transform(dense))
    np.testing.assert_array_equal(st.inverse_transform(X).toarray(), st.inverse_transform(dense))
    # The dense fit: the same statistics up to rounding (two exact methods).
    dense_st = bnfast.Standardizer(with_mean=False).fit(dense)
    np.testing.assert_allclose(st.var_, dense_st.var_, rtol=16 * EPS)
    np.testing.assert_array_equal(st.n_samples_seen_, dense_st.n_samples_seen_)
    X32 = X.astype(np.float32)
    Y32 = st.transform(X32)
    assert Y32.dtype == np.float32 and Y32.format == X.format
    want = st.transform(dense.astype(np.float32))
    np.testing.assert_allclose(Y32.toarray(), want, rtol=2 * np.finfo(np.float32).eps)
    Xi = make(fmt, (np.nan_to_num(dense) > 1).astype(np.int64))
    assert st.transform(Xi).dtype == np.float64


def test_partial_fit_chunks_equal_one_fit(backend):
    dense = random_dense(n=90, nan=0.1, seed=6)
    one = bnfast.Standardizer(with_mean=False).fit(sparse.csr_matrix(dense))
    st = bnfast.Standardizer(with_mean=False)
    for chunk in np.array_split(dense, 4):
        st.partial_fit(sparse.csr_matrix(chunk))
    # Chan merges of exact chunk moments: rounding only.
    np.testing.assert_allclose(st.var_, one.var_, rtol=8 * EPS)
    np.testing.assert_array_equal(st.n_samples_seen_, one.n_samples_seen_)
    # sparse and dense chunks merge alike
    mixed = bnfast.Standardizer(with_mean=False).partial_fit(dense[:45])
    mixed.partial_fit(sparse.csc_matrix(dense[45:]))
    np.testing.assert_allclose(mixed.var_, one.var_, rtol=8 * EPS)


def test_duplicates_and_explicit_zeros(backend):
    # (0, 0) stored twice (sums to 3), (1, 0) an explicit zero
    X = sparse.csr_matrix(
        (np.array([1.0, 2.0, 0.0, 5.0]), np.array([0, 0, 0, 1]), np.array([0, 2, 3, 4, 4])),
        shape=(4, 2),
    )
    assert not X.has_canonical_format
    before = X.data.copy()
    st = bnfast.Standardizer(with_mean=False).fit(X)
    dense = X.toarray()
    np.testing.assert_allclose(st.var_, dense.var(axis=0), rtol=4 * EPS)
    np.testing.assert_array_equal(X.data, before)  # the input is not modified


def test_nan_policies(backend):
    dense = random_dense(nan=0.1, seed=7)
    X = sparse.csc_matrix(dense)
    with pytest.raises(ValueError, match="NaN in .* nan_policy='raise'"):
        bnfast.Standardizer(with_mean=False, nan_policy="raise").fit(X)
    st = bnfast.Standardizer(with_mean=False, nan_policy="propagate").fit(X)
    has_nan = np.isnan(dense).any(axis=0)
    assert has_nan.any()
    np.testing.assert_array_equal(np.isnan(st.var_), has_nan)
    Y = bnfast.Standardizer(with_mean=False).fit_transform(X)
    np.testing.assert_array_equal(np.isnan(Y.toarray()), np.isnan(dense))  # NaN stays


def test_copy_false_scales_in_place(backend):
    X = sparse.csr_matrix(random_dense(seed=8))
    st = bnfast.Standardizer(with_mean=False, copy=False).fit(X)
    want = st.transform(X.copy())
    Y = st.transform(X)
    assert Y is X
    np.testing.assert_array_equal(X.toarray(), want.toarray())
    copied = bnfast.Standardizer(with_mean=False).fit(X)
    X2 = X.copy()
    assert copied.transform(X2) is not X2


def test_never_densified(backend):
    # 10**6 x 10**5 float64 would be 800 GB dense.
    rng = np.random.default_rng(9)
    n, m, nnz = 10**6, 10**5, 2000
    X = sparse.csr_matrix(
        (rng.standard_normal(nnz), (rng.integers(0, n, nnz), rng.integers(0, m, nnz))),
        shape=(n, m),
    )
    st = bnfast.Standardizer(with_mean=False).fit(X)
    assert st.n_samples_seen_ == n
    Y = st.transform(X)
    assert Y.nnz == X.nnz and Y.format == "csr"


def test_clear_errors(backend):
    X = sparse.csr_matrix(random_dense(seed=10))
    with pytest.raises(ValueError, match=r"cannot center sparse data.*with_mean=False"):
        bnfast.Standardizer().fit(X)
    with pytest.raises(TypeError, match=r"COO.*X\.tocsr\(\)"):
        bnfast.Standardizer(with_mean=False).fit(X.tocoo())
    with pytest.raises(ValueError, match=r"per column \(axis=0\)"):
        bnfast.Standardizer(with_mean=False, axis=1).fit(X)
    st = bnfast.Standardizer(with_mean=False).fit(X)
    with pytest.raises(TypeError, match="out= is not supported for sparse X"):
        st.transform(X, out=np.empty(X.shape))
    with pytest.raises(ValueError, match="X has 3 features"):
        st.transform(X[:, :3])
    dense_fit = bnfast.Standardizer().fit(X.toarray())
    with pytest.raises(ValueError, match="cannot center sparse data"):
        dense_fit.transform(X)
    glob = bnfast.Standardizer(with_mean=False, axis=None).fit(X.toarray())
    with pytest.raises(ValueError, match="fitted per column of 2-D data"):
        glob.transform(X)
    bad = X.copy()
    bad.data[0] = np.inf
    with pytest.raises(ValueError, match="infinity"):
        bnfast.Standardizer(with_mean=False).fit(bad)
    with pytest.raises(TypeError, match="real numbers"):
        bnfast.Standardizer(with_mean=False).fit(X.astype(np.complex128))


# ---------------------------------------------------------------------------
# the scikit-learn adapter takes sparse input as the plain class
# ---------------------------------------------------------------------------
def test_adapter_sparse_matches_plain(backend):
    pytest.importorskip("sklearn", reason="the adapter needs scikit-learn")
    from bnfast.sklearn import Standardizer as SkStd

    X = sparse.csc_matrix(random_dense(nan=0.1, seed=11))
    plain = bnfast.Standardizer(with_mean=False).fit(X)
    adapter = SkStd(with_mean=False).fit(X)
    np.testing.assert_array_equal(plain.var_, adapter.var_)
    Y = adapter.transform(X)
    assert Y.format == "csc"
    np.testing.assert_array_equal(Y.toarray(), plain.transform(X).toarray())
    with pytest.raises(ValueError, match="cannot center sparse data"):
        SkStd().fit(X)


def test_adapter_check_estimator_without_centring(backend):
    pytest.importorskip("sklearn", reason="the adapter needs scikit-learn")
    from sklearn.utils.estimator_checks import check_estimator

    from bnfast.sklearn import Standardizer as SkStd

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = check_estimator(SkStd(with_mean=False), on_fail=None, on_skip=None)
    failed = [
        (r["check_name"], repr(r["exception"])[:300]) for r in results if r["status"] == "failed"
    ]
    assert not failed, failed
    assert any(
        r["check_name"] == "check_estimator_sparse_tag" and r["status"] == "passed" for r in results
    )


@st.composite
def sparse_cases(draw):
    n = draw(st.integers(1, 40))
    m = draw(st.integers(1, 6))
    density = draw(st.sampled_from([0.0, 0.1, 0.5, 1.0]))
    nan = draw(st.sampled_from([0.0, 0.2]))
    seed = draw(st.integers(0, 2**32 - 1))
    weighted = draw(st.booleans())
    fmt = draw(st.sampled_from(FORMATS))
    dtype = draw(st.sampled_from([np.float64, np.float32, np.int32]))
    return n, m, density, nan, seed, weighted, fmt, dtype


@given(case=sparse_cases())
def test_sparse_fit_matches_the_dense_fit(backend, case):
    n, m, density, nan, seed, weighted, fmt, dtype = case
    rng = np.random.default_rng(seed)
    dense = np.round(rng.standard_normal((n, m)) * 100 + 50, 2)
    dense[rng.random((n, m)) >= density] = 0.0
    if np.dtype(dtype).kind == "f":
        dense[rng.random((n, m)) < nan] = np.nan
    dense = dense.astype(dtype)
    w = rng.uniform(0.0, 2.0, n) if weighted else None
    if w is not None:
        w[0] = 1.0  # never all weights zero
    X = make(fmt, dense)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # features without values
        ours = bnfast.Standardizer(with_mean=False).fit(X, sample_weight=w)
        ref = bnfast.Standardizer(with_mean=False).fit(dense, sample_weight=w)
    # Two exact float64 methods over <= 40 values: they differ by rounding
    # (a few eps relative, and a few eps of mean**2 for variances cancelling
    # against a large mean).
    np.testing.assert_allclose(ours.n_samples_seen_, ref.n_samples_seen_, rtol=64 * EPS)
    np.testing.assert_allclose(ours.mean_, ref.mean_, rtol=64 * EPS, atol=1e-12)
    scale = np.nan_to_num(ref.mean_) ** 2 + 1.0
    np.testing.assert_allclose(
        ours.var_, ref.var_, rtol=64 * EPS, atol=float(64 * EPS * scale.max())
    )
    Y = ours.transform(X)
    assert Y.format == X.format and type(Y) is type(X)
    np.testing.assert_array_equal(Y.toarray(), ours.transform(dense))
