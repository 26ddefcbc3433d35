"""bnfast.Standardizer's API: constructor parameters (stored unchanged,
validated at fit), argument errors, copies / in-place / out=, bounded memory
of fit, save / load."""

import json
import pathlib

import numpy as np
import pytest

import bnfast
from helpers import (
    EPS64,
    assert_close,
    check_attrs,
    make_2d,
    peak_traced_bytes,
    short_first_axis_case,
    std_out_dtype,
    std_rtol,
)


# ---------------------------------------------------------------------------
# parameters and argument errors
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "bad",
    [
        np.ones((4, 2), np.complex128),
        np.ones((4, 2), np.complex64),
        np.array([[1, "a"], [2, 3]], dtype=object),
        np.array([["a", "b"], ["c", "d"]]),
    ],
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


def test_constructor_keyword_only_and_stores_unchanged():
    with pytest.raises(TypeError):
        bnfast.Standardizer(0)  # keyword-only
    odd = dict(
        axis="nonsense",
        with_mean=0,
        with_std="yes",
        ddof="x",
        nan_policy="maybe",
        copy=None,
        dtype="nope",
    )
    s = bnfast.Standardizer(**odd)  # no validation in __init__ (sklearn rule)
    assert s.get_params() == odd
    assert s.get_params(deep=True) == odd
    assert bnfast.Standardizer().get_params() == dict(
        axis=0, with_mean=True, with_std=True, ddof=0, nan_policy="omit", copy=True, dtype=None
    )


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


def test_set_params(backend):
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
    for call in (
        lambda: s.transform(X),
        lambda: s.inverse_transform(X),
        lambda: s.save(tmp_path / "s.npz"),
    ):
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


# ---------------------------------------------------------------------------
# copies, in-place, out=
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int64])
def test_input_never_modified(backend, dtype):
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
    np.testing.assert_array_equal(
        s.transform(X), bnfast.Standardizer().fit(X0).partial_fit(X0).transform(X0)
    )
    bnfast.Standardizer(copy=False).fit(X).transform(X)
    np.testing.assert_array_equal(X, X0)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("order", ["C", "F"])
def test_copy_false_in_place(backend, dtype, order):
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
    assert_close(
        z,
        make_2d(np.random.default_rng(92), 40, dtype=dtype),
        std_rtol(dtype),
        np.abs(s.mean_) * (2.0**-22 if dtype == np.float32 else 16 * EPS64),
        "round trip in place",
    )


def test_copy_false_with_int_or_readonly_input_returns_new_array(backend):
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


def test_copy_true_default_returns_new_array(backend):
    X = make_2d(np.random.default_rng(93), 20)
    s = bnfast.Standardizer().fit(X)
    y = s.transform(X)
    assert y is not X and not np.shares_memory(y, X)


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int32])
def test_out_parameter(backend, dtype):
    rng = np.random.default_rng(94)
    X = (make_2d(rng, 25) if dtype != np.int32 else rng.integers(-9, 9, (25, 7))).astype(dtype)
    s = bnfast.Standardizer().fit(X)
    odt = std_out_dtype(dtype)
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
def test_out_is_x_in_place(backend, dtype):
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


def test_out_non_contiguous(backend):
    X = make_2d(np.random.default_rng(96), 25)
    s = bnfast.Standardizer().fit(X)
    big = np.zeros((25, 14))
    out = big[:, ::2]
    r = s.transform(X, out=out)
    assert r is out
    np.testing.assert_array_equal(out, s.transform(X))
    np.testing.assert_array_equal(big[:, 1::2], 0.0)


def test_copy_false_works_in_place_on_memmap(backend, tmp_path):
    # Regression: copy=False did not work in place on a np.memmap.
    x = np.random.default_rng(4).random((50, 3)) * 10
    mm = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float64, shape=x.shape)
    mm[...] = x
    s = bnfast.Standardizer(copy=False).fit(x)
    out = s.transform(mm)
    assert out is mm
    np.testing.assert_allclose(
        np.asarray(mm), bnfast.Standardizer().fit(x).transform(x), rtol=1e-15
    )


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
    return {
        "f64": X,
        "f64-nan": Xn,
        "f32": X32,
        "f64-weighted": X.reshape(n // 2, 8),
        "w": w,
        "partial-f64-nan": Xn,
    }


@pytest.mark.parametrize("case", ["f64", "f64-nan", "f32", "f64-weighted", "partial-f64-nan"])
def test_fit_makes_no_full_size_copy(backend, big_arrays, case):
    """The contract: "Fitting never makes a full-size copy of X (temporaries are
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

    def run(A, wa):
        s = bnfast.Standardizer()
        if case.startswith("partial"):
            h = A.shape[0] // 2
            fn = lambda: s.partial_fit(A[:h]).partial_fit(A[h:])  # noqa: E731
        else:
            fn = lambda: s.fit(A, sample_weight=wa)  # noqa: E731
        return s, peak_traced_bytes(fn)

    half = X.shape[0] // 2
    _, peak_half = run(X[:half], None if w is None else w[:half])
    s, peak = run(X, w)
    grow = peak - peak_half
    extra = X.nbytes - X[:half].nbytes
    msg = (
        f"peak traced memory {peak / 1e6:.1f} MB for X of {X.nbytes / 1e6:.1f} MB, "
        f"{peak_half / 1e6:.1f} MB for its first half"
    )
    assert grow < 0.25 * extra, msg
    assert peak < (0.75 if w is not None else 0.25) * X.nbytes, msg
    # and the answer is right (spot check against a float64 reference of a column)
    col = np.asarray(X[:, 1], np.float64)
    m = np.nanmean(col) if w is None else np.sum(w * col) / np.sum(w)
    assert s.mean_[1] == pytest.approx(m, rel=std_rtol(X.dtype))


def test_weighted_fit_does_not_copy_the_weights_or_the_data(backend):
    # Regression: float64 weights were copied by astype (and more temporaries
    # followed): 75 MB peak for a 128 MB X. The bound is a few 2 MB slab
    # temporaries.
    x = np.random.default_rng(8).random((4_000_000, 4))
    w = np.ones(len(x))
    peak = peak_traced_bytes(lambda: bnfast.Standardizer().fit(x, sample_weight=w))
    assert peak < 20e6, peak


@pytest.mark.parametrize("case", ["uint8-short-first-axis", "int16-axis-None", "float64-axis-None"])
def test_fit_temporaries_stay_bounded_when_the_first_axis_is_short(backend, case):
    # Regression: slabs were cut along the first reduced axis only: with one
    # or two indices there, one slab was (almost) all of X, converted to
    # float64. Bound: a handful of 2 MB slab temporaries, far below the copy.
    x, axis = short_first_axis_case(case)
    float64_copy = x.size * 8
    peak_fit = peak_traced_bytes(lambda: bnfast.Standardizer(axis=axis).fit(x))
    assert peak_fit < 16e6 < float64_copy, peak_fit


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
def test_save_load_round_trip(backend, tmp_path, case, pathkind):
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


def test_save_without_suffix_and_numpy_scalar_params_round_trip(tmp_path):
    # Regression: load did not find the .npz NumPy wrote for a path without
    # the suffix, and NumPy scalar parameters did not survive the round trip.
    x = np.random.default_rng(2).random((20, 3))
    s = bnfast.Standardizer(ddof=np.int64(1), with_mean=np.True_, axis=np.int64(0)).fit(x)
    path = str(tmp_path / "model")
    s.save(path)  # NumPy writes model.npz
    t = bnfast.Standardizer.load(path)
    np.testing.assert_array_equal(t.transform(x), s.transform(x))
    assert t.get_params()["ddof"] == 1


@pytest.mark.parametrize(
    "corruption",
    ["truncated", "bad-ddof", "bad-policy", "bad-ndim", "float-version", "string-mean"],
)
def test_load_refuses_corrupt_files_with_value_error(tmp_path, corruption):
    # Regression: corrupt files and unchecked metadata gave other errors (or
    # a broken Standardizer) instead of one ValueError.
    x = np.random.default_rng(3).random((20, 3))
    path = tmp_path / "s.npz"
    bnfast.Standardizer().fit(x).save(path)
    if corruption == "truncated":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:
        with np.load(path) as f:
            entries = {k: f[k] for k in f.files}
        meta = json.loads(str(entries["meta"]))
        if corruption == "bad-ddof":
            meta["params"]["ddof"] = "x"
        elif corruption == "bad-policy":
            meta["params"]["nan_policy"] = "bogus"
        elif corruption == "bad-ndim":
            meta["ndim"] = 5
        elif corruption == "float-version":
            entries["version"] = np.array(1.7)
        elif corruption == "string-mean":
            entries["mean"] = np.array(["a", "b", "c"])
        entries["meta"] = np.array(json.dumps(meta))
        np.savez(path, **entries)
    with pytest.raises(ValueError, match="not a saved bnfast Standardizer"):
        bnfast.Standardizer.load(path)
