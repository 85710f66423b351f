"""What every benchmark writes beside what it prints: its figures as JSON under benchmarks/results/, with the machine,
the versions, the load average and the command (benchmarks/render.py turns them into the docs/ tables)."""

from __future__ import annotations

import json
import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).parent / "results"
GPU_NOT_MEASURED = "GPU not measured (no CUDA device)"
PACKAGES = ("torch", "numpy", "scipy", "statsmodels", "prefect", "matplotlib")


def _version(package: str) -> str | None:
    """The installed version of `package` (read from its metadata, not imported), None when absent."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def environment(device: torch.device | str = "cpu") -> dict[str, Any]:
    """The device, machine, versions, threads and load average that the figures were measured with."""
    device = torch.device(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    return {
        "device": str(device),
        "device_name": name,
        "machine": platform.platform(),
        "node": platform.node(),
        "python": platform.python_version(),
        **{package: _version(package) for package in PACKAGES},
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_avg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def gpu_note(device: torch.device | str) -> str:
    """Which GPU the figures were measured on, or that they were not measured on one."""
    device = torch.device(device)
    return f"measured on {torch.cuda.get_device_name(device)}" if device.type == "cuda" else GPU_NOT_MEASURED


def command_line(prog: str, argv: list[str] | None = None) -> str:
    """The command that produced a result, as a user would type it again."""
    return " ".join([prog, *(sys.argv[1:] if argv is None else argv)])


def result_path(name: str) -> Path:
    """Where benchmark `name` keeps its figures: benchmarks/results/<name>.json."""
    return RESULTS / f"{name}.json"


def write_result(result: dict[str, Any], path: str | Path) -> Path:
    """Write `result` as indented JSON at `path` (folders made); returns the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return out


def read_result(path: str | Path) -> dict[str, Any]:
    """A result written by `write_result`."""
    return json.loads(Path(path).read_text())


def output_path(given: str | None, name: str, quick: bool = False) -> Path | None:
    """Where a run writes its figures: the path given, else benchmarks/results/<name>.json; a quick (smoke) run writes
    none unless given one, so that it never replaces the figures the docs are rendered from."""
    if given:
        return Path(given)
    return None if quick else result_path(name)
