"""Which GPU a variant's steps use on a machine with several: each variant running at once gets its own.

Every process that runs a variant (a process worker's flow runs, a task runner's worker processes, the flow's own
thread) takes the first GPU whose lock file no one holds: an flock, released when the variant's steps end or when the
process dies, so nothing has to be told which GPU is free. A lock is named by the physical GPU (its
CUDA_VISIBLE_DEVICES entry when that is set), so workers given different visible sets never block each other. With
more variants at once than GPUs the extra ones share a GPU (spread by process id) rather than wait: how many train at
once is the `gpu` concurrency limit's job (deployments/README.md).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

LOCK_DIR = Path(tempfile.gettempdir()) / "cnn-lab-gpus"
SHARED_DEVICES = ("auto", "cuda")  # device names that let cnn-lab pick the GPU; cuda:N is the user's choice


def gpu_names(count: int, visible: str | None) -> list[str]:
    """The lock names of CUDA devices 0..count-1: their CUDA_VISIBLE_DEVICES entries (UUIDs or indices), or indices."""
    entries = [entry.strip() for entry in (visible or "").split(",") if entry.strip()]
    return entries[:count] if len(entries) >= count else [str(k) for k in range(count)]


@contextlib.contextmanager
def gpu_slot(count: int, lock_dir: Path | None = None, visible: str | None = None) -> Iterator[int]:
    """The index (0..count-1) of a GPU this process holds while the block runs (locks under `lock_dir`, by default
    LOCK_DIR); a shared one when all are held."""
    lock_dir = lock_dir or LOCK_DIR
    lock_dir.mkdir(parents=True, exist_ok=True)
    for index, name in enumerate(gpu_names(count, visible)):
        handle = (lock_dir / f"gpu-{name}.lock").open("a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        try:
            yield index
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()
        return
    yield os.getpid() % count


@contextlib.contextmanager
def own_device(device: str) -> Iterator[str]:
    """`device`; for auto or cuda on a machine with several GPUs, 'cuda:<k>' of a GPU held by this process meanwhile
    (also torch's current device there, so code that says just 'cuda' lands on it too)."""
    import torch

    count = torch.cuda.device_count() if device in SHARED_DEVICES and torch.cuda.is_available() else 0
    if count < 2:
        yield device
        return
    with gpu_slot(count, visible=os.environ.get("CUDA_VISIBLE_DEVICES")) as index:
        before = torch.cuda.current_device()
        torch.cuda.set_device(index)
        try:
            yield f"cuda:{index}"
        finally:
            torch.cuda.set_device(before)
