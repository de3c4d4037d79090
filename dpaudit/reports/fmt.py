"""Number formatting shared by the Markdown, HTML and gate renderers.

Values come from ``report.json``, where non-finite floats are the strings
``"inf"``, ``"-inf"`` and ``"nan"`` (docs/run-directory.md), so every helper
accepts those as well as numbers and ``None`` (not measured).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

DASH = "—"
"""Shown for a value that was not measured."""


def as_float(value: Any) -> float | None:
    """``value`` as a float (``"inf"`` → ``math.inf``), or ``None`` for ``None``/non-numbers."""
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def num(value: Any, digits: int = 3) -> str:
    """``digits`` significant digits; ``∞`` for infinity, ``n/a`` for NaN, ``—`` for ``None``."""
    x = as_float(value)
    if x is None:
        return DASH
    if math.isnan(x):
        return "n/a"
    if math.isinf(x):
        return "∞" if x > 0 else "−∞"
    if x == 0:
        return "0"
    if abs(x) >= 10**digits or abs(x) < 1e-3:
        return f"{x:.{max(digits - 1, 0)}e}"
    return f"{x:.{digits}g}"


def fixed(value: Any, decimals: int = 3) -> str:
    """``decimals`` places after the point (AUCs, rates); ``∞``/``n/a``/``—`` as in :func:`num`."""
    x = as_float(value)
    if x is None or not math.isfinite(x):
        return num(value)
    return f"{x:.{decimals}f}"


def eps(value: Any) -> str:
    """An ε: two decimals below 100, ``∞`` for a non-private model."""
    x = as_float(value)
    if x is None or not math.isfinite(x) or abs(x) >= 100:
        return num(value)
    return f"{x:.2f}"


def sci(value: Any) -> str:
    """A small probability such as δ: ``1e-05`` style, ``—`` when missing."""
    x = as_float(value)
    if x is None or not math.isfinite(x) or x == 0:
        return num(value)
    return f"{x:.1e}".replace("e-0", "e-").replace(".0e", "e")


def pct(value: Any, decimals: int = 1) -> str:
    """A rate as a percentage: ``0.123`` → ``12.3%``."""
    x = as_float(value)
    if x is None or not math.isfinite(x):
        return num(value)
    return f"{100 * x:.{decimals}f}%"


def interval(pair: Sequence[Any] | None, decimals: int = 3) -> str:
    """A confidence interval ``[lo, hi]``; ``—`` when absent or not computed (NaN)."""
    if not pair or len(pair) != 2:
        return DASH
    lo, hi = (as_float(v) for v in pair)
    if lo is None or hi is None or math.isnan(lo) or math.isnan(hi):
        return DASH
    return f"[{fixed(lo, decimals)}, {fixed(hi, decimals)}]"


def threshold(value: Any) -> str:
    """A policy threshold as the user wrote it (``0.6``, ``8``, ``1e-05``)."""
    x = as_float(value)
    if x is None:
        return DASH
    return f"{x:g}"


def fpr_label(key: str | float) -> str:
    """An FPR budget as a percentage label: ``"0.001"`` → ``0.1%``."""
    x = float(key)
    return f"{100 * x:g}%"


def text_table(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    right_from: int | None = None,
    width: int | None = None,
) -> list[str]:
    """A fixed-width console table: columns as wide as their widest cell, two spaces apart.

    Cells are left-aligned, those of columns ``right_from`` and after right-aligned (numbers);
    trailing spaces are dropped. When the table is wider than ``width`` (default: the
    terminal's, ``COLUMNS`` or 100), headers wrap at spaces onto several lines so that each
    column is only as wide as its widest cell or longest header word; cells never wrap.
    """
    import shutil
    import textwrap

    limit = width or shutil.get_terminal_size((100, 24)).columns
    cells = [max((len(str(r[i])) for r in rows), default=0) for i in range(len(header))]
    widths = [max(len(str(h)), c) for h, c in zip(header, cells, strict=True)]
    heads = [[str(h)] for h in header]
    if sum(widths) + 2 * (len(widths) - 1) > limit:
        heads = []
        for i, h in enumerate(header):
            words = max((len(w) for w in str(h).split()), default=0)
            heads.append(textwrap.wrap(str(h), width=max(1, cells[i], words)) or [""])
        widths = [max(c, *(len(x) for x in hs)) for c, hs in zip(cells, heads, strict=True)]

    def line(row: Sequence[str]) -> str:
        parts = [
            str(c).rjust(w) if right_from is not None and i >= right_from else str(c).ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    depth = max(len(hs) for hs in heads) if heads else 1
    head_lines = [line([hs[k] if k < len(hs) else "" for hs in heads]) for k in range(depth)]
    return [*head_lines, *(line(r) for r in rows)]
