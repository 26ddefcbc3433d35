"""``python -m bnfast``: parse the arguments, run the command, turn errors
and termination signals into an exit code."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import FrameType

from .args import DATA_COMMANDS, build_parser
from .errors import CliError, one_line


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``python -m bnfast ARGS`` (``argv`` defaults to ``sys.argv[1:]``);
    returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in DATA_COMMANDS:
        return run_data_command(args)
    if args.command == "config":
        import bnfast

        bnfast.show_config()
        return 0
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be >= 1")
    if args.neighbour is not None:
        if args.calls < 10:
            parser.error("--calls must be >= 10")
        from .bench.neighbour import run as run_neighbour

        return run_neighbour(args.neighbour, calls=args.calls, threads=args.threads)
    from .bench import run

    return run(
        quick=args.quick,
        threads=args.threads,
        json_path=args.json,
        plot_path=args.plot,
        peers=not args.no_peers,
    )


def run_data_command(args: argparse.Namespace) -> int:
    """Run a data subcommand; errors in files or arguments -> one stderr line, 1."""
    from .commands import COMMANDS
    from .daskjobs import DASK_COMMANDS, wants_dask

    try:
        with _exit_on_termination():
            return (DASK_COMMANDS if wants_dask(args) else COMMANDS)[args.command](args)
    except CliError as exc:
        return _error(one_line(exc))
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
        return _error(one_line(exc))
    except KeyboardInterrupt:
        print("bnfast: interrupted", file=sys.stderr)
        return 130


def _error(message: str) -> int:
    sys.stdout.flush()
    print(f"bnfast: error: {message}", file=sys.stderr)
    return 1


@contextmanager
def _exit_on_termination() -> Iterator[None]:
    """SIGTERM and SIGHUP (timeout, kill, a closed terminal, batch schedulers)
    raise SystemExit, so normalize's cleanup removes its temporary file as it
    does for Ctrl-C. (SIGKILL cannot be caught: on Linux the temporary is
    unnamed and vanishes anyway; elsewhere a hidden temp file may stay.)"""

    def stop(signum: int, frame: FrameType | None) -> None:
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


def main_stats(argv: Sequence[str] | None = None) -> int:
    """``python -m bnfast stats ARGS``; ``argv`` excludes the subcommand."""
    return _main("stats", argv)


def main_normalize(argv: Sequence[str] | None = None) -> int:
    """``python -m bnfast normalize ARGS``; ``argv`` excludes the subcommand."""
    return _main("normalize", argv)


def main_diagnose(argv: Sequence[str] | None = None) -> int:
    """``python -m bnfast diagnose ARGS``; ``argv`` excludes the subcommand."""
    return _main("diagnose", argv)


def _main(command: str, argv: Sequence[str] | None) -> int:
    return main([command] + list(sys.argv[1:] if argv is None else argv))
