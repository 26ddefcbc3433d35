"""pandas DataFrames in bnfast.Standardizer (issue 14, item 4): feature names
with scikit-learn's semantics, errors on missing or reordered columns,
get_feature_names_out, nullable dtypes with pd.NA read as NaN, and the plain
class and the bnfast.sklearn adapter inside a ColumnTransformer."""

import warnings

import numpy as np
import pytest

import bnfast

pd = pytest.importorskip("pandas", reason="DataFrame input needs pandas")


def frame(n=6, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "a": rng.standard_normal(n),
            "b": rng.integers(0, 10, n),
            "c": rng.standard_normal(n).astype(np.float32),
        }
    )


def test_fit_records_string_column_names(backend):
    df = frame()
    st = bnfast.Standardizer().fit(df)
    assert st.feature_names_in_.dtype == object
    assert list(st.feature_names_in_) == ["a", "b", "c"]
    # The statistics are those of the values (mixed int/float columns: float64).
    ref = bnfast.Standardizer().fit(df.to_numpy(dtype=np.float64))
    np.testing.assert_array_equal(st.mean_, ref.mean_)
    np.testing.assert_array_equal(st.var_, ref.var_)
    np.testing.assert_array_equal(st.transform(df), ref.transform(df.to_numpy(np.float64)))


def test_no_names_for_non_string_columns_or_non_column_features(backend):
    df = frame()
    st = bnfast.Standardizer().fit(df.set_axis([0, 1, 2], axis=1))
    assert not hasattr(st, "feature_names_in_")  # scikit-learn: only str names
    st = bnfast.Standardizer(axis=None).fit(df)  # one global feature
    assert not hasattr(st, "feature_names_in_")
    st = bnfast.Standardizer(axis=1).fit(df)  # the rows are the features
    assert not hasattr(st, "feature_names_in_")
    with pytest.raises(TypeError, match=r"string names.*astype\(str\)"):
        bnfast.Standardizer().fit(df.set_axis(["a", 1, "c"], axis=1))


@pytest.mark.parametrize("method", ["transform", "inverse_transform", "partial_fit"])
def test_reordered_or_missing_columns_are_refused(backend, method):
    df = frame()
    st = bnfast.Standardizer().fit(df)
    call = getattr(st, method)
    with pytest.raises(
        ValueError, match=r"another order; reorder them: X\[st\.feature_names_in_\]"
    ):
        call(df[["c", "b", "a"]])
    with pytest.raises(ValueError, match=r"unseen at fit time: \['d'\].*missing: \['c'\]"):
        call(df.rename(columns={"c": "d"}))
    with pytest.raises(ValueError, match=r"now missing: \['c'\]"):
        call(df[["a", "b"]])
    # the right columns pass
    call(df)


def test_names_on_one_side_only_warn_as_scikit_learn(backend):
    df = frame()
    st = bnfast.Standardizer().fit(df)
    with pytest.warns(UserWarning, match="does not have feature names"):
        st.transform(df.to_numpy())
    st = bnfast.Standardizer().fit(df.to_numpy())
    with pytest.warns(UserWarning, match="fitted without feature names"):
        st.transform(df)
    assert not hasattr(st, "feature_names_in_")


def test_refit_replaces_the_names(backend):
    df = frame()
    st = bnfast.Standardizer().fit(df)
    st.fit(df.to_numpy())
    assert not hasattr(st, "feature_names_in_")
    st.fit(df.rename(columns=str.upper))
    assert list(st.feature_names_in_) == ["A", "B", "C"]
    # partial_fit of a first chunk records them; later chunks are checked
    st = bnfast.Standardizer().partial_fit(df.iloc[:3]).partial_fit(df.iloc[3:])
    assert list(st.feature_names_in_) == ["a", "b", "c"]
    np.testing.assert_allclose(st.mean_, bnfast.Standardizer().fit(df).mean_, rtol=1e-15)


def test_get_feature_names_out(backend):
    df = frame()
    st = bnfast.Standardizer().fit(df)
    out = st.get_feature_names_out()
    assert out.dtype == object and list(out) == ["a", "b", "c"]
    assert list(st.get_feature_names_out(["a", "b", "c"])) == ["a", "b", "c"]
    with pytest.raises(ValueError, match="not equal to feature_names_in_"):
        st.get_feature_names_out(["c", "b", "a"])
    plain = bnfast.Standardizer().fit(df.to_numpy())
    assert list(plain.get_feature_names_out()) == ["x0", "x1", "x2"]
    assert list(plain.get_feature_names_out(["p", "q", "r"])) == ["p", "q", "r"]
    with pytest.raises(ValueError, match=r"length equal to the number of features \(3\), got 2"):
        plain.get_feature_names_out(["p", "q"])
    images = bnfast.Standardizer(axis=(0, 2)).fit(np.ones((2, 3, 4)))
    assert list(images.get_feature_names_out()) == ["x0", "x1", "x2"]
    with pytest.raises(bnfast.NotFittedError, match="get_feature_names_out"):
        bnfast.Standardizer().get_feature_names_out()


def test_save_and_load_keep_the_names(tmp_path, backend):
    df = frame()
    bnfast.Standardizer().fit(df).save(tmp_path / "st.npz")
    st = bnfast.Standardizer.load(tmp_path / "st.npz")
    assert list(st.feature_names_in_) == ["a", "b", "c"]
    with pytest.raises(ValueError, match="reorder"):
        st.transform(df[["b", "a", "c"]])
    bnfast.Standardizer().fit(df.to_numpy()).save(tmp_path / "plain.npz")
    assert not hasattr(bnfast.Standardizer.load(tmp_path / "plain.npz"), "feature_names_in_")


# ---------------------------------------------------------------------------
# nullable dtypes: pd.NA is NaN, governed by nan_policy
# ---------------------------------------------------------------------------
def nullable_frame():
    return pd.DataFrame(
        {
            "f": pd.array([0.5, None, 2.5, 4.0], dtype="Float64"),
            "i": pd.array([1, 2, None, 7], dtype="Int64"),
            "b": pd.array([True, None, False, True], dtype="boolean"),
        }
    )


def nan_twin():
    return np.array([[0.5, 1.0, 1.0], [np.nan, 2.0, np.nan], [2.5, np.nan, 0.0], [4.0, 7.0, 1.0]])


def test_nullable_columns_read_pd_na_as_nan(backend):
    df = nullable_frame()
    st = bnfast.Standardizer().fit(df)
    ref = bnfast.Standardizer().fit(nan_twin())
    np.testing.assert_array_equal(st.mean_, ref.mean_)
    np.testing.assert_array_equal(st.var_, ref.var_)
    np.testing.assert_array_equal(st.n_samples_seen_, [3, 3, 3])
    np.testing.assert_array_equal(st.transform(df), ref.transform(nan_twin()))
    mean, var = bnfast.mean_var(df, axis=0)  # every op reads them the same way
    assert np.isnan(mean).all()  # NaN propagates through mean_var, as np.mean
    np.testing.assert_array_equal(bnfast.mean_var(df["i"].dropna())[0], np.mean([1.0, 2.0, 7.0]))


def test_nullable_columns_follow_nan_policy(backend):
    df = nullable_frame()
    with pytest.raises(ValueError, match="NaN in 3 feature"):
        bnfast.Standardizer(nan_policy="raise").fit(df)
    st = bnfast.Standardizer(nan_policy="propagate").fit(df)
    assert np.isnan(st.mean_).all()


def test_nullable_float32_stays_float32(backend):
    df = pd.DataFrame({"x": pd.array([1.0, None, 3.0], dtype="Float32")})
    assert bnfast.Standardizer().fit_transform(df).dtype == np.float32


def test_non_numeric_columns_are_named(backend):
    df = frame().assign(s=["u", "v", "w", "x", "y", "z"])
    with pytest.raises(TypeError, match=r"non-numeric columns \['s'\].*select_dtypes"):
        bnfast.Standardizer().fit(df)


def test_out_cannot_be_a_dataframe(backend):
    df = frame()[["a"]]
    st = bnfast.Standardizer().fit(df)
    with pytest.raises(TypeError, match="out must be a NumPy array"):
        st.transform(df, out=df.copy())


# ---------------------------------------------------------------------------
# scikit-learn: ColumnTransformer, set_output, the adapter
# ---------------------------------------------------------------------------
def test_plain_class_in_a_column_transformer(backend):
    pytest.importorskip("sklearn", reason="ColumnTransformer needs scikit-learn")
    from sklearn.compose import ColumnTransformer

    df = frame(20)
    ct = ColumnTransformer([("std", bnfast.Standardizer(), ["a", "c"])], remainder="passthrough")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = ct.fit_transform(df)
        names = ct.get_feature_names_out()
    assert list(names) == ["std__a", "std__c", "remainder__b"]
    ref = bnfast.Standardizer().fit_transform(df[["a", "c"]].to_numpy(np.float64))
    np.testing.assert_allclose(got[:, :2], ref, rtol=1e-6)  # float32 column c: float32 rounding


def test_adapter_in_a_column_transformer_with_pandas_output(backend):
    pytest.importorskip("sklearn", reason="ColumnTransformer needs scikit-learn")
    from sklearn.compose import ColumnTransformer

    from bnfast.sklearn import Standardizer as SkStd

    df = frame(20)
    ct = ColumnTransformer([("std", SkStd(), ["a", "b"])], remainder="passthrough")
    ct.set_output(transform="pandas")
    got = ct.fit_transform(df)
    assert isinstance(got, pd.DataFrame)
    assert list(got.columns) == ["std__a", "std__b", "remainder__c"]
    ref = bnfast.Standardizer().fit(df[["a", "b"]]).transform(df[["a", "b"]])
    np.testing.assert_array_equal(got[["std__a", "std__b"]].to_numpy(), ref)
    # The ColumnTransformer selects columns by name: a reordered frame gives
    # the same result.
    np.testing.assert_array_equal(ct.transform(df[["c", "b", "a"]]).to_numpy(), got.to_numpy())


def test_plain_and_adapter_agree_on_frames(backend):
    pytest.importorskip("sklearn", reason="the adapter needs scikit-learn")
    from bnfast.sklearn import Standardizer as SkStd

    df = frame(12)
    plain, adapter = bnfast.Standardizer().fit(df), SkStd().fit(df)
    np.testing.assert_array_equal(plain.feature_names_in_, adapter.feature_names_in_)
    np.testing.assert_array_equal(plain.get_feature_names_out(), adapter.get_feature_names_out())
    np.testing.assert_array_equal(plain.transform(df), adapter.transform(df))
    for est in (plain, adapter):
        with pytest.raises(ValueError, match="feature names"):
            est.transform(df[["b", "a", "c"]])
    # nullable columns: the adapter (scikit-learn's validation) reads pd.NA
    # as NaN too, and both give the same statistics
    nd = nullable_frame()
    np.testing.assert_array_equal(bnfast.Standardizer().fit(nd).var_, SkStd().fit(nd).var_)
