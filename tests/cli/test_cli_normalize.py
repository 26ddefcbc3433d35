"""``python -m bnfast normalize``: chunked normalization equals the in-memory\nStandardizer; output dtypes, axes, saved statistics (--stats), and output\nsafety (atomic writes, --force, interrupted or failed runs leave nothing)."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from cli_helpers import (
    CHUNK,
    assert_one_error,
    cli,
    main,
    make_features,
    ref_standardize,
    sha,
)

import bnfast


def test_normalize_chunked_matches_in_memory(capsys, x2d, tmp_path):
    x, path = x2d
    out_path = tmp_path / "y.npy"
    code, out, err = cli(capsys, "normalize", path, out_path, "--chunk-mb", CHUNK)
    assert code == 0, err
    y = np.load(out_path)
    assert y.dtype == np.float32 and y.shape == x.shape and y.flags.c_contiguous
    ref = bnfast.Standardizer().fit(x).transform(x)
    np.testing.assert_allclose(y, ref, rtol=1e-6, atol=1e-6)
    ref64, _, _ = ref_standardize(x)
    np.testing.assert_allclose(y, ref64, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(y.astype(np.float64).mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(y.astype(np.float64).std(0), 1, rtol=1e-5)
    assert sorted(os.listdir(tmp_path)) == ["x.npy", "y.npy"]  # no temp file left


@pytest.mark.parametrize(
    "dtype, out_dtype",
    [
        (np.float64, np.float64),
        (np.int16, np.float64),
        (np.uint8, np.float64),
        (np.float16, np.float64),
        (np.bool_, np.float64),
    ],
)
def test_normalize_output_dtype(capsys, tmp_path, dtype, out_dtype):
    rng = np.random.default_rng(3)
    if dtype == np.bool_:
        x = rng.random((5000, 7)) < 0.3
    else:
        x = (rng.standard_normal((5000, 7)) * 20 + 30).clip(0, 200).astype(dtype)
    np.save(tmp_path / "x.npy", x)
    code, out, err = cli(
        capsys, "normalize", tmp_path / "x.npy", tmp_path / "y.npy", "--chunk-mb", "0.02"
    )
    assert code == 0, err
    y = np.load(tmp_path / "y.npy")
    assert y.dtype == out_dtype
    ref = bnfast.Standardizer().fit(x).transform(x)
    assert ref.dtype == out_dtype
    np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)


def test_normalize_nchw_axes(capsys, tmp_path):
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((200, 3, 16, 16)) * [[[1.0]], [[5.0]], [[0.1]]] + 7).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    code, _, err = cli(
        capsys,
        "normalize",
        tmp_path / "x.npy",
        tmp_path / "y.npy",
        "--axis",
        "0,2,3",
        "--chunk-mb",
        "0.03",
    )
    assert code == 0, err
    y = np.load(tmp_path / "y.npy")
    ref = bnfast.Standardizer(axis=(0, 2, 3)).fit(x).transform(x)
    np.testing.assert_allclose(y, ref, rtol=1e-6, atol=1e-6)
    ref64, _, _ = ref_standardize(x, axis=(0, 2, 3))
    np.testing.assert_allclose(y, ref64, rtol=1e-5, atol=1e-5)


def test_big_endian_file(capsys, tmp_path):
    x = make_features(n=3000, f=6)
    np.save(tmp_path / "be.npy", x.astype(">f4"))
    np.save(tmp_path / "le.npy", x)
    for name in ("be", "le"):
        code, _, err = cli(
            capsys,
            "normalize",
            tmp_path / f"{name}.npy",
            tmp_path / f"y_{name}.npy",
            "--chunk-mb",
            "0.01",
        )
        assert code == 0, err
    y_be, y_le = np.load(tmp_path / "y_be.npy"), np.load(tmp_path / "y_le.npy")
    assert y_be.dtype == np.float32 and y_be.dtype.isnative
    np.testing.assert_array_equal(y_be, y_le)


def test_normalize_with_nan(capsys, xnan, tmp_path):
    x, path = xnan
    code, _, err = cli(capsys, "normalize", path, tmp_path / "y.npy", "--chunk-mb", "0.02")
    assert code == 0, err
    y = np.load(tmp_path / "y.npy")
    np.testing.assert_array_equal(np.isnan(y), np.isnan(x))
    ref = bnfast.Standardizer().fit(x).transform(x)
    np.testing.assert_allclose(y, ref, rtol=1e-6, atol=1e-6, equal_nan=True)
    ref64, _, _ = ref_standardize(x)
    np.testing.assert_allclose(y, ref64, rtol=1e-5, atol=1e-5, equal_nan=True)


# --------------------------------------------------------------------------
# --stats reuse
# --------------------------------------------------------------------------


def test_normalize_with_saved_stats(capsys, tmp_path):
    train, test = make_features(seed=1, n=5000, f=8), make_features(seed=2, n=3001, f=8) * 1.5
    np.save(tmp_path / "train.npy", train)
    np.save(tmp_path / "test.npy", test)
    stats = tmp_path / "s.npz"
    assert cli(capsys, "stats", tmp_path / "train.npy", "--out", stats)[0] == 0
    code, _, err = cli(
        capsys,
        "normalize",
        tmp_path / "test.npy",
        tmp_path / "y.npy",
        "--stats",
        stats,
        "--chunk-mb",
        "0.02",
    )
    assert code == 0, err
    want = bnfast.Standardizer().fit(train).transform(test)
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), want, rtol=1e-6, atol=1e-6)

    # wrong number of features: refused before anything is written
    np.save(tmp_path / "wide.npy", make_features(n=100, f=9))
    code, _, err = cli(
        capsys, "normalize", tmp_path / "wide.npy", tmp_path / "w.npy", "--stats", stats
    )
    assert_one_error(code, err, "(9,)", "(8,)")
    assert not (tmp_path / "w.npy").exists()
    # not a Standardizer file / missing file
    np.savez(tmp_path / "junk.npz", a=np.ones(3))
    for bad in (tmp_path / "junk.npz", tmp_path / "missing.npz"):
        code, _, err = cli(
            capsys, "normalize", tmp_path / "test.npy", tmp_path / "w.npy", "--stats", bad
        )
        assert_one_error(code, err, str(bad))
        assert not (tmp_path / "w.npy").exists()
    assert sorted(os.listdir(tmp_path)) == [
        "junk.npz",
        "s.npz",
        "test.npy",
        "train.npy",
        "wide.npy",
        "y.npy",
    ]


def test_saved_stats_keep_their_axes(capsys, tmp_path):
    rng = np.random.default_rng(6)
    x = (rng.standard_normal((64, 3, 8, 8)) * [[[2.0]], [[3.0]], [[4.0]]]).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    stats = tmp_path / "s.npz"
    assert cli(capsys, "stats", tmp_path / "x.npy", "--axis", "0,2,3", "--out", stats)[0] == 0
    code, _, err = cli(
        capsys,
        "normalize",
        tmp_path / "x.npy",
        tmp_path / "y.npy",
        "--stats",
        stats,
        "--chunk-mb",
        "0.01",
    )
    assert code == 0, err
    ref = bnfast.Standardizer(axis=(0, 2, 3)).fit(x).transform(x)
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), ref, rtol=1e-6, atol=1e-6)
    code, _, err = cli(
        capsys, "normalize", tmp_path / "x.npy", tmp_path / "z.npy", "--stats", stats, "--axis", "0"
    )
    assert_one_error(code, err, "--axis")
    assert not (tmp_path / "z.npy").exists()


def test_normalize_uses_the_fitted_axes_of_the_stats_file(tmp_path, capsys):
    # Regression: --stats re-read the axes from the saved parameters, which
    # set_params may have changed after the fit.
    x = np.random.default_rng(2).standard_normal((20, 3, 4))
    s = bnfast.Standardizer(axis=(0, 1)).fit(x)
    s.set_params(axis=(0, 2))  # changed after the fit: the statistics are still per axis 2
    s.save(tmp_path / "st.npz")
    np.save(tmp_path / "x.npy", x)
    code, _, err = cli(
        capsys, "normalize", tmp_path / "x.npy", tmp_path / "y.npy", "--stats", tmp_path / "st.npz"
    )
    assert code == 0, err
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), s.transform(x))


# --------------------------------------------------------------------------
# output safety
# --------------------------------------------------------------------------


def test_output_never_overwrites_input(capsys, x2d, tmp_path):
    x, path = x2d
    before = sha(path)
    os.symlink(path, tmp_path / "link.npy")
    os.link(path, tmp_path / "hard.npy")
    np.savez(tmp_path / "a.npz", a=x)
    arch_before = sha(tmp_path / "a.npz")
    cases = [
        ("normalize", path, path, "--force"),
        ("normalize", path, tmp_path / "link.npy", "--force"),
        ("normalize", tmp_path / "link.npy", path, "--force"),
        ("normalize", path, tmp_path / "hard.npy", "--force"),
        ("normalize", f"{tmp_path / 'a.npz'}:a", tmp_path / "a.npz", "--force"),
        ("normalize", path, tmp_path / "sub" / ".." / "x.npy", "--force"),
        ("stats", path, "--out", path),
        ("stats", f"{tmp_path / 'a.npz'}:a", "--out", tmp_path / "a"),  # np.savez adds .npz
        ("diagnose", path, "--plot", path),
    ]
    os.mkdir(tmp_path / "sub")
    for args in cases:
        code, out, err = cli(capsys, *args)
        assert_one_error(code, err, "input")
    assert sha(path) == before
    assert sha(tmp_path / "a.npz") == arch_before
    assert not any(name.endswith(".tmp") for name in os.listdir(tmp_path))


def test_existing_output_needs_force(capsys, x2d, tmp_path):
    x, path = x2d
    out = tmp_path / "y.npy"
    out.write_bytes(b"old")
    os.chmod(out, 0o640)
    code, _, err = cli(capsys, "normalize", path, out)
    assert_one_error(code, err, "exists", "--force")
    assert out.read_bytes() == b"old"
    code, _, err = cli(capsys, "normalize", path, out, "--force", "--chunk-mb", CHUNK)
    assert code == 0, err
    assert np.load(out).shape == x.shape
    assert os.stat(out).st_mode & 0o777 == 0o640  # the replaced file's mode is kept
    # a directory as OUT is refused, even with --force
    code, _, err = cli(capsys, "normalize", path, tmp_path, "--force")
    assert_one_error(code, err, "directory")


def test_new_output_mode_follows_umask(capsys, x2d, tmp_path):
    _, path = x2d
    old = os.umask(0o027)
    try:
        code, _, err = cli(capsys, "normalize", path, tmp_path / "y.npy", "--chunk-mb", CHUNK)
    finally:
        os.umask(old)
    assert code == 0, err
    assert os.stat(tmp_path / "y.npy").st_mode & 0o777 == 0o640


def _failing_transform(monkeypatch, exc):
    """Make Standardizer.transform raise ``exc`` on its second call."""
    orig = bnfast.Standardizer.transform
    calls = []

    def transform(self, X, out=None):
        calls.append(X.shape[0])
        if len(calls) == 2:
            raise exc
        return orig(self, X, out=out)

    monkeypatch.setattr(bnfast.Standardizer, "transform", transform)
    return calls


def test_interrupted_run_leaves_nothing(capsys, x2d, tmp_path, monkeypatch):
    x, path = x2d
    calls = _failing_transform(monkeypatch, KeyboardInterrupt())
    code, _, err = cli(capsys, "normalize", path, tmp_path / "y.npy", "--chunk-mb", CHUNK)
    assert code == 130
    assert err.strip() == "bnfast: interrupted"
    assert len(calls) == 2
    assert sorted(os.listdir(tmp_path)) == ["x.npy"]

    # an existing OUT survives an interrupted --force run unchanged
    (tmp_path / "y.npy").write_bytes(b"keep me")
    calls.clear()
    code, _, _ = cli(capsys, "normalize", path, tmp_path / "y.npy", "--force", "--chunk-mb", CHUNK)
    assert code == 130
    assert (tmp_path / "y.npy").read_bytes() == b"keep me"
    assert sorted(os.listdir(tmp_path)) == ["x.npy", "y.npy"]


def test_failed_run_leaves_nothing(capsys, x2d, tmp_path, monkeypatch):
    _, path = x2d
    _failing_transform(monkeypatch, RuntimeError("simulated bug"))
    with pytest.raises(RuntimeError, match="simulated bug"):  # bugs are not swallowed
        main(["normalize", str(path), str(tmp_path / "y.npy"), "--chunk-mb", CHUNK])
    assert sorted(os.listdir(tmp_path)) == ["x.npy"]


def test_missing_output_directory(capsys, x2d, tmp_path):
    _, path = x2d
    code, _, err = cli(capsys, "normalize", path, tmp_path / "no" / "y.npy")
    assert_one_error(code, err, str(tmp_path / "no"))


def test_missing_output_directory_fails_before_the_pass(tmp_path, capsys):
    # Regression: a missing output directory was only found after the whole
    # pass over the data.
    data = tmp_path / "x.npy"
    np.save(data, np.ones((10, 2)))
    code, _, err = cli(capsys, "normalize", data, tmp_path / "nodir" / "y.npy")
    assert code == 1 and "no such directory" in err
    code, _, err = cli(capsys, "stats", data, "--out", tmp_path / "nodir" / "s")
    assert code == 1 and "no such directory" in err


def _writing_into(pid, directory):
    """Whether process ``pid`` has its temporary output open in ``directory``:
    a named file there, or (Linux, O_TMPFILE) an open descriptor of an
    unnamed one, which /proc shows as ``DIRECTORY/#INODE (deleted)``."""
    if any(directory.iterdir()):
        return True
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith(str(directory) + os.sep):
                return True
        except OSError:
            continue
    return False


def test_sigterm_during_normalize_leaves_no_temp_file(tmp_path):
    # Regression: SIGTERM (and SIGHUP) left normalize's temporary file behind.
    data = tmp_path / "x.npy"
    np.save(data, np.random.default_rng(0).standard_normal((6_000_000, 8)).astype(np.float32))
    stats = tmp_path / "st.npz"
    bnfast.Standardizer().fit(np.load(data, mmap_mode="r")[:1000]).save(stats)
    outdir = tmp_path / "out"
    outdir.mkdir()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bnfast",
            "normalize",
            str(data),
            str(outdir / "y.npy"),
            "--stats",
            str(stats),
            "--chunk-mb",
            "1",
            "--no-progress",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + 30
    while time.time() < deadline and not _writing_into(proc.pid, outdir):
        time.sleep(0.01)
    if proc.poll() is not None:
        pytest.skip("normalize finished before it could be interrupted")
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    assert proc.returncode == 128 + signal.SIGTERM
    assert list(outdir.iterdir()) == []
