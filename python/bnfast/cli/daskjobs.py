"""``stats``, ``normalize`` and ``diagnose`` on Dask: for Zarr data
(``DATA.zarr``) and whenever ``--scheduler`` is given.

``--scheduler threads`` (the default for Zarr data) runs the job on dask's
threaded scheduler in this process; ``processes`` starts a
``distributed.LocalCluster`` of worker processes (one thread each, as many
as the usable cores); anything else is the address of a running dask
scheduler (``tcp://host:8786``). The data is read in chunks of whole rows of
about ``--chunk-mb``; ``normalize`` writes a Zarr array (``OUT.zarr``) into a
temporary store renamed into place when complete. The statistics are the
library's (:mod:`bnfast._dask`): a tree of exact Chan merges of per-chunk
moments, so they equal the in-memory ones.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import zipfile
from collections.abc import Iterator
from typing import Any

import numpy as np

from .._standardize import Standardizer
from .._table import feature_table
from .args import axis_param, check_writable_dir, chunk_bytes_from_mb, same_file
from .commands import load_stats, set_output_dtype
from .errors import CliError, library_errors, one_line
from .zarrfiles import atomic_zarr_store, is_zarr, open_npy_array, open_zarr_array


def wants_dask(args: argparse.Namespace) -> bool:
    """Run this data command on Dask: Zarr input or output, or ``--scheduler``."""
    out = getattr(args, "out", None)
    return (
        getattr(args, "scheduler", None) is not None
        or is_zarr(args.data)
        or (args.command == "normalize" and out is not None and is_zarr(out))
    )


class _Data:
    """The input as a dask array, with what the messages need."""

    def __init__(self, arg: str, chunk_bytes: int) -> None:
        self.label = arg
        if is_zarr(arg):
            self.path = arg.rstrip("/" + os.sep)
            self.array = open_zarr_array(self.path, chunk_bytes)
            kind = "Zarr array"
        else:
            from .datafiles import open_data

            with open_data(arg) as src:  # validates the file
                self.path = src.path
                shape, dtype = tuple(src.shape), np.dtype(src.dtype)
            if zipfile.is_zipfile(self.path):
                raise CliError(
                    f"{arg}: .npz archives are not read on Dask; save the array as .npy or .zarr"
                )
            self.array = open_npy_array(self.path, shape, dtype, chunk_bytes)
            kind = ".npy array"
        self.shape = tuple(self.array.shape)
        self.dtype = self.array.dtype
        self.kind = kind

    def describe(self) -> str:
        return (
            f"{self.label}: {self.kind} of shape {self.shape}, dtype {self.dtype}, "
            f"{self.array.numblocks[0]} chunk(s) of rows"
        )


def _axes(axis: Any, shape: tuple[int, ...], option: str = "--axis") -> tuple[int, ...]:
    ndim = len(shape)
    if axis is None:
        return tuple(range(ndim))
    items = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    axes = []
    for a in items:
        if not -ndim <= a < ndim:
            raise CliError(f"{option}: axis {a} is out of range for {ndim}-d data {shape}")
        axes.append(int(a) % ndim)
    if len(set(axes)) != len(axes):
        raise CliError(f"{option}: repeated axis")
    if 0 not in axes:
        raise CliError(f"{option}: the axes must include 0 (the data is cut into rows)")
    return tuple(sorted(axes))


@contextlib.contextmanager
def _scheduler(name: str | None) -> Iterator[Any]:
    """Where the job runs: yields a distributed Client or None (local)."""
    import dask

    if name is None or name == "threads":
        with dask.config.set(scheduler="threads"):
            yield None
        return
    try:
        import distributed
    except ImportError:
        raise CliError(
            f"--scheduler {name} needs distributed: pip install 'bnfast[dask]'"
        ) from None
    if name == "processes":
        from .._threads import affinity_cores

        workers = affinity_cores()
        with (
            distributed.LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                memory_limit="auto",
            ) as cluster,
            distributed.Client(cluster) as client,
        ):
            yield client
        return
    try:
        client = distributed.Client(name, timeout=30)
    except (OSError, TimeoutError, ValueError) as exc:
        raise CliError(f"--scheduler {name}: cannot connect ({one_line(exc)})") from None
    with client:
        yield client


def _compute(client: Any, progress: bool, *collections: Any) -> list[Any]:
    """Compute ``collections`` (one pass), with a progress display on stderr."""
    import dask

    if client is None:
        if not progress:
            return list(dask.compute(*collections))
        from dask.diagnostics import ProgressBar

        with ProgressBar(minimum=1.0, out=sys.stderr):
            return list(dask.compute(*collections))
    futures = client.compute(list(collections))
    if progress:
        from distributed.diagnostics.progressbar import progress as progress_bar

        with contextlib.redirect_stdout(sys.stderr):
            progress_bar(futures, notebook=False)
        print(file=sys.stderr)
    return list(client.gather(futures))


def _fit(
    data: _Data, axes: tuple[int, ...], nan_policy: str, client: Any, progress: bool, extremes: bool
) -> tuple[Standardizer, list[Any]]:
    import dask.array as da

    from .. import _dask

    x = data.array
    st = Standardizer(axis=axis_param(axes), nan_policy=nan_policy)  # type: ignore[call-overload]
    extra = []
    if extremes:
        extra = [da.nanmin(x, axis=axes), da.nanmax(x, axis=axes)]
        if x.dtype.kind == "f":
            extra.append(da.isnan(x).sum(axis=axes))
    # One pass computes the moments and the extremes together.
    with library_errors(data.label), _computing(client, progress):
        st, values = _dask.fit_with(st, x, None, True, extra)
    return st, values


@contextlib.contextmanager
def _computing(client: Any, progress: bool) -> Iterator[None]:
    """The library's computations inside the block go through :func:`_compute`."""
    from .. import _dask

    with _dask.compute_with(lambda *c: _compute(client, progress, *c)):
        yield


def dask_stats(args: argparse.Namespace) -> int:
    chunk_bytes = chunk_bytes_from_mb(args.chunk_mb)
    data = _Data(args.data, chunk_bytes)
    axes = _axes(args.axis if args.axis is not None else 0, data.shape)
    if args.out is not None:
        check_writable_dir(args.out, "--out")
    with _scheduler(args.scheduler) as client:
        st, values = _fit(data, axes, args.nan_policy, client, args.progress, True)
    fshape = tuple(st.feature_shape_)
    lo, hi = (np.asarray(v, np.float64).reshape(fshape) for v in values[:2])
    nans = (
        np.asarray(values[2], np.int64).reshape(fshape)
        if len(values) > 2
        else np.zeros(fshape, np.int64)
    )
    count = np.broadcast_to(np.asarray(st.n_samples_seen_), fshape)
    print(f"{data.describe()}; axis {axes}; {math.prod(fshape)} feature(s) of shape {fshape}")
    columns = [
        ("count", count),
        ("nan", nans),
        ("mean", np.asarray(st.mean_)),
        ("std", np.sqrt(np.asarray(st.var_, np.float64))),
        ("min", lo),
        ("max", hi),
    ]
    print(feature_table(fshape, columns, whole="all"))
    if args.out is not None:
        with library_errors(args.out):
            st.save(args.out)
        written = args.out if args.out.endswith(".npz") else args.out + ".npz"
        print(f"statistics saved to {written}")
    return 0


def dask_normalize(args: argparse.Namespace) -> int:
    import dask.array as da

    chunk_bytes = chunk_bytes_from_mb(args.chunk_mb)
    out = args.out.rstrip("/" + os.sep)
    if not is_zarr(out):
        raise CliError(
            f"output {out}: on Dask (Zarr input or --scheduler) normalize writes a Zarr "
            f"array; name the output OUT.zarr"
        )
    data = _Data(args.data, chunk_bytes)
    if os.path.lexists(out) and same_file(out, data.path):
        raise CliError(f"output {out} is the input {data.path}; refusing to overwrite it")
    if os.path.lexists(out) and not args.force:
        raise CliError(f"output {out} exists; use --force to replace it")
    # A Zarr store is a directory: an existing one is replaced (atomically,
    # atomic_zarr_store); anything else at the path is checked as for files.
    is_store = os.path.isdir(out) and os.path.isfile(os.path.join(out, "zarr.json"))
    check_writable_dir(os.path.join(out, "zarr.json") if is_store else out, "output")
    with _scheduler(args.scheduler) as client:
        if args.stats is not None:
            st, axes = load_stats(args, data)
        else:
            axes = _axes(args.axis if args.axis is not None else 0, data.shape)
            st, _ = _fit(data, axes, args.nan_policy, client, args.progress, False)
        set_output_dtype(st, args.dtype)
        with library_errors(data.label):
            y = st.transform(data.array)
        with atomic_zarr_store(out, args.force) as tmp:
            store = da.to_zarr(y, tmp, compute=False, zarr_format=3)
            with library_errors(data.label):
                _compute(client, args.progress, store)
    print(f"wrote {out}: Zarr array of shape {tuple(y.shape)}, dtype {y.dtype}")
    return 0


def dask_diagnose(args: argparse.Namespace) -> int:
    import bnfast

    chunk_bytes = chunk_bytes_from_mb(args.chunk_mb)
    data = _Data(args.data, chunk_bytes)
    axes = _axes(args.axis if args.axis is not None else 0, data.shape)
    if args.plot is not None:
        check_writable_dir(args.plot, "--plot")
    with (
        _scheduler(args.scheduler) as client,
        library_errors(data.label),
        _computing(client, args.progress),
    ):
        report = bnfast.diagnose(data.array, axis=axis_param(axes))
    print(f"{data.describe()}; axis {axes}")
    print(report)
    if args.plot is not None:
        try:
            report.plot(args.plot)
        except ImportError as exc:
            raise CliError(f"--plot: {one_line(exc)}") from None
        print(f"plot written to {args.plot}")
    return 0


DASK_COMMANDS = {"stats": dask_stats, "normalize": dask_normalize, "diagnose": dask_diagnose}
