"""Digests of the source a step's result depends on: named cnn modules and the cnn modules they import (read by AST).

Modules that never change a result (plots, reports, publishing, benchmarks, storage I/O, error texts, parameter
declarations and built-in names, whose resolved values reach the steps as inputs) are neither hashed nor followed.
"""

from __future__ import annotations

import ast
import functools
import hashlib
from collections.abc import Iterable
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
NOT_RESULTS = frozenset(
    {
        "cnn.plots",
        "cnn.report",
        "cnn.publishing",
        "cnn.gallery",
        "cnn.storage",
        "cnn.errors",
        "cnn.params",
        "cnn.checks",
        "cnn.catalog",
        "cnn.fastchecks",
        "cnn.codehash",
    }
)


def module_file(module: str, base: Path = PACKAGE_DIR) -> Path | None:
    """The file of cnn module `module` under `base` (the cnn package folder), or None when there is none."""
    parts = module.split(".")[1:]
    candidates = (
        [base.joinpath(*parts).with_suffix(".py"), base.joinpath(*parts, "__init__.py")]
        if parts
        else [base / "__init__.py"]
    )
    return next((path for path in candidates if path.is_file()), None)


def imported_modules(path: Path, base: Path = PACKAGE_DIR) -> set[str]:
    """The cnn modules that the file at `path` imports, at top level or inside functions."""
    found: set[str] = set()
    for module, names in _cnn_imports(path.read_text(encoding="utf-8")):
        found.add(module)
        found.update(f"{module}.{name}" for name in names if module_file(f"{module}.{name}", base))
    return {name for name in found if module_file(name, base)}


@functools.lru_cache(maxsize=256)
def _cnn_imports(source: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """(module, imported names) of each cnn import statement in `source` (parsed once per distinct text)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(alias.name, ()) for alias in node.names if alias.name.split(".")[0] == "cnn"]
        elif (
            isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "cnn" and node.level == 0
        ):
            found.append((node.module, tuple(alias.name for alias in node.names)))
    return tuple(found)


def dependencies(roots: Iterable[str], base: Path = PACKAGE_DIR, skip: Iterable[str] = NOT_RESULTS) -> list[str]:
    """`roots` and every cnn module they import, directly or not, minus `skip` and its submodules (not followed either); sorted."""
    skipped, seen, todo = set(skip), set(), [r for r in roots]
    while todo:
        name = todo.pop()
        if name in seen or name in skipped or name.rsplit(".", 1)[0] in skipped:
            continue
        path = module_file(name, base)
        if path is None:
            raise ValueError(f"no cnn module {name!r} under {base}")
        seen.add(name)
        todo.extend(imported_modules(path, base))
    return sorted(seen)


def all_modules(base: Path = PACKAGE_DIR) -> list[str]:
    """Every cnn module under `base`, sorted."""
    names = []
    for path in sorted(base.rglob("*.py")):
        parts = path.relative_to(base).with_suffix("").parts
        names.append(".".join(("cnn", *(parts[:-1] if parts[-1] == "__init__" else parts))))
    return names


def code_digest(roots: Iterable[str], base: Path = PACKAGE_DIR, files: Iterable[str] = ()) -> str:
    """Digest of the sources of `roots`' dependencies, plus `files` (modules hashed without following their imports)."""
    h = hashlib.blake2b(digest_size=12)
    for name in sorted(set(dependencies(roots, base)) | set(files)):
        path = module_file(name, base)
        if path is None:
            raise ValueError(f"no cnn module {name!r} under {base}")
        h.update(name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()
