"""How the speed benchmarks measure: device syncs, peak memory, a warm-up outside the clock, median rows and rates,
and one test-accuracy path for every pipeline."""

from __future__ import annotations

import copy
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cnn.data.splits import DatasetSplits
from cnn.evaluate import predict
from cnn.train_setup import make_loader


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device) -> float | None:
    """Reset the peak-memory counter and return the memory in use (MiB); None where only the process-lifetime peak exists."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device) / 2**20
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: resets VmHWM, the resident-set high-water mark
        return _proc_status_mb("VmRSS:")
    except OSError:
        return None


def _proc_status_mb(key: str) -> float | None:
    """A memory line of /proc/self/status in MiB, or None."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory since the last reset: CUDA max_memory_allocated, else resident-set high-water mark (MiB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    peak = _proc_status_mb("VmHWM:")
    if peak is not None:
        return peak
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def memory_figures(device: torch.device, baseline: float | None) -> dict[str, Any]:
    """Peak memory of a run, and how far it rose above what was in use when the run started (None if unknown)."""
    peak = peak_memory_mb(device)
    return {
        "peak_mem_mb": peak,
        "mem_growth_mb": None if baseline is None else max(0.0, peak - baseline),
        "peak_mem_scope": "process" if baseline is None else "run",
    }


def warm_up(model: nn.Module, x: Tensor, y: Tensor, steps: int = 3) -> None:
    """A few SGD steps on a throwaway copy, so one-time kernel/allocator costs stay out of the timings."""
    clone = copy.deepcopy(model)
    opt = torch.optim.SGD(clone.parameters(), lr=1e-3)
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(clone(x), y).backward()
        opt.step()
    sync(x.device)


def test_accuracy(
    model: nn.Module, data: DatasetSplits, input_size: int, device: torch.device, batch_size: int = 1024
) -> float:
    """Accuracy on the test split, through cnn-lab's loader and `predict` (the same for both pipelines)."""
    loader = make_loader(data, "test", batch_size=batch_size, input_size=input_size, device=device)
    y_true, y_pred, _ = predict(model.to(device), loader)
    return float((y_true == y_pred).mean())


def median_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median img/s (the lower middle one for an even count), with every run's img/s attached."""
    ordered = sorted(rows, key=lambda r: r["img_per_s"])
    row = dict(ordered[(len(ordered) - 1) // 2])
    row["img_per_s_runs"] = [r["img_per_s"] for r in rows]
    row["img_per_s_best"] = ordered[-1]["img_per_s"]
    row["other_load_runs"] = [r.get("other_load") for r in rows]
    return row


def median_rate(run: Callable[[], int], repeats: int) -> float:
    """Median img/s of `repeats` calls of `run` (which returns the images it evaluated)."""
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        images = run()
        rates.append(images / max(time.perf_counter() - start, 1e-9))
    return statistics.median(rates)
