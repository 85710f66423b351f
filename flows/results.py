"""Prefect task results in the run's artifact store, so cached steps survive the worker and any worker can pick them up."""
from __future__ import annotations

import functools
import hashlib
from typing import Any

from prefect.filesystems import LocalFileSystem, RemoteFileSystem, WritableFileSystem
from prefect.settings import PREFECT_API_URL

from cnn.storage import Storage

RESULTS_DIR = "_prefect-results"  # starts with "_": can never clash with a dataset folder (safe names start with a letter or digit)
RESULT_S3_CONFIG = {"connect_timeout": 5, "read_timeout": 60, "retries": {"total_max_attempts": 3, "mode": "standard"}}


def result_storage_for(storage: str) -> WritableFileSystem:
    """A saved filesystem block at <storage>/_prefect-results (endpoint only; credentials stay in the worker's environment)."""
    store = Storage(storage)
    return _saved_block(store.url, store.endpoint_url, str(PREFECT_API_URL.value()))


@functools.lru_cache(maxsize=16)
def _saved_block(url: str, endpoint_url: str | None, api_url: str) -> WritableFileSystem:
    """Save the block once per store, endpoint and Prefect API (a block id belongs to one server)."""
    store = Storage(url, endpoint_url=endpoint_url)
    basepath = store.path(RESULTS_DIR)
    if store.scheme == "file":
        block: WritableFileSystem = LocalFileSystem(basepath=basepath)
    else:
        settings: dict[str, Any] = {"config_kwargs": RESULT_S3_CONFIG} if store.scheme == "s3" else {}
        if store.endpoint_url:
            settings["client_kwargs"] = {"endpoint_url": store.endpoint_url}
        block = RemoteFileSystem(basepath=basepath, settings=settings)
    digest = hashlib.blake2b(f"{basepath}|{store.endpoint_url}".encode(), digest_size=6).hexdigest()
    block.save(f"cnn-lab-results-{digest}", overwrite=True)
    return block


def with_result_storage(task: Any, storage: str) -> Any:
    """`task` persisting its results (and cache records) under `storage`."""
    return task.with_options(result_storage=result_storage_for(storage))
