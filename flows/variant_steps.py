"""One variant's chain of tasks (LR test -> train -> evaluate -> features -> publish), for every seed of a comparison;
the same code runs in the flow's process, in a task runner's worker process, or on a Dask worker."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task

from cnn.errors import StorageError
from cnn.models import load_variants
from cnn.parallel import set_threads
from cnn.pipeline import check_batch_size, variant_dir
from cnn.report import failed_row, make_row
from flows.failures import error_line
from flows.results import with_result_storage
from flows.settings import RunSettings
from flows.worker_lifecycle import variant_thread
from tasks import evaluate_variant, extract_features, lr_range_test, prepare_dataset, publish_variant, train_variant


def _task(t: Any, step: str, settings: RunSettings) -> Any:
    """The task with its results in the run's store, forced to run afresh when the user asked to refresh `step`."""
    t = with_result_storage(t, settings.storage)
    return t.with_options(refresh_cache=True) if step in settings.refresh else t


def run_variant_steps(
    variant: str,
    settings: RunSettings,
    *,
    seed: int,
    lr_info: dict[str, Any] | None = None,
    subdir: str | None = None,
    progress: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """LR test (when lr is auto and no lr_info is given) -> train -> evaluate -> features -> publish; returns the row."""
    ref = settings.ref.to_dict()
    info = _task(prepare_dataset, "dataset", settings)(ref)
    check_batch_size(settings.params.batch_size, info["num_train"])  # before this variant's LR test or training
    device = settings.config["device"]
    if lr_info is None:
        if settings.lr == "auto":
            lr_info = _task(lr_range_test, "lr", settings)(
                ref,
                variant,
                settings.storage,
                settings.run,
                settings.lr_settings,
                device=device,
                fingerprint=info["fingerprint"],
            )
        else:
            lr_info = {"lr": float(settings.lr), "rule": "given", "flag": None}
    config = {**settings.config, "lr": float(lr_info["lr"]), "seed": seed}
    config.pop("device")
    trained = _task(train_variant, "train", settings)(
        ref,
        variant,
        settings.storage,
        settings.run,
        config,
        device=device,
        subdir=subdir,
        fingerprint=info["fingerprint"],
        progress=progress,
        resume="train" not in settings.refresh,
        fallback=settings.lr == "auto",
    )
    evaluated = _task(evaluate_variant, "evaluate", settings)(
        ref, variant, settings.storage, trained["folder_rel"], trained["model_id"], device=device
    )
    features = _task(extract_features, "features", settings)(
        ref, variant, settings.storage, trained["folder_rel"], trained["model_id"]
    )
    row = make_row(variant, seed, lr_info, trained, evaluated, trained["folder"])
    row_rel = variant_dir(settings.ref.name, settings.run, variant) + (f"/{subdir}" if subdir else "") + "/row.json"
    publish_variant(settings.ref.name, settings.storage, row_rel, row, lr_info, trained, evaluated, features)
    return {"row": row, "lr_info": lr_info}


def run_seeds(variant: str, settings: RunSettings, seeds: list[int], progress: dict[str, Any]) -> list[dict[str, Any]]:
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
                settings,
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


@task(name="variant_steps", cache_policy=None, persist_result=False, task_run_name="{variant}")
def variant_steps(
    variant: str, settings: RunSettings, seeds: list[int], progress: dict[str, Any], threads: int | None = None
) -> list[dict[str, Any]]:
    """`run_seeds` in a task runner's worker, with `threads` torch threads (None: the worker's own setting); the run's
    plug-ins are loaded there first (as any worker can load them)."""
    if threads:
        set_threads(threads)
    load_variants(settings.plugins["variant_modules"], settings.plugins["variant_files"])
    with variant_thread():  # on a thread of the flow's process, a stop interrupts it there
        return run_seeds(variant, settings, seeds, progress)
