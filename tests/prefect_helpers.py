"""Reading flow results back through the Prefect API, and task results from a store, for the flow tests."""

from __future__ import annotations

import asyncio
from typing import Any


def read_task_result(storage: str, key: str) -> Any:
    """The value of the task result `key` stored under `storage`, read as the flows' result storage reads it
    (flows.results: UntrustedResult for a file cnn-lab did not write)."""
    from prefect.results import ResultStore

    from cnn.storage import Storage
    from flows.results import RESULTS_DIR, CnnLabResultStorage, PlainJSONSerializer

    store = Storage(storage)
    block = CnnLabResultStorage(basepath=store.path(RESULTS_DIR), endpoint_url=store.endpoint_url)
    return ResultStore(result_storage=block, serializer=PlainJSONSerializer()).read(key).result


async def _artifacts(key: str) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    async with get_client() as client:
        found = await client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    return sorted(found, key=lambda a: a.created, reverse=True)


def artifacts(key: str) -> list[Any]:
    """Every version of the artifact `key`, newest first."""
    return asyncio.run(_artifacts(key))


async def _final_task_runs(flow_run_id: Any, wait_s: float = 30) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    deadline = asyncio.get_running_loop().time() + wait_s
    async with get_client() as client:
        while True:
            runs = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
            # the server records task-run states from events, after the flow run has returned: on a busy machine a
            # task run was read without its state; wait until each has its final one
            if all(run.state is not None and run.state.is_final() for run in runs):
                return runs
            if asyncio.get_running_loop().time() > deadline:
                return runs
            await asyncio.sleep(0.2)


def task_runs(flow_run_id: Any) -> list[Any]:
    """The task runs of a flow run as the API holds them, once each has its final state (or after 30 s)."""
    return asyncio.run(_final_task_runs(flow_run_id))


async def _task_states(flow_run_id: Any) -> dict[str, list[str]]:
    states: dict[str, list[str]] = {}
    for run in await _final_task_runs(flow_run_id):
        task = run.task_key.rsplit("-", 1)[0]  # the task's function name (run names say step, variant and seed)
        states.setdefault(task, []).append(run.state.name if run.state else "(no state)")
    return {k: sorted(v) for k, v in states.items()}


def task_states(flow_run_id: Any) -> dict[str, list[str]]:
    """Task name -> sorted state names of that flow run's task runs (e.g. {"train_variant": ["Cached", "Cached"]})."""
    return asyncio.run(_task_states(flow_run_id))
