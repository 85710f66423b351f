"""One summary per variant over its seeds: metric means and spreads, wins, the best variant."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from cnn.report.metrics import HEADLINE, METRICS
from cnn.report.rows import Row, as_rows, failed_row, is_ok, learned


def by_variant(rows: Iterable[Row]) -> dict[str, list[Row]]:
    """Rows grouped by variant, in order of first appearance."""
    groups: dict[str, list[Row]] = {}
    for row in rows:
        groups.setdefault(row["variant"], []).append(row)
    return groups


def count_wins(rows: Iterable[Row]) -> dict[str, float]:
    """Per variant, its share of the seeds where its test accuracy was the highest among that seed's learned runs:
    each seed counts once, a tie shares it (two variants tied on a seed get half each). Only seeds every learned
    variant ran count: a seed only some ran (a retrain's, or one --repeats auto added) would hand them free wins."""
    rows = [r for r in rows if learned(r)]
    by_seed: dict[Any, list[Row]] = {}
    for row in rows:
        by_seed.setdefault(row["seed"], []).append(row)
    everyone = {r["variant"] for r in rows}
    wins: dict[str, float] = {}
    for seed_rows in (group for group in by_seed.values() if {r["variant"] for r in group} == everyone):
        top = max(r[HEADLINE] for r in seed_rows)
        winners = [r["variant"] for r in seed_rows if math.isclose(r[HEADLINE], top, rel_tol=0, abs_tol=1e-12)]
        for variant in winners:
            wins[variant] = wins.get(variant, 0.0) + 1.0 / len(winners)
    return wins


def aggregate_repeats(rows: Iterable[Row]) -> list[dict[str, Any]]:
    """One summary per variant over its seeds (mean, population std, wins), best mean test accuracy first, failed last.

    A summary holds a row's keys (the first finished seed's settings, every metric's mean over the finished seeds),
    `<metric>_std` for each metric, and seeds, n_seeds, n_failed, n_not_learned, wins and best_seed."""
    rows = as_rows(rows)
    wins = count_wins(rows)
    summaries = [_summarise(variant, group, wins.get(variant, 0)) for variant, group in by_variant(rows).items()]
    ok = sorted((s for s in summaries if s["status"] == "ok"), key=lambda s: -s[HEADLINE])
    return ok + [s for s in summaries if s["status"] != "ok"]


def _summarise(variant: str, group: list[Row], wins: float) -> dict[str, Any]:
    ok = sorted((r for r in group if is_ok(r)), key=lambda r: r["seed"])
    failed = [r for r in group if not is_ok(r)]
    if not ok:
        first = failed[0]
        return {
            **failed_row(variant, first["seed"], first.get("error") or "failed", first.get("folder")),
            "seeds": [r["seed"] for r in group],
            "n_seeds": 0,
            "n_failed": len(failed),
            "wins": 0.0,
        }
    best = max(ok, key=lambda r: r[HEADLINE])
    classes = list(dict.fromkeys(c for r in ok for c in r.get("per_class_f1") or {}))
    summary = {**ok[0], "error": "; ".join(str(r.get("error")) for r in failed) or None}
    for metric in METRICS:
        values = [float(r[metric.field]) for r in ok]
        summary[metric.field] = float(statistics.fmean(values))
        summary[f"{metric.field}_std"] = float(statistics.pstdev(values)) if len(values) > 1 else 0.0
    summary.pop("seed")
    summary.pop("confusion")
    return {
        **summary,
        "seeds": [r["seed"] for r in ok],
        "n_seeds": len(ok),
        "n_failed": len(failed),
        "wins": wins,
        "learned": all(learned(r) for r in ok),
        "n_not_learned": sum(not learned(r) for r in ok),
        "per_class_f1": {
            c: float(np.mean([r["per_class_f1"][c] for r in ok if c in r.get("per_class_f1", {})])) for c in classes
        },
        "most_confused": [dict(p) for p in best.get("most_confused") or []],
        "best_seed": best["seed"],
    }


def best_variant(summaries_or_rows: Iterable[Row]) -> str | None:
    """Name of the learned variant with the highest mean test accuracy (None when none learned; ties: first seen)."""
    groups = by_variant(r for r in summaries_or_rows if learned(r))
    return max(groups, key=lambda v: statistics.fmean(r[HEADLINE] for r in groups[v])) if groups else None


SETTINGS = ("epochs", "batch_size", "optimizer", "schedule")


def common_settings(rows: Sequence[Row]) -> dict[str, Any]:
    """The settings every finished row shares ({"optimizer": "adam", ...}; a setting that differs is left out)."""
    finished = [r for r in rows if is_ok(r)]
    shared = {}
    for key in SETTINGS:
        values = {r.get(key) for r in finished}
        if len(values) == 1 and None not in values:
            shared[key] = values.pop()
    return shared


def settings_differences(rows: Sequence[Row]) -> str:
    """ "epochs: cnn2_5 2, others 4" for each setting that differs between rows ('' when they all agree)."""
    parts = []
    for key in SETTINGS:
        values = {r["variant"]: r.get(key) for r in rows if r.get(key) is not None}
        counts: dict[Any, int] = {}
        for v in values.values():
            counts[v] = counts.get(v, 0) + 1
        if len(counts) > 1:
            common = max(counts, key=lambda v: counts[v])
            odd = ", ".join(f"{name} {v}" for name, v in values.items() if v != common)
            parts.append(f"{key.replace('_', ' ')} {odd}, others {common}")
    return "; ".join(parts)
