"""Caching and retry policies shared by the tasks."""

from __future__ import annotations

import datetime
import functools
from typing import Any

from prefect.cache_policies import INPUTS, TASK_SOURCE, CacheKeyFnPolicy

from cnn.codehash import PACKAGE_DIR, package_digest, results_digest
from cnn.errors import StorageError


@functools.cache
def step_code_version() -> str:
    """Digest of every result-bearing cnn module (cnn.codehash.NOT_RESULTS lists the others and why), read once per
    process, as task source is: one rule for every cached step, so no module can be left out of a key."""
    return results_digest(PACKAGE_DIR)


def step_code_key(context: Any, inputs: dict[str, Any]) -> str:
    """Cache-key part for a step: the cnn code, and the variant's own builder and config when it has one."""
    key = step_code_version()
    if inputs.get("variant"):
        from cnn.models import variant_fingerprint

        key += "-" + variant_fingerprint(str(inputs["variant"]))
    return key


STEP_SOURCE = CacheKeyFnPolicy(cache_key_fn=step_code_key)


@functools.cache
def report_code_version() -> str:
    """Digest of every cnn module: the report is drawn by publishing, report, gallery and plots, and the gallery rebuilds
    and runs the trained models through the model, data and inspection code (a redraw costs seconds, not a training)."""
    return package_digest(PACKAGE_DIR)


def report_code_key(context: Any, inputs: dict[str, Any]) -> str:
    """Cache-key part for the comparison report: the source of the code that draws and writes it."""
    return report_code_version()


# A comparison's report depends on its rows, not on the run folder it is written to: an identical rerun (every step
# cached, so its rows are the first run's, folders included) reuses the first report and artifacts instead of
# redrawing the galleries and plots
REPORT_CACHE = INPUTS + TASK_SOURCE + CacheKeyFnPolicy(cache_key_fn=report_code_key) - "run"
# Inputs that never change results are left out: where progress goes, the run folder name, the device, resuming
STEP_CACHE = INPUTS + TASK_SOURCE + STEP_SOURCE - "run" - "device" - "progress" - "resume"
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
