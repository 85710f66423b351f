"""The flows once each on a few hundred digits, quick enough for the fast lane: a comparison (steps, runner, report),
then a retrain that republishes, and the deployment checks that need no worker. The slow files (test_flows.py,
test_faults.py, test_deployments.py) cover caching, failures, faults and dispatching to a real worker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cnn.errors import ConfigError

# one seed: the steps once each (test_flows.py covers the default, --repeats auto)
SETTINGS = {"dataset": "digits", "epochs": 1, "batch_size": 32, "max_train": 200, "max_test": 100, "repeats": 1}


FLOW_RUN_IDS: dict[str, object] = {}  # the fixture's flow runs, by name


@pytest.fixture(scope="module")
def compared(prefect_harness, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    """One comparison of lenet1 on digits (parallel 'auto' keeps one variant in the flow's process): result and store."""
    from flows.compare import compare_architectures

    store = tmp_path_factory.mktemp("store")
    state = compare_architectures(**SETTINGS, variants=["lenet1"], storage=str(store), run="first", return_state=True)
    assert state.is_completed(), state.message
    FLOW_RUN_IDS["compare"] = state.state_details.flow_run_id
    return state.result(), store


def test_a_comparison_trains_each_variant_and_writes_its_report(compared: tuple[dict, Path]) -> None:
    result, store = compared
    [row] = result["rows"]
    assert row["variant"] == "lenet1" and row["status"] == "ok" and 0 <= row["test_acc"] <= 1
    assert (store / "digits" / "first" / "report.md").is_file()
    assert {"model.pt", "metrics.json", "row.json"} <= {
        p.name for p in (store / "digits" / "first" / "lenet1").iterdir()
    }


def test_the_comparisons_task_runs_are_named_by_step_variant_and_seed(compared: tuple[dict, Path]) -> None:
    from prefect_helpers import task_runs

    names = {run.name for run in task_runs(FLOW_RUN_IDS["compare"])}
    assert names == {
        "dataset digits",
        "lr lenet1",
        "train lenet1 s0",
        "evaluate lenet1 s0",
        "features lenet1 s0",
        "publish lenet1 s0",
        "read comparison default on digits",
        "record comparison default on digits",
        "publish comparison default on digits",
    }


def test_every_task_is_named_by_what_it_runs() -> None:
    import importlib
    import pkgutil

    from prefect import Task

    import flows
    import tasks

    found: dict[str, Task] = {}
    for package in (tasks, flows):
        for info in pkgutil.iter_modules(package.__path__, f"{package.__name__}."):
            module = importlib.import_module(info.name)
            found |= {task.name: task for task in vars(module).values() if isinstance(task, Task)}
    assert {"train_variant", "publish_comparison", "read_comparison", "read_row", "variant_steps"} <= set(found)
    assert not [name for name, task in found.items() if not task.task_run_name], "a task run named <task>-<n>"


def test_a_dispatching_comparison_reads_a_finished_runs_row_back(compared: tuple[dict, Path]) -> None:
    from tasks.store import read_row

    result, store = compared
    assert read_row.fn(str(store), "digits/first/lenet1/row.json") == result["rows"][0]
    assert read_row.fn(str(store), "digits/first/cnn2_5/row.json") is None


def test_a_retrain_republishes_the_table_with_its_fresh_row(compared: tuple[dict, Path]) -> None:
    from flows.retrain import retrain_variant

    _, store = compared
    state = retrain_variant(
        variant="lenet1", dataset="digits", lr=0.01, storage=str(store), run="again", return_state=True
    )
    assert state.is_completed(), state.message
    [fresh] = state.result()["fresh"]
    assert fresh["folder"].endswith("digits/again/lenet1") and fresh["lr"] == 0.01 and fresh["epochs"] == 1
    record = json.loads((store / "digits" / "comparisons" / "default" / "lenet1.json").read_text())
    assert record["run"] == "again" and (store / "digits" / "again" / "report.md").is_file()


def test_a_deployment_the_server_lacks_is_refused_before_any_work(prefect_harness) -> None:
    from flows.dispatch import check_deployment

    with pytest.raises(ConfigError, match="no deployment 'train-variant/nowhere' on the Prefect server"):
        check_deployment("train-variant/nowhere")
    with pytest.raises(ConfigError, match="is not a <flow>/<deployment> name"):
        check_deployment("nowhere")


def test_a_dispatched_variant_gets_the_runs_parameters_and_its_own_seed(tmp_path: Path) -> None:
    from flows.dispatch import variant_parameters
    from flows.parameters import VARIANT_FIELDS
    from flows.settings import prepare_run

    config = prepare_run(**SETTINGS, variants=["lenet1", "cnn2_5"], storage=str(tmp_path), run="r", lr=0.01)
    values = variant_parameters(config, "cnn2_5", 3, "seed-3")
    assert list(values) == list(VARIANT_FIELDS)
    assert (values["variant"], values["seed"], values["repeat"], values["subdir"], values["run"]) == (
        "cnn2_5",
        0,
        3,
        "seed-3",
        "r",
    )  # trains seed 3 on the comparison's split (seed 0)
    assert values["lr"] == 0.01 and values["max_train"] == 200
