"""Layering, read from the source (milliseconds, no imports): cnn/ never imports prefect, tasks, flows or
benchmarks; benchmarks/ never imports prefect, tasks or flows; tasks/ never imports flows; the run parameters are checked without torch or prefect (the same contracts as `lint-imports`)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "cnn": {"prefect", "tasks", "flows", "benchmarks"},
    "tasks": {"flows"},
    "benchmarks": {"prefect", "tasks", "flows"},
}
LIGHT = {
    "cnn/params.py",
    "cnn/checks.py",
    "cnn/errors.py",
    "cnn/catalog.py",
    "cnn/fastchecks.py",
    "flows/parameters.py",
}  # what the CLI imports before it checks parameters
HEAVY = {"torch", "torchvision", "prefect", "pandas", "matplotlib", "fsspec"}


def _imports(path: Path, top_level_only: bool = False) -> set[str]:
    """Top-level package names that `path` imports (inside functions too, unless `top_level_only`)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else ast.walk(tree)
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


MODULES = sorted(str(p.relative_to(ROOT)) for package in FORBIDDEN for p in (ROOT / package).rglob("*.py"))


def test_every_cnn_and_tasks_module_is_checked() -> None:
    assert "cnn/report/rows.py" in MODULES and "cnn/publishing.py" in MODULES and "benchmarks/variants.py" in MODULES
    assert "cnn/models/plugins.py" in MODULES and "tasks/policy.py" in MODULES


@pytest.mark.parametrize("module", MODULES)
def test_module_keeps_to_its_layer(module: str) -> None:
    forbidden = FORBIDDEN[module.split("/")[0]]
    assert not _imports(ROOT / module) & forbidden, f"{module} imports {_imports(ROOT / module) & forbidden}"


@pytest.mark.parametrize("module", sorted(LIGHT))
def test_parameter_checks_import_nothing_heavy(module: str) -> None:
    assert not _imports(ROOT / module) & HEAVY


def test_cli_rejects_a_bad_parameter_before_importing_torch_or_prefect() -> None:
    code = (
        "import sys; from flows.cli import main; rc = main(['compare', '--epochs', '0']);"
        "print(rc, sorted(m for m in ('torch', 'prefect', 'torchvision') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert done.stdout.split() == ["2", "[]"], done.stdout + done.stderr
    assert (
        done.stderr
        == "cnn-lab: epochs: must be 'auto' or an integer in [1, 10000], got '0' (allowed: 'auto' or an integer in [1, 10000])\n"
    )
