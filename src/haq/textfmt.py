"""Plain-text tables for the terminal (no dependency on a table library), and haq's progress
bars: how they redraw, and the format of those that name the stage of a multi-stage step."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from tqdm import tqdm

# a tqdm bar_format for steps made of a few named stages: "setup: 2/4 [00:03, clips]"
STAGE_BAR = "{desc}: {n_fmt}/{total_fmt} [{elapsed}{postfix}]"
LOG_REDRAW_S = 30.0  # how often a bar redraws into a log file or a pipe


def progress_bar(iterable: Any = None, **options: Any) -> tqdm:
    """A tqdm bar on stderr. Into a log file or a pipe (not a terminal) it redraws every
    :data:`LOG_REDRAW_S` seconds instead of up to ten times a second, so a long search's log
    holds progress lines, not megabytes of them."""
    if not sys.stderr.isatty():
        options.setdefault("mininterval", LOG_REDRAW_S)
    return tqdm(iterable, **options)


def fmt_num(value: Any, digits: int = 3) -> str:
    """Human-readable number: thousands separators for big integers, fixed decimals else."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    v = float(value)
    if v == int(v) and abs(v) >= 1000:
        return f"{int(v):,}"
    if abs(v) >= 1e6:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}".rstrip("0").rstrip(".") if "." in f"{v:.{digits}f}" else f"{v}"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], align: str | None = None) -> str:
    """A table with a header rule; ``align`` is one char per column, 'l' or 'r'."""
    cells = [[fmt_num(c) if not isinstance(c, str) else c for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, c in enumerate(row):
            widths[i] = max(widths[i], len(c))
    al = align or ("l" + "r" * (len(headers) - 1))

    def line(items: Sequence[str]) -> str:
        return "  ".join(
            s.ljust(w) if a == "l" else s.rjust(w)
            for s, w, a in zip(items, widths, al, strict=False)
        )

    out = [line(headers), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in cells]
    return "\n".join(out)
