"""How many variants run at once (cnn/parallel.py) and the parallel and task-runner parameters."""

from __future__ import annotations

import pytest

from cnn.errors import ConfigError
from cnn.params import parse_params
from cnn.parallel import (
    GPU_MAX_SHARED,
    WORKER_START_S,
    Machine,
    Workload,
    busy_cpus,
    choose_parallel,
    gpu_memory_free,
    job_seconds,
    longest_first,
    makespan,
    threads_per_worker,
    torch_threads,
    worker_memory,
)

GiB = 2**30
DIGITS = {"train_images": 1_293, "image_values": 28 * 28}


CPU_MFLOPS = {  # forward MFLOPs per image at 28x28 (cnn.models.forward_mflops)
    "lenet1": 0.03, "lenet5": 0.83, "lenet5_dropout": 0.83, "cnn2_3": 0.06, "cnn2_5": 0.13, "cnn2_7": 0.21,
    "generic_0": 0.13, "generic_1": 0.48, "generic_2": 0.14, "generic_3": 6.02,
}  # fmt: skip


def _work(variants: list[str], train_images: int, epochs: int) -> Workload:
    mflops = tuple(CPU_MFLOPS[v] for v in variants)
    return Workload(jobs=len(variants), train_images=train_images, epochs=epochs, image_values=784, mflops=mflops)


def test_auto_picks_one_process_where_spawning_a_worker_costs_more_than_it_saves() -> None:
    two_cores = Machine(cpus=2, memory_available=8 * GiB)
    quickstart = _work(["lenet1", "cnn2_5", "generic_2"], 1_293, 4)
    digits_4x6 = _work(["lenet1", "cnn2_5", "generic_1", "lenet5"], 1_293, 6)  # issue 26: 0.89x with two workers
    for work in (quickstart, digits_4x6):
        seconds = job_seconds(work)
        assert makespan(seconds, 2) > 0.8 * makespan(seconds, 1)  # a worker's start-up eats what it would save
        assert choose_parallel(work, two_cores) == 1


def test_the_60000_image_comparison_gets_both_cores_and_hands_out_generic_3_first() -> None:
    two_cores = Machine(cpus=2, memory_available=8 * GiB)
    work = _work(list(CPU_MFLOPS), 54_000, 5)
    seconds = job_seconds(work)
    assert choose_parallel(work, two_cores) == 2
    assert list(CPU_MFLOPS)[longest_first(seconds)[0]] == "generic_3"
    assert makespan(seconds, 2) < 0.6 * makespan(seconds, 1)


def test_the_prediction_follows_images_and_flops() -> None:
    small, large = job_seconds(_work(["lenet1", "generic_3"], 54_000, 5))
    assert large > 5 * small  # generic_3 costs 200x the FLOPs; both pay the per-image cost
    assert job_seconds(_work(["lenet1"], 54_000, 10))[0] > job_seconds(_work(["lenet1"], 54_000, 5))[0]
    unknown = Workload(jobs=2, train_images=1_000, epochs=1, image_values=784, mflops=(None,))
    assert len(job_seconds(unknown)) == 2  # no FLOPs known: a typical cost for each


def test_makespan_hands_out_longest_first_and_spawned_slots_start_late() -> None:
    assert longest_first([1.0, 5.0, 3.0]) == [1, 2, 0]
    assert makespan([4.0, 4.0], 1) == 8.0
    # the flow's own slot takes the longest at once, the spawned one starts after its start-up
    assert makespan([4.0, 4.0], 2, start_s=1.0) == 5.0
    assert makespan([4.0, 4.0], 2, start_s=WORKER_START_S) == WORKER_START_S + 4.0
    assert makespan([9.0, 1.0, 1.0, 1.0], 2, start_s=0.0) == 9.0  # the short ones fill the other slot


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


def test_cores_other_processes_keep_busy_are_not_given_threads() -> None:
    assert threads_per_worker(1, cpus=2, busy=1) == 1
    assert threads_per_worker(2, cpus=16, busy=4) == 6
    assert threads_per_worker(1, cpus=2, busy=2) == 1  # at least one


def test_busy_cores_are_counted_while_another_process_spins() -> None:
    import subprocess
    import sys

    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        assert busy_cpus(window_s=0.5, cpus=4) >= 1
    finally:
        spinner.kill()
        spinner.wait()
    assert 0 <= busy_cpus(window_s=0.05, cpus=1) <= 0  # never all the cores


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


def test_auto_gives_no_worker_to_a_core_other_processes_keep_busy(monkeypatch: pytest.MonkeyPatch) -> None:
    from cnn import parallel
    from flows.runners import workers_for

    monkeypatch.setattr(parallel, "usable_cpus", lambda: 2)
    monkeypatch.setattr(parallel, "available_memory", lambda: 16 * GiB)
    config = parse_params({"variants": list(CPU_MFLOPS)})
    work = _work(list(CPU_MFLOPS), 54_000, 5)
    assert workers_for(config, work, busy=0) == 2
    assert workers_for(config, work, busy=1) == 1
    assert workers_for(parse_params({"variants": list(CPU_MFLOPS), "parallel": 2}), work, busy=1) == 2  # asked for
