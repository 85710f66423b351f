"""Caching and retry policies shared by the tasks."""

from __future__ import annotations

import datetime
import functools
from typing import Any

from prefect.cache_policies import TASK_SOURCE, CacheKeyFnPolicy
from prefect.utilities.hashing import hash_objects

from cnn.codehash import PACKAGE_DIR, results_digest
from cnn.errors import StorageError
from cnn.params import RunParams


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
# The step (cnn.params.STEPS) each cached task runs: its run config enters the key only through the fields marked as
# changing that step's result (cnn.params.Affects)
STEP_OF_TASK = {
    "prepare_dataset": "dataset",
    "lr_range_test": "lr",
    "train_variant": "train",
    "evaluate_variant": "evaluate",
    "extract_features": "features",
}
# Inputs that never change a result: where progress goes, whether training resumes, the seed a task run is named by
NOT_RESULT_INPUTS = ("progress", "resume", "label")


def step_inputs_key(context: Any, inputs: dict[str, Any]) -> str | None:
    """Cache-key part for the running task's inputs: each as it is, the run config as the fields its step reads."""
    step = STEP_OF_TASK[context.task.name]
    hashed = {
        name: value.result_fields(step) if isinstance(value, RunParams) else value
        for name, value in inputs.items()
        if name not in NOT_RESULT_INPUTS
    }
    return hash_objects(hashed, raise_on_failure=True)


STEP_INPUTS = CacheKeyFnPolicy(cache_key_fn=step_inputs_key)


STEP_CACHE = TASK_SOURCE + STEP_SOURCE + STEP_INPUTS
CACHE_EXPIRATION = datetime.timedelta(days=30)
# Seconds between a step's retries after a transient store or network error. Two layers, one concern each: a store
# operation retries itself within seconds (cnn.storage: a blip costs no step), and a step whose store stayed away past
# that is retried whole (its training resumes from its last epoch's checkpoint) until the store has failed for
# CNN_LAB_STORAGE_GIVE_UP_S, when its error turns permanent and nothing retries it (docs/faults.md measures both).
RETRY_DELAYS = [2, 8, 30]


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
