"""``python -m bnfast stats``: files several times larger than --chunk-mb are\nread in chunks and the statistics compared with an in-memory\nbnfast.Standardizer and NumPy float64; the printed table; NaN policies."""

import numpy as np
import pytest
from cli_helpers import (
    CHUNK,
    assert_one_error,
    cli,
    make_features,
    ref_standardize,
    table_rows,
)

import bnfast


def test_stats_chunked_matches_in_memory(capsys, x2d, tmp_path):
    x, path = x2d
    assert path.stat().st_size > 8 * float(CHUNK) * 2**20  # many chunks
    stats = tmp_path / "stats.npz"
    code, out, err = cli(capsys, "stats", path, "--chunk-mb", CHUNK, "--out", stats)
    assert code == 0, err
    assert err == ""  # a quick run shows no progress bar
    loaded = bnfast.Standardizer.load(stats)
    ref = bnfast.Standardizer().fit(x)
    np.testing.assert_allclose(loaded.mean_, ref.mean_, rtol=1e-12, atol=0)
    np.testing.assert_allclose(loaded.var_, ref.var_, rtol=1e-12, atol=0)
    np.testing.assert_allclose(loaded.scale_, ref.scale_, rtol=1e-12, atol=0)
    assert loaded.n_samples_seen_ == x.shape[0]
    assert loaded.feature_shape_ == (x.shape[1],)
    _, mean, std = ref_standardize(x)
    np.testing.assert_allclose(loaded.mean_, mean[0], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np.sqrt(loaded.var_), std[0], rtol=1e-10)

    # The printed table: more than 20 features -> first and last 10 rows.
    rows = table_rows(out)
    assert "..." in rows
    shown = [k for k in rows if k != "..."]
    assert shown == [str(i) for i in range(10)] + [str(i) for i in range(54, 64)]
    for j in map(int, shown):
        row = rows[str(j)]
        assert int(row["count"]) == x.shape[0]
        assert int(row["nan"]) == 0
        for name, want in (
            ("mean", mean[0, j]),
            ("std", std[0, j]),
            ("min", x[:, j].min()),
            ("max", x[:, j].max()),
        ):
            assert float(row[name]) == pytest.approx(float(want), rel=1e-5, abs=1e-9), (j, name)
    assert f"statistics saved to {stats}" in out


def test_stats_few_features_prints_every_row(capsys, tmp_path):
    x = make_features(n=3000, f=5)
    np.save(tmp_path / "x.npy", x)
    code, out, err = cli(capsys, "stats", tmp_path / "x.npy", "--chunk-mb", "0.01")
    assert code == 0, err
    rows = table_rows(out)
    assert list(rows) == ["0", "1", "2", "3", "4"]
    assert "shape (3000, 5), dtype float32" in out


def test_stats_multi_axis_nchw(capsys, tmp_path):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, size=(300, 3, 20, 20), dtype=np.uint8)
    path = tmp_path / "img.npy"
    np.save(path, x)
    stats = tmp_path / "s.npz"
    code, out, err = cli(
        capsys, "stats", path, "--axis", "0,2,3", "--chunk-mb", "0.05", "--out", stats
    )
    assert code == 0, err
    st = bnfast.Standardizer.load(stats)
    ref = bnfast.Standardizer(axis=(0, 2, 3)).fit(x)
    assert st.feature_shape_ == (3,)
    np.testing.assert_allclose(st.mean_, ref.mean_, rtol=1e-12)
    np.testing.assert_allclose(st.var_, ref.var_, rtol=1e-12)
    rows = table_rows(out)
    assert list(rows) == ["0", "1", "2"]
    for c in range(3):
        assert int(rows[str(c)]["count"]) == 300 * 400
        assert float(rows[str(c)]["min"]) == x[:, c].min()
        assert float(rows[str(c)]["max"]) == x[:, c].max()


def test_stats_negative_axis_and_2d_features(capsys, tmp_path):
    x = make_features(n=2000, f=12).reshape(2000, 3, 4)
    np.save(tmp_path / "x.npy", x)
    stats = tmp_path / "s.npz"
    code, out, err = cli(
        capsys, "stats", tmp_path / "x.npy", "--axis", "0,-1", "--chunk-mb", "0.02", "--out", stats
    )
    assert code == 0, err
    st = bnfast.Standardizer.load(stats)
    ref = bnfast.Standardizer(axis=(0, 2)).fit(x)
    assert st.feature_shape_ == (3,)
    np.testing.assert_allclose(st.mean_, ref.mean_, rtol=1e-12, atol=1e-12)
    # 2-D feature shape: labels are index tuples
    code, out, err = cli(capsys, "stats", tmp_path / "x.npy", "--chunk-mb", "0.02")
    assert code == 0, err
    assert "(2, 3)" in table_rows(out)


# --------------------------------------------------------------------------
# NaN
# --------------------------------------------------------------------------


def test_stats_with_nan(capsys, xnan, tmp_path):
    x, path = xnan
    stats = tmp_path / "s.npz"
    code, out, err = cli(capsys, "stats", path, "--chunk-mb", "0.02", "--out", stats)
    assert code == 0, err
    rows = table_rows(out)
    nan_count = np.isnan(x).sum(0)
    for j in range(6):
        assert int(rows[str(j)]["nan"]) == nan_count[j]
        assert int(rows[str(j)]["count"]) == x.shape[0] - nan_count[j]
    assert rows["4"]["mean"] == "nan" and rows["4"]["min"] == "nan"
    st = bnfast.Standardizer.load(stats)
    ref = bnfast.Standardizer().fit(x)
    np.testing.assert_allclose(st.mean_, ref.mean_, rtol=1e-12, equal_nan=True)
    np.testing.assert_allclose(st.var_, ref.var_, rtol=1e-12, equal_nan=True)
    np.testing.assert_array_equal(st.n_samples_seen_, ref.n_samples_seen_)
    ok = [0, 1, 2, 3, 5]
    np.testing.assert_allclose(st.mean_[ok], np.nanmean(x[:, ok].astype(np.float64), 0), rtol=1e-10)


def test_stats_nan_policies(capsys, xnan):
    x, path = xnan
    code, out, err = cli(capsys, "stats", path, "--nan-policy", "propagate", "--chunk-mb", "0.02")
    assert code == 0, err
    assert all(row["mean"] == "nan" for row in table_rows(out).values())  # every feature has a NaN
    code, out, err = cli(capsys, "stats", path, "--nan-policy", "raise", "--chunk-mb", "0.02")
    assert_one_error(code, err, str(path), "NaN")
    assert out == ""


# --------------------------------------------------------------------------
# regressions
# --------------------------------------------------------------------------


def test_stats_out_without_suffix_is_reported_and_reusable(tmp_path, capsys):
    # Regression: stats --out without .npz reported the name it was given, not
    # the file NumPy wrote, and normalize --stats could not find it.
    data = tmp_path / "x.npy"
    x = np.random.default_rng(1).standard_normal((50, 3))
    np.save(data, x)
    code, out, _ = cli(capsys, "stats", data, "--out", tmp_path / "st")
    assert code == 0 and f"saved to {tmp_path / 'st.npz'}" in out
    code, _, err = cli(capsys, "normalize", data, tmp_path / "y.npy", "--stats", tmp_path / "st")
    assert code == 0, err
    np.testing.assert_allclose(
        np.load(tmp_path / "y.npy"), bnfast.Standardizer().fit(x).transform(x), rtol=1e-12
    )


def test_sample_larger_than_chunk_is_noted(tmp_path, capsys):
    # Regression: a sample larger than --chunk-mb silently exceeded the bound.
    np.save(tmp_path / "x.npy", np.ones((2, 300_000)))  # 2.4 MB per sample
    code, _, err = cli(capsys, "stats", tmp_path / "x.npy", "--chunk-mb", "1", "--no-progress")
    assert code == 0 and "more than --chunk-mb" in err
