"""Reads and writes of the shared store's records that a flow needs (a comparison's definition and rows, a dispatched
run's row): tasks, so they retry on transient store errors and show in the UI. Every read is checked against its schema."""

from __future__ import annotations

from typing import Any

from prefect import task

from cnn import comparisons
from cnn.comparisons import Comparison
from cnn.params import RunParams
from cnn.storage import open_storage
from tasks.policy import RETRY_DELAYS, retry_on_transient

_STORE: dict[str, Any] = {
    "retries": len(RETRY_DELAYS),
    "retry_delay_seconds": RETRY_DELAYS,
    "retry_condition_fn": retry_on_transient,
    "cache_policy": None,
}


@task(name="read_comparison", task_run_name="read comparison {name} on {dataset}", **_STORE)
def read_comparison(storage: str, dataset: str, name: str) -> Comparison | None:
    """The comparison's definition and every variant's rows, each checked (None when the store has no such comparison)."""
    return comparisons.read_comparison(open_storage(storage), dataset, name)


@task(name="record_comparison", task_run_name="record comparison {config.comparison} on {config.dataset}", **_STORE)
def record_comparison(config: RunParams, rows: list[dict[str, Any]], plugin_variants: list[str]) -> None:
    """Write the comparison's definition (a comparison run) and its variants' rows of this run."""
    store = open_storage(config.storage)
    comparisons.record_rows(store, config, rows)
    comparisons.record_definition(store, config, plugin_variants)


@task(name="record_variant_rows", task_run_name="record {config.variant} in {config.comparison}", **_STORE)
def record_variant_rows(config: RunParams, rows: list[dict[str, Any]]) -> None:
    """Write one variant's rows of this run into its comparison (a retrain)."""
    comparisons.record_rows(open_storage(config.storage), config, rows)


@task(name="read_row", task_run_name="read row {rel}", **_STORE)
def read_row(storage: str, rel: str) -> dict[str, Any] | None:
    """The row a dispatched training run stored at `rel`, checked (its folder inside the store), or None when there is none."""
    store = open_storage(storage)
    return comparisons.read_row(store, rel) if store.exists(rel) else None
