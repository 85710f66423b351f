"""Caching and retry policies shared by the tasks."""
from __future__ import annotations

import datetime
import functools
import hashlib
from pathlib import Path
from typing import Any

from prefect.cache_policies import INPUTS, TASK_SOURCE, CacheKeyFnPolicy

import cnn
from cnn.errors import StorageError


@functools.cache
def cnn_code_version() -> str:
    """Hash of every cnn/ source file: a change to the training code invalidates cached steps, as a task change does."""
    h = hashlib.blake2b(digest_size=12)
    for path in sorted(Path(cnn.__file__).parent.rglob("*.py")):
        h.update(path.relative_to(Path(cnn.__file__).parent).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()


CNN_SOURCE = CacheKeyFnPolicy(cache_key_fn=lambda ctx, inputs: cnn_code_version())
# Inputs that never change results are left out: where progress goes, the run folder name, the device, resuming
STEP_CACHE = INPUTS + TASK_SOURCE + CNN_SOURCE - "run" - "device" - "progress" - "resume"
CACHE_EXPIRATION = datetime.timedelta(days=30)
RETRY_DELAYS = [2, 8, 30]  # seconds: exponential backoff for store and network trouble


def retry_on_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry transient store/network failures only; permanent store errors (no space, a file in the way, a store given up
    on), bad config, NaN loss and other deterministic errors fail at once."""
    try:
        state.result()
    except StorageError as err:
        return err.transient
    except (ConnectionError, TimeoutError):
        return True
    except Exception:  # noqa: BLE001 - anything else is deterministic
        return False
    return False
