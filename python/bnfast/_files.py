"""Every file bnfast writes goes through :func:`atomic_write` (one home).

The content goes to a temporary file in the target's directory -- on Linux
an unnamed one (``O_TMPFILE``), so that even ``kill -9`` leaves nothing
behind -- which is flushed, fsynced and only then put in place: linked
under a hidden temporary name and renamed over the target (elsewhere:
written under that name from the start, and renamed). A failed write
(a full disk, Ctrl-C, any exception) leaves the previous file as it was.
Only regular files are replaced: an existing FIFO, device, socket or
directory at the target is refused (:func:`special_file_kind`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from collections.abc import Iterator
from typing import IO, Optional, Union

PathLike = Union[str, "os.PathLike[str]"]

# How a non-regular file is named in messages.
_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def kind_of_mode(mode: int) -> Optional[str]:
    """What a ``st_mode`` is when it is not a regular file, else None."""
    if stat.S_ISREG(mode):
        return None
    for test, name in _KINDS:
        if test(mode):
            return name
    return "not a regular file"


def special_file_kind(path: PathLike) -> Optional[str]:
    """What exists at ``path`` (symlinks followed) when it is not a regular
    file -- ``"a FIFO (named pipe)"``, ``"a character device"`` ... -- or
    None for a regular file or nothing at all. Never opens the file."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return kind_of_mode(st.st_mode)


def check_regular_target(path: PathLike, what: str) -> None:
    """ValueError if ``path`` exists and is not a regular file (bnfast only
    replaces regular files: renaming over a FIFO or a device node would
    replace the node itself)."""
    kind = special_file_kind(path)
    if kind is not None:
        raise ValueError(
            f"{what} {os.fspath(path)} is {kind}, not a regular file; bnfast writes regular "
            f"files only: choose another path"
        )


def new_file_mode(path: PathLike) -> int:
    """The mode of the file ``path`` replaces (kept), else ``0o666 & ~umask``."""
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _open_unnamed(directory: str) -> Optional[int]:
    """An ``O_TMPFILE`` descriptor in ``directory``, or None where the
    platform or the file system has none."""
    flag = getattr(os, "O_TMPFILE", 0)
    if not flag or not os.path.exists("/proc/self/fd"):
        return None
    try:
        return os.open(directory, flag | os.O_WRONLY | getattr(os, "O_CLOEXEC", 0), 0o600)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOENT):
            return None  # no O_TMPFILE here: the named fallback
        raise


def _hidden_name(directory: str, base: str) -> str:
    """A fresh hidden name next to the target (``.NAME.XXXX.tmp``)."""
    return os.path.join(directory, f".{base[:180]}.{os.urandom(6).hex()}.tmp")


def _link_unnamed(fd: int, directory: str, name: str) -> None:
    """Give the ``O_TMPFILE`` file ``fd`` the name ``name`` in ``directory``:
    linkat(2) of ``/proc/self/fd/N`` with AT_SYMLINK_FOLLOW. (A directory
    descriptor makes os.link call linkat; plain link(2) would try to link
    the /proc symlink itself.)"""
    dir_fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.link(
            f"/proc/self/fd/{fd}",
            os.path.basename(name),
            dst_dir_fd=dir_fd,
            follow_symlinks=True,
        )
    finally:
        os.close(dir_fd)


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove(path: Optional[str]) -> None:
    if path is not None:
        with contextlib.suppress(OSError):
            os.unlink(path)


@contextlib.contextmanager
def atomic_write(path: PathLike, what: str = "output") -> Iterator[IO[bytes]]:
    """A binary file whose content replaces ``path`` when the block completes.

    On any exception in the block (or while finishing) the temporary file
    is removed (an unnamed one simply vanishes) and ``path`` is untouched.
    A symlink at ``path`` is followed: its target is replaced. The new file
    keeps the mode of the file it replaces. ``what`` names ``path`` in the
    error for an existing non-regular file (ValueError, raised before
    anything is created).
    """
    target = os.path.realpath(os.fspath(path))
    check_regular_target(target, what)
    directory, base = os.path.split(target)
    mode = new_file_mode(target)
    named: Optional[str] = None
    fd = _open_unnamed(directory)
    if fd is None:
        fd, named = tempfile.mkstemp(dir=directory, prefix=f".{base[:180]}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
            if named is None:  # link the unnamed file under a hidden name
                named = _hidden_name(directory, base)
                _link_unnamed(f.fileno(), directory, named)
        check_regular_target(target, what)  # (something may have appeared meanwhile)
        os.replace(named, target)
    except BaseException:
        _remove(named)
        raise
    _fsync_dir(directory)
