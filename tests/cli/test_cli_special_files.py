"""Issue 13 at the command line's files: special files refused, every write
atomic (a failed write keeps the previous file; ``kill -9`` leaves no
temporary), a file shrinking under the reader is an error, not SIGBUS.

The risky cases run in a child interpreter (run_child): on the head before
issue 13 a FIFO hung the reader and a shrinking file killed it.
"""

import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from cli_helpers import assert_one_error, child_env, make_features, run_child

import bnfast

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX special files")

HANG = 30  # seconds: a child still running then hangs on the special file


def _fifo(tmp_path, name="fifo"):
    path = tmp_path / name
    os.mkfifo(path)
    return path


def _char_device(tmp_path, name="null"):
    """A character device node like /dev/null (1, 3), made here so that a
    failing test replaces a node in tmp_path, not /dev/null itself."""
    path = tmp_path / name
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except (PermissionError, OSError) as exc:
        pytest.skip(f"cannot make a device node here: {exc}")
    return path


def _socket(tmp_path, name="sock"):
    path = tmp_path / name
    s = socket.socket(socket.AF_UNIX)
    try:
        s.bind(str(path))
    except OSError as exc:
        s.close()
        pytest.skip(f"cannot bind a unix socket here: {exc}")
    return s, path


def _run(args, cwd):
    try:
        return run_child(args, cwd, timeout=HANG)
    except subprocess.TimeoutExpired:
        pytest.fail(f"python -m bnfast {' '.join(map(str, args))} hung on a special file")


def _child(code, cwd, timeout=120, fifo=None):
    """Run Python ``code`` in a child interpreter -> CompletedProcess (a
    test failure if it runs ``timeout`` seconds: blocked on ``fifo``)."""
    try:
        return subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)],
            cwd=cwd,
            env=child_env(),
            capture_output=True,
            text=True,
            timeout=HANG if fifo is not None else timeout,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"the child hung (on {fifo})" if fifo else "the child hung")


def _hidden_leftovers(directory):
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


# ---------------------------------------------------------------------------
# special files: refused with one line, never opened blocking, never replaced
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args",
    [
        ["stats", "{fifo}"],
        ["diagnose", "{fifo}"],
        ["normalize", "{fifo}", "out.npy"],
        ["normalize", "{x}", "out.npy", "--stats", "{fifo}"],
    ],
    ids=["stats", "diagnose", "normalize", "normalize--stats"],
)
def test_fifo_input_is_refused_without_hanging(tmp_path, x2d, args):
    fifo = _fifo(tmp_path)
    args = [a.format(fifo=fifo, x=x2d[1]) for a in args]
    res = _run(args, tmp_path)
    assert_one_error(res.returncode, res.stderr, str(fifo), "FIFO", "not a regular file")
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert not (tmp_path / "out.npy").exists()


@pytest.mark.parametrize("kind", ["fifo", "device", "socket"])
@pytest.mark.parametrize("force", [False, True])
def test_normalize_never_replaces_a_special_output(tmp_path, x2d, kind, force):
    sock = None
    if kind == "fifo":
        out = _fifo(tmp_path, "out.npy")
    elif kind == "device":
        out = _char_device(tmp_path, "out.npy")
    else:
        sock, out = _socket(tmp_path, "out.npy")
    try:
        mode = os.stat(out).st_mode
        res = _run(["normalize", x2d[1], out] + (["--force"] if force else []), tmp_path)
        assert_one_error(res.returncode, res.stderr, str(out), "not a regular file")
        assert os.stat(out).st_mode == mode, "the special file was replaced"
        assert _hidden_leftovers(tmp_path) == []
    finally:
        if sock is not None:
            sock.close()


def test_stats_out_and_plot_refuse_special_files(tmp_path, x2d):
    # (children: writing into a FIFO blocks until a reader opens it)
    fifo = _fifo(tmp_path, "st.npz")
    res = _run(["stats", x2d[1], "--out", fifo], tmp_path)
    assert_one_error(res.returncode, res.stderr, "st.npz", "not a regular file")
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    pytest.importorskip("matplotlib", reason="--plot needs matplotlib")
    plot = _fifo(tmp_path, "plot.png")
    res = _run(["diagnose", x2d[1], "--plot", plot], tmp_path)  # (a child: it could block)
    assert_one_error(res.returncode, res.stderr, "plot.png", "not a regular file")
    assert stat.S_ISFIFO(os.stat(plot).st_mode)


def test_library_saves_refuse_special_files(tmp_path):
    # In a child: opening a FIFO blocks until the other end opens it.
    res = _child(
        """
import numpy as np, bnfast
st = bnfast.Standardizer().fit(np.arange(6.0).reshape(3, 2))
for call in (lambda: st.save("st.npz"), lambda: bnfast.Standardizer.load("st.npz")):
    try:
        call()
    except ValueError as exc:
        print("refused:", exc)
""",
        tmp_path,
        fifo=_fifo(tmp_path, "st.npz"),
    )
    assert res.stdout.count("refused:") == 2 and "not a regular file" in res.stdout, res
    assert stat.S_ISFIFO(os.stat(tmp_path / "st.npz").st_mode)


# ---------------------------------------------------------------------------
# atomic writes
# ---------------------------------------------------------------------------


# A child whose files may not grow beyond LIMIT bytes (EFBIG, as a full disk
# gives ENOSPC, part-way through a write).
LIMIT = 8192
LIMITED = f"""
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a signal
resource.setrlimit(resource.RLIMIT_FSIZE, ({LIMIT}, {LIMIT}))
"""


def test_failed_stats_out_keeps_the_previous_file(tmp_path):
    # Before: np.savez wrote in place: a truncated, unloadable .npz.
    x = make_features(n=200, f=2000)  # statistics of 2000 features: > LIMIT bytes
    np.save(tmp_path / "x.npy", x)
    old = bnfast.Standardizer().fit(np.ones((3, 2)) * [1.0, 5.0])
    old.save(tmp_path / "st.npz")
    before = (tmp_path / "st.npz").read_bytes()
    res = _child(
        LIMITED + "from bnfast.cli import main\nsys.exit(main(['stats', 'x.npy', '--out', 'st']))",
        tmp_path,
    )
    assert res.returncode != 0
    assert (tmp_path / "st.npz").read_bytes() == before
    assert _hidden_leftovers(tmp_path) == []
    loaded = bnfast.Standardizer.load(tmp_path / "st.npz")
    np.testing.assert_array_equal(loaded.mean_, old.mean_)


def test_failed_standardizer_save_keeps_the_previous_file(tmp_path):
    # Before: a save failing part-way destroyed the previous good file.
    bnfast.Standardizer().fit(np.ones((3, 2))).save(tmp_path / "st.npz")
    before = (tmp_path / "st.npz").read_bytes()
    res = _child(
        LIMITED
        + """
import numpy as np, bnfast
st = bnfast.Standardizer().fit(np.random.default_rng(0).random((50, 3000)))
try:
    st.save("st.npz")
except OSError as exc:
    print("failed:", exc)
""",
        tmp_path,
    )
    assert "failed:" in res.stdout, res.stderr
    assert (tmp_path / "st.npz").read_bytes() == before
    assert _hidden_leftovers(tmp_path) == []


def test_failed_write_of_every_writer_keeps_the_previous_file(tmp_path, monkeypatch):
    """In process: the one atomic-write helper, with a write failing like a
    full disk (ENOSPC) part-way through."""
    from helpers import files

    target = tmp_path / "target.bin"
    target.write_bytes(b"previous")
    with pytest.raises(OSError, match="No space"):
        with files.atomic_write(target) as f:
            f.write(b"x" * 1000)
            raise OSError(28, "No space left on device")
    assert target.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["target.bin"]
    with files.atomic_write(target) as f:
        f.write(b"new")
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["target.bin"]


def test_writes_keep_the_replaced_files_mode_and_follow_symlinks(tmp_path):
    real = tmp_path / "real.npz"
    bnfast.Standardizer().fit(np.ones((3, 2))).save(real)
    os.chmod(real, 0o640)
    link = tmp_path / "link.npz"
    link.symlink_to(real)
    st = bnfast.Standardizer().fit(np.arange(6.0).reshape(3, 2))
    st.save(link)
    assert link.is_symlink(), "the symlink itself was replaced"
    assert stat.S_IMODE(os.stat(real).st_mode) == 0o640
    np.testing.assert_array_equal(bnfast.Standardizer.load(real).mean_, st.mean_)


def test_kill_9_during_normalize_leaves_no_temporary(tmp_path, x2d):
    # Before: a hidden temporary as large as the output stayed behind.
    code = f"""
import os, signal, sys
from bnfast import Standardizer
from bnfast.cli import main
calls = []
transform = Standardizer.transform
def dying(self, *args, **kwargs):
    calls.append(1)
    if len(calls) == 3:  # two chunks written, then killed
        os.kill(os.getpid(), signal.SIGKILL)
    return transform(self, *args, **kwargs)
Standardizer.transform = dying
main(['normalize', {str(x2d[1])!r}, 'out.npy', '--chunk-mb', '0.2'])
"""
    res = _child(code, tmp_path)
    assert res.returncode == -signal.SIGKILL, res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npy"]


# ---------------------------------------------------------------------------
# a file shrinking while it is read: one line, not SIGBUS
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("command", ["stats", "normalize"])
def test_file_shrinking_under_the_reader_is_an_error(tmp_path, command, order):
    # Before: SIGBUS (exit 135 from a shell, no message) and normalize's
    # temporary left behind. The child truncates its input after the first
    # chunk (a deterministic stand-in for another program truncating it).
    x = make_features()
    np.save(tmp_path / "x.npy", np.asfortranarray(x) if order == "F" else x)
    args = ["normalize", "x.npy", "out.npy", "--stats", "st.npz"] if command == "normalize" else []
    if command == "normalize":
        bnfast.Standardizer().fit(x).save(tmp_path / "st.npz")
    else:
        args = ["stats", "x.npy"]
    code = f"""
import os, sys
from bnfast import Standardizer
from bnfast.cli import main
calls = []
def shrink():
    calls.append(1)
    if len(calls) == 1:
        os.truncate("x.npy", 4096)
for name in ("partial_fit", "transform"):
    method = getattr(Standardizer, name)
    def hooked(self, *a, _method=method, **k):
        shrink()
        return _method(self, *a, **k)
    setattr(Standardizer, name, hooked)
sys.exit(main({[str(a) for a in args] + ["--chunk-mb", "0.2"]!r}))
"""
    res = _child(code, tmp_path)
    assert_one_error(res.returncode, res.stderr, "x.npy", "shrank")
    assert not (tmp_path / "out.npy").exists()
    assert _hidden_leftovers(tmp_path) == []
