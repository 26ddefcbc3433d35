"""The command line as a whole: the config and bench commands, usage errors,\nthe progress bar, the entry points, real child processes and their peak\nmemory."""

import os
import subprocess
import sys

import numpy as np
import pytest
from cli_helpers import (
    CHUNK,
    child_env,
    cli,
    main,
    main_diagnose,
    main_normalize,
    main_stats,
    progress_settings,
    run_child,
    table_rows,
)

import bnfast


def test_cli_config(tmp_path):
    proc = run_child(["config"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    cfg = bnfast.config()
    assert cfg["version"] in proc.stdout
    assert "capability" in proc.stdout


def test_cli_bench_quick(tmp_path):
    # Smoke test only: never assert on timings.
    proc = run_child(["bench", "--quick"], tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    assert len(lines) >= 3, proc.stdout  # a header and rows


def test_cli_unknown_command_fails(tmp_path):
    proc = run_child(["no-such-command"], tmp_path)
    assert proc.returncode != 0


@pytest.mark.parametrize(
    "args",
    [
        ["stats"],
        ["stats", "x.npy", "--chunk-mb", "abc"],
        ["stats", "x.npy", "--axis", "0,a"],
        ["stats", "x.npy", "--nan-policy", "bogus"],
        ["normalize", "x.npy"],
        ["diagnose", "x.npy", "--bogus"],
    ],
)
def test_usage_errors_keep_exit_code_2(capsys, args):
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2
    assert "usage:" in capsys.readouterr().err


# --------------------------------------------------------------------------
# progress bar
# --------------------------------------------------------------------------


def test_progress_bar_and_no_progress(capsys, x2d, tmp_path, monkeypatch):
    pytest.importorskip("tqdm")
    _, path = x2d
    monkeypatch.setattr(progress_settings, "PROGRESS_DELAY", 0.0)  # show at once
    code, _, err = cli(capsys, "normalize", path, tmp_path / "y.npy", "--chunk-mb", CHUNK)
    assert code == 0
    assert "fit" in err and "normalize" in err and "100%" in err
    code, _, err = cli(
        capsys, "normalize", path, tmp_path / "z.npy", "--chunk-mb", CHUNK, "--no-progress"
    )
    assert code == 0
    assert err == ""
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), np.load(tmp_path / "z.npy"))


# --------------------------------------------------------------------------
# entry points and real processes
# --------------------------------------------------------------------------


def test_main_functions(capsys, x2d, tmp_path):
    _, path = x2d
    assert main_stats([str(path), "--chunk-mb", CHUNK]) == 0
    assert "feature" in capsys.readouterr().out
    assert main_normalize([str(path), str(tmp_path / "y.npy")]) == 0
    assert main_diagnose([str(tmp_path / "y.npy")]) == 0
    assert "looks standardized" in capsys.readouterr().out
    assert main_stats([str(tmp_path / "missing.npy")]) == 1


def test_subprocess_end_to_end(x2d, tmp_path):
    x, path = x2d
    stats = tmp_path / "s.npz"
    run = lambda *a: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "bnfast", *map(str, a)],
        capture_output=True,
        text=True,
        env=child_env(),
        cwd=tmp_path,
        timeout=120,
    )
    proc = run("stats", path, "--out", stats, "--chunk-mb", CHUNK)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert table_rows(proc.stdout)["0"]["count"] == str(x.shape[0])
    proc = run("normalize", "x.npy", "y.npy", "--stats", stats)
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_allclose(
        np.load(tmp_path / "y.npy"), bnfast.Standardizer().fit(x).transform(x), rtol=1e-6, atol=1e-6
    )
    proc = run("diagnose", "x.npy:member")
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("bnfast: error: ")
    proc = run("stats", "x.npy", "--axis", "zero")
    assert proc.returncode == 2


# Peak resident memory of a real child: a ~200 MB file read with --chunk-mb 8
# must cost far less than the file size over a tiny file (the mapped pages of
# each chunk are dropped after use; the output is written, not mapped).
_PEAK_WRAPPER = (
    "import resource, subprocess, sys\n"
    "r = subprocess.run([sys.executable, '-m', 'bnfast'] + sys.argv[1:],"
    " stdout=subprocess.DEVNULL)\n"
    "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
)


def _peak_rss_mb(args, cwd):
    proc = subprocess.run(
        [sys.executable, "-c", _PEAK_WRAPPER, *map(str, args)],
        capture_output=True,
        text=True,
        env=child_env(),
        cwd=cwd,
        timeout=300,
    )
    code, kb = proc.stdout.split()
    assert code == "0", proc.stderr
    return int(kb) / 1024


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss in KiB on Linux")
def test_peak_memory_bounded_by_chunk_size(tmp_path):
    rows, cols = 400_000, 128  # 195 MiB of float32
    rng = np.random.default_rng(8)
    big = np.lib.format.open_memmap(
        tmp_path / "big.npy", mode="w+", dtype=np.float32, shape=(rows, cols)
    )
    block = rng.standard_normal((25_000, cols), dtype=np.float32)
    for i in range(0, rows, block.shape[0]):
        big[i : i + block.shape[0]] = block + (i // block.shape[0])
    big.flush()
    del big
    # The same size in Fortran order (a row chunk touches every column).
    bigf = np.lib.format.open_memmap(
        tmp_path / "bigf.npy", mode="w+", dtype=np.float32, shape=(rows, cols), fortran_order=True
    )
    block = rng.standard_normal((rows, 16), dtype=np.float32)
    for j in range(0, cols, 16):
        bigf[:, j : j + 16] = block * (j + 1)
    bigf.flush()
    del bigf, block
    np.save(tmp_path / "tiny.npy", np.ones((10, cols), np.float32))
    size_mb = os.path.getsize(tmp_path / "big.npy") / 2**20
    assert size_mb > 190

    runs = {
        "stats": ["stats", "{}.npy"],
        "normalize": ["normalize", "{}.npy", "out.npy", "--force"],
        "diagnose": ["diagnose", "{}.npy"],
        "stats (Fortran order)": ["stats", "{}.npy"],
    }
    peaks = {}
    for what, args in runs.items():
        for name in ("tiny", "bigf" if "Fortran" in what else "big"):
            argv = [a.format(name) for a in args] + ["--chunk-mb", "8"]
            peaks[what, name != "tiny"] = _peak_rss_mb(argv, tmp_path)
    report = ", ".join(
        f"{what} {peaks[what, False]:.0f} -> {peaks[what, True]:.0f} MB" for what in runs
    )
    print(f"\npeak RSS, tiny file -> {size_mb:.0f} MiB file (--chunk-mb 8): {report}")
    for what in runs:
        assert peaks[what, True] - peaks[what, False] < 60, report

    out = np.load(tmp_path / "out.npy", mmap_mode="r")
    assert out.shape == (rows, cols) and out.dtype == np.float32
    sample = np.asarray(out[::997, :4], np.float64)
    assert abs(sample.mean()) < 0.1 and 0.9 < sample.std() < 1.1
