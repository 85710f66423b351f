"""One Prefect task per cnn.pipeline step; each gets the run's config unchanged, is cached on what its result depends
on (tasks/policy.py), retried only on transient errors, and named by step, variant and seed in the UI."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.runtime import task_run

from cnn import pipeline
from cnn.step_inputs import DatasetRef, get_dataset, resolved_sizes
from cnn.params import RunParams
from tasks.policy import CACHE_EXPIRATION, RETRY_DELAYS, STEP_CACHE, retry_on_transient
from tasks.progress import epoch_reporter

_COMMON: dict[str, Any] = {
    "cache_policy": STEP_CACHE,
    "cache_expiration": CACHE_EXPIRATION,
    "persist_result": True,
    "retries": len(RETRY_DELAYS),
    "retry_delay_seconds": RETRY_DELAYS,
    "retry_condition_fn": retry_on_transient,
}


@task(name="prepare_dataset", task_run_name="dataset {config.dataset}", **_COMMON)
def prepare_dataset(config: RunParams) -> dict[str, Any]:
    """Download (or read the mirror of) the dataset; train-only normalisation stats and fingerprint."""
    return pipeline.prepare_dataset(config)


@task(name="lr_range_test", task_run_name="lr {variant}", **_COMMON)
def lr_range_test(config: RunParams, variant: str, fingerprint: str = "") -> dict[str, Any]:
    """Leslie Smith's LR range test at the training batch size; the suggestion and the stored sweep plot."""
    return pipeline.lr_range_test(config, variant)


@task(name="train_variant", task_run_name="train {variant} {label}", tags=["gpu"], **_COMMON)
def train_variant(
    config: RunParams,
    variant: str,
    seeds: list[int],
    lr: float,
    subdirs: list[str | None] | None = None,
    fingerprint: str = "",
    progress: dict[str, Any] | None = None,
    resume: bool = True,
    label: str = "",
) -> list[dict[str, Any]]:
    """Train one variant once per seed, the seeds batched as one model where they can be (learn check and, for a
    chosen lr, fallbacks; checkpoint per epoch; resumes unless resume=False); one result per seed."""
    n_train = get_dataset(DatasetRef.of(config)).train_y.numel()
    epochs = resolved_sizes(config.epochs, config.batch_size, n_train, config.device)["epochs"]
    session = str(task_run.id) if task_run.id else None  # a retry of this task run continues its own checkpoints
    return pipeline.train_seeds(
        config,
        variant,
        seeds=seeds,
        lr=lr,
        subdirs=subdirs,
        resume=resume,
        session=session,
        callback=epoch_reporter(variant, epochs, progress, seeds),
    )


@task(name="evaluate_variant", task_run_name="evaluate {variant} {label}", **_COMMON)
def evaluate_variant(config: RunParams, variant: str, folder: str, model_id: str, label: str = "") -> dict[str, Any]:
    """Accuracy, F1, per-class report and confusion matrix on the test split (`label` names the task run: "s0")."""
    return pipeline.evaluate_variant(config, variant, folder, model_id=model_id)


@task(name="extract_features", task_run_name="features {variant} {label}", **_COMMON)
def extract_features(config: RunParams, variant: str, folder: str, model_id: str, label: str = "") -> dict[str, Any]:
    """Hook every layer on the probe images; filter and feature-map plots in storage."""
    return pipeline.extract_features(config, variant, folder, model_id=model_id)
