"""The command line's arguments: the parser of ``python -m bnfast`` and the
checks of the values it cannot judge alone (axes against the data, output
paths)."""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from .._files import special_file_kind
from .._version import __version__
from .datafiles import DataSource, MiB
from .errors import CliError

DATA_COMMANDS = ("stats", "normalize", "diagnose")
DEFAULT_CHUNK_MB = 64.0
DATA_HELP = (
    "a .npy file, or FILE.npz:MEMBER (MEMBER may be omitted when the archive "
    "holds one array); read in chunks of rows through a memory map; or a Zarr "
    "array DATA.zarr (zarr v3), processed on Dask"
)
_AXIS_HELP = (
    "comma-separated axes reduced over (the sample axes), must include 0; "
    "default 0. NCHW channels: 0,2,3"
)


# ---------------------------------------------------------------------------
# parsing
# ---------------------------------------------------------------------------
def _axis_list(text: str) -> tuple[int, ...]:
    """``--axis 0,2,3`` -> (0, 2, 3) (range and 'includes 0' are checked later)."""
    try:
        axes = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers such as 0 or 0,2,3, got {text!r}"
        ) from None
    return axes


def _add_data_options(p: argparse.ArgumentParser, *, axis_help: str) -> None:
    p.add_argument("data", metavar="DATA", help=DATA_HELP)
    p.add_argument("--axis", type=_axis_list, default=None, metavar="AXES", help=axis_help)
    p.add_argument(
        "--chunk-mb",
        type=float,
        default=DEFAULT_CHUNK_MB,
        metavar="N",
        help="MiB of data read per chunk (whole samples along axis 0); memory "
        "use is a few times this (default 64; fractions allowed)",
    )
    p.add_argument(
        "--scheduler",
        default=None,
        metavar="WHERE",
        help="run on Dask: threads (this process; the default for Zarr data), processes "
        "(a local cluster of worker processes) or the address of a dask scheduler "
        "(tcp://host:8786); needs bnfast[dask]",
    )
    p.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        help="no progress bar (shown on stderr for runs longer than a second)",
    )


def _prog() -> str:
    """``bnfast`` when run as the console script, else ``python -m bnfast``."""
    script = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return "bnfast" if script in ("bnfast", "bnfast.exe") else "python -m bnfast"


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m bnfast`` and all its subcommands."""
    parser = argparse.ArgumentParser(
        prog=_prog(),
        description="bnfast command line: benchmarks, configuration, and statistics, "
        "standardization and diagnosis of .npy data files read in chunks.",
    )
    parser.add_argument("--version", action="version", version=f"bnfast {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    bench = sub.add_parser("bench", help="self-check, then time bnfast against NumPy")
    bench.add_argument("--quick", action="store_true", help="small arrays, few repeats")
    bench.add_argument("--threads", type=int, default=None, help="threads for bnfast")
    bench.add_argument("--json", metavar="PATH", default=None, help="also write results as JSON")
    bench.add_argument(
        "--plot", metavar="PNG", default=None, help="also write a bar chart (needs matplotlib)"
    )
    bench.add_argument(
        "--no-peers",
        action="store_true",
        help="skip the PyTorch peers (they run in a child process)",
    )
    bench.add_argument(
        "--neighbour",
        choices=("none", "spin", "bnfast"),
        default=None,
        help="instead of the table: time calls at the default thread count "
        "against 1 thread while a busy process (a spin loop or bnfast in "
        "a loop; none = quiet) shares the machine",
    )
    bench.add_argument(
        "--calls",
        type=int,
        default=100,
        help="calls per case and thread count for --neighbour (default 100)",
    )
    sub.add_parser("config", help="print the build and runtime configuration")

    stats = sub.add_parser("stats", help="per-feature count/mean/std/min/max of a data file")
    _add_data_options(stats, axis_help=_AXIS_HELP)
    stats.add_argument(
        "--out",
        metavar="STATS.npz",
        default=None,
        help="save the fitted Standardizer (bnfast.Standardizer.load reads it)",
    )
    stats.add_argument(
        "--nan-policy",
        choices=("omit", "propagate", "raise"),
        default="omit",
        help="NaN handling of the fit (default omit)",
    )

    normalize = sub.add_parser("normalize", help="write the standardized data to a .npy file")
    _add_data_options(normalize, axis_help=_AXIS_HELP + " (or the axis of --stats)")
    normalize.add_argument("out", metavar="OUT.npy", help="output .npy file")
    normalize.add_argument(
        "--stats",
        metavar="STATS.npz",
        default=None,
        help="statistics saved by `stats --out` (else fitted on DATA first)",
    )
    normalize.add_argument(
        "--nan-policy",
        choices=("omit", "propagate", "raise"),
        default="omit",
        help="NaN handling of the fit (default omit)",
    )
    normalize.add_argument(
        "--dtype",
        choices=("float32", "float64", "float16", "bfloat16"),
        default=None,
        help="dtype of OUT (default: float32 for float32 data, else float64); "
        "bfloat16 needs ml_dtypes and is stored in the .npy as 2-byte void '<V2' "
        "(read it back with .view(ml_dtypes.bfloat16))",
    )
    normalize.add_argument("--force", action="store_true", help="replace an existing OUT")

    diagnose = sub.add_parser("diagnose", help="report on a data file (NaN, scales, constants ...)")
    _add_data_options(diagnose, axis_help=_AXIS_HELP)
    diagnose.add_argument(
        "--plot",
        metavar="PNG",
        default=None,
        help="also write a PNG of per-feature mean and std (needs matplotlib)",
    )
    return parser


# ---------------------------------------------------------------------------
# checks against the data
# ---------------------------------------------------------------------------
class Shaped(Protocol):
    """What the axis checks need of an input: a file's DataSource or the
    Dask command's array."""

    label: str
    shape: tuple[int, ...]


def resolve_axes(
    axis: int | Sequence[int] | None, src: Shaped, option: str = "--axis"
) -> tuple[int, ...]:
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
            raise CliError(
                f"{option} {given}: axis {a} is out of range for the {ndim}-d data "
                f"{src.label} (shape {src.shape})"
            )
        axes.append(int(a) % ndim)
    if len(set(axes)) != len(axes):
        raise CliError(f"{option} {given}: repeated axis")
    if 0 not in axes:
        raise CliError(
            f"{option} {given}: the axes must include 0 (the file is read in "
            f"chunks of rows along axis 0)"
        )
    return tuple(sorted(axes))


def axis_param(axes: tuple[int, ...]) -> int | tuple[int, ...]:
    """The ``axis`` argument of the library for resolved ``axes``."""
    return 0 if axes == (0,) else axes


def feature_shape(shape: tuple[int, ...], axes: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(s for i, s in enumerate(shape) if i not in axes)


def chunk_bytes_from_mb(chunk_mb: float | None) -> int:
    if chunk_mb is None:
        chunk_mb = DEFAULT_CHUNK_MB
    if not (isinstance(chunk_mb, (int, float)) and math.isfinite(chunk_mb) and chunk_mb > 0):
        raise CliError(f"--chunk-mb must be a positive number, got {chunk_mb}")
    return max(1, int(chunk_mb * MiB))


def same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def check_not_input(out: str, src: DataSource, what: str) -> None:
    if same_file(out, src.path):
        raise CliError(f"{what} {out} is the input file {src.path}; refusing to overwrite it")


def check_writable_dir(path: str, what: str) -> None:
    """Fail early (before a pass over the data) if ``path`` cannot be created
    or replaced: a missing or read-only directory, or an existing FIFO,
    device, socket or directory at ``path`` (``--force`` included: bnfast
    only replaces regular files)."""
    kind = special_file_kind(path)
    if kind is not None:
        raise CliError(f"{what} {path} is {kind}, not a regular file; choose another path")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise CliError(f"{what} directory {directory}: no such directory")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise CliError(f"{what} directory {directory}: permission denied")
