"""Command line: ``python -m bnfast {bench,config,stats,normalize,diagnose}``."""

from __future__ import annotations

import argparse
import sys

DATA_COMMANDS = ("stats", "normalize", "diagnose")
DATA_HELP = ("a .npy file, or FILE.npz:MEMBER (MEMBER may be omitted when the archive "
             "holds one array); read in chunks of rows through a memory map")


def _axis_list(text: str) -> tuple:
    """``--axis 0,2,3`` -> (0, 2, 3) (range and 'includes 0' are checked later)."""
    try:
        axes = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers such as 0 or 0,2,3, got {text!r}") from None
    return axes


def _add_data_options(p, *, axis_help: str) -> None:
    p.add_argument("data", metavar="DATA", help=DATA_HELP)
    p.add_argument("--axis", type=_axis_list, default=None, metavar="AXES",
                   help=axis_help)
    p.add_argument("--chunk-mb", type=float, default=64.0, metavar="N",
                   help="MiB of data read per chunk (whole samples along axis 0); memory "
                        "use is a few times this (default 64; fractions allowed)")
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bar (shown on stderr for runs longer than a second)")


_AXIS_HELP = ("comma-separated axes reduced over (the sample axes), must include 0; "
              "default 0. NCHW channels: 0,2,3")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bnfast",
        description="bnfast command line: benchmarks, configuration, and statistics, "
                    "standardization and diagnosis of .npy data files read in chunks.")
    sub = parser.add_subparsers(dest="command", required=True)
    bench = sub.add_parser("bench", help="self-check, then time bnfast against NumPy")
    bench.add_argument("--quick", action="store_true", help="small arrays, few repeats")
    bench.add_argument("--threads", type=int, default=None, help="threads for bnfast")
    bench.add_argument("--json", metavar="PATH", default=None, help="also write results as JSON")
    bench.add_argument("--plot", metavar="PNG", default=None,
                       help="also write a bar chart (needs matplotlib)")
    bench.add_argument("--no-peers", action="store_true",
                       help="skip the PyTorch peers (they run in a child process)")
    sub.add_parser("config", help="print the build and runtime configuration")

    stats = sub.add_parser("stats", help="per-feature count/mean/std/min/max of a data file")
    _add_data_options(stats, axis_help=_AXIS_HELP)
    stats.add_argument("--out", metavar="STATS.npz", default=None,
                       help="save the fitted Standardizer (bnfast.Standardizer.load reads it)")
    stats.add_argument("--nan-policy", choices=("omit", "propagate", "raise"), default="omit",
                       help="NaN handling of the fit (default omit)")

    normalize = sub.add_parser("normalize", help="write the standardized data to a .npy file")
    _add_data_options(normalize, axis_help=_AXIS_HELP + " (or the axis of --stats)")
    normalize.add_argument("out", metavar="OUT.npy", help="output .npy file")
    normalize.add_argument("--stats", metavar="STATS.npz", default=None,
                           help="statistics saved by `stats --out` (else fitted on DATA first)")
    normalize.add_argument("--nan-policy", choices=("omit", "propagate", "raise"),
                           default="omit", help="NaN handling of the fit (default omit)")
    normalize.add_argument("--force", action="store_true", help="replace an existing OUT")

    diagnose = sub.add_parser("diagnose", help="report on a data file (NaN, scales, constants ...)")
    _add_data_options(diagnose, axis_help=_AXIS_HELP)
    diagnose.add_argument("--plot", metavar="PNG", default=None,
                          help="also write a PNG of per-feature mean and std (needs matplotlib)")
    args = parser.parse_args(argv)

    if args.command in DATA_COMMANDS:
        from . import _cli_data

        return _cli_data.run(args)
    if args.command == "config":
        import bnfast

        bnfast.show_config()
        return 0
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be >= 1")
    from . import _bench

    return _bench.run(quick=args.quick, threads=args.threads, json_path=args.json,
                      plot_path=args.plot, peers=not args.no_peers)


if __name__ == "__main__":
    sys.exit(main())
