"""Prefect task results in the run's artifact store, as plain JSON that reading can never turn into running code.

Prefect's own result files are cloudpickle (or JSON whose decoder imports the classes it names), and their keys are
the same in every store for the same inputs: anyone who can write to a shared store could plant one that runs on the
next identical run. Here every result is written as a record declaring `cnn-lab-json` (json.dumps/json.loads, no object
hooks), and the storage block hands Prefect a stored record only after checking that it declares exactly that: any other
file is a cache miss with a warning, so the step runs again and its fresh record replaces the bad one.

Prefect also stores the error of a failed task through the task's serializer (states.exception_to_failed_state, with
write_result when results persist): that record holds the error's class name and message as text, and reads back as a
StoredError, so a failed task never logs a serializer warning and never leaves its state pointing at a missing file.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from typing import Any

from prefect.filesystems import WritableFileSystem
from prefect.serializers import Serializer
from prefect.settings import PREFECT_API_URL
from prefect.utilities.asyncutils import run_sync_in_worker_thread
from pydantic import Field

from cnn.errors import UntrustedFile
from cnn.storage import Storage, redact

RESULTS_DIR = "_prefect-results"  # starts with "_": can never clash with a dataset folder (safe names start with a letter or digit)
SERIALIZER_TYPE = "cnn-lab-json"
RECORD_KEYS = {"metadata", "result"}
METADATA_KEYS = {"storage_key", "expiration", "serializer", "prefect_version", "storage_block_id"}
RESULT_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")  # Prefect's cache keys are hex digests
ERROR_RECORD = "cnn_lab_error"  # a failed task's stored error: {ERROR_RECORD: {"type": class name, "message": text}}


class UntrustedResult(ValueError):
    """A stored result file that cnn-lab will not load (not a plain-JSON record it wrote)."""


class StoredError(Exception):
    """A failed task's error read back from its stored record: the class name and message, as text (nothing it names is
    imported or called)."""

    def __init__(self, type_name: str, message: str) -> None:
        self.type_name = type_name
        super().__init__(f"{type_name}: {message}")


class PlainJSONSerializer(Serializer):
    """Task results as plain JSON: loading builds dicts, lists, strings and numbers, and never imports or calls anything."""

    type: str = Field(default=SERIALIZER_TYPE, frozen=True)

    def dumps(self, obj: Any) -> bytes:
        """JSON bytes of `obj` (a TypeError for anything that is not plain data); an error (a failed task's state) as
        its class name and message, credentials removed."""
        if isinstance(obj, BaseException):
            obj = {ERROR_RECORD: {"type": type(obj).__name__, "message": redact(str(obj))}}
        return json.dumps(obj).encode()

    def loads(self, blob: bytes) -> Any:
        """The plain data in `blob`; a stored error as a StoredError (what Prefect expects a failed state to hold)."""
        value = json.loads(blob)
        if isinstance(value, dict) and set(value) == {ERROR_RECORD} and isinstance(value[ERROR_RECORD], dict):
            return StoredError(str(value[ERROR_RECORD].get("type")), str(value[ERROR_RECORD].get("message")))
        return value


def check_record(content: bytes) -> bytes:
    """`content` if it is a result record declaring exactly the plain-JSON serializer; else UntrustedResult saying why."""
    try:
        record = json.loads(content)
    except (ValueError, UnicodeDecodeError):
        raise UntrustedResult("not a JSON result record") from None
    if not isinstance(record, dict) or set(record) != RECORD_KEYS or not isinstance(record["metadata"], dict):
        raise UntrustedResult(
            f"not a result record (keys {sorted(record) if isinstance(record, dict) else type(record).__name__})"
        )
    metadata = record["metadata"]
    if not set(metadata) <= METADATA_KEYS:
        raise UntrustedResult(f"unexpected metadata keys {sorted(set(metadata) - METADATA_KEYS)}")
    serializer = metadata.get("serializer")
    if serializer != {"type": SERIALIZER_TYPE}:
        declared = serializer.get("type") if isinstance(serializer, dict) else serializer
        raise UntrustedResult(f"declares serializer {declared!r}, not {SERIALIZER_TYPE!r}")
    if not isinstance(record["result"], str):
        raise UntrustedResult("its result is not JSON text")
    try:
        json.loads(record["result"])
    except ValueError:
        raise UntrustedResult("its result is not JSON text") from None
    return content


def _warn(message: str, *args: Any) -> None:
    """A warning in the task run's log when there is one (it reaches the UI), else in Prefect's console log."""
    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_logger

    try:
        get_run_logger().warning(message, *args)
    except MissingContextError:
        get_logger("cnn_lab.results").warning(message, *args)


class CnnLabResultStorage(WritableFileSystem):
    """Task results under <storage>/_prefect-results through cnn.storage (atomic writes, retries, no secrets in logs)."""

    _block_type_name = "cnn-lab Result Storage"
    _block_type_slug = "cnn-lab-result-storage"
    _description = (
        "Prefect task results of cnn-lab as plain-JSON records; any other file there is ignored (a cache miss)."
    )

    basepath: str = Field(
        description="Folder or s3://bucket/prefix of the results (credentials come from the environment)."
    )
    endpoint_url: str | None = Field(default=None, description="S3 endpoint, when not AWS.")

    def _store(self) -> Storage:
        return Storage(self.basepath, endpoint_url=self.endpoint_url)

    def _resolve_path(self, path: str) -> None:
        """Keys stay relative to the base (Prefect asks unsaved blocks for this)."""
        return None

    @staticmethod
    def _key(path: str) -> str:
        if not isinstance(path, str) or not RESULT_KEY.match(path) or ".." in path:
            raise UntrustedResult(f"result key {path!r} is not a plain file name")
        return path

    def read_path(self, path: str, _sync: bool = True) -> bytes:
        """The stored record at `path`, checked; a file cnn-lab would not have written (not a plain-JSON record, not a
        regular file, too large, behind a link out of the store) raises UntrustedResult: a cache miss."""
        store = self._store()
        try:
            return check_record(store.read_bytes(self._key(path)))
        except (UntrustedResult, UntrustedFile) as err:
            _warn("ignoring cached result %s: %s; the step runs again and replaces it", store.path(path), err)
            raise UntrustedResult(str(err)) from None

    def write_path(self, path: str, content: bytes, _sync: bool = True) -> str:
        """Write one record atomically; returns its URL."""
        return self._store().write_bytes(self._key(path), content)

    async def aread_path(self, path: str) -> bytes:
        """`read_path` off the event loop."""
        return await run_sync_in_worker_thread(self.read_path, path)

    async def awrite_path(self, path: str, content: bytes) -> str:
        """`write_path` off the event loop."""
        return await run_sync_in_worker_thread(self.write_path, path, content)


def result_storage_for(storage: str) -> WritableFileSystem:
    """A saved result-storage block at <storage>/_prefect-results (endpoint only; credentials stay in the worker's environment)."""
    store = Storage(storage)
    return _saved_block(store.path(RESULTS_DIR), store.endpoint_url, str(PREFECT_API_URL.value()))


@functools.lru_cache(maxsize=16)
def _saved_block(basepath: str, endpoint_url: str | None, api_url: str) -> WritableFileSystem:
    """Save the block once per store, endpoint and Prefect API (a block id belongs to one server)."""
    block = CnnLabResultStorage(basepath=basepath, endpoint_url=endpoint_url)
    digest = hashlib.blake2b(f"{basepath}|{endpoint_url}".encode(), digest_size=6).hexdigest()
    block.save(f"cnn-lab-results-{digest}", overwrite=True)
    return block


def with_result_storage(task: Any, storage: str) -> Any:
    """`task` persisting its results (and cache records) under `storage`, as plain JSON."""
    return task.with_options(result_storage=result_storage_for(storage), result_serializer=PlainJSONSerializer())
