"""The progress display without tqdm (tqdm is the optional "progress" extra):
the plain text fallback, end to end and unit by unit."""

import io
import sys

import numpy as np
from cli_helpers import CHUNK, cli, progress_settings


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def _without_tqdm(monkeypatch):
    # A None entry in sys.modules makes `from tqdm import tqdm` raise ImportError.
    monkeypatch.setitem(sys.modules, "tqdm", None)


def test_normalize_shows_plain_progress_without_tqdm(capsys, x2d, tmp_path, monkeypatch):
    _without_tqdm(monkeypatch)
    _, path = x2d
    monkeypatch.setattr(progress_settings, "PROGRESS_DELAY", 0.0)  # show at once
    code, _, err = cli(capsys, "normalize", path, tmp_path / "y.npy", "--chunk-mb", CHUNK)
    assert code == 0
    lines = err.splitlines()
    assert any(ln.startswith("fit:") for ln in lines), err
    assert any(ln.startswith("normalize:") and "100%" in ln for ln in lines), err
    code, _, err = cli(
        capsys, "normalize", path, tmp_path / "z.npy", "--chunk-mb", CHUNK, "--no-progress"
    )
    assert code == 0
    assert err == ""
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), np.load(tmp_path / "z.npy"))


def test_plain_progress_in_a_log_writes_one_line_per_tenth():
    stream = io.StringIO()
    with progress_settings.PlainProgress(1000, "fit", stream, delay=0.0) as bar:
        for _ in range(100):
            bar.update(10)
    lines = stream.getvalue().splitlines()
    # The first update (1%) then 10%, 20%, ..., 100%: no redraws in a file.
    assert len(lines) == 11, lines
    assert lines[0] == "fit:   1% (0.0 MiB of 0.0 MiB)"
    assert lines[-1].startswith("fit: 100%")
    assert "\r" not in stream.getvalue()


def test_plain_progress_on_a_terminal_redraws_one_line(monkeypatch):
    monkeypatch.setattr(progress_settings, "PLAIN_REFRESH", 0.0)
    stream = _Terminal()
    total = 3 * 1048576
    with progress_settings.PlainProgress(total, "normalize", stream, delay=0.0) as bar:
        for _ in range(3):
            bar.update(1048576)
    text = stream.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n")  # one line, ended on exit
    frames = text.rstrip("\n").split("\r")[1:]
    assert frames[0] == "normalize:  33% (1.0 MiB of 3.0 MiB)"
    assert frames[-1] == "normalize: 100% (3.0 MiB of 3.0 MiB)"


def test_plain_progress_silent_for_quick_runs():
    for stream in (io.StringIO(), _Terminal()):
        with progress_settings.PlainProgress(100, "fit", stream, delay=3600.0) as bar:
            bar.update(100)
        assert stream.getvalue() == ""


def test_plain_progress_of_nothing():
    stream = io.StringIO()
    with progress_settings.PlainProgress(0, "fit", stream, delay=0.0) as bar:
        bar.update(0)
    assert stream.getvalue() == "fit: 100% (0.0 MiB of 0.0 MiB)\n"


def test_progress_falls_back_to_plain_without_tqdm(monkeypatch):
    _without_tqdm(monkeypatch)
    bar = progress_settings.progress(10, "fit", enabled=True)
    assert isinstance(bar, progress_settings.PlainProgress)
