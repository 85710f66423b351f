"""Fixed-width text tables for what the benchmarks print (their JSON holds the same figures)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def _cell(value: Any, fmt: str) -> str:
    """One table cell: "-" for a missing value, lists joined by commas."""
    if value is None:
        return "-"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return format(value, fmt)


def text_table(rows: list[dict[str, Any]], columns: Sequence[tuple[str, str, str]]) -> str:
    """Fixed-width text table of `rows`; columns are (key, header, format)."""
    cells = [[h for _, h, _ in columns]] + [[_cell(r.get(k), f) for k, _, f in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    left = [f == "s" for _, _, f in columns]
    lines = [
        "  ".join(c.ljust(w) if lft else c.rjust(w) for c, w, lft in zip(row, widths, left)).rstrip() for row in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def load_text(env: dict[str, Any]) -> str:
    load = env.get("load_avg")
    return "n/a" if not load else "/".join(f"{v:.2f}" for v in load)
