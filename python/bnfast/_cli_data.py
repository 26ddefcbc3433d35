"""The data subcommands of ``python -m bnfast``: ``stats``, ``normalize``, ``diagnose``.

A data argument is a ``.npy`` file or ``FILE.npz:MEMBER`` (the member may be
omitted when the archive holds one array).  Files are never loaded whole:
``.npy`` files and uncompressed ``.npz`` members are memory-mapped and read as
views of whole rows along axis 0, and the pages of each processed chunk are
dropped from the process (``madvise(MADV_DONTNEED)``), so the resident memory
stays bounded by a few times ``--chunk-mb`` whatever the file size (or by
the size of one sample along axis 0, if that is larger).  Compressed ``.npz``
members are streamed chunk by chunk.  ``normalize`` writes its output row
chunk by row chunk to a temporary file next to OUT and renames it to OUT only
when it is complete.

Errors in files or arguments are reported as one line ``bnfast: error: ...``
on stderr with exit code 1 (see :func:`run`).
"""

from __future__ import annotations

import math
import mmap
import os
import struct
import sys
import tempfile
import tokenize
import zipfile
import zlib
from contextlib import contextmanager
from typing import Iterator

import numpy as np
from numpy.lib import format as npy_format

from ._standardize import Standardizer, result_dtype
from ._validate import DTYPE_KIND_NAMES

__all__ = [
    "CliError",
    "DataSource",
    "diagnose_file",
    "fit_file",
    "main_diagnose",
    "main_normalize",
    "main_stats",
    "normalize_file",
    "open_data",
    "run",
]

MiB = 1 << 20
DEFAULT_CHUNK_MB = 64.0
# Seconds before the tqdm bar appears (quick runs show nothing).  A module
# constant so that tests can make the bar appear at once.
PROGRESS_DELAY = 1.0
# Tables with more features than this show the first and last rows only.
MAX_TABLE_ROWS = 20

_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"
_ZIP_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")  # 30 bytes


class CliError(Exception):
    """An error in the user's files or arguments (one line on stderr, exit 1)."""


# ---------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------
def _read_npy_header(f, label: str):
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
        raise CliError(f"{label}: corrupt .npy header ({_one_line(why)})") from None


def _private_header_reader():
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

    def __init__(self, label, path, shape, dtype, fortran_order):
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

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _native(self, chunk: np.ndarray) -> np.ndarray:
        if not chunk.dtype.isnative:
            chunk = chunk.astype(self.native_dtype)
        return chunk

    def describe(self) -> str:
        order = ", Fortran order" if self.fortran_order else ""
        return f"{self.label}: shape {self.shape}, dtype {self.dtype}{order}"


class _MappedSource(DataSource):
    """A .npy file or an uncompressed .npz member: a read-only memory map."""

    def __init__(self, label, path, shape, dtype, fortran_order, data_offset):
        super().__init__(label, path, shape, dtype, fortran_order)
        self.data_offset = data_offset
        self._file = open(path, "rb")
        try:
            self._mm = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        except BaseException:
            self._file.close()
            raise
        self._can_release = hasattr(self._mm, "madvise") and hasattr(mmap, "MADV_DONTNEED")

    def _release(self, start: int, stop: int) -> None:
        """Drop the pages of data bytes [start, stop) from this process."""
        if not self._can_release or stop <= start:
            return
        start -= start % mmap.PAGESIZE
        try:
            self._mm.madvise(mmap.MADV_DONTNEED, start, stop - start)
        except OSError:  # not fatal: only memory use is at stake
            self._can_release = False

    def chunks(self, rows: int) -> Iterator[np.ndarray]:
        n = self.n_rows
        if self.fortran_order:
            yield from self._fortran_chunks(rows)
            return
        for start in range(0, n, rows):
            stop = min(n, start + rows)
            offset = self.data_offset + start * self.row_bytes
            chunk = self._native(np.ndarray((stop - start,) + self.shape[1:], self.dtype,
                                            buffer=self._mm, offset=offset))
            yield chunk
            del chunk
            self._release(offset, self.data_offset + stop * self.row_bytes)

    def _fortran_chunks(self, rows: int) -> Iterator[np.ndarray]:
        """Row chunks of a Fortran-order array, copied into a chunk buffer.

        A row chunk of such a file is a strided view that touches every
        column, and the kernel may map whole large page-cache folios around
        each touched page (measured: the whole file for a few rows of each
        column), so viewing would not bound memory.  The chunk is instead
        copied a group of columns at a time, the group's whole file span
        (at most one chunk's worth of bytes) released after each copy."""
        n, cols = self.n_rows, self.row_elems
        itemsize = self.dtype.itemsize
        col_bytes = n * itemsize  # one column (fixed trailing index) is contiguous
        group = max(1, (rows * self.row_bytes) // max(1, col_bytes))
        full = np.ndarray((n, cols), self.dtype, buffer=self._mm, offset=self.data_offset,
                          order="F")
        rows = max(1, min(rows, n))
        flat = np.empty(rows * cols, self.native_dtype)
        try:
            for start in range(0, n, rows):
                stop = min(n, start + rows)
                k = stop - start
                buf = flat[:k * cols].reshape((k, cols), order="F")
                for j0 in range(0, cols, group):
                    j1 = min(cols, j0 + group)
                    buf[:, j0:j1] = full[start:stop, j0:j1]  # byte order converted here
                    self._release(self.data_offset + j0 * col_bytes,
                                  self.data_offset + j1 * col_bytes)
                yield buf.reshape((k,) + self.shape[1:], order="F")
        finally:
            del full

    def close(self) -> None:
        mm, self._mm = self._mm, None
        if mm is not None:
            try:
                mm.close()
            except BufferError:
                pass  # a chunk is still referenced: closed when it is freed
        self._file.close()


class _StreamSource(DataSource):
    """A compressed .npz member: decompressed chunk by chunk (C order only)."""

    def __init__(self, label, path, shape, dtype, fortran_order, member, header_len):
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
                    _read_exactly(f, memoryview(buf)[:nbytes], self.label)
                    chunk = buf[:nbytes].view(self.dtype).reshape((stop - start,) + self.shape[1:])
                    yield self._native(chunk)
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
            raise CliError(f"{self.label}: cannot read the compressed member ({_one_line(exc)})") from None


def _read_exactly(f, view: memoryview, label: str, piece: int = MiB) -> None:
    # In pieces: ZipExtFile.readinto reads into a temporary bytes object of
    # the requested size.
    done = 0
    while done < len(view):
        got = f.readinto(view[done:done + piece])
        if not got:
            raise CliError(f"{label}: truncated (the data ends before the size its header promises)")
        done += got


def _split_data_arg(arg: str):
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
    with open(path, "rb") as f:
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
    with open(path, "rb") as f:
        shape, fortran_order, dtype = _read_npy_header(f, label)
        data_offset = f.tell()
        size = os.fstat(f.fileno()).st_size
    _check_dtype(label, dtype)
    if any(d < 0 for d in shape):
        raise CliError(f"{label}: corrupt .npy header (negative dimension in {shape})")
    need = math.prod(shape) * dtype.itemsize
    if size < data_offset + need:
        raise CliError(f"{label}: truncated: the header promises {need} bytes of data, "
                       f"the file has {max(0, size - data_offset)}")
    return _MappedSource(label, path, shape, dtype, fortran_order, data_offset)


def _open_npz(label: str, path: str, member) -> DataSource:
    try:
        with zipfile.ZipFile(path) as zf:
            infos = [i for i in zf.infolist() if not i.is_dir()]
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
        raise CliError(f"{path}: not a valid .npz archive ({_one_line(exc)})") from None
    names = {(i.filename[:-4] if i.filename.endswith(".npy") else i.filename): i for i in infos}
    available = ", ".join(sorted(names)) or "none"
    if member is None:
        if len(names) != 1:
            raise CliError(f"{path}: holds {len(names)} arrays ({available}); "
                           f"choose one as {path}:NAME")
        info = next(iter(names.values()))
    else:
        info = names.get(member[:-4] if member.endswith(".npy") else member)
        if info is None:
            raise CliError(f"{path}: has no array {member!r}; available: {available}")
    if info.flag_bits & 0x1:
        raise CliError(f"{label}: the member is encrypted")
    if info.compress_type == zipfile.ZIP_STORED:
        with open(path, "rb") as f:
            f.seek(info.header_offset)
            raw = f.read(_ZIP_LOCAL_HEADER.size)
            if len(raw) != _ZIP_LOCAL_HEADER.size or raw[:4] != _ZIP_MAGIC:
                raise CliError(f"{path}: not a valid .npz archive (bad local header of {info.filename})")
            fields = _ZIP_LOCAL_HEADER.unpack(raw)
            name_len, extra_len = fields[-2], fields[-1]
            member_start = info.header_offset + _ZIP_LOCAL_HEADER.size + name_len + extra_len
            f.seek(member_start)
            shape, fortran_order, dtype = _read_npy_header(f, label)
            data_offset = f.tell()
            size = os.fstat(f.fileno()).st_size
        _check_dtype(label, dtype)
        need = math.prod(shape) * dtype.itemsize
        have = min(info.file_size - (data_offset - member_start), size - data_offset)
        if have < need:
            raise CliError(f"{label}: truncated: the header promises {need} bytes of data, "
                           f"the member has {max(0, have)}")
        return _MappedSource(label, path, shape, dtype, fortran_order, data_offset)
    # compressed: stream it
    try:
        with zipfile.ZipFile(path) as zf, zf.open(info) as f:
            shape, fortran_order, dtype = _read_npy_header(f, label)
            header_len = f.tell()
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
        raise CliError(f"{label}: cannot read the compressed member ({_one_line(exc)})") from None
    _check_dtype(label, dtype)
    need = math.prod(shape) * dtype.itemsize
    if info.file_size - header_len < need:
        raise CliError(f"{label}: truncated: the header promises {need} bytes of data, "
                       f"the member has {max(0, info.file_size - header_len)}")
    if fortran_order and len(shape) > 1 and math.prod(shape[1:]) > 1:
        raise CliError(f"{label}: a compressed member in Fortran order cannot be read in row "
                       f"chunks; store it in C order or uncompressed (np.savez)")
    return _StreamSource(label, path, shape, dtype, False, info, header_len)


def _check_dtype(label: str, dtype: np.dtype) -> None:
    if dtype.kind not in "biuf":
        what = DTYPE_KIND_NAMES.get(dtype.kind, "non-numeric")
        raise CliError(f"{label}: dtype {dtype} ({what}) is not supported; "
                       f"bnfast needs real numbers (bool, integer or floating)")


def _check_source(src: DataSource) -> None:
    if len(src.shape) == 0:
        raise CliError(f"{src.label}: a 0-d array has no axis of samples")
    if any(d < 0 for d in src.shape):
        raise CliError(f"{src.label}: corrupt .npy header (negative dimension in {src.shape})")


# ---------------------------------------------------------------------------
# arguments
# ---------------------------------------------------------------------------
def resolve_axes(axis, src: DataSource, option: str = "--axis") -> tuple:
    """``axis`` (int, sequence of ints or None = all) -> sorted tuple of
    non-negative axes of ``src``; must include 0."""
    ndim = len(src.shape)
    if axis is None:
        return tuple(range(ndim))
    items = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    given = ",".join(str(a) for a in items)
    axes = []
    for a in items:
        if not -ndim <= a < ndim:
            raise CliError(f"{option} {given}: axis {a} is out of range for the {ndim}-d data "
                           f"{src.label} (shape {src.shape})")
        axes.append(int(a) % ndim)
    if len(set(axes)) != len(axes):
        raise CliError(f"{option} {given}: repeated axis")
    if 0 not in axes:
        raise CliError(f"{option} {given}: the axes must include 0 (the file is read in "
                       f"chunks of rows along axis 0)")
    return tuple(sorted(axes))


def _axis_param(axes: tuple):
    return 0 if axes == (0,) else axes


def _feature_shape(shape: tuple, axes: tuple) -> tuple:
    return tuple(s for i, s in enumerate(shape) if i not in axes)


def chunk_bytes_from_mb(chunk_mb) -> int:
    if chunk_mb is None:
        chunk_mb = DEFAULT_CHUNK_MB
    if not (isinstance(chunk_mb, (int, float)) and math.isfinite(chunk_mb) and chunk_mb > 0):
        raise CliError(f"--chunk-mb must be a positive number, got {chunk_mb}")
    return max(1, int(chunk_mb * MiB))


def _rows_per_chunk(chunk_bytes: int, bytes_per_row: int, label: str = "") -> int:
    """Whole rows (samples along axis 0) per chunk. A row larger than the
    chunk is still read whole: memory then follows the size of one sample,
    which is said once on stderr."""
    if bytes_per_row > chunk_bytes and label:
        print(f"bnfast: note: one sample of {label} takes {bytes_per_row / MiB:.1f} MiB, more "
              f"than --chunk-mb; it is read whole, so memory use follows the sample size",
              file=sys.stderr)
    return max(1, chunk_bytes // max(1, bytes_per_row))


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def _check_not_input(out: str, src: DataSource, what: str) -> None:
    if _same_file(out, src.path):
        raise CliError(f"{what} {out} is the input file {src.path}; refusing to overwrite it")


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------
def _one_line(exc) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


@contextmanager
def _library_errors(label: str):
    """ValueError/TypeError raised by the library on the user's data -> CliError."""
    try:
        yield
    except (ValueError, TypeError) as exc:
        raise CliError(f"{label}: {_one_line(exc)}") from exc


class _NoBar:
    def update(self, n=1):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return _NoBar()
    try:
        from tqdm import tqdm
    except ImportError:  # progress is a nicety
        return _NoBar()
    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                delay=PROGRESS_DELAY, file=sys.stderr, dynamic_ncols=True)


def _check_has_data(src: DataSource, what: str) -> None:
    if math.prod(src.shape) == 0:
        raise CliError(f"{src.label}: no values to {what} (shape {src.shape})")


# ---------------------------------------------------------------------------
# the work (usable from Python too)
# ---------------------------------------------------------------------------
class FileStats:
    """Result of :func:`fit_file`: the fitted ``standardizer`` and, per
    feature, ``nan_count``, ``min`` and ``max`` (float64, over non-NaN values)."""

    def __init__(self, standardizer, nan_count, minimum, maximum):
        self.standardizer = standardizer
        self.nan_count = nan_count
        self.min = minimum
        self.max = maximum


def fit_file(src: DataSource, axes: tuple, *, nan_policy: str = "omit",
             chunk_bytes: int = int(DEFAULT_CHUNK_MB * MiB), progress: bool = False,
             extremes: bool = True) -> FileStats:
    """One pass over ``src``: ``Standardizer.partial_fit`` per chunk (and
    per-feature NaN count, min and max when ``extremes``)."""
    _check_has_data(src, "fit")
    st = Standardizer(axis=_axis_param(axes), nan_policy=nan_policy)
    rows = _rows_per_chunk(chunk_bytes, src.row_bytes, src.label)
    lo = hi = nans = None
    floating = src.dtype.kind == "f"
    with _progress(src.nbytes, "fit", progress) as bar:
        for chunk in src.chunks(rows):
            with _library_errors(src.label):
                st.partial_fit(chunk)
            if extremes:
                c_lo = np.fmin.reduce(chunk, axis=axes)
                c_hi = np.fmax.reduce(chunk, axis=axes)
                lo = c_lo if lo is None else np.fmin(lo, c_lo)
                hi = c_hi if hi is None else np.fmax(hi, c_hi)
                if floating:
                    c_nan = np.count_nonzero(np.isnan(chunk), axis=axes)
                    nans = c_nan if nans is None else nans + c_nan
            bar.update(chunk.shape[0] * src.row_bytes)
    fshape = _feature_shape(src.shape, axes)
    if extremes:
        lo = np.asarray(lo, np.float64).reshape(fshape)
        hi = np.asarray(hi, np.float64).reshape(fshape)
        nans = np.zeros(fshape, np.int64) if nans is None else np.asarray(nans, np.int64).reshape(fshape)
    return FileStats(st, nans, lo, hi)


def diagnose_file(src: DataSource, axes: tuple, *, chunk_bytes: int = int(DEFAULT_CHUNK_MB * MiB),
                  progress: bool = False):
    """One pass over ``src`` through ``DiagnoseAccumulator`` -> ``DataReport``."""
    from ._diagnose import DiagnoseAccumulator

    _check_has_data(src, "diagnose")
    with _library_errors(src.label):
        acc = DiagnoseAccumulator(_axis_param(axes))
    rows = _rows_per_chunk(chunk_bytes, src.row_bytes, src.label)
    with _progress(src.nbytes, "diagnose", progress) as bar:
        for chunk in src.chunks(rows):
            with _library_errors(src.label):
                acc.update(chunk)
            bar.update(chunk.shape[0] * src.row_bytes)
    with _library_errors(src.label):
        return acc.report()


def _stats_axes(st, src: DataSource, stats_path: str) -> tuple:
    """The axes the statistics were fitted over (not the current parameter,
    which may have been changed after the fit); all axes for a global fit."""
    fitted = st.sample_axes_ if st.feature_shape_ else None
    return resolve_axes(fitted, src, option=f"the axis of {stats_path}:")


def normalize_file(src: DataSource, out: str, standardizer, axes: tuple, *,
                   chunk_bytes: int = int(DEFAULT_CHUNK_MB * MiB), progress: bool = False) -> None:
    """Write ``standardizer.transform(X)`` of the whole of ``src`` to the .npy
    file ``out`` (a temporary file in ``out``'s directory, renamed when complete)."""
    _check_feature_shape(standardizer, src, axes)
    out_dtype = result_dtype(src.native_dtype)  # what transform returns
    out_row_bytes = src.row_elems * out_dtype.itemsize
    rows = _rows_per_chunk(chunk_bytes, max(src.row_bytes, out_row_bytes), src.label)
    header = {"descr": npy_format.dtype_to_descr(out_dtype), "fortran_order": False,
              "shape": src.shape}

    out_dir = os.path.dirname(os.path.abspath(out))
    mode = _new_file_mode(out)
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix="." + os.path.basename(out)[:180] + ".",
                               suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            try:
                npy_format.write_array_header_1_0(f, header)
            except ValueError:  # header too long for format 1.0
                npy_format.write_array_header_2_0(f, header)
            buf = np.empty((min(rows, src.n_rows),) + src.shape[1:], out_dtype)
            with _progress(src.nbytes, "normalize", progress) as bar:
                for chunk in src.chunks(rows):
                    k = chunk.shape[0]
                    with _library_errors(src.label):
                        y = standardizer.transform(chunk, out=buf[:k])
                    if y.dtype != out_dtype or y.shape != chunk.shape:
                        raise RuntimeError(f"transform returned {y.dtype} {y.shape}, expected "
                                           f"{out_dtype} {chunk.shape}")
                    f.write(np.ascontiguousarray(y).data)
                    bar.update(k * src.row_bytes)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(out_dir)


def _new_file_mode(out: str) -> int:
    try:
        return os.stat(out).st_mode & 0o7777  # --force: keep the replaced file's mode
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


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


# ---------------------------------------------------------------------------
# printing
# ---------------------------------------------------------------------------
def _feature_labels(fshape: tuple, index) -> list:
    if fshape == ():
        return ["all"]
    if len(fshape) == 1:
        return [str(i) for i in index]
    return ["(" + ", ".join(str(int(j)) for j in np.unravel_index(i, fshape)) + ")" for i in index]


def _fmt(v) -> str:
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    v = float(v)
    return "nan" if math.isnan(v) else f"{v:.6g}"


def format_table(fshape: tuple, columns: list) -> str:
    """``columns``: list of (name, array of shape fshape); one row per feature,
    the first and last rows only when there are more than MAX_TABLE_ROWS."""
    n = math.prod(fshape)
    flat = [(name, np.asarray(values).reshape(-1)) for name, values in columns]
    if n > MAX_TABLE_ROWS:
        half = MAX_TABLE_ROWS // 2
        index = list(range(half)) + [None] + list(range(n - half, n))
    else:
        index = list(range(n))
    shown = [i for i in index if i is not None]
    labels = dict(zip(shown, _feature_labels(fshape, shown)))
    header = ["feature"] + [name for name, _ in flat]
    rows = []
    for i in index:
        if i is None:
            rows.append(["..."] + [""] * (len(header) - 1))
        else:
            rows.append([labels[i]] + [_fmt(values[i]) for _, values in flat])
    widths = [max(len(r[c]) for r in rows + [header]) for c in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                       for i, (c, w) in enumerate(zip(r, widths))).rstrip()
             for r in [header] + rows]
    return "\n".join(lines)


# ---------------------------------------------------------------------------
# subcommands (args: the argparse namespace of bnfast.__main__)
# ---------------------------------------------------------------------------
def _cmd_stats(args) -> int:
    chunk_bytes = chunk_bytes_from_mb(args.chunk_mb)
    with open_data(args.data) as src:
        axes = resolve_axes(args.axis if args.axis is not None else 0, src)
        if args.out is not None:
            _check_not_input(args.out, src, "--out")
            if not args.out.endswith(".npz"):  # np.savez appends .npz
                _check_not_input(args.out + ".npz", src, "--out")
            _check_writable_dir(args.out, "--out")
        res = fit_file(src, axes, nan_policy=args.nan_policy, chunk_bytes=chunk_bytes,
                       progress=args.progress)
    st = res.standardizer
    fshape = tuple(st.feature_shape_)
    count = np.broadcast_to(np.asarray(st.n_samples_seen_), fshape)
    std = np.sqrt(np.asarray(st.var_, np.float64))
    print(f"{src.describe()}; axis {axes}; {math.prod(fshape)} feature(s) of shape {fshape}")
    print(format_table(fshape, [("count", count), ("nan", res.nan_count),
                                ("mean", np.asarray(st.mean_)), ("std", std),
                                ("min", res.min), ("max", res.max)]))
    if args.out is not None:
        with _library_errors(args.out):
            st.save(args.out)
        written = args.out if args.out.endswith(".npz") else args.out + ".npz"
        print(f"statistics saved to {written}")
    return 0


def _cmd_normalize(args) -> int:
    chunk_bytes = chunk_bytes_from_mb(args.chunk_mb)
    out = args.out
    with open_data(args.data) as src:
        _check_not_input(out, src, "output")
        if os.path.isdir(out):
            raise CliError(f"output {out} is a directory")
        if os.path.lexists(out) and not args.force:
            raise CliError(f"output {out} exists; use --force to replace it")
        _check_writable_dir(out, "output")  # before a fitting pass, not after it
        if args.stats is not None:
            if os.path.lexists(out) and _same_file(out, args.stats):
                raise CliError(f"output {out} is the --stats file")
            if os.path.isdir(args.stats):
                raise CliError(f"--stats {args.stats}: is a directory")
            with _library_errors("--stats"):
                st = Standardizer.load(args.stats)
            axes = _stats_axes(st, src, args.stats)
            if args.axis is not None:
                given = resolve_axes(args.axis, src)
                if given != axes:
                    raise CliError(f"--axis {given} differs from the axis {axes} the statistics "
                                   f"in {args.stats} were fitted with")
            _check_feature_shape(st, src, axes)
        else:
            axes = resolve_axes(args.axis if args.axis is not None else 0, src)
            st = fit_file(src, axes, nan_policy=args.nan_policy, chunk_bytes=chunk_bytes,
                          progress=args.progress, extremes=False).standardizer
        normalize_file(src, out, st, axes, chunk_bytes=chunk_bytes, progress=args.progress)
    return 0


def _check_writable_dir(path: str, what: str) -> None:
    """Fail early (before a pass over the data) if ``path`` cannot be created."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise CliError(f"{what} directory {directory}: no such directory")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise CliError(f"{what} directory {directory}: permission denied")


def _check_feature_shape(st, src, axes) -> None:
    fshape = _feature_shape(src.shape, axes)
    fitted = tuple(st.feature_shape_)
    if fitted != fshape:
        raise CliError(f"{src.label}: the data has feature shape {fshape} (shape {src.shape}, "
                       f"axis {axes}) but the statistics were fitted with feature shape {fitted}")


def _cmd_diagnose(args) -> int:
    chunk_bytes = chunk_bytes_from_mb(args.chunk_mb)
    with open_data(args.data) as src:
        axes = resolve_axes(args.axis if args.axis is not None else 0, src)
        if args.plot is not None:
            _check_not_input(args.plot, src, "--plot")
            _check_writable_dir(args.plot, "--plot")
            try:
                import matplotlib  # noqa: F401  (checked before the pass)
            except ImportError:
                raise CliError("--plot needs matplotlib: pip install 'bnfast[plot]'") from None
        report = diagnose_file(src, axes, chunk_bytes=chunk_bytes, progress=args.progress)
    print(f"{src.describe()}; axis {axes}")
    print(report)
    if args.plot is not None:
        try:
            report.plot(args.plot)
        except ImportError as exc:
            raise CliError(f"--plot: {_one_line(exc)}") from None
        print(f"plot written to {args.plot}")
    return 0


_COMMANDS = {"stats": _cmd_stats, "normalize": _cmd_normalize, "diagnose": _cmd_diagnose}


@contextmanager
def _exit_on_termination():
    """SIGTERM and SIGHUP (timeout, kill, a closed terminal, batch schedulers)
    raise SystemExit, so normalize's cleanup removes its temporary file as it
    does for Ctrl-C. (SIGKILL cannot be caught: a hidden temp file may stay.)"""
    import signal

    def stop(signum, frame):
        raise SystemExit(128 + signum)

    previous = {}
    for name in ("SIGTERM", "SIGHUP"):
        sig = getattr(signal, name, None)
        if sig is None:
            continue
        try:
            previous[sig] = signal.signal(sig, stop)
        except (ValueError, OSError):  # not the main thread, or unsupported
            pass
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run(args) -> int:
    """Run a data subcommand; errors in files or arguments -> one stderr line, 1."""
    try:
        with _exit_on_termination():
            return _COMMANDS[args.command](args)
    except CliError as exc:
        return _error(_one_line(exc))
    except BrokenPipeError:  # stdout closed early (`... | head`): stop quietly
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, AttributeError, ValueError):
            pass
        return 1
    except OSError as exc:
        if exc.filename is not None and exc.strerror:
            return _error(f"{exc.filename}: {exc.strerror}")
        return _error(_one_line(exc))
    except KeyboardInterrupt:
        print("bnfast: interrupted", file=sys.stderr)
        return 130


def _error(message: str) -> int:
    sys.stdout.flush()
    print(f"bnfast: error: {message}", file=sys.stderr)
    return 1


def main_stats(argv=None) -> int:
    """``python -m bnfast stats ARGS``; ``argv`` excludes the subcommand."""
    return _main("stats", argv)


def main_normalize(argv=None) -> int:
    """``python -m bnfast normalize ARGS``; ``argv`` excludes the subcommand."""
    return _main("normalize", argv)


def main_diagnose(argv=None) -> int:
    """``python -m bnfast diagnose ARGS``; ``argv`` excludes the subcommand."""
    return _main("diagnose", argv)


def _main(command, argv) -> int:
    from .__main__ import main

    return main([command] + list(sys.argv[1:] if argv is None else argv))
