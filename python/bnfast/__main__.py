"""Command line: ``python -m bnfast {bench,config}``."""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bnfast", description=__doc__)
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
    args = parser.parse_args(argv)

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
