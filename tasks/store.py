"""Reads of the shared store that a flow needs (published rows, a dispatched run's row): tasks, so they retry on
transient store errors and show in the UI."""

from __future__ import annotations

from typing import Any

from prefect import task

from cnn import publishing
from cnn.storage import open_storage
from tasks.policy import RETRY_DELAYS, retry_on_transient

_READ: dict[str, Any] = {
    "retries": len(RETRY_DELAYS),
    "retry_delay_seconds": RETRY_DELAYS,
    "retry_condition_fn": retry_on_transient,
    "cache_policy": None,
}


@task(name="read_latest_rows", task_run_name="read published {dataset}", **_READ)
def read_latest_rows(storage: str, dataset: str) -> dict[str, Any]:
    """Every variant's last published rows of `dataset` (with their repeats and plug-ins)."""
    return publishing.latest_rows(storage, dataset)


@task(name="read_row", task_run_name="read {rel}", **_READ)
def read_row(storage: str, rel: str) -> dict[str, Any] | None:
    """The row stored at `rel`, or None when there is none."""
    store = open_storage(storage)
    return store.read_json(rel) if store.exists(rel) else None
