"""Regression tests for defects a review found in the data commands of
``python -m bnfast`` (each failed before its fix)."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import bnfast
from bnfast import __main__ as cli


def _run(args, capsys):
    code = cli.main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_sigterm_during_normalize_leaves_no_temp_file(tmp_path):
    data = tmp_path / "x.npy"
    np.save(data, np.random.default_rng(0).standard_normal((6_000_000, 8)).astype(np.float32))
    stats = tmp_path / "st.npz"
    bnfast.Standardizer().fit(np.load(data, mmap_mode="r")[:1000]).save(stats)
    outdir = tmp_path / "out"
    outdir.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bnfast", "normalize", str(data), str(outdir / "y.npy"),
         "--stats", str(stats), "--chunk-mb", "1", "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 30
    while time.time() < deadline and not any(outdir.iterdir()):  # the temp file exists
        time.sleep(0.01)
    if proc.poll() is not None:
        pytest.skip("normalize finished before it could be interrupted")
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    assert proc.returncode == 128 + signal.SIGTERM
    assert list(outdir.iterdir()) == []


def test_negative_dimension_header_is_a_one_line_error(tmp_path, capsys):
    path = tmp_path / "neg.npy"
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": "<f8", "fortran_order": False, "shape": (-1, 3)})
        f.write(b"\0" * 24)
    for command in (["stats"], ["diagnose"], ["normalize"]):
        args = command + [str(path)] + ([str(tmp_path / "o.npy")] if command == ["normalize"] else [])
        code, _, err = _run(args, capsys)
        assert code == 1 and err.startswith("bnfast: error:") and "negative dimension" in err
        assert err.count("\n") == 1


def test_missing_output_directory_fails_before_the_pass(tmp_path, capsys):
    data = tmp_path / "x.npy"
    np.save(data, np.ones((10, 2)))
    code, _, err = _run(["normalize", str(data), str(tmp_path / "nodir" / "y.npy")], capsys)
    assert code == 1 and "no such directory" in err
    code, _, err = _run(["stats", str(data), "--out", str(tmp_path / "nodir" / "s")], capsys)
    assert code == 1 and "no such directory" in err


def test_stats_out_without_suffix_is_reported_and_reusable(tmp_path, capsys):
    data = tmp_path / "x.npy"
    x = np.random.default_rng(1).standard_normal((50, 3))
    np.save(data, x)
    code, out, _ = _run(["stats", str(data), "--out", str(tmp_path / "st")], capsys)
    assert code == 0 and f"saved to {tmp_path / 'st.npz'}" in out
    code, _, err = _run(["normalize", str(data), str(tmp_path / "y.npy"),
                         "--stats", str(tmp_path / "st")], capsys)
    assert code == 0, err
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"),
                               bnfast.Standardizer().fit(x).transform(x), rtol=1e-12)


def test_normalize_uses_the_fitted_axes_of_the_stats_file(tmp_path, capsys):
    x = np.random.default_rng(2).standard_normal((20, 3, 4))
    s = bnfast.Standardizer(axis=(0, 1)).fit(x)
    s.set_params(axis=(0, 2))  # changed after the fit: the statistics are still per axis 2
    s.save(tmp_path / "st.npz")
    np.save(tmp_path / "x.npy", x)
    code, _, err = _run(["normalize", str(tmp_path / "x.npy"), str(tmp_path / "y.npy"),
                         "--stats", str(tmp_path / "st.npz")], capsys)
    assert code == 0, err
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), s.transform(x))


def test_sample_larger_than_chunk_is_noted(tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.ones((2, 300_000)))  # 2.4 MB per sample
    code, _, err = _run(["stats", str(tmp_path / "x.npy"), "--chunk-mb", "1", "--no-progress"],
                        capsys)
    assert code == 0 and "more than --chunk-mb" in err
