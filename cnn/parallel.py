"""How many variants a comparison trains at once (`parallel: auto`) and how the CPU threads are split between them.

The rule, one place:
- never more workers than variants, or than CPU cores (tiny convolutions are overhead-bound: one variant keeps one
  core busy, so cores are shared out rather than threads piled onto one variant);
- memory is bounded: each worker is a process holding torch, Prefect, the dataset and one model, estimated by
  `worker_memory`; at most MEMORY_SHARE of the memory available now is planned for;
- on CPU, workers are added only where they pay for their start-up: each variant's seconds on one core are predicted
  (`job_seconds`: its fixed steps, plus per training image a fixed cost and one per forward FLOP), the variants are
  handed out longest first as slots free up, the flow's own slot at once and each spawned one after WORKER_START_S
  (`makespan`), and N workers are chosen only when they beat one process by MIN_GAIN: the README quickstart and
  4 variants x 6 epochs of digits stay in one process, the 10 CPU variants on 60,000 images get two;
- cores that other processes keep busy (`busy_cpus`, watched as the variants start) are not free: they get no worker
  and no torch thread (the free cores are split between the workers: `threads_per_worker`); OpenMP threads that
  outnumber the free cores wait on each other at every op, and a worker on a busy core only slows the others;
- on one GPU, variants share the device as processes (one CUDA context each, about CUDA_CONTEXT_BYTES), at most
  GPU_MAX_SHARED of them, each planned at `gpu_memory` and bounded by MEMORY_SHARE of the free device memory; small
  models leave the device mostly idle at one variant (launch-bound), so the image rule does not apply there.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

MEMORY_SHARE = 0.5  # of the memory available when the comparison starts
# a spawned worker with torch and Prefect imported, with headroom (docs/architecture.md, "Variants at once")
WORKER_BASE_BYTES = 700 * 2**20
# The CPU cost model, for one torch thread per variant: docs/performance.md sets its predictions beside the measured
# times (`cnn-lab bench --end-to-end --full`, flows/overhead.py); docs/architecture.md says where it was fitted
IMAGE_S = 37e-6  # seconds per training image whatever the model (batching, normalising, the optimizer step) ...
MFLOP_S = 39e-6  # ... plus this per training image and forward MFLOP of the model
VARIANT_FIXED_S = 3.0  # a variant's steps besides the epochs: evaluation, plots, publishing, task runs
UNKNOWN_MFLOPS = 1.0  # a variant whose FLOPs cannot be counted (a plug-in whose builder or forward fails on CPU)
WORKER_START_S = 10.0  # a spawned worker until its first variant trains: imports, first task, dataset, plots' fonts
MIN_GAIN = 0.2  # workers only where they cut the predicted time by this share: the model's own error
BUSY_WINDOW_S = 0.2  # how long `busy_cpus` watches the other processes
GPU_MAX_SHARED = 4  # variants on one GPU at once
CUDA_CONTEXT_BYTES = 600 * 2**20
BYTES_PER_VALUE = 4  # float32


@dataclass(frozen=True)
class Machine:
    """What the choice depends on: cores, memory available, and for a GPU its free memory."""

    cpus: int
    memory_available: int
    gpu_memory_free: int | None = None  # None: training on CPU

    @classmethod
    def this_one(cls, gpu_memory_free: int | None = None) -> Machine:
        """The cores this process may use and the memory available now (Linux /proc/meminfo; else 4 GiB assumed)."""
        return cls(cpus=usable_cpus(), memory_available=available_memory(), gpu_memory_free=gpu_memory_free)


@dataclass(frozen=True)
class Workload:
    """The comparison's size: variants (jobs), training images per epoch, epochs, and the largest input."""

    jobs: int
    train_images: int
    epochs: int
    image_values: int  # channels x side x side at the models' input size
    max_params: int = 1_000_000
    mflops: tuple[float | None, ...] = ()  # forward MFLOPs per image of each job at its input size (None: unknown)


def usable_cpus() -> int:
    """Cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def available_memory() -> int:
    """Bytes of memory available now (MemAvailable), or 4 GiB where /proc/meminfo is missing."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 * 2**30


def worker_memory(work: Workload) -> int:
    """Bytes one worker holds: the process, the dataset as float32 at the input size, and the model with Adam's state."""
    dataset = work.train_images * work.image_values * BYTES_PER_VALUE * 2  # train split plus val/test and a batch copy
    model = work.max_params * BYTES_PER_VALUE * 4  # weights, gradients, two optimizer moments
    return WORKER_BASE_BYTES + dataset + model


def gpu_memory(work: Workload, batch_size: int) -> int:
    """Device bytes one variant holds: its CUDA context, the model with Adam's state, and a batch's activations (x32)."""
    return (
        CUDA_CONTEXT_BYTES
        + work.max_params * BYTES_PER_VALUE * 4
        + 32 * batch_size * work.image_values * BYTES_PER_VALUE
    )


def job_seconds(work: Workload) -> list[float]:
    """Predicted seconds of each job on one CPU core: its fixed steps and its epochs (per image: IMAGE_S and MFLOP_S per
    forward MFLOP at the design side's 784 values, scaled to the input's)."""
    images = work.train_images * work.epochs * work.image_values / 784
    mflops = list(work.mflops) + [None] * (work.jobs - len(work.mflops))
    return [VARIANT_FIXED_S + images * (IMAGE_S + MFLOP_S * (f if f is not None else UNKNOWN_MFLOPS)) for f in mflops]


def longest_first(seconds: Sequence[float]) -> list[int]:
    """Job indices by predicted seconds, longest first (ties keep their order): the order variants are handed out in,
    so that the last one to finish is a short one."""
    return sorted(range(len(seconds)), key=lambda i: -seconds[i])


def makespan(seconds: Sequence[float], workers: int, start_s: float = WORKER_START_S) -> float:
    """Predicted wall seconds of the jobs handed out longest first, as flows.runners hands them out: one to each slot
    at once (the flow's own slot starts it at once, each of the workers - 1 spawned ones after `start_s`), then each
    next one to the slot that frees first."""
    free = [0.0] + [start_s] * (workers - 1)
    for n, i in enumerate(longest_first(seconds)):
        slot = n if n < workers else min(range(workers), key=free.__getitem__)
        free[slot] += seconds[i]
    return max(free[: min(workers, len(seconds))] or [0.0])


def choose_parallel(work: Workload, machine: Machine, batch_size: int = 256) -> int:
    """How many variants to train at once (>= 1), by the rule in this module's docstring."""
    by_memory = int(MEMORY_SHARE * machine.memory_available // worker_memory(work))
    n = max(1, min(work.jobs, machine.cpus, by_memory))
    if machine.gpu_memory_free is not None:
        return max(
            1, min(n, GPU_MAX_SHARED, int(MEMORY_SHARE * machine.gpu_memory_free // gpu_memory(work, batch_size)))
        )
    seconds = job_seconds(work)
    alone = makespan(seconds, 1)
    best = min(range(1, n + 1), key=lambda k: (makespan(seconds, k), k))
    return best if makespan(seconds, best) <= (1 - MIN_GAIN) * alone else 1


def threads_per_worker(workers: int, cpus: int | None = None, busy: int = 0) -> int:
    """Torch threads each of `workers` processes uses: the cores that other processes leave free (`busy`: see
    `busy_cpus`) split evenly, at least one."""
    return max(1, ((cpus or usable_cpus()) - busy) // max(1, workers))


def cpu_snapshot() -> tuple[float, float, float] | None:
    """(CPU seconds all processes spent busy, CPU seconds of this process, wall clock); None without /proc/stat."""
    try:
        ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return None
    busy = (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait
    own = os.times()
    return busy, own.user + own.system, time.perf_counter()


def other_load(before: tuple[float, float, float] | None) -> float | None:
    """Cores kept busy by other processes since `before` (0 on a quiet machine); None without /proc/stat."""
    after = cpu_snapshot()
    if before is None or after is None or after[2] <= before[2]:
        return None
    return max(0.0, ((after[0] - before[0]) - (after[1] - before[1])) / (after[2] - before[2]))


def busy_cpus(window_s: float = BUSY_WINDOW_S, cpus: int | None = None) -> int:
    """Whole cores that other processes keep busy now (watched for `window_s`), at most all but one; 0 where /proc/stat
    is missing. A snapshot, not the load average: that lags a minute behind, so a comparison started right after
    another would see the first one's training as still there."""
    before = cpu_snapshot()
    time.sleep(window_s)
    load = other_load(before)
    return 0 if load is None else min((cpus or usable_cpus()) - 1, math.floor(load + 0.5))


def set_threads(threads: int) -> None:
    """Use `threads` torch threads in this process (a worker's share of the cores)."""
    import torch

    torch.set_num_threads(threads)


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """This process's torch threads set to `threads` (None: unchanged) for the block, then put back."""
    import torch

    before = torch.get_num_threads()
    if threads:
        set_threads(threads)
    try:
        yield
    finally:
        set_threads(before)


def gpu_memory_free(device: str) -> int | None:
    """Free bytes on the CUDA device that `device` resolves to; None when training runs on CPU (or MPS)."""
    import torch

    if device == "cpu" or not torch.cuda.is_available() or device == "mps":
        return None
    index = int(device.split(":")[1]) if ":" in device else torch.cuda.current_device()
    return int(torch.cuda.mem_get_info(index)[0])
