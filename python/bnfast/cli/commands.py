"""The data commands of ``python -m bnfast``: ``stats``, ``normalize``, ``diagnose``.

Each makes one pass (two for ``normalize`` without ``--stats``) over a data
file read in chunks (:mod:`bnfast.cli.datafiles`) through the library's
public streaming API: ``Standardizer.partial_fit``/``transform`` and the
accumulator behind :func:`bnfast.diagnose`. ``fit_file``,
``normalize_file`` and ``diagnose_file`` are usable from Python too.
Errors in files or arguments raise :class:`~bnfast.cli.errors.CliError`.
"""

from __future__ import annotations

import argparse
import math
import os
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from .._diagnose import DataReport, DiagnoseAccumulator
from .._standardize import Standardizer
from .._standardize_io import saved_name
from .._standardize_rules import check_output_dtype, result_dtype
from .._table import feature_table
from .args import (
    DEFAULT_CHUNK_MB,
    Shaped,
    axis_param,
    check_not_input,
    check_writable_dir,
    chunk_bytes_from_mb,
    feature_shape,
    resolve_axes,
    same_file,
)
from .datafiles import (
    DataSource,
    MiB,
    atomic_npy_writer,
    check_regular_input,
    open_data,
    rows_per_chunk,
)
from .errors import CliError, library_errors, one_line
from .progress import progress as progress_bar

_CHUNK_BYTES = int(DEFAULT_CHUNK_MB * MiB)


class FileStats:
    """Result of :func:`fit_file`: the fitted ``standardizer`` and, per
    feature, ``nan_count``, ``min`` and ``max`` (float64, over non-NaN values)."""

    def __init__(
        self,
        standardizer: Standardizer,
        nan_count: NDArray[np.int64] | None,
        minimum: NDArray[np.float64] | None,
        maximum: NDArray[np.float64] | None,
    ) -> None:
        self.standardizer = standardizer
        self.nan_count = nan_count
        self.min = minimum
        self.max = maximum


def _check_has_data(src: DataSource, what: str) -> None:
    if math.prod(src.shape) == 0:
        raise CliError(f"{src.label}: no values to {what} (shape {src.shape})")


def fit_file(
    src: DataSource,
    axes: tuple[int, ...],
    *,
    nan_policy: Literal["omit", "propagate", "raise"] = "omit",
    chunk_bytes: int = _CHUNK_BYTES,
    progress: bool = False,
    extremes: bool = True,
) -> FileStats:
    """One pass over ``src``: ``Standardizer.partial_fit`` per chunk (and
    per-feature NaN count, min and max when ``extremes``)."""
    _check_has_data(src, "fit")
    st = Standardizer(axis=axis_param(axes), nan_policy=nan_policy)
    rows = rows_per_chunk(chunk_bytes, src.row_bytes, src.label)
    lo = hi = nans = None
    floating = src.dtype.kind == "f"
    with progress_bar(src.nbytes, "fit", progress) as bar:
        for chunk in src.chunks(rows):
            with library_errors(src.label):
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
    if not extremes:
        return FileStats(st, None, None, None)
    fshape = feature_shape(src.shape, axes)
    return FileStats(
        st,
        np.zeros(fshape, np.int64) if nans is None else np.asarray(nans, np.int64).reshape(fshape),
        np.asarray(lo, np.float64).reshape(fshape),
        np.asarray(hi, np.float64).reshape(fshape),
    )


def diagnose_file(
    src: DataSource,
    axes: tuple[int, ...],
    *,
    chunk_bytes: int = _CHUNK_BYTES,
    progress: bool = False,
) -> DataReport:
    """One pass over ``src`` through ``DiagnoseAccumulator`` -> ``DataReport``."""
    _check_has_data(src, "diagnose")
    with library_errors(src.label):
        acc = DiagnoseAccumulator(axis_param(axes))
    rows = rows_per_chunk(chunk_bytes, src.row_bytes, src.label)
    with progress_bar(src.nbytes, "diagnose", progress) as bar:
        for chunk in src.chunks(rows):
            with library_errors(src.label):
                acc.update(chunk)
            bar.update(chunk.shape[0] * src.row_bytes)
    with library_errors(src.label):
        return acc.report()


def normalize_file(
    src: DataSource,
    out: str,
    standardizer: Standardizer,
    axes: tuple[int, ...],
    *,
    chunk_bytes: int = _CHUNK_BYTES,
    progress: bool = False,
) -> None:
    """Write ``standardizer.transform(X)`` of the whole of ``src`` to the .npy
    file ``out`` (a temporary file in ``out``'s directory, renamed when complete)."""
    _check_feature_shape(standardizer, src, axes)
    requested = check_output_dtype(standardizer.dtype)
    # what transform returns
    out_dtype = result_dtype(src.native_dtype) if requested is None else requested
    out_row_bytes = src.row_elems * out_dtype.itemsize
    rows = rows_per_chunk(chunk_bytes, max(src.row_bytes, out_row_bytes), src.label)
    with atomic_npy_writer(out, src.shape, out_dtype) as f:
        buf = np.empty((min(rows, src.n_rows),) + src.shape[1:], out_dtype)
        with progress_bar(src.nbytes, "normalize", progress) as bar:
            for chunk in src.chunks(rows):
                k = chunk.shape[0]
                with library_errors(src.label):
                    y = standardizer.transform(chunk, out=buf[:k])
                if y.dtype != out_dtype or y.shape != chunk.shape:
                    raise RuntimeError(
                        f"transform returned {y.dtype} {y.shape}, expected "
                        f"{out_dtype} {chunk.shape}"
                    )
                # (bytes: a buffer of a dtype the buffer protocol lacks, bfloat16, fails)
                f.write(np.ascontiguousarray(y).view(np.uint8).data)
                bar.update(k * src.row_bytes)


def _stats_axes(st: Standardizer, src: Shaped, stats_path: str) -> tuple[int, ...]:
    """The axes the statistics were fitted over (not the current parameter,
    which may have been changed after the fit); all axes for a global fit."""
    fitted = st.sample_axes_ if st.feature_shape_ else None
    return resolve_axes(fitted, src, option=f"the axis of {stats_path}:")


def _check_feature_shape(st: Standardizer, src: Shaped, axes: tuple[int, ...]) -> None:
    fshape = feature_shape(src.shape, axes)
    fitted = tuple(st.feature_shape_)
    if fitted != fshape:
        raise CliError(
            f"{src.label}: the data has feature shape {fshape} (shape {src.shape}, "
            f"axis {axes}) but the statistics were fitted with feature shape {fitted}"
        )


def load_stats(args: argparse.Namespace, src: Shaped) -> tuple[Standardizer, tuple[int, ...]]:
    """``normalize --stats``, for file and Dask input alike: the statistics
    file checked and loaded, its axes checked against ``--axis`` and its
    feature shape against the data's."""
    if os.path.isdir(args.stats):
        raise CliError(f"--stats {args.stats}: is a directory")
    stats_file = args.stats
    if not os.path.exists(stats_file) and os.path.exists(saved_name(stats_file)):
        stats_file = saved_name(stats_file)  # as Standardizer.load finds it
    if os.path.exists(stats_file):
        check_regular_input(stats_file, f"--stats {stats_file}")
    with library_errors("--stats"):
        st = Standardizer.load(args.stats)
    axes = _stats_axes(st, src, args.stats)
    if args.axis is not None:
        given = resolve_axes(args.axis, src)
        if given != axes:
            raise CliError(
                f"--axis {given} differs from the axis {axes} the statistics "
                f"in {args.stats} were fitted with"
            )
    _check_feature_shape(st, src, axes)
    return st, axes


def set_output_dtype(st: Standardizer, dtype: str | None) -> None:
    """``normalize --dtype``: the output dtype (None: the default rule)."""
    with library_errors("--dtype"):
        st.set_params(dtype=dtype)
        check_output_dtype(st.dtype)


# ---------------------------------------------------------------------------
# the subcommands (args: the namespace of bnfast.cli.args.build_parser)
# ---------------------------------------------------------------------------
def cmd_stats(args: argparse.Namespace) -> int:
    chunk_bytes = chunk_bytes_from_mb(args.chunk_mb)
    with open_data(args.data) as src:
        axes = resolve_axes(args.axis if args.axis is not None else 0, src)
        if args.out is not None:
            check_not_input(args.out, src, "--out")
            if not args.out.endswith(".npz"):  # np.savez appends .npz
                check_not_input(args.out + ".npz", src, "--out")
            check_writable_dir(saved_name(args.out), "--out")
        res = fit_file(
            src, axes, nan_policy=args.nan_policy, chunk_bytes=chunk_bytes, progress=args.progress
        )
    st, nans, lo, hi = res.standardizer, res.nan_count, res.min, res.max
    assert nans is not None and lo is not None and hi is not None  # extremes=True
    fshape = tuple(st.feature_shape_)
    count = np.broadcast_to(np.asarray(st.n_samples_seen_), fshape)
    std = np.sqrt(np.asarray(st.var_, np.float64))
    print(f"{src.describe()}; axis {axes}; {math.prod(fshape)} feature(s) of shape {fshape}")
    print(
        feature_table(
            fshape,
            [
                ("count", count),
                ("nan", nans),
                ("mean", np.asarray(st.mean_)),
                ("std", std),
                ("min", lo),
                ("max", hi),
            ],
            whole="all",
        )
    )
    if args.out is not None:
        with library_errors(args.out):
            st.save(args.out)
        written = args.out if args.out.endswith(".npz") else args.out + ".npz"
        print(f"statistics saved to {written}")
    return 0


def cmd_normalize(args: argparse.Namespace) -> int:
    chunk_bytes = chunk_bytes_from_mb(args.chunk_mb)
    out = args.out
    with open_data(args.data) as src:
        check_not_input(out, src, "output")
        if os.path.isdir(out):
            raise CliError(f"output {out} is a directory")
        # before a fitting pass, not after it; FIFOs and devices even with --force
        check_writable_dir(out, "output")
        if os.path.lexists(out) and not args.force:
            raise CliError(f"output {out} exists; use --force to replace it")
        if args.stats is not None:
            if os.path.lexists(out) and same_file(out, args.stats):
                raise CliError(f"output {out} is the --stats file")
            st, axes = load_stats(args, src)
        else:
            axes = resolve_axes(args.axis if args.axis is not None else 0, src)
            st = fit_file(
                src,
                axes,
                nan_policy=args.nan_policy,
                chunk_bytes=chunk_bytes,
                progress=args.progress,
                extremes=False,
            ).standardizer
        set_output_dtype(st, args.dtype)
        normalize_file(src, out, st, axes, chunk_bytes=chunk_bytes, progress=args.progress)
    return 0


def cmd_diagnose(args: argparse.Namespace) -> int:
    chunk_bytes = chunk_bytes_from_mb(args.chunk_mb)
    with open_data(args.data) as src:
        axes = resolve_axes(args.axis if args.axis is not None else 0, src)
        if args.plot is not None:
            check_not_input(args.plot, src, "--plot")
            check_writable_dir(args.plot, "--plot")
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
            raise CliError(f"--plot: {one_line(exc)}") from None
        print(f"plot written to {args.plot}")
    return 0


COMMANDS = {"stats": cmd_stats, "normalize": cmd_normalize, "diagnose": cmd_diagnose}
