"""Plain-text tables: the one formatter behind ``DataReport.table``, the
``stats`` command's table and the benchmark table of ``python -m bnfast bench``."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

# Tables with more features than this show the first and last rows only.
MAX_ROWS = 20
GAP = "..."


def format_table(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    align: str,
    *,
    header_align: str | None = None,
    sep: str = "  ",
    rule: str | None = None,
    strip: bool = True,
) -> str:
    """Columns padded to their widest cell.

    ``align`` has one character per column, ``<`` (left) or ``>`` (right);
    ``header_align`` (default ``align``) aligns the header row. ``rule``: a
    separator joining dashes under the header (``"-+-"``), none by default.
    ``strip`` drops trailing blanks of each line.
    """
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]

    def line(cells: Sequence[str], how: str) -> str:
        text = sep.join(
            c.ljust(w) if a == "<" else c.rjust(w) for c, w, a in zip(cells, widths, how)
        )
        return text.rstrip() if strip else text

    lines = [line(header, header_align or align)]
    if rule is not None:
        lines.append(rule.join("-" * w for w in widths))
    lines.extend(line(r, align) for r in rows)
    return "\n".join(lines)


def format_value(v: object) -> str:
    """An integer as is, anything else with 6 significant digits."""
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    return f"{float(v):.6g}"  # type: ignore[arg-type]


def feature_label(feature_shape: tuple[int, ...], flat: int, whole: str = "0") -> str:
    """Name of feature number ``flat`` (C order): the index itself for 1-D
    features, an index tuple such as ``(0, 2)`` for more dimensions, ``whole``
    for the single feature of a reduction over every axis."""
    if feature_shape == ():
        return whole
    if len(feature_shape) == 1:
        return str(flat)
    return str(tuple(int(i) for i in np.unravel_index(flat, feature_shape)))


def shown_rows(n: int, max_rows: int = MAX_ROWS) -> list:
    """Feature numbers to print: all ``n``, or the first and last
    ``max_rows // 2`` with None for the gap between them."""
    if n <= max_rows:
        return list(range(n))
    half = max_rows // 2
    return list(range(half)) + [None] + list(range(n - half, n))


def feature_table(
    feature_shape: tuple[int, ...],
    columns: Sequence[tuple[str, ArrayLike]],
    *,
    flags: Sequence[tuple[str, ArrayLike]] = (),
    max_rows: int = MAX_ROWS,
    whole: str = "0",
) -> str:
    """One row per feature: its label, then ``columns`` (name, values of the
    feature shape), then with ``flags`` (name, boolean array) a ``flags``
    column naming the ones set. More than ``max_rows`` features print as
    head, ``...``, tail."""
    n = math.prod(feature_shape)
    values = [np.asarray(v).reshape(-1) for _, v in columns]
    marks = [(name, np.asarray(on).reshape(-1)) for name, on in flags]
    header = ["feature"] + [name for name, _ in columns] + (["flags"] if flags else [])
    rows = []
    for i in shown_rows(n, max_rows):
        if i is None:
            rows.append([GAP] + [""] * (len(header) - 1))
            continue
        row = [feature_label(feature_shape, i, whole)] + [format_value(v[i]) for v in values]
        if flags:
            row.append(",".join(name for name, on in marks if on[i]))
        rows.append(row)
    align = "<" + ">" * len(columns) + ("<" if flags else "")
    return format_table(header, rows, align)
