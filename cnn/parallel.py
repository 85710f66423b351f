"""How many variants a comparison trains at once (`parallel: auto`) and how the CPU threads are split between them.

The rule, one place:
- never more workers than variants, or than CPU cores (tiny convolutions are overhead-bound: one variant keeps one
  core busy, so cores are shared out rather than threads piled onto one variant);
- memory is bounded: each worker is a process holding torch, Prefect, the dataset and one model, estimated by
  `worker_memory`; at most MEMORY_SHARE of the memory available now is planned for;
- a worker costs a few seconds of start-up (a spawned interpreter importing torch and Prefect), so on CPU a worker
  is added only per MIN_IMAGES_PER_WORKER training images (images x epochs over the comparison): the README quickstart
  (2 variants x 3 epochs of digits' 1,293 images) stays in one process, 4 variants x 6 epochs get two;
- on one GPU, variants share the device as processes (one CUDA context each, about CUDA_CONTEXT_BYTES), at most
  GPU_MAX_SHARED of them, each planned at `gpu_memory` and bounded by MEMORY_SHARE of the free device memory; small
  models leave the device mostly idle at one variant (launch-bound), so the image rule does not apply there.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

MEMORY_SHARE = 0.5  # of the memory available when the comparison starts
WORKER_BASE_BYTES = 700 * 2**20  # a spawned worker with torch and Prefect imported (RSS measured: ~600 MiB)
MIN_IMAGES_PER_WORKER = 10_000  # training images (x epochs) that pay for one more worker's start-up on CPU
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


def choose_parallel(work: Workload, machine: Machine, batch_size: int = 256) -> int:
    """How many variants to train at once (>= 1), by the rule in this module's docstring."""
    by_memory = int(MEMORY_SHARE * machine.memory_available // worker_memory(work))
    n = min(work.jobs, machine.cpus, by_memory)
    if machine.gpu_memory_free is None:
        n = min(n, work.train_images * work.epochs * work.jobs // MIN_IMAGES_PER_WORKER)
    else:
        n = min(n, GPU_MAX_SHARED, int(MEMORY_SHARE * machine.gpu_memory_free // gpu_memory(work, batch_size)))
    return max(1, n)


def threads_per_worker(workers: int, cpus: int | None = None) -> int:
    """Torch threads each of `workers` processes uses: the cores split evenly, at least one."""
    return max(1, (cpus or usable_cpus()) // max(1, workers))


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
