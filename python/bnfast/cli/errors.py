"""How the command line reports a user's mistake: :class:`CliError`, printed
by :func:`bnfast.cli.main` as one line ``bnfast: error: ...`` with exit code 1."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class CliError(Exception):
    """An error in the user's files or arguments (one line on stderr, exit 1)."""


def one_line(exc: object) -> str:
    """The message of ``exc`` on one line (its type name if it has none)."""
    return " ".join(str(exc).split()) or type(exc).__name__


@contextmanager
def library_errors(label: str) -> Iterator[None]:
    """ValueError/TypeError raised by the library on the user's data -> CliError."""
    try:
        yield
    except (ValueError, TypeError) as exc:
        raise CliError(f"{label}: {one_line(exc)}") from exc
