"""Flow runs on a real `prefect server start` and process worker: a cnn-lab error ends a deployment run in one line (no
traceback in the worker's output or the run's log), and the `gpu` concurrency limit keeps trainings from overlapping."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from idx_data import write_mnist_like
from prefect_server import REPO, prefect, running_server, running_worker, tail

POOL = "cnn-lab-local"
DEPLOYMENT = "train-variant/train-variant-local"
WAIT_S = 240
SERVER_ENV = {
    "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false",
    "PREFECT_SERVER_TASKS_TAG_CONCURRENCY_SLOT_WAIT_SECONDS": "1",
    "PREFECT_SERVER_CONCURRENCY_MAXIMUM_CONCURRENCY_SLOT_WAIT_SECONDS": "1",
}


@dataclass
class Pool:
    """A server with the laptop pool, the `gpu` limit at 1 and train-variant-local deployed, and a worker on the pool."""

    client: Any
    api: str
    worker_log: Path
    data: Path
    root: Path

    def start(self, **parameters: Any) -> Any:
        """A flow run of the training deployment (not waited for)."""
        deployment = self.client.read_deployment_by_name(DEPLOYMENT)
        return self.client.create_flow_run_from_deployment(deployment.id, parameters=parameters)

    def wait(self, flow_run_id: Any) -> Any:
        """The flow run once it is final."""
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            run = self.client.read_flow_run(flow_run_id)
            if run.state is not None and run.state.is_final():
                return run
            time.sleep(1)
        raise AssertionError(f"flow run {flow_run_id} not final after {WAIT_S} s; worker:\n{tail(self.worker_log)}")

    def logs(self, flow_run_id: Any, until: str, wait_s: float = 30) -> list[str]:
        """The run's log lines as the API holds them (what the UI shows), once one contains `until`."""
        from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

        deadline = time.monotonic() + wait_s
        while True:
            logs = self.client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
            lines = [line.message for line in logs]
            if any(until in line for line in lines) or time.monotonic() > deadline:
                return lines
            time.sleep(0.5)

    def worker_output(self, until: str, wait_s: float = 30) -> str:
        """The worker's output so far, once it contains `until` (its flow-run subprocesses print with a lag)."""
        deadline = time.monotonic() + wait_s
        while until not in (text := self.worker_log.read_text()) and time.monotonic() < deadline:
            time.sleep(0.5)
        return text


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.actions import WorkPoolCreate

    root = tmp_path_factory.mktemp("pool")
    data = write_mnist_like(root / "data", "FashionMNIST")
    with running_server(root / "home", SERVER_ENV) as (api, env), SyncPrefectClient(api) as client:
        env = {**env, "CNN_LAB_HOME": str(REPO), "PREFECT_WORKER_QUERY_SECONDS": "1"}
        template = json.loads((REPO / "deployments" / "local-pool.json").read_text())
        client.create_work_pool(WorkPoolCreate(name=POOL, type="process", base_job_template=template))
        client.create_concurrency_limit(tag="gpu", concurrency_limit=1)
        worker_log = root / "worker.log"
        with running_worker(POOL, env, worker_log):
            prefect(
                ["deploy", "--prefect-file", "deployments/prefect.yaml", "-n", "train-variant-local"], env, timeout=240
            )
            yield Pool(client, api, worker_log, data, root)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_cnn_lab_error_ends_a_deployment_run_in_one_line_in_the_worker_output_and_the_run_log(pool: Pool) -> None:
    corrupt = write_mnist_like(pool.root / "corrupt", "FashionMNIST", n_train=100, n_test=40)
    images = corrupt / "FashionMNIST" / "raw" / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:3000])
    run = pool.wait(
        pool.start(variant="lenet1", data_dir=str(corrupt), storage=str(pool.root / "store"), run="fails").id
    )
    line = f"DataError: data_dir: dataset 'FashionMNIST' in '{corrupt}' is corrupt or truncated"
    assert run.state_name == "Failed" and run.state.message.startswith(line), run.state.message
    finished = f'Finished in state Failed("{line}'  # the flow run's line (its task's failure line comes first)
    logs, worker = pool.logs(run.id, until=finished), pool.worker_output(finished)
    assert f"View at {pool.api.removesuffix('/api')}/runs/flow-run/{run.id}" in worker  # a server that stays: its link
    for where, text in (("the run's log", "\n".join(logs)), ("the worker's output", worker)):
        assert finished in text, f"{where}:\n{text[-4000:]}"
        for noise in ("Traceback", "serialize", "Unexpected result", "Engine execution", "exited with"):
            assert noise not in text, f"{noise!r} in {where}:\n{text[-4000:]}"


def _interval(client: Any, task_run: Any) -> tuple[Any, Any]:
    """When a task run started running and when it ended, from its states' timestamps."""
    states = sorted(client.read_task_run_states(task_run.id), key=lambda s: s.timestamp)
    start = next(s.timestamp for s in states if s.type.value == "RUNNING")
    return start, next(s.timestamp for s in states if s.is_final())


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_gpu_limit_of_one_keeps_two_training_runs_on_the_pool_from_training_at_once(pool: Pool) -> None:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    common = {"data_dir": str(pool.data), "storage": str(pool.root / "store"), "epochs": 6, "batch_size": 16}
    common |= {"lr": 0.05, "device": "cpu", "max_train": 400, "val_size": 50}
    started = [pool.start(variant="lenet1", run=f"limit-{k}", **common) for k in range(2)]
    runs = [pool.wait(run.id) for run in started]
    assert [r.state_name for r in runs] == ["Completed", "Completed"], [r.state.message for r in runs]
    assert [r.name for r in runs] == ["lenet1-s0-on-fashion-mnist"] * 2  # flow run names say variant, seed and data
    trainings = []
    for run in runs:
        tasks = pool.client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))
        [train] = [t for t in tasks if t.task_key.startswith("train_variant")]
        assert "gpu" in train.tags
        trainings.append(_interval(pool.client, train))
    first, second = sorted(trainings)
    assert first[1] <= second[0], f"trainings overlapped: {trainings}"
    # the test can fail: both flow runs were running before the first training ended, so only the limit kept them apart
    assert all(r.start_time is not None and r.start_time < first[1] for r in runs), (
        [r.start_time for r in runs],
        trainings,
    )
