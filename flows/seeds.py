"""Which seeds a comparison trains: `repeats` of them, or with `repeats: auto` a few first and then twice as many for
the variants whose comparison with the best is still inside the noise, until one variant beats every other or each
tied one has `max_seeds` (cnn.report.verdict.plan_seeds). Seeds trained before come from the cache."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from prefect import get_run_logger

from cnn import report
from cnn.checks import AUTO
from cnn.params import RunParams
from cnn.step_inputs import DatasetRef, get_dataset
from cnn.publishing import comparison_verdict, verdict_looks
from cnn.report.verdict import auto_repeats_note, first_round, plan_seeds
from cnn.storage import open_storage

Rows = list[dict[str, Any]]


def first_seeds(config: RunParams) -> list[int]:
    """The seeds every variant trains first: `repeats` of them, or for auto as many as a verdict needs (MIN_SEEDS, at
    most max_seeds)."""
    count = first_round(config.max_seeds) if config.repeats == AUTO else int(config.repeats)
    return [config.seed + k for k in range(count)]


def verdict_of(config: RunParams, rows: Sequence[dict[str, Any]]) -> report.Verdict | None:
    """The paired tests over `rows` (None when no run has usable predictions)."""
    data = get_dataset(DatasetRef.of(config))
    summaries = report.aggregate_repeats(rows)
    return comparison_verdict(open_storage(config.storage), rows, summaries, data, verdict_looks(config))


def tried(rows: Sequence[dict[str, Any]], variant: str) -> list[int]:
    """The seeds `variant` has run, finished or failed."""
    return [int(r["seed"]) for r in rows if r["variant"] == variant]


def next_seed(rows: Sequence[dict[str, Any]], variant: str, config: RunParams) -> int:
    """The first seed `variant` has not tried yet."""
    return max(tried(rows, variant), default=config.seed - 1) + 1


def new_seeds(rows: Sequence[dict[str, Any]], variant: str, config: RunParams, more: int) -> list[int]:
    """The next `more` seeds `variant` has not tried, fewer where they would pass max_seeds (failed seeds count
    against that budget)."""
    first = next_seed(rows, variant, config)
    return list(range(first, first + max(0, min(more, config.max_seeds - len(tried(rows, variant))))))


def add_seeds(config: RunParams, rows: Rows, train: Callable[[list[str], list[int]], Rows]) -> tuple[Rows, str]:
    """`rows` with the seeds --repeats auto adds (`train(variants, seeds)` trains those seeds of those variants), and
    the sentence saying what it did."""
    start = {v: sum(1 for r in rows if r["variant"] == v and r["status"] == "ok") for v in config.variants}
    while True:
        verdict = verdict_of(config, rows)
        if verdict is None:
            return rows, "repeats auto added no seeds: no run has predictions to test"
        plan = plan_seeds(verdict, config.max_seeds)
        by_seeds: dict[tuple[int, ...], list[str]] = {}
        for variant in plan.add:
            seeds = tuple(new_seeds(rows, variant, config, plan.seeds - verdict.seeds.get(variant, 0)))
            if seeds:
                by_seeds.setdefault(seeds, []).append(variant)
        if not by_seeds:
            return rows, auto_repeats_note(start, verdict, config.max_seeds)
        for seeds, variants in sorted(by_seeds.items()):
            get_run_logger().info(
                "repeats auto: seeds %s for %s, still undecided", ", ".join(map(str, seeds)), ", ".join(variants)
            )
            rows = rows + train(variants, list(seeds))
