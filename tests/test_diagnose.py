"""bnfast.diagnose / DataReport and the chunked DiagnoseAccumulator:
counts, statistics and flags against NumPy nan-functions in float64 over the
finite values (under every backend), the text / dict / plot outputs, chunked
accumulation and bounded memory."""

import json
import math
import sys

import numpy as np
import pytest

import bnfast
from helpers import (
    EPS64,
    DiagnoseAccumulator,
    assert_close,
    constant_rule,
    peak_traced_bytes,
    ref_diagnose,
    short_first_axis_case,
)


def check_report(rep, X, axis=0):
    """Every per-feature field of ``rep`` against the NumPy reference."""
    r = ref_diagnose(X, axis)
    F = r["feature_shape"]
    assert isinstance(rep, bnfast.DataReport)
    assert tuple(rep.feature_shape) == F and isinstance(rep.feature_shape, tuple)
    assert rep.n_features == r["n_features"] and isinstance(rep.n_features, (int, np.integer))
    assert rep.n_samples == r["n_samples"] and isinstance(rep.n_samples, (int, np.integer))
    assert rep.dtype == str(np.asarray(X).dtype) and isinstance(rep.dtype, str)
    for k in ("count", "nan_count", "inf_count"):
        a = np.asarray(getattr(rep, k))
        assert a.dtype == np.int64, (k, a.dtype)
        assert a.shape == F
        np.testing.assert_array_equal(a, r[k], err_msg=k)
    # sums of <= ~1e4 float64 terms round to <= ~14 eps*max|x| absolute:
    # only matters for means/stds that are ~0 relative to the data.
    atol = 32 * EPS64 * r["amax"]
    for k in ("mean", "std", "min", "max"):
        a = np.asarray(getattr(rep, k))
        assert a.dtype == np.float64, (k, a.dtype)
        assert a.shape == F
        assert_close(a, r[k], 1e-12, 0.0 if k in ("min", "max") else atol, k)
    assert bool(rep.has_nan) == bool(r["nan_count"].sum() > 0)
    assert bool(rep.has_inf) == bool(r["inf_count"].sum() > 0)
    assert isinstance(rep.warnings, list) and all(isinstance(w, str) for w in rep.warnings)
    return r


def ref_constant(X, axis=0):
    """The constant flag of the float64 reference (scikit-learn's rule)."""
    r = ref_diagnose(X, axis)
    return constant_rule(r["std"] ** 2, r["mean"], r["count"].astype(float))


def make_cols(rng, n, cols):
    return np.stack([o + s * rng.standard_normal(n) for o, s in cols], axis=1)


# ---------------------------------------------------------------------------
# statistics
# ---------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_counts_and_stats_vs_numpy(backend, dtype):
    rng = np.random.default_rng(0)
    X = make_cols(
        rng, 300, [(1e4, 1.0), (-3.0, 2.0), (50.0, 10.0), (0.0, 1.0), (0.0, 1.0), (7.0, 0.5)]
    ).astype(dtype)
    X[rng.random(300) < 0.1, 1] = np.nan
    X[[3, 17, 99], 2] = np.inf
    X[[5, 6], 2] = -np.inf
    X[:, 3] = np.where(np.arange(300) % 2, np.nan, np.inf)  # no finite value at all
    X[:, 4] = 2.5  # constant
    rep = bnfast.diagnose(X)
    r = check_report(rep, X)
    assert rep.count[3] == 0 and rep.nan_count[3] == 150 and rep.inf_count[3] == 150
    assert rep.inf_count[2] == 5
    for k in ("mean", "std", "min", "max"):
        assert np.isnan(getattr(rep, k)[3]), k  # NaN where count is 0
    assert rep.min[2] == r["min"][2] and np.isfinite(rep.max[2])
    assert rep.has_nan and rep.has_inf
    assert rep.constant[4] and not rep.constant[[0, 1, 2, 5]].any()
    assert np.asarray(rep.constant).dtype == np.bool_ and np.asarray(rep.constant).shape == (6,)
    ws = " ".join(rep.warnings).lower()
    assert len(rep.warnings) >= 3  # NaN, inf, constant feature
    assert "nan" in ws and "inf" in ws and "constant" in ws


def test_clean_data_no_problem_flags(backend):
    rng = np.random.default_rng(1)
    X = make_cols(rng, 200, [(1.0, 2.0), (-5.0, 3.0), (100.0, 1.0)])
    rep = bnfast.diagnose(X)
    check_report(rep, X)
    assert not rep.has_nan and not rep.has_inf
    assert not np.asarray(rep.constant).any()
    assert not np.asarray(rep.scale_outliers).any()
    assert not rep.looks_like_image_bytes
    assert not rep.looks_standardized
    np.testing.assert_array_equal(rep.count, 200)
    np.testing.assert_array_equal(rep.nan_count, 0)


@pytest.mark.parametrize("dtype", [np.uint8, np.float32, np.int16])
@pytest.mark.parametrize(
    "axis, F", [((0, 2, 3), (3,)), ((0, -1), (3, 5)), (None, ()), (0, (3, 5, 6))]
)
def test_axes(backend, dtype, axis, F):
    rng = np.random.default_rng(2)
    X = rng.integers(0, 200, (4, 3, 5, 6)).astype(dtype)
    rep = bnfast.diagnose(X, axis=axis)
    check_report(rep, X, axis)
    assert rep.feature_shape == F
    assert rep.n_features == math.prod(F)
    assert rep.n_samples == X.size // math.prod(F)
    assert (
        np.shape(rep.mean) == F
        and np.shape(rep.constant) == F
        and np.shape(rep.scale_outliers) == F
    )


def test_float32_image_batch_channels(backend):
    rng = np.random.default_rng(3)
    X = (
        rng.standard_normal((8, 3, 16, 16)) * np.array([1.0, 10.0, 0.1]).reshape(1, 3, 1, 1)
        + np.array([0.0, 100.0, -4.0]).reshape(1, 3, 1, 1)
    ).astype(np.float32)
    X[0, 1, 0, 0] = np.nan
    rep = bnfast.diagnose(X, axis=(0, 2, 3))
    check_report(rep, X, (0, 2, 3))
    np.testing.assert_array_equal(rep.nan_count, [0, 1, 0])
    assert rep.n_samples == 8 * 16 * 16


# ---------------------------------------------------------------------------
# flags
# ---------------------------------------------------------------------------
def test_constant_flag_same_rule_as_standardizer(backend):
    rng = np.random.default_rng(4)
    n = 100
    X = np.empty((n, 6))
    X[:, 0] = 1e8
    X[:, 1] = 0.1
    X[:, 2] = 1e8 + np.spacing(1e8) * rng.integers(-1, 2, n)  # near-constant
    X[:, 3] = rng.standard_normal(n)
    X[:, 4] = 1e-17 * (-1.0) ** np.arange(n)  # tiny but genuine spread: not constant
    X[:, 5] = 1e4 + rng.standard_normal(n)
    rep = bnfast.diagnose(X)
    want = np.array([True, True, True, False, False, False])
    np.testing.assert_array_equal(rep.constant, want)
    np.testing.assert_array_equal(rep.constant, ref_constant(X))
    s = bnfast.Standardizer().fit(X)
    np.testing.assert_array_equal(rep.constant, s.scale_ == 1.0)
    assert any("constant" in w.lower() for w in rep.warnings)


def test_scale_outliers_flag(backend):
    rng = np.random.default_rng(5)
    cols = [(0.0, 1.0)] * 10 + [(0.0, 1e5)]
    X = make_cols(rng, 400, cols)
    rep = bnfast.diagnose(X)
    want = np.zeros(11, bool)
    want[10] = True
    np.testing.assert_array_equal(rep.scale_outliers, want)
    assert rep.warnings  # a problem was found
    # tiny std (not constant: mean 0, std 1e-5) is an outlier too; factor 100 is not
    Y = make_cols(rng, 400, [(0.0, 1.0)] * 6 + [(0.0, 1e-5), (3.0, 100.0), (0.0, 5e3)])
    rep = bnfast.diagnose(Y)
    np.testing.assert_array_equal(rep.scale_outliers, [False] * 6 + [True, False, True])


def test_scale_outliers_median_ignores_constant_features(backend):
    rng = np.random.default_rng(6)
    X = np.zeros((300, 9))
    X[:, :5] = np.arange(5.0)  # five constant features (std 0)
    X[:, 5:8] = rng.standard_normal((300, 3))
    X[:, 8] = 1e5 * rng.standard_normal(300)
    rep = bnfast.diagnose(X)
    np.testing.assert_array_equal(rep.constant, [True] * 5 + [False] * 4)
    so = np.asarray(rep.scale_outliers)
    assert so[8] and not so[5:8].any()


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda r: r.integers(0, 256, (64, 3)).astype(np.uint8), True),
        (lambda r: np.r_[r.integers(0, 256, (63, 3)), [[0, 255, 128]]].astype(np.float32), True),
        (lambda r: np.r_[r.integers(0, 256, (63, 3)), [[0, 255, 128]]].astype(np.float64), True),
        (lambda r: r.integers(2, 250, (64, 3)).astype(np.int64), True),
        (lambda r: r.integers(0, 2, (64, 3)).astype(np.uint8), False),  # 0/1 mask: max <= 1
        (lambda r: r.random((64, 3)), False),  # floats in [0, 1)
        (lambda r: r.random((64, 3)) * 255, False),  # not integer-valued
        (lambda r: r.integers(-10, 200, (64, 3)).astype(np.int16), False),  # negative
        (lambda r: r.integers(0, 1000, (64, 3)).astype(np.int32), False),  # max > 255
        (lambda r: r.integers(0, 256, (64, 3)).astype(np.float32) + np.float32(0.5), False),
    ],
    ids=[
        "uint8",
        "f32-ints",
        "f64-ints",
        "int64",
        "mask",
        "unit-floats",
        "scaled-floats",
        "negative",
        "big",
        "halves",
    ],
)
def test_looks_like_image_bytes(backend, make, expected):
    X = make(np.random.default_rng(7))
    rep = bnfast.diagnose(X)
    assert bool(rep.looks_like_image_bytes) is expected
    assert isinstance(rep.looks_like_image_bytes, (bool, np.bool_))


def test_looks_standardized(backend):
    rng = np.random.default_rng(8)
    raw = make_cols(rng, 500, [(1e4, 1.0), (-5.0, 30.0), (2.0, 0.1), (0.0, 1.0)])
    Z = (raw - raw.mean(0)) / raw.std(0)
    assert bool(bnfast.diagnose(Z).looks_standardized) is True
    assert bool(bnfast.diagnose(raw).looks_standardized) is False
    assert bool(bnfast.diagnose(2 * Z).looks_standardized) is False
    assert bool(bnfast.diagnose(Z + 0.5).looks_standardized) is False
    # a constant feature does not matter ("every non-constant feature")
    Zc = np.c_[Z, np.zeros(500)]
    assert bool(bnfast.diagnose(Zc).looks_standardized) is True
    # the Standardizer's own output looks standardized
    Y = bnfast.Standardizer().fit_transform(raw)
    assert bool(bnfast.diagnose(Y).looks_standardized) is True


# ---------------------------------------------------------------------------
# text, dict, plot
# ---------------------------------------------------------------------------
def _std_data(rng, n, f):
    X = rng.standard_normal((n, f))
    return (X - X.mean(0)) / X.std(0)


def _lines(rep):
    return [ln for ln in str(rep).splitlines() if ln.strip()]


def test_str_one_row_per_feature_then_summarized(capsys):
    rng = np.random.default_rng(9)
    r6 = bnfast.diagnose(_std_data(rng, 60, 6))
    r12 = bnfast.diagnose(_std_data(rng, 60, 12))
    assert len(r6.warnings) == len(r12.warnings)  # the same (no) problems
    assert len(_lines(r6)) >= 6 + 1  # a header and one row per feature
    assert len(_lines(r12)) - len(_lines(r6)) == 6  # exactly one more row per extra feature
    r200 = bnfast.diagnose(_std_data(rng, 30, 200))
    r5000 = bnfast.diagnose(_std_data(rng, 30, 5000))
    s5000 = str(r5000)
    assert "..." in s5000
    assert len(_lines(r5000)) <= 60
    assert len(s5000) < 10_000
    assert abs(len(_lines(r5000)) - len(_lines(r200))) <= 2  # both summarized the same way
    assert len(_lines(r200)) < 200
    print(r6)
    assert capsys.readouterr().out.strip() == str(r6).strip()


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_str_contains_warnings():
    X = np.random.default_rng(10).standard_normal((50, 4))
    X[3, 0] = np.nan
    X[4, 1] = np.inf
    X[:, 2] = 7.0
    rep = bnfast.diagnose(X)
    s = str(rep)
    assert rep.warnings
    for w in rep.warnings:
        assert w in s


def _walk(obj, path="d"):
    if isinstance(obj, dict):
        for k, v in obj.items():
            assert isinstance(k, str), (path, k)
            yield from _walk(v, f"{path}[{k!r}]")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _walk(v, f"{path}[{i}]")
    else:
        yield path, obj


def _same_nested(a, b):
    try:
        a = np.asarray(a, dtype=float)
        b = np.asarray(b, dtype=float)
    except (TypeError, ValueError):
        return False
    return a.shape == b.shape and np.array_equal(a, b, equal_nan=True)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("axis", [0, (0, 2, 3)])
def test_to_dict_plain_json(axis):
    rng = np.random.default_rng(11)
    X = rng.standard_normal((5, 3, 4, 4)) if axis != 0 else rng.standard_normal((40, 5))
    X.flat[3] = np.nan
    X.flat[7] = np.inf
    rep = bnfast.diagnose(X, axis=axis)
    d = rep.to_dict()
    assert isinstance(d, dict)
    for path, v in _walk(d):
        assert v is None or type(v) in (int, float, bool, str), (path, type(v))
    text = json.dumps(d)  # allow_nan=True by default
    back = json.loads(text)
    assert isinstance(back, dict)
    # the per-feature values are there, as plain lists
    lists = [v for v in d.values() if isinstance(v, list)]
    assert any(_same_nested(v, np.asarray(rep.mean).tolist()) for v in lists)
    assert any(_same_nested(v, np.asarray(rep.count).tolist()) for v in lists)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_plot_writes_png(tmp_path, monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")
    pytest.importorskip("matplotlib", reason="matplotlib is not installed")
    rng = np.random.default_rng(12)
    X = make_cols(rng, 100, [(1e3, 1.0), (0.0, 5.0), (3.0, 0.1)])
    X[4, 1] = np.nan
    rep = bnfast.diagnose(X)
    p = tmp_path / "report.png"
    rep.plot(p)
    data = p.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 1000
    p2 = tmp_path / "report2.png"
    rep.plot(str(p2))
    assert p2.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_import_error(tmp_path, monkeypatch):
    rep = bnfast.diagnose(np.random.default_rng(13).standard_normal((20, 2)))
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match="(?i)matplotlib"):
        rep.plot(tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_plot_leaves_the_pyplot_backend_alone(tmp_path):
    # Regression: plot() switched the global pyplot backend.
    matplotlib = pytest.importorskip("matplotlib", reason="matplotlib not installed")
    before = matplotlib.get_backend()
    bnfast.diagnose(np.random.default_rng(7).random((30, 3))).plot(tmp_path / "r.png")
    assert matplotlib.get_backend() == before
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------
# chunked accumulation
# ---------------------------------------------------------------------------
def _assert_reports_equal(a, b, exact=False):
    assert a.feature_shape == b.feature_shape
    assert a.n_samples == b.n_samples and a.n_features == b.n_features and a.dtype == b.dtype
    for k in ("count", "nan_count", "inf_count", "min", "max"):
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k), err_msg=k)
    amax = np.nan_to_num(np.maximum(np.abs(np.asarray(a.min)), np.abs(np.asarray(a.max))))
    for k in ("mean", "std"):
        if exact:
            np.testing.assert_array_equal(getattr(a, k), getattr(b, k), err_msg=k)
        else:
            assert_close(getattr(a, k), getattr(b, k), 1e-12, 32 * EPS64 * amax, k)
    for k in ("constant", "scale_outliers"):
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k), err_msg=k)
    for k in ("looks_like_image_bytes", "looks_standardized", "has_nan", "has_inf"):
        assert bool(getattr(a, k)) == bool(getattr(b, k)), k
    if exact:
        assert a.warnings == b.warnings
    else:
        assert len(a.warnings) == len(b.warnings)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize(
    "sizes", [[1] * 50 + [150], [7, 1, 16, 17, 33, 126], [200], [0, 100, 0, 100]], ids=str
)
def test_accumulator_chunks_equal_whole(backend, sizes):
    rng = np.random.default_rng(14)
    X = make_cols(rng, 200, [(1e4, 1.0), (-3.0, 2.0), (0.0, 1e5), (5.0, 1.0), (0.0, 1.0)])
    X[rng.random(200) < 0.1, 1] = np.nan
    X[[3, 150], 3] = np.inf
    X[:, 4] = 0.25
    whole = bnfast.diagnose(X)
    check_report(whole, X)
    acc = DiagnoseAccumulator(0)
    start = 0
    for s in sizes:
        acc.update(X[start : start + s])
        start += s
    assert start == 200
    _assert_reports_equal(acc.report(), whole)
    one = DiagnoseAccumulator(0)
    one.update(X)
    _assert_reports_equal(one.report(), whole, exact=True)


def test_accumulator_image_axes_and_uint8(backend):
    rng = np.random.default_rng(15)
    X = rng.integers(0, 256, (9, 3, 8, 8)).astype(np.uint8)
    whole = bnfast.diagnose(X, axis=(0, 2, 3))
    check_report(whole, X, (0, 2, 3))
    assert whole.looks_like_image_bytes and whole.dtype == "uint8"
    acc = DiagnoseAccumulator((0, 2, 3))
    for a, b in [(0, 2), (2, 3), (3, 9)]:
        acc.update(X[a:b])
    _assert_reports_equal(acc.report(), whole)


def test_accumulator_axis_must_include_0():
    # axis 1 only: two consecutive chunks along axis 0 cannot be merged
    # (a single update is diagnose(X, axis=1) and may be accepted)
    X = np.ones((4, 3))
    with pytest.raises(ValueError):
        acc = DiagnoseAccumulator(1)
        acc.update(X[:2])
        acc.update(X[2:])
        acc.report()


def _slab_data(rng, shape, dtype, nan_frac=0.0, offset=1e3):
    x = offset + rng.standard_normal(shape) * rng.uniform(0.5, 3, size=shape[-1])
    if nan_frac:
        x[rng.random(shape) < nan_frac] = np.nan
    return x.astype(dtype)


def test_diagnose_chunks_equal_whole(backend, small_slabs):
    rng = np.random.default_rng(8)
    x = _slab_data(rng, (90, 4), np.float64, 0.1)
    x[3, 1] = np.inf
    whole = bnfast.diagnose(x)
    acc = DiagnoseAccumulator(0)
    for chunk in np.array_split(x, 7):
        acc.update(chunk)
    part = acc.report()
    np.testing.assert_array_equal(part.count, whole.count)
    np.testing.assert_array_equal(part.inf_count, whole.inf_count)
    np.testing.assert_array_equal(part.min, whole.min)
    np.testing.assert_allclose(part.mean, whole.mean, rtol=1e-14)
    np.testing.assert_allclose(part.std, whole.std, rtol=1e-12)
    fin = np.where(np.isfinite(x), x, np.nan)
    np.testing.assert_allclose(whole.mean, np.nanmean(fin, axis=0), rtol=1e-13)
    np.testing.assert_array_equal(whole.max, np.nanmax(fin, axis=0))


@pytest.mark.parametrize("case", ["uint8-short-first-axis", "int16-axis-None", "float64-axis-None"])
def test_temporaries_stay_bounded_when_the_first_axis_is_short(backend, case):
    # Regression: slabs were cut along the first reduced axis only: with one
    # or two indices there, one slab was (almost) all of X, converted to
    # float64. Bound: a handful of 2 MB slab temporaries, far below the copy.
    x, axis = short_first_axis_case(case)
    float64_copy = x.size * 8
    peak_diag = peak_traced_bytes(lambda: bnfast.diagnose(x, axis=axis))
    assert peak_diag < 16e6 < float64_copy, peak_diag
