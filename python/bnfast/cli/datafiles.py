"""Data files of the command line: ``.npy`` files and ``.npz`` members read
in chunks of whole rows along axis 0, and ``.npy`` outputs written atomically.

Files are never loaded whole: ``.npy`` files and uncompressed ``.npz``
members are read with ``pread`` a chunk of whole rows at a time into one
reused buffer, so the resident memory stays bounded by a few times the
chunk size whatever the file size (or by the size of one sample along axis
0, if that is larger). They are not memory-mapped: a mapped file that
shrinks under the reader raises SIGBUS, a short read is a one-line error.
Compressed ``.npz`` members are streamed chunk by chunk. Only regular files
are read (a FIFO is never opened blocking). An output is written through
:func:`bnfast._files.atomic_write` (:func:`atomic_npy_writer`).
"""

from __future__ import annotations

import math
import os
import struct
import sys
import tokenize
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any, Callable

import numpy as np
from numpy.lib import format as npy_format

from .._files import atomic_write, check_regular_target, kind_of_mode
from .._validate import DTYPE_KIND_NAMES, is_bfloat16
from .errors import CliError, one_line

MiB = 1 << 20

_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"
_ZIP_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")  # 30 bytes


# ---------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------
def _read_npy_header(f: IO[bytes], label: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    """Parse a .npy header at the current position of ``f``.

    Returns (shape, fortran_order, dtype); ``f`` is left at the first data byte."""
    try:
        version = npy_format.read_magic(f)
    except (ValueError, EOFError):
        raise CliError(f"{label}: not a .npy file (bad magic string)") from None
    try:
        if version == (1, 0):
            return npy_format.read_array_header_1_0(f)
        if version == (2, 0):
            return npy_format.read_array_header_2_0(f)
        reader = _private_header_reader()
        if reader is None:
            raise CliError(f"{label}: unsupported .npy format version {version[0]}.{version[1]}")
        return reader(f, version)
    except (ValueError, SyntaxError, EOFError, tokenize.TokenError) as exc:
        why = exc.args[0] if isinstance(exc, tokenize.TokenError) and exc.args else exc
        raise CliError(f"{label}: corrupt .npy header ({one_line(why)})") from None


def _private_header_reader() -> Callable[..., Any] | None:
    # .npy format 3.0 (utf-8 headers) has no public reader.
    for modname in ("numpy.lib._format_impl", "numpy.lib.format"):
        try:
            mod = __import__(modname, fromlist=["_read_array_header"])
        except ImportError:
            continue
        reader = getattr(mod, "_read_array_header", None)
        if reader is not None:
            return reader
    return None


class DataSource:
    """An array stored in a file, read in chunks of whole rows along axis 0.

    Attributes: ``label`` (the data argument as given), ``path`` (the file on
    disk), ``shape``, ``dtype`` (as stored), ``fortran_order``, ``row_bytes``
    (bytes of one row in the file), ``nbytes``."""

    def __init__(
        self, label: str, path: str, shape: tuple[int, ...], dtype: np.dtype, fortran_order: bool
    ) -> None:
        self.label = label
        self.path = path
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.fortran_order = bool(fortran_order)
        self.row_elems = math.prod(self.shape[1:]) if self.shape else 1
        self.row_bytes = self.row_elems * self.dtype.itemsize
        self.nbytes = self.row_bytes * (self.shape[0] if self.shape else 1)
        self.native_dtype = self.dtype.newbyteorder("=")

    @property
    def n_rows(self) -> int:
        return self.shape[0]

    def chunks(self, rows: int) -> Iterator[np.ndarray]:
        """Consecutive slices ``X[start:start + rows]`` in native byte order.

        A yielded chunk is only valid until the next one is requested (its
        memory is released or reused)."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> DataSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _native(self, chunk: np.ndarray) -> np.ndarray:
        if not chunk.dtype.isnative:
            chunk = chunk.astype(self.native_dtype)
        return chunk

    def describe(self) -> str:
        order = ", Fortran order" if self.fortran_order else ""
        return f"{self.label}: shape {self.shape}, dtype {self.dtype}{order}"


class _MappedSource(DataSource):
    """A .npy file or an uncompressed .npz member, read with ``pread`` into
    one reused chunk buffer.

    Not memory-mapped: a mapped file that shrinks while it is read (another
    process truncating it) kills the reader with SIGBUS, where a short read
    is an error message (:func:`_pread_exactly`). Resident memory stays at
    the chunk buffer whatever the file size."""

    def __init__(
        self,
        label: str,
        path: str,
        shape: tuple[int, ...],
        dtype: np.dtype,
        fortran_order: bool,
        data_offset: int,
    ) -> None:
        super().__init__(label, path, shape, dtype, fortran_order)
        self.data_offset = data_offset
        self._fd: int | None = _open_regular(path, label)

    def _fileno(self) -> int:
        if self._fd is None:
            raise ValueError(f"{self.label}: read after close")
        return self._fd

    def _read(self, view: memoryview, offset: int) -> None:
        _pread_exactly(self._fileno(), view, self.data_offset + offset, self.label)

    def chunks(self, rows: int) -> Iterator[np.ndarray]:
        n = self.n_rows
        rows = max(1, min(rows, n))
        if self.fortran_order:
            yield from self._fortran_chunks(rows)
            return
        buf = np.empty(rows * self.row_bytes, np.uint8)
        for start in range(0, n, rows):
            stop = min(n, start + rows)
            nbytes = (stop - start) * self.row_bytes
            self._read(buf.data[:nbytes], start * self.row_bytes)
            chunk = buf[:nbytes].view(self.dtype).reshape((stop - start,) + self.shape[1:])
            yield self._native(chunk)

    def _fortran_chunks(self, rows: int) -> Iterator[np.ndarray]:
        """Row chunks of a Fortran-order array: each column (fixed trailing
        index) is contiguous in the file, so a chunk is one read per column
        into a Fortran-order chunk buffer."""
        n, cols = self.n_rows, self.row_elems
        itemsize = self.dtype.itemsize
        col_bytes = n * itemsize
        flat = np.empty(rows * cols, self.dtype)
        raw = flat.view(np.uint8)
        for start in range(0, n, rows):
            stop = min(n, start + rows)
            k = stop - start
            for j in range(cols):
                dst = raw[j * k * itemsize : (j + 1) * k * itemsize]
                self._read(dst.data, j * col_bytes + start * itemsize)
            buf = flat[: k * cols].reshape((k, cols), order="F")
            yield self._native(buf.reshape((k,) + self.shape[1:], order="F"))

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


def _pread_exactly(fd: int, view: memoryview, offset: int, label: str) -> None:
    """Fill ``view`` from ``offset`` of ``fd``; a file that ended early
    (it shrank after it was opened) is a CliError."""
    done = 0
    while done < len(view):
        got = os.preadv(fd, [view[done:]], offset + done)
        if got == 0:
            raise CliError(
                f"{label}: the file shrank while it was read (it ends at byte {offset + done}, "
                f"the data needs {offset + len(view)}); was it modified by another program?"
            )
        done += got


def _open_regular(path: str, label: str) -> int:
    """A read-only descriptor of the regular file ``path``. Opened without
    blocking (O_NONBLOCK: opening a FIFO for reading would wait for a
    writer) and checked with fstat before any read: FIFOs, devices and
    sockets are refused with a CliError."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise CliError(f"{label}: no such file") from None
    except OSError as exc:
        raise CliError(f"{label}: cannot open: {exc.strerror or one_line(exc)}") from None
    try:
        kind = kind_of_mode(os.fstat(fd).st_mode)
        if kind is not None:
            raise CliError(
                f"{label}: is {kind}, not a regular file; bnfast reads .npy/.npz files only"
            )
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def check_regular_input(path: str, label: str) -> None:
    """CliError unless ``path`` is an existing regular file (stat only, or a
    non-blocking open: never waits on a FIFO)."""
    os.close(_open_regular(path, label))


class _StreamSource(DataSource):
    """A compressed .npz member: decompressed chunk by chunk (C order only)."""

    def __init__(
        self,
        label: str,
        path: str,
        shape: tuple[int, ...],
        dtype: np.dtype,
        fortran_order: bool,
        member: zipfile.ZipInfo,
        header_len: int,
    ) -> None:
        super().__init__(label, path, shape, dtype, fortran_order)
        self.member = member
        self.header_len = header_len

    def chunks(self, rows: int) -> Iterator[np.ndarray]:
        n = self.n_rows
        rows = max(1, min(rows, n))
        buf = np.empty(rows * self.row_bytes, np.uint8)
        try:
            with zipfile.ZipFile(self.path) as zf, zf.open(self.member) as f:
                _read_exactly(f, memoryview(bytearray(self.header_len)), self.label)
                for start in range(0, n, rows):
                    stop = min(n, start + rows)
                    nbytes = (stop - start) * self.row_bytes
                    _read_exactly(f, buf.data[:nbytes], self.label)
                    chunk = buf[:nbytes].view(self.dtype).reshape((stop - start,) + self.shape[1:])
                    yield self._native(chunk)
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
            raise CliError(
                f"{self.label}: cannot read the compressed member ({one_line(exc)})"
            ) from None


def _read_exactly(f: Any, view: memoryview, label: str, piece: int = MiB) -> None:
    # In pieces: ZipExtFile.readinto reads into a temporary bytes object of
    # the requested size.
    done = 0
    while done < len(view):
        got = f.readinto(view[done : done + piece])
        if not got:
            raise CliError(
                f"{label}: truncated (the data ends before the size its header promises)"
            )
        done += got


def _split_data_arg(arg: str) -> tuple[str, str | None]:
    """``FILE`` or ``FILE.npz:MEMBER`` -> (path, member or None)."""
    if os.path.exists(arg) or ":" not in arg:
        return arg, None
    path, member = arg.rsplit(":", 1)
    if path.lower().endswith(".npz") or os.path.isfile(path):
        return path, member
    return arg, None


def open_data(arg: str) -> DataSource:
    """Open a data argument (``.npy`` or ``FILE.npz[:MEMBER]``) for chunked reading.

    Validates the file (exists, a .npy array or an .npz member, not truncated,
    a real dtype, at least 1-d); raises :class:`CliError` otherwise."""
    path, member = _split_data_arg(arg)
    if not os.path.exists(path):
        raise CliError(f"{path}: no such file")
    if os.path.isdir(path):
        raise CliError(f"{path}: is a directory, expected a .npy file or an .npz archive")
    # Never open a FIFO, device or socket with a blocking open: checked first.
    with os.fdopen(_open_regular(path, path), "rb") as f:
        magic = f.read(len(_NPY_MAGIC))
    if magic.startswith(_ZIP_MAGIC):
        src = _open_npz(arg, path, member)
    elif magic == _NPY_MAGIC:
        if member is not None:
            raise CliError(f"{path}: is a .npy file, not an .npz archive (no member {member!r})")
        src = _open_npy(arg, path)
    else:
        raise CliError(f"{path}: not a .npy file (bad magic string) nor an .npz archive")
    try:
        _check_source(src)
    except BaseException:
        src.close()
        raise
    return src


def _open_npy(label: str, path: str) -> DataSource:
    with os.fdopen(_open_regular(path, label), "rb") as f:
        shape, fortran_order, dtype = _read_npy_header(f, label)
        data_offset = f.tell()
        size = os.fstat(f.fileno()).st_size
    dtype = _stored_dtype(label, dtype)
    _check_dtype(label, dtype)
    if any(d < 0 for d in shape):
        raise CliError(f"{label}: corrupt .npy header (negative dimension in {shape})")
    need = math.prod(shape) * dtype.itemsize
    if size < data_offset + need:
        raise CliError(
            f"{label}: truncated: the header promises {need} bytes of data, "
            f"the file has {max(0, size - data_offset)}"
        )
    return _MappedSource(label, path, shape, dtype, fortran_order, data_offset)


def _open_npz(label: str, path: str, member: str | None) -> DataSource:
    try:
        with zipfile.ZipFile(path) as zf:
            infos = [i for i in zf.infolist() if not i.is_dir()]
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
        raise CliError(f"{path}: not a valid .npz archive ({one_line(exc)})") from None
    names = {(i.filename[:-4] if i.filename.endswith(".npy") else i.filename): i for i in infos}
    available = ", ".join(sorted(names)) or "none"
    if member is None:
        if len(names) != 1:
            raise CliError(
                f"{path}: holds {len(names)} arrays ({available}); choose one as {path}:NAME"
            )
        info = next(iter(names.values()))
    else:
        found = names.get(member[:-4] if member.endswith(".npy") else member)
        if found is None:
            raise CliError(f"{path}: has no array {member!r}; available: {available}")
        info = found
    if info.flag_bits & 0x1:
        raise CliError(f"{label}: the member is encrypted")
    if info.compress_type == zipfile.ZIP_STORED:
        with os.fdopen(_open_regular(path, label), "rb") as f:
            f.seek(info.header_offset)
            raw = f.read(_ZIP_LOCAL_HEADER.size)
            if len(raw) != _ZIP_LOCAL_HEADER.size or raw[:4] != _ZIP_MAGIC:
                raise CliError(
                    f"{path}: not a valid .npz archive (bad local header of {info.filename})"
                )
            fields = _ZIP_LOCAL_HEADER.unpack(raw)
            name_len, extra_len = fields[-2], fields[-1]
            member_start = info.header_offset + _ZIP_LOCAL_HEADER.size + name_len + extra_len
            f.seek(member_start)
            shape, fortran_order, dtype = _read_npy_header(f, label)
            data_offset = f.tell()
            size = os.fstat(f.fileno()).st_size
        dtype = _stored_dtype(label, dtype)
        _check_dtype(label, dtype)
        need = math.prod(shape) * dtype.itemsize
        have = min(info.file_size - (data_offset - member_start), size - data_offset)
        if have < need:
            raise CliError(
                f"{label}: truncated: the header promises {need} bytes of data, "
                f"the member has {max(0, have)}"
            )
        return _MappedSource(label, path, shape, dtype, fortran_order, data_offset)
    # compressed: stream it
    try:
        with zipfile.ZipFile(path) as zf, zf.open(info) as f:
            shape, fortran_order, dtype = _read_npy_header(f, label)
            header_len = f.tell()
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
        raise CliError(f"{label}: cannot read the compressed member ({one_line(exc)})") from None
    dtype = _stored_dtype(label, dtype)
    _check_dtype(label, dtype)
    need = math.prod(shape) * dtype.itemsize
    if info.file_size - header_len < need:
        raise CliError(
            f"{label}: truncated: the header promises {need} bytes of data, "
            f"the member has {max(0, info.file_size - header_len)}"
        )
    if fortran_order and len(shape) > 1 and math.prod(shape[1:]) > 1:
        raise CliError(
            f"{label}: a compressed member in Fortran order cannot be read in row "
            f"chunks; store it in C order or uncompressed (np.savez)"
        )
    return _StreamSource(label, path, shape, dtype, False, info, header_len)


def _stored_dtype(label: str, dtype: np.dtype) -> np.dtype:
    """The dtype of a .npy header, with bfloat16 recognised.

    NumPy has no bfloat16: ``np.save`` of an ``ml_dtypes.bfloat16`` array
    writes its descr as a plain 2-byte void (``'<V2'``), and ``np.load``
    gives such a void array back. A void of exactly 2 bytes with no fields
    is read as bfloat16 when ml_dtypes is installed (the only 2-byte type
    that saves so); without it, the error names the package."""
    if dtype.kind == "V" and dtype.itemsize == 2 and dtype.names is None and dtype.shape == ():
        try:
            import ml_dtypes
        except ImportError:
            raise CliError(
                f"{label}: dtype {dtype.str} (2-byte void) is how ml_dtypes' bfloat16 "
                f"arrays are saved; reading it as bfloat16 needs the ml_dtypes package "
                f"(pip install ml_dtypes)"
            ) from None
        return np.dtype(ml_dtypes.bfloat16)
    return dtype


def _check_dtype(label: str, dtype: np.dtype) -> None:
    if dtype.kind not in "biuf" and not is_bfloat16(dtype):
        what = DTYPE_KIND_NAMES.get(dtype.kind, "non-numeric")
        raise CliError(
            f"{label}: dtype {dtype} ({what}) is not supported; "
            f"bnfast needs real numbers (bool, integer or floating, bfloat16 included)"
        )


def _check_source(src: DataSource) -> None:
    if len(src.shape) == 0:
        raise CliError(f"{src.label}: a 0-d array has no axis of samples")
    if any(d < 0 for d in src.shape):
        raise CliError(f"{src.label}: corrupt .npy header (negative dimension in {src.shape})")


def rows_per_chunk(chunk_bytes: int, bytes_per_row: int, label: str = "") -> int:
    """Whole rows (samples along axis 0) per chunk. A row larger than the
    chunk is still read whole: memory then follows the size of one sample,
    which is said once on stderr."""
    if bytes_per_row > chunk_bytes and label:
        print(
            f"bnfast: note: one sample of {label} takes {bytes_per_row / MiB:.1f} MiB, more "
            f"than --chunk-mb; it is read whole, so memory use follows the sample size",
            file=sys.stderr,
        )
    return max(1, chunk_bytes // max(1, bytes_per_row))


# ---------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------
@contextmanager
def atomic_npy_writer(path: str, shape: tuple[int, ...], dtype: np.dtype) -> Iterator[IO[bytes]]:
    """A binary file for the data of a C-order ``.npy`` array, after its header.

    Written through :func:`bnfast._files.atomic_write`: an unnamed temporary
    file in ``path``'s directory (a hidden named one where the system has
    none), which replaces ``path`` (keeping the mode of a file it replaces)
    only when the ``with`` block completes; on any exception, Ctrl-C
    included, ``path`` is left as it was, and even ``kill -9`` leaves no
    temporary behind on Linux. Existing non-regular files (FIFOs, devices)
    are refused (CliError).
    """
    header = {"descr": npy_format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
    try:
        check_regular_target(path, "output")
    except ValueError as exc:
        raise CliError(one_line(exc)) from None
    with atomic_write(path, "output") as f:
        try:
            npy_format.write_array_header_1_0(f, header)
        except ValueError:  # header too long for format 1.0
            npy_format.write_array_header_2_0(f, header)
        yield f
