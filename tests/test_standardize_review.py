"""Regression tests for defects found in review of the Standardizer,
diagnose and the sklearn adapter (each test failed before its fix)."""
import os
import tracemalloc
import warnings

import numpy as np
import pytest

import bnfast
from bnfast import _runtime


def _peak_bytes(fn):
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("case", ["uint8-short-first-axis", "int16-axis-None", "numpy-backend"])
def test_fit_temporaries_stay_bounded_when_the_first_axis_is_short(case):
    # Slabs used to be cut along the first reduced axis only: with one or
    # two indices there, one slab was (almost) all of X, converted to float64.
    # Bound: a handful of 2 MB slab temporaries, far below the float64 copy.
    if case == "uint8-short-first-axis":
        x, axis, ctx = np.ones((1, 1024, 1024, 3), np.uint8), (0, 1, 2), _runtime.using("avx512" if "avx512" in _runtime.choices() else _runtime.choices()[-1])
    elif case == "int16-axis-None":
        x, axis, ctx = np.ones((2, 2_000_000), np.int16), None, _runtime.using(_runtime.choices()[-1])
    else:
        x, axis, ctx = np.random.default_rng(0).random((2, 2_000_000)), None, _runtime.using("numpy")
    float64_copy = x.size * 8
    with ctx:
        peak_fit = _peak_bytes(lambda: bnfast.Standardizer(axis=axis).fit(x))
        peak_diag = _peak_bytes(lambda: bnfast.diagnose(x, axis=axis))
    assert peak_fit < 16e6 < float64_copy, peak_fit
    assert peak_diag < 16e6 < float64_copy, peak_diag


def test_warning_as_error_leaves_a_consistent_state():
    # The ddof warning comes after every attribute is set: a warning turned
    # into an error must not leave moments_ new and mean_/scale_ stale.
    s = bnfast.Standardizer(ddof=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(RuntimeWarning, match="ddof"):
            s.fit(np.ones((3, 2)))  # count 3 <= ddof 5
    assert s.n_samples_seen_ == 3 and s.moments_.count[0] == 3
    assert np.all(s.scale_ == 1.0) and np.isnan(s.var_).all()
    np.testing.assert_array_equal(s.transform(np.ones((1, 2))), [[0.0, 0.0]])


def test_first_chunk_without_samples_or_weight_is_refused_later_ones_are_no_ops():
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


def test_save_without_suffix_and_numpy_scalar_params_round_trip(tmp_path):
    x = np.random.default_rng(2).random((20, 3))
    s = bnfast.Standardizer(ddof=np.int64(1), with_mean=np.True_, axis=np.int64(0)).fit(x)
    path = str(tmp_path / "model")
    s.save(path)  # NumPy writes model.npz
    t = bnfast.Standardizer.load(path)
    np.testing.assert_array_equal(t.transform(x), s.transform(x))
    assert t.get_params()["ddof"] == 1


@pytest.mark.parametrize("corruption", ["truncated", "bad-ddof", "bad-policy", "bad-ndim",
                                        "float-version", "string-mean"])
def test_load_refuses_corrupt_files_with_value_error(tmp_path, corruption):
    import json
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


def test_copy_false_works_in_place_on_memmap(tmp_path):
    x = np.random.default_rng(4).random((50, 3)) * 10
    mm = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float64, shape=x.shape)
    mm[...] = x
    s = bnfast.Standardizer(copy=False).fit(x)
    out = s.transform(mm)
    assert out is mm
    np.testing.assert_allclose(np.asarray(mm), bnfast.Standardizer().fit(x).transform(x), rtol=1e-15)


def test_changing_axis_after_fit_does_not_reinterpret_the_statistics():
    x = np.random.default_rng(5).random((4, 4))
    s = bnfast.Standardizer(axis=0).fit(x)
    ref = s.transform(x)
    s.set_params(axis=1)  # takes effect at the next fit(), as in scikit-learn
    np.testing.assert_array_equal(s.transform(x), ref)
    s.fit(x)
    np.testing.assert_allclose(s.mean_, x.mean(axis=1), rtol=1e-14)


def test_sklearn_adapter_transform_keeps_nan_under_raise_policy():
    pytest.importorskip("sklearn", reason="scikit-learn not installed")
    from bnfast.sklearn import Standardizer
    s = Standardizer(nan_policy="raise").fit(np.random.default_rng(6).random((10, 2)))
    y = s.transform(np.array([[np.nan, 0.5]]))
    assert np.isnan(y[0, 0]) and np.isfinite(y[0, 1])


def test_plot_leaves_the_pyplot_backend_alone(tmp_path):
    matplotlib = pytest.importorskip("matplotlib", reason="matplotlib not installed")
    before = matplotlib.get_backend()
    bnfast.diagnose(np.random.default_rng(7).random((30, 3))).plot(tmp_path / "r.png")
    assert matplotlib.get_backend() == before
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_weighted_fit_does_not_copy_the_weights_or_the_data():
    # float64 weights were copied by astype (and more temporaries followed):
    # 75 MB peak for a 128 MB X. The bound is a few 2 MB slab temporaries.
    x = np.random.default_rng(8).random((4_000_000, 4))
    w = np.ones(len(x))
    peak = _peak_bytes(lambda: bnfast.Standardizer().fit(x, sample_weight=w))
    assert peak < 20e6, peak
