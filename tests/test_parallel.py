"""How many variants run at once (cnn/parallel.py) and the parallel and task-runner parameters."""

from __future__ import annotations

import pytest

from cnn.errors import ConfigError
from cnn.params import parse_params
from cnn.parallel import (
    GPU_MAX_SHARED,
    Machine,
    Workload,
    choose_parallel,
    gpu_memory_free,
    threads_per_worker,
    torch_threads,
    worker_memory,
)

GiB = 2**30
DIGITS = {"train_images": 1_293, "image_values": 28 * 28}


def test_quickstart_stays_in_one_process_and_a_bigger_digits_comparison_gets_both_cores() -> None:
    two_cores = Machine(cpus=2, memory_available=8 * GiB)
    assert choose_parallel(Workload(jobs=2, epochs=3, **DIGITS), two_cores) == 1
    assert choose_parallel(Workload(jobs=4, epochs=6, **DIGITS), two_cores) == 2


def test_never_more_workers_than_variants_or_cores() -> None:
    big = Workload(jobs=11, epochs=10, train_images=54_000, image_values=28 * 28)
    assert choose_parallel(big, Machine(cpus=16, memory_available=64 * GiB)) == 11
    assert choose_parallel(big, Machine(cpus=4, memory_available=64 * GiB)) == 4
    assert (
        choose_parallel(
            Workload(jobs=2, epochs=10, train_images=54_000, image_values=784),
            Machine(cpus=16, memory_available=64 * GiB),
        )
        == 2
    )


def test_memory_bounds_the_workers() -> None:
    work = Workload(jobs=8, epochs=10, train_images=54_000, image_values=3 * 224 * 224)
    per_worker = worker_memory(work)
    assert per_worker > 20 * GiB  # AlexNet-sized inputs: the dataset dominates
    assert choose_parallel(work, Machine(cpus=16, memory_available=int(2.5 * 2 * per_worker))) == 2
    assert choose_parallel(work, Machine(cpus=16, memory_available=per_worker)) == 1  # at least one, always


def test_one_gpu_is_shared_by_a_few_variants_as_its_memory_allows() -> None:
    work = Workload(jobs=11, epochs=10, train_images=54_000, image_values=28 * 28)
    assert (
        choose_parallel(work, Machine(cpus=16, memory_available=128 * GiB, gpu_memory_free=139 * GiB), batch_size=2048)
        == GPU_MAX_SHARED
    )
    assert (
        choose_parallel(work, Machine(cpus=16, memory_available=128 * GiB, gpu_memory_free=2 * GiB), batch_size=2048)
        == 1
    )
    # a small comparison still shares the GPU: launch-bound small models leave it idle, the image rule is for CPUs
    assert (
        choose_parallel(
            Workload(jobs=3, epochs=4, **DIGITS), Machine(cpus=16, memory_available=128 * GiB, gpu_memory_free=80 * GiB)
        )
        == 3
    )


def test_threads_are_split_between_workers() -> None:
    assert threads_per_worker(2, cpus=2) == 1
    assert threads_per_worker(2, cpus=16) == 8
    assert threads_per_worker(3, cpus=2) == 1
    assert threads_per_worker(1, cpus=2) == 2


def test_a_worker_uses_its_thread_share_for_the_block_and_gives_it_back() -> None:
    import torch

    before = torch.get_num_threads()
    with torch_threads(before + 1):
        assert torch.get_num_threads() == before + 1
    assert torch.get_num_threads() == before
    with torch_threads(None):
        assert torch.get_num_threads() == before


def test_this_machine_is_measured_and_cpu_training_plans_no_device_memory() -> None:
    machine = Machine.this_one(gpu_memory_free("cpu"))
    assert machine.cpus >= 1 and machine.memory_available > 0 and machine.gpu_memory_free is None


@pytest.mark.parametrize(
    "value", ["dask", "dask://scheduler:8786", "tcp://10.0.0.5:8786", "tls://dask.example.com:8786", ""]
)
def test_task_runner_accepts_dask_addresses(value: str) -> None:
    assert parse_params({"task_runner": value}).task_runner == value


def test_each_task_runner_spec_gets_its_runner_and_worker_count() -> None:
    from prefect.task_runners import ProcessPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    from flows.runners import task_runner_for

    assert task_runner_for("", 3) == ProcessPoolTaskRunner(max_workers=3)
    cluster = task_runner_for("dask", 2)
    assert isinstance(cluster, DaskTaskRunner) and cluster.cluster_kwargs["n_workers"] == 2
    assert task_runner_for("dask://scheduler:8786", 2).address == "tcp://scheduler:8786"


@pytest.mark.parametrize(
    ("field", "value"), [("task_runner", "ray"), ("task_runner", "dask://"), ("parallel", 0), ("parallel", "many")]
)
def test_bad_parallel_settings_name_the_field(field: str, value: object) -> None:
    with pytest.raises(ConfigError) as err:
        parse_params({field: value})
    assert err.value.field == field


def test_compare_takes_parallel_and_task_runner_options(capsys) -> None:
    from flows.cli import build_parser, run_params

    args = build_parser().parse_args(["compare", "--parallel", "3", "--task-runner", "dask://host:8786"])
    params = run_params(args)
    assert (params.parallel, params.task_runner) == (3, "dask://host:8786")
    assert run_params(build_parser().parse_args(["compare"])).parallel == "auto"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["retrain", "lenet1", "--parallel", "2"])  # one variant: nothing to run at once
    assert "unrecognized arguments: --parallel" in capsys.readouterr().err
