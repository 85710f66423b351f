"""Across variants: the Pareto front of accuracy against cost, per-class F1, and how confusions shift."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from cnn.errors import ConfigError
from cnn.report.metrics import HEADLINE, SCORE
from cnn.report.rows import Row, is_ok
from cnn.report.summaries import by_variant

Pair = tuple[str, str]


def pareto_front(points: Iterable[tuple[str, float, float]]) -> list[str]:
    """Names of the (name, cost, accuracy) points no other point dominates, cheapest first.

    A point dominates another when its cost is lower or equal and its accuracy higher or equal, strictly
    better in one; identical points do not dominate each other, so both stay on the front.
    """
    pts = [(str(n), float(c), float(a)) for n, c, a in points]
    front = [p for p in pts if not any(q[1] <= p[1] and q[2] >= p[2] and (q[1] < p[1] or q[2] > p[2]) for q in pts)]
    return [n for n, _, _ in sorted(front, key=lambda p: (p[1], -p[2]))]


def per_class_f1_table(summaries_or_rows: Iterable[Row], class_names: Sequence[str]) -> pd.DataFrame:
    """Classes x variants table of F1 averaged over seeds, most accurate variant first; failed runs are left out."""
    groups = by_variant(r for r in summaries_or_rows if is_ok(r))
    groups = dict(sorted(groups.items(), key=lambda kv: -statistics.fmean(r.get(HEADLINE) or 0.0 for r in kv[1])))
    names = [str(c) for c in class_names]
    data = {
        v: [_mean_or_nan([(r.get("per_class_f1") or {}).get(c) for r in group]) for c in names]
        for v, group in groups.items()
    }
    return pd.DataFrame(data, index=pd.Index(names, name="class"), columns=list(groups), dtype=float)


def _mean_or_nan(values: Iterable[float | None]) -> float:
    kept = [float(v) for v in values if v is not None]
    return float(np.mean(kept)) if kept else math.nan


def best_per_class(table: pd.DataFrame, fmt: str = SCORE) -> dict[str, list[str]]:
    """For each class (row), every variant (column) with the highest F1 as shown in format `fmt` (ties all count)."""
    best = {}
    for cls, row in table.iterrows():
        shown = {v: float(format(f, fmt)) for v, f in row.items() if not math.isnan(f)}
        if shown:
            top = max(shown.values())
            best[str(cls)] = [str(v) for v, f in shown.items() if f == top]
    return best


def top_confused(rows: Iterable[Row], k: int = 3) -> list[dict[str, Any]]:
    """The k most-confused (true, predicted) pairs of the given runs, counts summed over them, largest first."""
    totals: dict[Pair, int] = {}
    for row in rows:
        for p in row.get("most_confused") or []:
            key = (str(p["true"]), str(p["predicted"]))
            totals[key] = totals.get(key, 0) + int(p["count"])
    ranked = sorted(totals.items(), key=lambda kv: -kv[1])[:k]
    return [{"true": t, "predicted": p, "count": n} for (t, p), n in ranked]


def _pairs(top: Iterable[Mapping[str, Any]]) -> list[Pair]:
    return [(p["true"], p["predicted"]) for p in top]


def confusion_shifts(rows: Iterable[Row], best_variant: str, k: int = 3) -> dict[str, dict[str, list]]:
    """Per ok variant: its top-k confused pairs, the best variant's top-k pairs it avoids (fixed) and its own new ones (introduced)."""
    groups = by_variant(r for r in rows if is_ok(r))
    if best_variant not in groups:
        raise ConfigError("best_variant", f"no finished run of {best_variant!r}", allowed=list(groups))
    best_pairs = _pairs(top_confused(groups[best_variant], k))
    shifts = {}
    for variant, group in groups.items():
        top = top_confused(group, k)
        mine = _pairs(top)
        shifts[variant] = {
            "top_pairs": top,
            "fixed": [p for p in best_pairs if p not in mine],
            "introduced": [p for p in mine if p not in best_pairs],
        }
    return shifts


TOP_CONFUSIONS = 3  # how many of a variant's most common confusions a shared one must be among


def common_confusions(rows: Iterable[Row], k: int = TOP_CONFUSIONS) -> list[Pair]:
    """(true, predicted) pairs in the top k of every ok variant, the most frequent overall first."""
    groups = by_variant(r for r in rows if is_ok(r))
    if not groups:
        return []
    tops = [_pairs(top_confused(g, k)) for g in groups.values()]
    shared = set(tops[0]).intersection(*tops[1:])
    overall = _pairs(top_confused([r for g in groups.values() for r in g], k=10**6))
    return [p for p in overall if p in shared]
