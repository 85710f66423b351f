"""Which seeds a comparison trains: `repeats` of them, or with `repeats: auto` a few first and then one more at a time
for the variants whose comparison with the best is still inside the noise, until one variant beats every other or
each tied one has `max_seeds` (cnn.report.verdict.plan_seeds). Seeds trained before come from the cache."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from prefect import get_run_logger

from cnn import report
from cnn.checks import AUTO
from cnn.params import RunParams
from cnn.step_inputs import DatasetRef, get_dataset
from cnn.publishing import comparison_verdict
from cnn.report.verdict import MIN_SEEDS, auto_repeats_note, plan_seeds
from cnn.storage import open_storage

Rows = list[dict[str, Any]]


def first_seeds(config: RunParams) -> list[int]:
    """The seeds every variant trains first: `repeats` of them, or for auto as many as a verdict needs (MIN_SEEDS, at
    most max_seeds)."""
    count = min(MIN_SEEDS, config.max_seeds) if config.repeats == AUTO else int(config.repeats)
    return [config.seed + k for k in range(count)]


def verdict_of(config: RunParams, rows: Sequence[dict[str, Any]]) -> report.Verdict | None:
    """The paired tests over `rows` (None when no run has usable predictions)."""
    data = get_dataset(DatasetRef.of(config))
    summaries = report.aggregate_repeats(rows)
    return comparison_verdict(open_storage(config.storage), rows, summaries, data)


def tried(rows: Sequence[dict[str, Any]], variant: str) -> list[int]:
    """The seeds `variant` has run, finished or failed."""
    return [int(r["seed"]) for r in rows if r["variant"] == variant]


def next_seed(rows: Sequence[dict[str, Any]], variant: str, config: RunParams) -> int:
    """The first seed `variant` has not tried yet."""
    return max(tried(rows, variant), default=config.seed - 1) + 1


def add_seeds(config: RunParams, rows: Rows, train: Callable[[list[str], int], Rows]) -> tuple[Rows, str]:
    """`rows` with the seeds --repeats auto adds (`train(variants, seed)` trains one more seed of those variants), and
    the sentence saying what it did."""
    start = {v: sum(1 for r in rows if r["variant"] == v and r["status"] == "ok") for v in config.variants}
    while True:
        verdict = verdict_of(config, rows)
        if verdict is None:
            return rows, "repeats auto added no seeds: no run has predictions to test"
        plan = plan_seeds(verdict, config.max_seeds)
        add = [v for v in plan.add if len(tried(rows, v)) < config.max_seeds]  # failed seeds count against the budget
        if not add:
            return rows, auto_repeats_note(start, verdict, config.max_seeds)
        by_seed: dict[int, list[str]] = {}
        for variant in add:
            by_seed.setdefault(next_seed(rows, variant, config), []).append(variant)
        for seed, variants in sorted(by_seed.items()):
            get_run_logger().info("repeats auto: one more seed (%d) for %s, still undecided", seed, ", ".join(variants))
            rows = rows + train(variants, seed)
