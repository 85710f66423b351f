"""One Prefect task per cnn.pipeline step; cached on inputs and task source, retried only on transient errors."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.runtime import task_run

from cnn import pipeline
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


@task(name="prepare_dataset", **_COMMON)
def prepare_dataset(ref: dict[str, Any]) -> dict[str, Any]:
    """Download (or read the mirror of) the dataset; train-only normalisation stats and fingerprint."""
    return pipeline.prepare_dataset(ref)


@task(name="lr_range_test", **_COMMON)
def lr_range_test(
    ref: dict[str, Any],
    variant: str,
    storage: str,
    run: str,
    settings: dict[str, Any],
    device: str = "auto",
    fingerprint: str = "",
) -> dict[str, Any]:
    """Leslie Smith's LR range test at the training batch size; the suggestion and the stored sweep plot."""
    return pipeline.lr_range_test(ref, variant, storage, run, device=device, **settings)


@task(name="train_variant", tags=["gpu"], **_COMMON)
def train_variant(
    ref: dict[str, Any],
    variant: str,
    storage: str,
    run: str,
    config: dict[str, Any],
    device: str = "auto",
    subdir: str | None = None,
    fingerprint: str = "",
    progress: dict[str, Any] | None = None,
    resume: bool = True,
    fallback: bool = False,
) -> dict[str, Any]:
    """Train one variant (learn check and, for a chosen lr, fallbacks; checkpoint per epoch; resumes unless resume=False)."""
    cfg = pipeline.resolve_config(
        {**config, "device": device}, pipeline.get_dataset(pipeline.as_ref(ref)).train_y.numel()
    )
    callback = epoch_reporter(variant, cfg.epochs, progress)
    session = str(task_run.id) if task_run.id else None  # a retry of this task run continues its own checkpoints
    return pipeline.train_variant(
        ref,
        variant,
        storage,
        run,
        cfg,
        subdir=subdir,
        resume=resume,
        fallback=fallback,
        session=session,
        callback=callback,
    )


@task(name="evaluate_variant", **_COMMON)
def evaluate_variant(
    ref: dict[str, Any], variant: str, storage: str, folder: str, model_id: str, device: str = "auto"
) -> dict[str, Any]:
    """Accuracy, F1, per-class report and confusion matrix on the test split."""
    return pipeline.evaluate_variant(ref, variant, storage, folder, model_id=model_id, device=device)


@task(name="extract_features", **_COMMON)
def extract_features(ref: dict[str, Any], variant: str, storage: str, folder: str, model_id: str) -> dict[str, Any]:
    """Hook every layer on the probe images; filter and feature-map plots in storage."""
    return pipeline.extract_features(ref, variant, storage, folder, model_id=model_id)
