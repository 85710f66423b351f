"""One variant's chain of tasks (LR test -> train -> evaluate -> features -> publish), for every seed of a comparison;
the same code runs in the flow's process, in a task runner's worker process, or on a Dask worker."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from prefect import get_run_logger, task

from cnn.errors import StorageError
from cnn.gpus import own_device
from cnn.models import load_variants
from cnn.parallel import set_threads
from cnn.step_inputs import check_splits, variant_dir
from cnn.report import failed_row, make_row
from cnn.step_results import result_problem
from cnn.params import RunParams
from flows.credentials import use_storage_block
from flows.failures import error_line
from flows.results import with_result_storage
from flows.worker_lifecycle import variant_thread
from tasks import evaluate_variant, extract_features, lr_range_test, prepare_dataset, publish_variant, train_variant
from tasks.policy import STEP_OF_TASK
from tasks.progress import mark_done


def step_task(t: Any, config: RunParams) -> Callable[..., Any]:
    """The task with its results in the run's store, forced to run afresh when the user asked to refresh its step; a
    call whose result (a cached record read back) lacks the step's shape runs the step again, which replaces the record."""
    t = with_result_storage(t, config.storage)
    t = t.with_options(refresh_cache=True) if STEP_OF_TASK[t.name] in config.refresh else t
    return functools.partial(_checked_call, t)


def _checked_call(t: Any, *args: Any, **kwargs: Any) -> Any:
    """`t(*args, **kwargs)`, run afresh when its result is not of its step's shape (cnn.step_results)."""
    out = t(*args, **kwargs)
    problem = result_problem(STEP_OF_TASK[t.name], out)
    if problem is None:
        return out
    get_run_logger().warning(
        "%s: its cached result is not one (%s); running the step again, which replaces the record", t.name, problem
    )
    return t.with_options(refresh_cache=True)(*args, **kwargs)


def run_seeds(
    variant: str,
    config: RunParams,
    seeds: list[int],
    progress: dict[str, Any] | None = None,
    subdirs: list[str | None] | None = None,
) -> list[dict[str, Any]]:
    """One variant for every seed: one LR test (when lr is auto), the seeds trained together, then each seed evaluated,
    inspected and published; a failing seed becomes a failed row, a failing step before training fails every seed.
    On a machine with several GPUs the steps run on one that no other variant uses meanwhile (cnn.gpus).

    Seed k's files go in subdirs[k] (default: `seed_subdir`). A StorageError is raised: the store
    is every variant's, so the others would fail the same way after as long a wait. `progress` holds the artifact id,
    the (variant, seed) runs done before this variant, and the total."""
    with own_device(config.device) as device:
        return _seeds_steps(variant, config.model_copy(update={"device": device}), seeds, progress, subdirs)


def seed_subdir(config: RunParams, seed: int) -> str | None:
    """The sub-folder of one seed's files in its variant's folder: seed-<seed> when the run has several seeds (repeats
    above 1, or auto), else none."""
    return None if config.repeats == 1 else f"seed-{seed}"


def _seeds_steps(
    variant: str,
    config: RunParams,
    seeds: list[int],
    progress: dict[str, Any] | None,
    subdirs: list[str | None] | None,
) -> list[dict[str, Any]]:
    subdirs = subdirs or [seed_subdir(config, seed) for seed in seeds]
    try:
        info = step_task(prepare_dataset, config)(config)
        check_splits(config, info)  # before this variant's LR test or training
        lr_info = (
            step_task(lr_range_test, config)(config, variant, fingerprint=info["fingerprint"])
            if config.lr == "auto"
            else {"lr": float(config.lr), "rule": "given", "flag": None}
        )
        trained = _train(variant, config, seeds, subdirs, float(lr_info["lr"]), info["fingerprint"], progress)
    except StorageError:
        raise
    except Exception as err:  # noqa: BLE001 - one failed variant must not sink the others
        return [_failed(variant, seed, err) for seed in seeds]
    rows = []
    for seed, subdir, result in zip(seeds, subdirs, trained):
        try:
            if isinstance(result, Exception):
                raise result
            rows.append(
                _inspect_and_publish(variant, config, seed, subdir, lr_info, result, features=seed == config.seed)
            )
        except StorageError:
            raise
        except Exception as err:  # noqa: BLE001 - one failed seed must not sink the others
            rows.append(_failed(variant, seed, err))
    mark_done(progress, len(seeds))  # also when every step came from the cache
    return rows


def _train(
    variant: str,
    config: RunParams,
    seeds: list[int],
    subdirs: list[str | None],
    lr: float,
    fingerprint: str,
    progress: dict[str, Any] | None,
) -> list[dict[str, Any] | Exception]:
    """The seeds trained as one task; when that fails and there are several, one task per seed, so that each seed gets
    its own outcome (an Exception in its place when it fails)."""
    train = step_task(train_variant, config)
    common = {"fingerprint": fingerprint, "progress": progress, "resume": "train" not in config.refresh}
    try:
        return train(config, variant, seeds, lr, subdirs=subdirs, label=_label(seeds), **common)
    except StorageError:
        raise
    except Exception as err:  # noqa: BLE001 - retried seed by seed below
        if len(seeds) == 1:
            raise
        get_run_logger().warning(
            "%s: the seeds' training failed together (%s); training them one by one", variant, error_line(err)
        )
    results: list[dict[str, Any] | Exception] = []
    for seed, subdir in zip(seeds, subdirs):
        try:
            results += train(config, variant, [seed], lr, subdirs=[subdir], label=_label([seed]), **common)
        except StorageError:
            raise
        except Exception as err:  # noqa: BLE001 - this seed's failed row
            results.append(err)
    return results


def _label(seeds: list[int]) -> str:
    """ "s0", or "s0-s2" for seeds 0..2: how task runs name their seeds."""
    return f"s{seeds[0]}" if len(seeds) == 1 else f"s{seeds[0]}-s{seeds[-1]}"


def _inspect_and_publish(
    variant: str,
    config: RunParams,
    seed: int,
    subdir: str | None,
    lr_info: dict[str, Any],
    trained: dict[str, Any],
    *,
    features: bool,
) -> dict[str, Any]:
    """Evaluate one trained seed, extract its feature maps and filters (`features`: the comparison's first seed's only,
    as the reports show one seed's, whichever round or worker trains it), store its row.json and publish its artifact;
    returns the row."""
    label = f"s{seed}"
    folder, model_id = trained["folder_rel"], trained["model_id"]
    evaluated = step_task(evaluate_variant, config)(config, variant, folder, model_id, label=label)
    maps = step_task(extract_features, config)(config, variant, folder, model_id, label=label) if features else {}
    row = make_row(variant, seed, lr_info, trained, evaluated, trained["folder"])
    row_rel = variant_dir(config.dataset, config.run, variant) + (f"/{subdir}" if subdir else "") + "/row.json"
    publish_variant(config.dataset, config.storage, row_rel, row, lr_info, trained, evaluated, maps)
    return row


def _failed(variant: str, seed: int, err: BaseException) -> dict[str, Any]:
    """The failed row of one seed, logged."""
    get_run_logger().error("variant %s (seed %d) failed: %s", variant, seed, error_line(err))
    return failed_row(variant, seed, error_line(err))


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
    with variant_thread():  # on a thread of the flow's process, a stop interrupts it there
        return run_seeds(variant, config, seeds, progress)
