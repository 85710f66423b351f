"""Where a comparison's variants run: one after another in the flow's process, at once in worker processes on this
machine (Prefect's ProcessPoolTaskRunner), or on a Dask cluster (prefect-dask's DaskTaskRunner)."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

from prefect import get_run_logger

from cnn import parallel
from cnn.errors import ConfigError, StorageError, no_dask_error
from cnn.params import scheduler_address
from cnn.pipeline import DESIGN_SIDE  # the side small images are upsampled to: what the memory estimate plans for
from cnn.redaction import redact
from cnn.recipe import resolve_epochs
from cnn.params import RunParams
from cnn.report import failed_row
from flows.failures import error_line
from flows.variant_steps import run_seeds, variant_steps
from flows.worker_lifecycle import init_worker, local_cluster, stop_signals_blocked, stopper


def workers_for(config: RunParams, info: dict[str, Any]) -> int:
    """The `parallel` parameter, or for auto the rule of cnn/parallel.py on this machine and this comparison."""
    chosen = config.parallel
    if chosen != "auto":
        return int(chosen)
    side = max(int(info["image_size"]), DESIGN_SIDE)
    epochs = resolve_epochs(config.epochs, int(info["num_train"]))
    work = parallel.Workload(
        jobs=len(config.variants),
        train_images=int(info["num_train"]),
        epochs=epochs,
        image_values=int(info["channels"]) * side * side,
    )
    return parallel.choose_parallel(work, parallel.Machine.this_one(parallel.gpu_memory_free(config.device)))


def task_runner_for(spec: str, workers: int) -> Any:
    """A started-on-enter task runner: '' -> `workers` spawned processes; 'dask' -> a local Dask cluster of `workers`
    processes; 'dask://host:port' (or tcp://, tls://) -> that Dask scheduler. Local workers end with this process
    (flows.worker_lifecycle)."""
    if not spec:
        from prefect.task_runners import ProcessPoolTaskRunner

        return ProcessPoolTaskRunner(max_workers=workers, initializer=init_worker, initargs=(os.getpid(),))
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError:
        raise no_dask_error(spec) from None
    # Dask logs its own bookkeeping at INFO (nannies, comms, and a comm's traceback when a stop closes it): warnings on
    logging.getLogger("distributed").setLevel(logging.WARNING)
    if spec == "dask":
        return DaskTaskRunner(
            cluster_class=local_cluster,
            cluster_kwargs={
                "n_workers": workers,
                "threads_per_worker": 1,
                "processes": True,
                "dashboard_address": None,
            },
        )
    return DaskTaskRunner(address=spec.replace("dask://", "tcp://", 1))


@contextlib.contextmanager
def api_for_workers() -> Iterator[None]:
    """Hand worker processes this flow's Prefect API: the CLI's temporary server is not in the settings they inherit."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if PREFECT_API_URL.value():
        yield
        return
    with get_client(sync_client=True) as client:
        url = str(client.api_url).rstrip("/")
    with temporary_settings(updates={PREFECT_API_URL: url}):
        yield


def run_in_process(config: RunParams, variants: list[str], seeds: list[int], progress_id: str) -> list[dict[str, Any]]:
    """Each variant's steps in this process, one after another; a failing variant becomes a failed row."""
    rows: list[dict[str, Any]] = []
    for i, variant in enumerate(variants):
        rows += run_seeds(
            variant,
            config,
            seeds,
            {"artifact_id": progress_id, "done": i * len(seeds), "total": len(variants) * len(seeds)},
        )
    return rows


def _submit(runner: Any, params: dict[str, Any], spec: str) -> Any:
    """Submit one variant's steps. The threads and processes a submit starts inherit the stop signals' block
    (flows.worker_lifecycle); a Dask scheduler that has gone since the run's checks is a ConfigError naming it."""
    try:
        with stop_signals_blocked():
            return runner.submit(variant_steps, params)
    except OSError as err:
        if scheduler_address(spec) is None:
            raise
        raise ConfigError(
            "task_runner",
            f"lost the Dask scheduler at {redact(spec)}: {error_line(err)}",
            allowed="a running Dask scheduler's address, or dask for a local cluster",
        ) from None


def _next_done(futures: list[Any]) -> Any:
    """The first of `futures` to finish."""
    from prefect.futures import as_completed

    return next(iter(as_completed(futures)))


def run_on_workers(
    config: RunParams, variants: list[str], seeds: list[int], progress_id: str, workers: int
) -> list[dict[str, Any]]:
    """One `variant_steps` task run per variant, `workers` at a time, each with its share of the CPU cores; rows in the
    variants' order. On this machine the flow's own process is one of the workers (a thread task runner), so only
    workers - 1 interpreters are spawned and their start-up overlaps its first variant; with a Dask task runner every
    variant goes to the cluster. Variants are handed out as slots free up. A variant whose worker fails (or dies)
    becomes failed rows and the others go on; a StorageError stops the comparison, as in the flow's process. Workers
    start deaf to Ctrl-C and SIGTERM, and on either the flow's process stops them all at once (flows.worker_lifecycle)."""
    from prefect.task_runners import ThreadPoolTaskRunner

    spec = config.task_runner
    threads = None if scheduler_address(spec) else parallel.threads_per_worker(workers)
    here = 0 if spec else 1  # slots in the flow's own process
    total = len(variants) * len(seeds)
    get_run_logger().info(
        "%d variants on %s, %d at a time%s",
        len(variants),
        redact(spec) or "this process and worker processes",
        workers,
        f", {threads} thread(s) each" if threads else "",
    )
    pending = list(enumerate(variants))
    results: dict[str, list[dict[str, Any]]] = {}
    stop_workers_on_stop = stopper()  # notes the processes already running: not this comparison's workers
    with contextlib.ExitStack() as stack:
        stack.enter_context(api_for_workers())
        slots: list[tuple[Any, int]] = []
        if workers - here:
            with stop_signals_blocked():
                slots.append((stack.enter_context(task_runner_for(spec, workers - here)), workers - here))
        if here:
            stack.enter_context(parallel.torch_threads(threads))
            slots.append((stack.enter_context(ThreadPoolTaskRunner(max_workers=here)), here))
        stack.push(stop_workers_on_stop)  # left first: on a stop, workers end before the runners wait for them
        in_flight: dict[Any, tuple[Any, str]] = {}
        while pending or in_flight:
            for runner, size in slots:
                while pending and sum(r is runner for r, _ in in_flight.values()) < size:
                    i, variant = pending.pop(0)
                    params = {
                        "variant": variant,
                        "config": config,
                        "seeds": seeds,
                        "progress": {"artifact_id": progress_id, "done": i * len(seeds), "total": total},
                        "threads": None if runner is slots[-1][0] and here else threads,
                    }
                    in_flight[_submit(runner, params, spec)] = (runner, variant)
            future = _next_done(list(in_flight))
            _, variant = in_flight.pop(future)
            try:
                results[variant] = future.result()
            except StorageError:
                raise
            except Exception as err:  # noqa: BLE001 - a worker that failed or died loses its variant only
                get_run_logger().error("variant %s failed on its worker: %s", variant, error_line(err))
                results[variant] = [failed_row(variant, seed, error_line(err)) for seed in seeds]
    return [row for variant in variants for row in results[variant]]


def run_variants(
    config: RunParams, variants: list[str], seeds: list[int], progress_id: str, info: dict[str, Any]
) -> list[dict[str, Any]]:
    """Every (variant, seed) row: on the named task runner, in worker processes when more than one runs at once, else here."""
    workers = workers_for(config, info)
    if config.task_runner or min(workers, len(variants)) > 1:
        return run_on_workers(config, variants, seeds, progress_id, min(workers, len(variants)))
    return run_in_process(config, variants, seeds, progress_id)
