"""Zarr arrays (``DATA.zarr``, Zarr format 3) for the data commands, and
.npy files read as Dask arrays.

Readers give a ``dask.array.Array`` cut into whole rows along axis 0
(about ``--chunk-mb`` each, a whole number of the store's own chunks);
:func:`atomic_zarr_store` writes a Zarr array into a temporary store in the
output's directory and renames it into place only when complete. zarr and
dask are imported only here, when a command needs them.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from .errors import CliError


def is_zarr(arg: str) -> bool:
    """``arg`` names a Zarr store: ends with ``.zarr`` or is a directory
    holding ``zarr.json``."""
    path = arg.rstrip("/" + os.sep)
    return path.lower().endswith(".zarr") or os.path.isfile(os.path.join(path, "zarr.json"))


def _need(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise CliError(
            f"this command needs {module.split('.')[0]}: pip install 'bnfast[dask]' zarr"
        ) from None


def _rows_chunk(shape: tuple[int, ...], itemsize: int, chunk_bytes: int, multiple: int = 1) -> int:
    row_bytes = max(1, math.prod(shape[1:]) * itemsize)
    rows = max(1, chunk_bytes // row_bytes)
    rows = max(multiple, rows // multiple * multiple)
    return min(rows, max(1, shape[0]))


def _check(label: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
    if len(shape) == 0:
        raise CliError(f"{label}: a 0-d array; expected at least one dimension")
    if dtype.kind not in "biuf":
        raise CliError(f"{label}: dtype {dtype} is not a real number type")


def open_zarr_array(path: str, chunk_bytes: int) -> Any:
    """The Zarr array at ``path`` as a dask array of whole-row chunks."""
    zarr = _need("zarr")
    da = _need("dask.array")
    if not os.path.exists(path):
        raise CliError(f"{path}: no such file or directory")
    try:
        z = zarr.open_array(path, mode="r")
    except Exception as exc:  # zarr raises several types for "not an array"
        raise CliError(f"{path}: not a Zarr array ({type(exc).__name__}: {exc})") from None
    _check(path, z.shape, np.dtype(z.dtype))
    rows = _rows_chunk(z.shape, np.dtype(z.dtype).itemsize, chunk_bytes, z.chunks[0])
    return da.from_zarr(z, chunks=(rows,) + tuple(z.shape[1:]))


def _read_rows(path: str, start: int, stop: int) -> np.ndarray:
    return np.array(np.load(path, mmap_mode="r")[start:stop])


def open_npy_array(path: str, shape: tuple[int, ...], dtype: np.dtype, chunk_bytes: int) -> Any:
    """A (validated) .npy file as a dask array whose tasks read their rows
    from the file themselves (nothing but the path travels to workers)."""
    dask = _need("dask")
    da = _need("dask.array")
    rows = _rows_chunk(shape, dtype.itemsize, chunk_bytes)
    blocks = [
        da.from_delayed(
            dask.delayed(_read_rows)(os.path.abspath(path), start, min(start + rows, shape[0])),
            shape=(min(start + rows, shape[0]) - start,) + shape[1:],
            dtype=dtype,
        )
        for start in range(0, shape[0], rows)
    ]
    return da.concatenate(blocks, axis=0)


@contextmanager
def atomic_zarr_store(out: str, force: bool) -> Iterator[str]:
    """Yield the path of a temporary store in ``out``'s directory; on
    success rename it to ``out`` (replacing an existing store only with
    ``force``), on failure remove it."""
    out = out.rstrip("/" + os.sep)
    directory = os.path.dirname(os.path.abspath(out))
    name = os.path.basename(out)
    if os.path.lexists(out) and not force:
        raise CliError(f"output {out} exists; use --force to replace it")
    tmp = tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # a store as `mkdir` would make it, not 0700
    try:
        yield tmp
        old = None
        if os.path.lexists(out):
            if not force:
                raise CliError(f"output {out} appeared while writing; use --force to replace it")
            old = tempfile.mkdtemp(prefix=f".{name}.", suffix=".old", dir=directory)
            os.rename(out, os.path.join(old, name))
        os.rename(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
