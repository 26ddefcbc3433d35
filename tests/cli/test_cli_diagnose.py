"""``python -m bnfast diagnose``: the chunked report equals bnfast.diagnose in\nmemory; the printed table, warnings and --plot."""

import numpy as np
import pytest
from cli_helpers import (
    CHUNK,
    cli,
    diagnose_file,
    open_data,
    table_rows,
)

import bnfast


def test_diagnose_chunked_equals_in_memory(capsys, xnan, tmp_path):
    x, path = xnan
    x = x.copy()
    x[7, 2] = np.inf
    np.save(path, x)
    with open_data(str(path)) as src:
        chunked = diagnose_file(src, (0,), chunk_bytes=20_000)
    whole = bnfast.diagnose(x)
    a, b = chunked.to_dict(), whole.to_dict()
    for key in (
        "n_samples",
        "n_features",
        "feature_shape",
        "dtype",
        "count",
        "nan_count",
        "inf_count",
        "min",
        "max",
        "constant",
        "scale_outliers",
        "has_nan",
        "has_inf",
        "looks_like_image_bytes",
        "looks_standardized",
        "warnings",
    ):
        assert a[key] == b[key] or (
            key in ("min", "max") and np.allclose(a[key], b[key], equal_nan=True)
        ), key
    np.testing.assert_allclose(a["mean"], b["mean"], rtol=1e-12, equal_nan=True)
    np.testing.assert_allclose(a["std"], b["std"], rtol=1e-12, equal_nan=True)

    code, out, err = cli(capsys, "diagnose", path, "--chunk-mb", "0.02")
    assert code == 0, err
    assert "bnfast.diagnose: 6000 samples x 6 features" in out
    rows = table_rows(out)
    assert [k for k in rows] == ["0", "1", "2", "3", "4", "5"]
    assert int(rows["2"]["inf"]) == 1
    for w in whole.warnings:
        assert f"! {w}" in out


def test_diagnose_plot(capsys, x2d, tmp_path):
    pytest.importorskip("matplotlib")
    _, path = x2d
    png = tmp_path / "d.png"
    code, out, err = cli(capsys, "diagnose", path, "--plot", png, "--chunk-mb", CHUNK)
    assert code == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "feature" in out and "..." in out  # 64 features: summarized table


def test_diagnose_image_bytes_flag(capsys, tmp_path):
    x = np.random.default_rng(7).integers(0, 256, size=(500, 3, 4, 4), dtype=np.uint8)
    np.save(tmp_path / "img.npy", x)
    code, out, err = cli(
        capsys, "diagnose", tmp_path / "img.npy", "--axis", "0,2,3", "--chunk-mb", "0.001"
    )
    assert code == 0, err
    assert "image bytes" in out
    assert list(table_rows(out)) == ["0", "1", "2"]
