"""deployments/: prefect.yaml checked statically, then deployed to a real server and run by a real process worker."""

from __future__ import annotations

import json
import re
import shlex
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from cnn.params import default_of, parse_params
from prefect_server import REPO, prefect, running_server, running_worker, tail

DEPLOYMENTS = REPO / "deployments"
CLUSTER = ["compare-nightly", "retrain-variant", "train-variant-gpu"]
LAPTOP = ["compare-nightly-local", "retrain-variant-local", "train-variant-local"]
FLOW_OF = {
    "compare-architectures": "flows/compare.py:compare_architectures",
    "train-variant": "flows/variant.py:train_variant_flow",
    "retrain-variant": "flows/retrain.py:retrain_variant",
}


def _raw() -> dict[str, Any]:
    return yaml.safe_load((DEPLOYMENTS / "prefect.yaml").read_text())


def _deployments() -> dict[str, dict[str, Any]]:
    """The deployments as `prefect deploy` reads them (its own pydantic model), by name."""
    from prefect.cli.deploy._models import PrefectYamlModel

    model = PrefectYamlModel.model_validate(_raw())
    return {d.name: d.model_dump(exclude_unset=True, mode="json") for d in model.deployments}


def _flow(entrypoint: str, monkeypatch: pytest.MonkeyPatch):
    from prefect.flows import load_flow_from_entrypoint

    monkeypatch.chdir(REPO)  # entrypoints are relative to the repository root, as for `prefect deploy`
    return load_flow_from_entrypoint(entrypoint)


def _template(name: str) -> dict[str, Any]:
    return json.loads((DEPLOYMENTS / name).read_text())


def _render(template: dict[str, Any], job_variables: dict[str, Any]) -> dict[str, Any]:
    """The job configuration a worker renders: variable defaults, overridden by the deployment's job variables."""
    from prefect.utilities.templating import apply_values

    defaults = {k: v["default"] for k, v in template["variables"]["properties"].items() if "default" in v}
    return apply_values(template["job_configuration"], {**defaults, **job_variables})


# ---------------------------------------------------------------- static checks


def test_prefect_yaml_lists_both_targets_and_prefect_reads_every_entry() -> None:
    raw, read = _raw(), _deployments()
    assert len(read) == len(raw["deployments"]), "an entry prefect deploy would skip or merge"
    assert sorted(read) == sorted(CLUSTER + LAPTOP)
    for name, dep in read.items():
        assert dep["entrypoint"] in FLOW_OF.values(), name
        assert dep["work_pool"]["name"] == ("cnn-lab-local" if name.endswith("-local") else "cnn-lab-gpu"), name


@pytest.mark.parametrize("name", CLUSTER + LAPTOP)
def test_entrypoint_imports_and_its_flow_accepts_the_parameters(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.exceptions import ParameterTypeError

    dep = _deployments()[name]
    flow = _flow(dep["entrypoint"], monkeypatch)
    assert FLOW_OF[flow.name] == dep["entrypoint"]
    validated = flow.validate_parameters(dep["parameters"])
    inherited = flow.name == "retrain-variant"  # a retrain's settings left out are the comparison's
    assert validated["dataset"] == default_of("dataset")
    assert validated["epochs"] == (None if inherited else default_of("epochs"))
    with pytest.raises(ParameterTypeError, match=r"epochs: must be 'auto' or an integer in \[1, 10000\], got 'five'"):
        flow.validate_parameters({**dep["parameters"], "epochs": "five"})


@pytest.mark.parametrize("name", CLUSTER + LAPTOP)
def test_deployments_set_run_parameters_only_where_they_differ_from_the_defaults(name: str) -> None:
    from flows.parameters import COMPARE_FIELDS, RETRAIN_FIELDS, VARIANT_FIELDS

    dep = _deployments()[name]
    fields = {
        FLOW_OF["compare-architectures"]: COMPARE_FIELDS,
        FLOW_OF["train-variant"]: VARIANT_FIELDS,
        FLOW_OF["retrain-variant"]: RETRAIN_FIELDS,
    }[dep["entrypoint"]]
    assert set(dep["parameters"]) <= set(fields), f"{name}: not a parameter of its flow"
    parse_params(dep["parameters"])
    assert not [k for k, v in dep["parameters"].items() if v == default_of(k)], (
        f"{name} repeats a default of cnn/params.py"
    )


def _documented_runs() -> list[tuple[str, list[str]]]:
    """Each `prefect deployment run '<flow>/<deployment>' --param k=v ...` in deployments/README.md: name, k=v texts."""
    text = (DEPLOYMENTS / "README.md").read_text().replace("\\\n", " ")
    runs = []
    for match in re.finditer(r"prefect deployment run '([^']+)'([^\n]*)", text):
        words = shlex.split(match.group(2), comments=True)
        runs.append((match.group(1), [words[i + 1] for i, word in enumerate(words) if word == "--param"]))
    return runs


def test_every_documented_run_passes_its_flows_checks_and_the_offline_ones_are_shown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from prefect.cli._utilities import load_json_key_values  # how `prefect deployment run --param` reads them

    deployments, runs, offline = _deployments(), _documented_runs(), set()
    assert len(runs) >= 8
    for name, texts in runs:
        dep = deployments[name.split("/")[1]]
        params = load_json_key_values(texts, "parameter")
        validated = _flow(dep["entrypoint"], monkeypatch).validate_parameters({**dep["parameters"], **params})
        parse_params({k: v for k, v in validated.items() if v is not None})  # None: a retrain's "as the comparison"
        if validated["dataset"] == "digits" or "data_dir" in params:
            offline.add(name)
    assert offline >= {"compare-architectures/compare-nightly-local", "retrain-variant/retrain-variant-local"}
    assert default_of("dataset") == "fashion-mnist" and not [
        n for n, d in deployments.items() if "dataset" in d["parameters"]
    ], "the schedule runs a real dataset"


def test_aliases_share_schedule_parameters_and_pools() -> None:
    from prefect.client.schemas.schedules import CronSchedule

    raw, read = _raw(), _deployments()
    nightly = raw["definitions"]["schedules"]["nightly"]
    assert read["compare-nightly"]["schedules"] == read["compare-nightly-local"]["schedules"] == [nightly]
    schedule = CronSchedule(**nightly)
    assert schedule.cron == "0 2 * * *" and schedule.timezone == "UTC"
    for name in ("retrain-variant", "retrain-variant-local", "train-variant-gpu", "train-variant-local"):
        assert not read[name].get("schedules"), f"{name} runs on demand only"
    # a retrain finds the comparison where the nightly comparison of the same target records it
    for compare, retrain in (
        ("compare-nightly", "retrain-variant"),
        ("compare-nightly-local", "retrain-variant-local"),
    ):
        for key in ("dataset", "storage", "data_dir", "comparison", "variant_modules", "variant_files"):
            assert read[compare]["parameters"].get(key) == read[retrain]["parameters"].get(key), (compare, key)
    assert read["compare-nightly"]["work_pool"]["job_variables"]["gpu_count"] == 0
    assert read["train-variant-gpu"]["work_pool"]["job_variables"]["gpu_count"] == 1


@pytest.mark.parametrize("compare", ["compare-nightly", "compare-nightly-local"])
def test_comparison_dispatches_to_a_training_deployment_of_its_own_target(compare: str) -> None:
    read = _deployments()
    flow_name, deployment = read[compare]["parameters"]["train_deployment"].split("/")
    assert flow_name == "train-variant" and read[deployment]["entrypoint"] == FLOW_OF["train-variant"]
    assert read[deployment]["work_pool"]["name"] == read[compare]["work_pool"]["name"]
    assert read[deployment]["pull"] == read[compare]["pull"]


def test_laptop_entries_skip_the_image_and_cluster_entries_build_it() -> None:
    read = _deployments()
    for name in LAPTOP:
        assert read[name]["build"] is None and read[name]["push"] is None, name
        assert read[name]["pull"] == [
            {"prefect.deployments.steps.set_working_directory": {"directory": "{{ $CNN_LAB_HOME }}"}}
        ]
    for name in CLUSTER:
        steps = [next(iter(step)) for step in read[name]["build"]]
        assert steps[-1] == "prefect_docker.deployments.steps.build_docker_image", name
        build = read[name]["build"][-1]["prefect_docker.deployments.steps.build_docker_image"]
        assert (REPO / build["dockerfile"]).is_file()
        assert read[name]["work_pool"]["job_variables"]["image"] == "{{ build-image.image }}"
        assert next(iter(read[name]["push"][0])) == "prefect_docker.deployments.steps.push_docker_image"


def test_dockerfile_is_cuda_based_and_its_workdir_is_the_pull_step_directory() -> None:
    text = (DEPLOYMENTS / "Dockerfile").read_text()
    base = re.search(r"^ARG CUDA_IMAGE=(\S+)", text, re.M)
    assert base and base.group(1).startswith("nvidia/cuda:") and "runtime" in base.group(1)
    workdir = re.findall(r"^WORKDIR (\S+)", text, re.M)
    pull = _deployments()["train-variant-gpu"]["pull"][0]["prefect.deployments.steps.set_working_directory"][
        "directory"
    ]
    assert workdir == [pull]
    for folder in ("cnn", "tasks", "flows"):
        assert re.search(rf"^COPY {folder} ", text, re.M), f"image lacks {folder}/"


@pytest.mark.parametrize("template", ["gpu-pool.json", "local-pool.json"])
def test_pool_templates_declare_every_placeholder(template: str) -> None:
    from prefect.utilities.templating import find_placeholders

    tpl = _template(template)
    declared = set(tpl["variables"]["properties"])
    used = {p.name for p in find_placeholders(tpl["job_configuration"])}
    assert used <= declared, f"undeclared: {used - declared}"


@pytest.mark.parametrize(("name", "gpus"), [("train-variant-gpu", 1), ("retrain-variant", 1), ("compare-nightly", 0)])
def test_gpu_pool_job_requests_nvidia_gpus(name: str, gpus: int) -> None:
    from prefect.utilities.schema_tools import validate

    tpl = _template("gpu-pool.json")
    job_variables = {**_deployments()[name]["work_pool"]["job_variables"], "image": "registry.example/cnn-lab:abc123"}
    assert set(job_variables) <= set(tpl["variables"]["properties"]), "a job variable the pool would ignore"
    validate(job_variables, tpl["variables"], raise_on_error=True, ignore_required=True)
    pod = _render(tpl, job_variables)["job_manifest"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == gpus
    assert container["image"] == "registry.example/cnn-lab:abc123"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"]


@pytest.mark.parametrize(("name", "gpus"), [("train-variant-gpu", 1), ("compare-nightly", 0)])
def test_the_kubernetes_worker_renders_a_job_that_requests_the_gpus_image_and_command(
    name: str, gpus: int, prefect_harness
) -> None:
    """The job manifest as prefect-kubernetes's own worker code builds it for a flow run of the deployment."""
    import uuid

    from prefect.client.schemas.objects import FlowRun
    from prefect.utilities.asyncutils import run_coro_as_sync
    from prefect_kubernetes.worker import KubernetesWorkerJobConfiguration

    image = "registry.example/cnn-lab:abc123"  # what the build step's {{ build-image.image }} becomes
    job_variables = {**_deployments()[name]["work_pool"]["job_variables"], "image": image}
    config = run_coro_as_sync(
        KubernetesWorkerJobConfiguration.from_template_and_values(_template("gpu-pool.json"), job_variables)
    )
    flow_run = FlowRun(id=uuid.uuid4(), flow_id=uuid.uuid4(), name="cnn2_5-s0-on-fashion-mnist")
    config.prepare_for_flow_run(flow_run)
    pod = config.job_manifest["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["resources"]["limits"] == {"nvidia.com/gpu": gpus}
    assert container["image"] == image
    assert container["args"] == ["prefect", "flow-run", "execute"]  # the worker's command for this flow run ...
    assert {"name": "PREFECT__FLOW_RUN_ID", "value": str(flow_run.id)} in container["env"]  # ... and which run
    assert container["envFrom"] == [{"secretRef": {"name": "cnn-lab-storage", "optional": True}}]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]


def test_process_pool_template_runs_flows_headless() -> None:
    env = _render(_template("local-pool.json"), {})["env"]
    assert env["MPLBACKEND"] == "Agg"


# ---------------------------------------------------------------- real server, worker and flow runs

VARIANTS = [
    "my_net",
    "mine",
]  # defined outside the project: a .py module (variant_modules) and a JSON config (variant_files)
MY_NETS = """
from torch import nn
from cnn.models import register_variant

@register_variant("my_net", min_input_size=3, description="a variant from a file outside the project")
def my_net(in_channels, num_classes, input_size):
    return nn.Sequential(nn.Conv2d(in_channels, 6, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(24, num_classes))
"""
WAIT_S = 150
SERVER_ENV = {
    "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false",  # the nightly schedule is checked, not run
    "PREFECT_SERVER_TASKS_TAG_CONCURRENCY_SLOT_WAIT_SECONDS": "1",
    "PREFECT_SERVER_CONCURRENCY_MAXIMUM_CONCURRENCY_SLOT_WAIT_SECONDS": "2",
}


def _run_id(cli_output: str) -> str:
    found = re.search(r"UUID: ([0-9a-f-]{36})", cli_output)
    assert found, cli_output
    return found.group(1)


def _wait_final(client: Any, flow_run_id: str, worker_log: Path, timeout: float = WAIT_S) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = client.read_flow_run(flow_run_id)
        if run.state is not None and run.state.is_final():
            return run
        time.sleep(1)
    raise AssertionError(
        f"flow run {flow_run_id} still {run.state_name} after {timeout:.0f} s; worker log:\n{tail(worker_log)}"
    )


def _task_runs(client: Any, flow_run_id: Any) -> list[Any]:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    return client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))


@pytest.fixture(scope="module")
def e2e(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Server + pools + `prefect deploy -n '*-local'` + worker; a two-variant comparison, then a retrain; what the API shows."""
    from idx_data import write_mnist_like
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterKey,
        FlowRunFilter,
        FlowRunFilterParentFlowRunId,
    )

    root = tmp_path_factory.mktemp("e2e")
    data = write_mnist_like(root / "data", "FashionMNIST")
    storage = root / "results"
    common = {
        "epochs": 1,
        "batch_size": 64,
        "lr": 0.05,
        "data_dir": str(data),
        "storage": str(storage),
        "max_train": 200,
        "val_size": 50,
    }
    outside = root / "outside"
    outside.mkdir()
    (outside / "my_nets.py").write_text(MY_NETS)
    (outside / "mine.json").write_text(json.dumps({"conv_channels": [4], "pool_sizes": [2], "fc_sizes": [16]}))
    mine = {"mine": str(outside / "mine.json")}
    with running_server(root / "home", SERVER_ENV) as (api, env), SyncPrefectClient(api) as client:
        env = {**env, "CNN_LAB_HOME": str(REPO), "PREFECT_WORKER_QUERY_SECONDS": "1"}
        # the pools and the `gpu` limit of deployments/README.md, sent through the API in this process (each `prefect`
        # command costs seconds of start-up; what the CLI itself does is checked with `prefect deploy` and the retrain)
        for pool, kind, template in (
            ("cnn-lab-local", "process", "local-pool.json"),
            ("cnn-lab-gpu", "kubernetes", "gpu-pool.json"),
        ):
            client.create_work_pool(WorkPoolCreate(name=pool, type=kind, base_job_template=_template(template)))
        client.create_concurrency_limit(tag="gpu", concurrency_limit=1)
        worker_log = root / "worker.log"
        with running_worker("cnn-lab-local", env, worker_log):  # it starts up while `prefect deploy` runs
            prefect(["deploy", "--prefect-file", "deployments/prefect.yaml", "-n", "*-local"], env, timeout=240)
            compare_params = {
                **common,
                "variants": ["my_net"],
                "variant_modules": [str(outside / "my_nets.py")],
                "variant_files": mine,
                "run": "e2e-compare",
                "repeats": 1,  # one linked training run per variant
            }
            nightly = client.read_deployment_by_name("compare-architectures/compare-nightly-local")
            compare_run = client.create_flow_run_from_deployment(nightly.id, parameters=compare_params)
            compare = _wait_final(client, compare_run.id, worker_log)
            children = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[compare.id]))
            )
            retrain_args = [
                "--param",
                "variant=mine",
                "--param",
                f"variant_files={json.dumps(mine)}",
                "--param",
                "run=e2e-retrain",
                *[a for k, v in common.items() for a in ("--param", f"{k}={v}")],
            ]
            retrain_id = _run_id(
                prefect(["deployment", "run", "retrain-variant/retrain-variant-local", *retrain_args], env)
            )
            retrain = _wait_final(client, retrain_id, worker_log)
            seen = {
                "api": api,
                "storage": storage,
                "worker_log": tail(worker_log, 8000),
                "ui_api_url": json.loads(_get(api.removesuffix("/api") + "/ui-settings"))["api_url"],
                "pools": {name: client.read_work_pool(name) for name in ("cnn-lab-local", "cnn-lab-gpu")},
                "gpu_limit": client.read_concurrency_limit_by_tag("gpu"),
                "deployments": {
                    name: client.read_deployment_by_name(f"{flow}/{name}")
                    for flow, name in (
                        ("compare-architectures", "compare-nightly-local"),
                        ("retrain-variant", "retrain-variant-local"),
                        ("train-variant", "train-variant-local"),
                    )
                },
                "compare": compare,
                "compare_tasks": _task_runs(client, compare.id),
                "children": children,
                "child_tasks": {child.id: _task_runs(client, child.id) for child in children},
                "retrain": retrain,
                "retrain_tasks": _task_runs(client, retrain.id),
                "comparison_versions": sorted(
                    client.read_artifacts(
                        artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["fashion-mnist-comparison"]))
                    ),
                    key=lambda a: a.created,
                ),
            }
            seen["schedules"] = client.read_deployment_schedules(seen["deployments"]["compare-nightly-local"].id)
            for run in (compare, *children, retrain):
                print(
                    f"\n{run.name} ({run.id}): "
                    + " > ".join(s.name for s in sorted(client.read_flow_run_states(run.id), key=lambda s: s.timestamp))
                )
    return seen


def _get(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


@pytest.mark.slow
@pytest.mark.timeout(900)  # the shared fixture deploys and runs a comparison and a retrain on a 2-core box
def test_deploy_registers_the_laptop_deployments_from_prefect_yaml(e2e) -> None:
    assert e2e["ui_api_url"] == e2e["api"]
    assert e2e["pools"]["cnn-lab-local"].type == "process"
    gpu_pool = e2e["pools"]["cnn-lab-gpu"]
    assert gpu_pool.type == "kubernetes" and gpu_pool.base_job_template == _template("gpu-pool.json")
    assert e2e["gpu_limit"].concurrency_limit == 1
    for name, dep in e2e["deployments"].items():
        assert dep.work_pool_name == "cnn-lab-local", name
        assert dep.pull_steps == [{"prefect.deployments.steps.set_working_directory": {"directory": str(REPO)}}], name
        assert dep.enforce_parameter_schema, name
    retrain = e2e["deployments"]["retrain-variant-local"]
    assert retrain.entrypoint == FLOW_OF["retrain-variant"] and "epochs" not in retrain.parameters  # the comparison's
    assert [s.schedule.cron for s in e2e["schedules"]] == ["0 2 * * *"]


@pytest.mark.slow
@pytest.mark.timeout(900)  # the shared fixture deploys and runs a comparison and a retrain on a 2-core box
def test_comparison_runs_each_variant_as_a_linked_flow_run_on_the_pool(e2e) -> None:
    compare, children = e2e["compare"], e2e["children"]
    assert compare.state_name == "Completed", f"{compare.state.message}\n{e2e['worker_log']}"
    assert sorted(c.parameters["variant"] for c in children) == sorted(VARIANTS)
    training = e2e["deployments"]["train-variant-local"]
    parent_tasks = {t.id for t in e2e["compare_tasks"]}
    by_variant = {c.parameters["variant"]: c for c in children}
    assert by_variant["mine"].parameters["variant_files"]["mine"].startswith("{")  # the config travels as JSON text
    assert by_variant["my_net"].parameters["variant_modules"] == [
        str(e2e["storage"].parent / "outside" / "my_nets.py")
    ]  # the worker imports the file
    for child in children:
        assert child.state_name == "Completed", child.state.message
        assert child.deployment_id == training.id and child.work_pool_name == "cnn-lab-local"
        assert child.parent_task_run_id in parent_tasks  # shown nested under the comparison in the UI
        trained = [t for t in e2e["child_tasks"][child.id] if t.task_key.startswith("train_variant")]
        assert len(trained) == 1 and "gpu" in trained[0].tags  # counted by the `gpu` concurrency limit
    run_dir = e2e["storage"] / "fashion-mnist" / "e2e-compare"
    for variant in VARIANTS:
        assert (run_dir / variant / "row.json").is_file() and (run_dir / variant / "checkpoint.pt").is_file()
    text = (run_dir / "comparison.md").read_text()
    assert all(f"| {v} |" in text for v in VARIANTS)


@pytest.mark.slow
@pytest.mark.timeout(900)  # the shared fixture deploys and runs a comparison and a retrain on a 2-core box
def test_retrain_deployment_refreshes_and_publishes_a_new_table_version(e2e) -> None:
    retrain, versions = e2e["retrain"], e2e["comparison_versions"]
    assert retrain.state_name == "Completed", f"{retrain.state.message}\n{e2e['worker_log']}"
    states = {t.task_key.rsplit("-", 1)[0]: t.state_name for t in e2e["retrain_tasks"]}
    assert states["train_variant"] == "Completed" and states["evaluate_variant"] == "Completed"  # refreshed, not Cached
    assert [v.flow_run_id for v in versions] == [e2e["compare"].id, retrain.id]
    latest = versions[-1].data
    assert "| mine |" in latest and "| my_net |" in latest  # my_net's row kept from the comparison
    assert "e2e-retrain/mine" in latest and "e2e-compare/my_net" in latest  # the worker loaded mine.json itself
