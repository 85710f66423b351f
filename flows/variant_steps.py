"""One variant's chain of tasks (LR test -> train -> evaluate -> features -> publish), for every seed of a comparison;
the same code runs in the flow's process, in a task runner's worker process, or on a Dask worker."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task

from cnn.errors import StorageError
from cnn.gpus import own_device
from cnn.models import load_variants
from cnn.parallel import set_threads
from cnn.pipeline import check_batch_size, variant_dir
from cnn.report import failed_row, make_row
from cnn.params import RunParams
from flows.credentials import use_storage_block
from flows.failures import error_line
from flows.results import with_result_storage
from tasks import evaluate_variant, extract_features, lr_range_test, prepare_dataset, publish_variant, train_variant
from tasks.policy import STEP_OF_TASK


def _task(t: Any, config: RunParams) -> Any:
    """The task with its results in the run's store, forced to run afresh when the user asked to refresh its step."""
    t = with_result_storage(t, config.storage)
    return t.with_options(refresh_cache=True) if STEP_OF_TASK[t.name] in config.refresh else t


def run_variant_steps(
    variant: str,
    config: RunParams,
    *,
    seed: int,
    lr_info: dict[str, Any] | None = None,
    subdir: str | None = None,
    progress: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """LR test (when lr is auto and no lr_info is given) -> train -> evaluate -> features -> publish; returns the row.
    On a machine with several GPUs the steps run on one that no other variant uses meanwhile (cnn.gpus)."""
    with own_device(config.device) as device:
        config = config.model_copy(update={"device": device})
        return _variant_steps(variant, config, seed=seed, lr_info=lr_info, subdir=subdir, progress=progress)


def _variant_steps(
    variant: str,
    config: RunParams,
    *,
    seed: int,
    lr_info: dict[str, Any] | None,
    subdir: str | None,
    progress: dict[str, Any] | None,
) -> dict[str, Any]:
    info = _task(prepare_dataset, config)(config)
    check_batch_size(config.batch_size, info["num_train"])  # before this variant's LR test or training
    if lr_info is None:
        if config.lr == "auto":
            lr_info = _task(lr_range_test, config)(config, variant, fingerprint=info["fingerprint"])
        else:
            lr_info = {"lr": float(config.lr), "rule": "given", "flag": None}
    trained = _task(train_variant, config)(
        config,
        variant,
        seed,
        float(lr_info["lr"]),
        subdir=subdir,
        fingerprint=info["fingerprint"],
        progress=progress,
        resume="train" not in config.refresh,
    )
    label = f"s{seed}"
    evaluated = _task(evaluate_variant, config)(
        config, variant, trained["folder_rel"], trained["model_id"], label=label
    )
    features = _task(extract_features, config)(config, variant, trained["folder_rel"], trained["model_id"], label=label)
    row = make_row(variant, seed, lr_info, trained, evaluated, trained["folder"])
    row_rel = variant_dir(config.dataset, config.run, variant) + (f"/{subdir}" if subdir else "") + "/row.json"
    publish_variant(config.dataset, config.storage, row_rel, row, lr_info, trained, evaluated, features)
    return {"row": row, "lr_info": lr_info}


def run_seeds(variant: str, config: RunParams, seeds: list[int], progress: dict[str, Any]) -> list[dict[str, Any]]:
    """One variant for every seed (the first seed's LR test serves the rest); a failing seed becomes a failed row.

    A StorageError is raised: the store is every variant's, so the others would fail the same way after as long a wait.
    `progress` holds the artifact id, the (variant, seed) runs done before this variant, and the total."""
    rows: list[dict[str, Any]] = []
    lr_info = None
    for j, seed in enumerate(seeds):
        subdir = f"seed-{seed}" if len(seeds) > 1 else None
        try:
            out = run_variant_steps(
                variant,
                config,
                seed=seed,
                lr_info=lr_info,
                subdir=subdir,
                progress={**progress, "done": progress.get("done", 0) + j},
            )
        except StorageError:
            raise
        except Exception as err:  # noqa: BLE001 - one failed variant must not sink the others
            get_run_logger().error("variant %s (seed %d) failed: %s", variant, seed, error_line(err))
            rows.append(failed_row(variant, seed, error_line(err)))
            continue
        lr_info = out["lr_info"]
        rows.append(out["row"])
    return rows


@task(name="variant_steps", cache_policy=None, persist_result=False, task_run_name="variant {variant}")
def variant_steps(
    variant: str, config: RunParams, seeds: list[int], progress: dict[str, Any], threads: int | None = None
) -> list[dict[str, Any]]:
    """`run_seeds` in a task runner's worker, with `threads` torch threads (None: the worker's own setting); the run's
    plug-ins are loaded there first (as any worker can load them)."""
    if threads:
        set_threads(threads)
    use_storage_block(config.storage_block)  # a Dask worker elsewhere: the run's credentials from the same block
    load_variants(config.variant_modules, config.variant_files)
    return run_seeds(variant, config, seeds, progress)
