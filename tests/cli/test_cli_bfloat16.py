"""bfloat16 data files (issue 14): ``np.save`` of an ``ml_dtypes.bfloat16``
array writes a plain 2-byte void descr (``'<V2'``, NumPy has no bfloat16);
the command line reads such a file as bfloat16 when ml_dtypes is installed
(.npy, stored and compressed .npz members) and otherwise says which package
it needs, in one error line."""

import sys

import numpy as np
import pytest
from cli_helpers import CHUNK, assert_one_error, cli, open_data, table_rows

import bnfast

ml_dtypes = pytest.importorskip("ml_dtypes", reason="bfloat16 needs ml_dtypes")
BF16 = np.dtype(ml_dtypes.bfloat16)


@pytest.fixture
def xbf(tmp_path):
    rng = np.random.default_rng(3)
    x = (2.0 + 3.0 * rng.standard_normal((301, 7))).astype(BF16)
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "x.npz", a=x)
    np.savez_compressed(tmp_path / "xc.npz", a=x)
    header = (tmp_path / "x.npy").read_bytes()[:80]
    assert b"'descr': '<V2'" in header  # how ml_dtypes arrays are saved
    return x


@pytest.mark.parametrize("name", ["x.npy", "x.npz", "xc.npz"])
def test_bfloat16_file_stats_and_normalize(capsys, tmp_path, xbf, name):
    data = tmp_path / name
    with open_data(str(data)) as src:
        assert src.dtype == BF16
    st = bnfast.Standardizer().fit(xbf)
    code, out, err = cli(capsys, "stats", data, "--chunk-mb", CHUNK)
    assert code == 0, err
    rows = table_rows(out)
    assert "bfloat16" in out
    for j in range(xbf.shape[1]):
        assert float(rows[str(j)]["mean"]) == pytest.approx(st.mean_[j], rel=1e-5)
    # default output dtype as Standardizer's (float64), and --dtype bfloat16
    code, _, err = cli(capsys, "normalize", data, tmp_path / "y.npy", "--chunk-mb", CHUNK)
    assert code == 0, err
    y = np.load(tmp_path / "y.npy")
    np.testing.assert_array_equal(y, st.transform(xbf))
    code, _, err = cli(
        capsys, "normalize", data, tmp_path / "yb.npy", "--dtype", "bfloat16", "--chunk-mb", CHUNK
    )
    assert code == 0, err
    yb = np.load(tmp_path / "yb.npy").view(BF16)
    want = bnfast.Standardizer(dtype=BF16).fit(xbf).transform(xbf)
    np.testing.assert_array_equal(yb.view(np.uint16), want.view(np.uint16))


def test_bfloat16_file_without_ml_dtypes(capsys, tmp_path, xbf, monkeypatch):
    monkeypatch.setitem(sys.modules, "ml_dtypes", None)  # import ml_dtypes fails
    for cmd in (["stats"], ["normalize"]):
        args = cmd + [tmp_path / "x.npy"] + ([tmp_path / "y.npy"] if cmd == ["normalize"] else [])
        code, _, err = cli(capsys, *args)
        assert_one_error(code, err, "x.npy", "ml_dtypes", "bfloat16")


def test_other_void_dtypes_still_refused(capsys, tmp_path):
    np.save(tmp_path / "v.npy", np.zeros(4, "V4"))
    np.save(tmp_path / "s.npy", np.zeros(4, [("a", "<u1"), ("b", "<u1")]))
    for name in ("v.npy", "s.npy"):
        code, _, err = cli(capsys, "stats", tmp_path / name)
        assert_one_error(code, err, name, "not supported")
