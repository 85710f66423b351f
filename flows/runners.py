"""Where a comparison's variants run: one after another in the flow's process, at once in worker processes on this
machine (Prefect's ProcessPoolTaskRunner), or on a Dask cluster (prefect-dask's DaskTaskRunner)."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from collections.abc import Iterator
from typing import Any

from prefect import get_run_logger

from cnn import parallel
from cnn.errors import ConfigError, StorageError, no_dask_error
from cnn.models import forward_mflops, resolve_input_size, upsampled_side
from cnn.params import scheduler_address
from cnn.redaction import redact
from cnn.recipe import resolve_epochs
from cnn.params import RunParams
from cnn.report import failed_row
from flows.failures import error_line
from flows.variant_steps import run_seeds, variant_steps
from flows.worker_lifecycle import init_worker, local_cluster, stop_signals_blocked, stopper


def workload(config: RunParams, variants: list[str], info: dict[str, Any]) -> parallel.Workload:
    """The comparison's size as cnn/parallel.py's rule sees it: the variants, the training images and epochs, the input
    size, and each variant's forward FLOPs per image (what makes one variant cost more than another)."""
    side = upsampled_side(int(info["image_size"]))  # small images are upsampled: the estimate plans for that side
    channels, classes = int(info["channels"]), len(info["classes"])
    return parallel.Workload(
        jobs=len(variants),
        train_images=int(info["num_train"]),
        epochs=resolve_epochs(config.epochs, int(info["num_train"])),
        image_values=channels * side * side,
        mflops=tuple(forward_mflops(v, channels, classes, resolve_input_size(v, side)) for v in variants),
    )


def workers_for(config: RunParams, work: parallel.Workload, busy: int = 0) -> int:
    """The `parallel` parameter, or for auto the rule of cnn/parallel.py on this machine and this comparison, counting
    only the cores that other processes leave free (`busy`: cnn.parallel.busy_cpus)."""
    chosen = config.parallel
    if chosen != "auto":
        return int(chosen)
    machine = parallel.Machine.this_one(parallel.gpu_memory_free(config.device))
    return parallel.choose_parallel(work, dataclasses.replace(machine, cpus=max(1, machine.cpus - busy)))


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


def run_in_process(
    config: RunParams, variants: list[str], seeds: list[int], progress_id: str, busy: int = 0
) -> list[dict[str, Any]]:
    """Each variant's steps in this process, one after another, with the torch threads of the cores other processes
    leave free (`busy`: cnn.parallel.busy_cpus); a failing variant becomes a failed row."""
    rows: list[dict[str, Any]] = []
    threads = parallel.threads_per_worker(1, busy=busy)
    get_run_logger().info("%d variants in this process, %d torch thread(s)", len(variants), threads)
    with parallel.torch_threads(threads):
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
    config: RunParams,
    variants: list[str],
    seeds: list[int],
    progress_id: str,
    workers: int,
    order: list[int] | None = None,
    busy: int = 0,
) -> list[dict[str, Any]]:
    """One `variant_steps` task run per variant, `workers` at a time, each with its share of the free CPU cores; rows in
    the variants' order. On this machine the flow's own process is one of the workers (a thread task runner), so only
    workers - 1 interpreters are spawned and their start-up overlaps its first variant; with a Dask task runner every
    variant goes to the cluster. Variants are handed out in `order` (indices; default as given: run_variants passes the
    longest first), the first to the flow's own slot, then as slots free up; `busy` cores get no threads. A variant whose worker fails (or dies)
    becomes failed rows and the others go on; a StorageError stops the comparison, as in the flow's process. Workers
    start deaf to Ctrl-C and SIGTERM, and on either the flow's process stops them all at once (flows.worker_lifecycle)."""
    from prefect.task_runners import ThreadPoolTaskRunner

    spec = config.task_runner
    threads = None if scheduler_address(spec) else parallel.threads_per_worker(workers, busy=busy)
    here = 0 if spec else 1  # slots in the flow's own process
    total = len(variants) * len(seeds)
    get_run_logger().info(
        "%d variants on %s, %d at a time%s",
        len(variants),
        redact(spec) or "this process and worker processes",
        workers,
        f", {threads} thread(s) each" if threads else "",
    )
    pending = [variants[i] for i in (order or range(len(variants)))]
    handed = 0  # variants handed out so far: the progress bar's runs done before the next one, roughly
    results: dict[str, list[dict[str, Any]]] = {}
    stop_workers_on_stop = stopper()  # notes the processes already running: not this comparison's workers
    with contextlib.ExitStack() as stack:
        stack.enter_context(api_for_workers())
        slots: list[tuple[Any, int]] = []
        if workers - here:
            with stop_signals_blocked():
                slots.append((stack.enter_context(task_runner_for(spec, workers - here)), workers - here))
        if here:  # filled first: it starts at once, while the spawned interpreters import
            stack.enter_context(parallel.torch_threads(threads))
            slots.insert(0, (stack.enter_context(ThreadPoolTaskRunner(max_workers=here)), here))
        stack.push(stop_workers_on_stop)  # left first: on a stop, workers end before the runners wait for them
        in_flight: dict[Any, tuple[Any, str]] = {}
        while pending or in_flight:
            for runner, size in slots:
                while pending and sum(r is runner for r, _ in in_flight.values()) < size:
                    variant = pending.pop(0)
                    params = {
                        "variant": variant,
                        "config": config,
                        "seeds": seeds,
                        "progress": {"artifact_id": progress_id, "done": handed * len(seeds), "total": total},
                        "threads": None if runner is slots[0][0] and here else threads,
                    }
                    handed += 1
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
    """Every (variant, seed) row: on the named task runner, in worker processes when more than one runs at once (the
    variants predicted longest first), else here; the cores other processes keep busy now count as taken."""
    busy = parallel.busy_cpus()
    parallel_one = config.parallel != "auto" and int(config.parallel) == 1
    if parallel_one and not config.task_runner:  # nothing to choose or order: no FLOPs counted
        return run_in_process(config, variants, seeds, progress_id, busy)
    work = workload(config, variants, info)
    workers = workers_for(config, work, busy)
    if config.task_runner or min(workers, len(variants)) > 1:
        order = parallel.longest_first(parallel.job_seconds(work))
        return run_on_workers(config, variants, seeds, progress_id, min(workers, len(variants)), order, busy)
    return run_in_process(config, variants, seeds, progress_id, busy)
