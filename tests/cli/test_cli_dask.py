"""The data commands on Dask (issue 15): Zarr input and output, --scheduler,
atomic Zarr writes. Results are compared with the library on the same data
in memory."""

from __future__ import annotations

import os

import numpy as np
import pytest
from cli_helpers import cli, run_child

zarr = pytest.importorskip("zarr", reason="zarr is not installed")
pytest.importorskip("dask.array", reason="dask is not installed")

import bnfast  # noqa: E402
from bnfast.cli import daskjobs  # noqa: E402


@pytest.fixture
def zdata(tmp_path):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((5000, 6)) * 3 + 1e3).astype(np.float32)
    x[rng.random(x.shape) < 0.02] = np.nan
    path = tmp_path / "d.zarr"
    z = zarr.create_array(str(path), shape=x.shape, chunks=(333, 6), dtype="float32")
    z[:] = x
    return x, path


def test_stats_and_diagnose_on_zarr(capsys, zdata, tmp_path):
    x, path = zdata
    code, out, err = cli(capsys, "stats", path, "--out", tmp_path / "st.npz", "--no-progress")
    assert code == 0, err
    assert "Zarr array of shape (5000, 6)" in out
    st = bnfast.Standardizer.load(tmp_path / "st.npz")
    ref = bnfast.Standardizer().fit(x)
    np.testing.assert_allclose(st.mean_, ref.mean_, rtol=1e-15)
    np.testing.assert_allclose(st.var_, ref.var_, rtol=1e-13)
    code, out, err = cli(capsys, "diagnose", path, "--no-progress")
    assert code == 0, err
    assert str(bnfast.diagnose(x)) in out


@pytest.mark.parametrize("scheduler", [None, "processes"])
def test_normalize_zarr_to_zarr(zdata, tmp_path, scheduler):
    x, path = zdata
    out = tmp_path / "out.zarr"
    args = ["normalize", path, out, "--chunk-mb", "0.02"]
    if scheduler:
        args += ["--scheduler", scheduler]
    r = run_child(args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    y = zarr.open_array(str(out), mode="r")[:]
    want = bnfast.Standardizer().fit_transform(x)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(np.isnan(y), np.isnan(want))
    # float32 of the same float64 statistics: at most one ulp apart.
    np.testing.assert_allclose(y, want, rtol=0, atol=2 * np.finfo(np.float32).eps * 4)
    assert sorted(os.listdir(tmp_path)) == ["d.zarr", "out.zarr"]  # no temporary left


def test_normalize_npy_with_scheduler_threads(capsys, tmp_path):
    x = np.random.default_rng(1).standard_normal((3000, 4))
    np.save(tmp_path / "x.npy", x)
    code, _, err = cli(
        capsys,
        "normalize",
        tmp_path / "x.npy",
        tmp_path / "y.zarr",
        "--scheduler",
        "threads",
        "--chunk-mb",
        "0.01",
        "--no-progress",
    )
    assert code == 0, err
    y = zarr.open_array(str(tmp_path / "y.zarr"), mode="r")[:]
    np.testing.assert_allclose(y, bnfast.Standardizer().fit_transform(x), rtol=1e-13, atol=1e-15)


def test_failed_write_leaves_old_output_and_no_temporary(capsys, zdata, tmp_path, monkeypatch):
    x, path = zdata
    out = tmp_path / "out.zarr"
    assert cli(capsys, "normalize", path, out, "--no-progress")[0] == 0
    before = zarr.open_array(str(out), mode="r")[:]
    real = daskjobs._compute

    def failing(client, progress, *collections):
        if any("store" in str(getattr(c, "name", "")) or "zarr" in repr(c) for c in collections):
            raise OSError(28, "No space left on device")
        return real(client, progress, *collections)

    monkeypatch.setattr(daskjobs, "_compute", failing)
    code, _, err = cli(capsys, "normalize", path, out, "--force", "--no-progress")
    assert code == 1 and "No space left" in err
    assert sorted(os.listdir(tmp_path)) == ["d.zarr", "out.zarr"]
    np.testing.assert_array_equal(zarr.open_array(str(out), mode="r")[:], before)


def test_refusals(capsys, zdata, tmp_path):
    x, path = zdata
    code, _, err = cli(capsys, "normalize", path, tmp_path / "y.npy", "--no-progress")
    assert code == 1 and "OUT.zarr" in err
    code, _, err = cli(capsys, "stats", tmp_path / "missing.zarr", "--no-progress")
    assert code == 1 and "no such file" in err
    np.savez(tmp_path / "a.npz", a=x)
    code, _, err = cli(
        capsys, "stats", tmp_path / "a.npz", "--scheduler", "threads", "--no-progress"
    )
    assert code == 1 and ".npz archives" in err
    code, _, err = cli(capsys, "stats", path, "--axis", "1", "--no-progress")
    assert code == 1 and "include 0" in err


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("with_stats", [False, True])
def test_normalize_on_dask_honours_dtype(capsys, tmp_path, dtype, with_stats):
    # --dtype on the Dask path as on files (it was ignored: float64 came out);
    # --stats goes through the same checks as on files.
    x = np.random.default_rng(2).standard_normal((3000, 4)) * 2 + 5
    np.save(tmp_path / "x.npy", x)
    args = ["normalize", tmp_path / "x.npy", tmp_path / "y.zarr", "--dtype", dtype]
    if with_stats:
        bnfast.Standardizer().fit(x).save(tmp_path / "st.npz")
        args += ["--stats", tmp_path / "st.npz"]
    code, out, err = cli(capsys, *args, "--scheduler", "threads", "--no-progress")
    assert code == 0, err
    y = zarr.open_array(str(tmp_path / "y.zarr"), mode="r")[:]
    assert y.dtype == np.dtype(dtype)
    want = bnfast.Standardizer(dtype=dtype).fit_transform(x)
    np.testing.assert_array_equal(y, want)


def test_normalize_on_dask_stats_checks(capsys, tmp_path):
    x = np.random.default_rng(3).standard_normal((300, 4))
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "st_dir").mkdir()
    code, _, err = cli(
        capsys,
        "normalize",
        tmp_path / "x.npy",
        tmp_path / "y.zarr",
        "--stats",
        tmp_path / "st_dir",
        "--scheduler",
        "threads",
    )
    assert code != 0 and "is a directory" in err
    bnfast.Standardizer().fit(x[:, :3]).save(tmp_path / "st3.npz")
    code, _, err = cli(
        capsys,
        "normalize",
        tmp_path / "x.npy",
        tmp_path / "y.zarr",
        "--stats",
        tmp_path / "st3.npz",
        "--scheduler",
        "threads",
    )
    assert code != 0 and "feature shape" in err
