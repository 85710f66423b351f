"""Digests of cnn source for cache keys: every module under cnn/ is hashed unless NOT_RESULTS names it.

Hashing by default means a new module is in every step's key the day it is added; only a module that cannot change a
number in a result, a stored model or a chosen lr may be listed below, with the reason.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
# Modules (a package stands for all of its modules) whose code never changes a step's numbers, stored model or lr
NOT_RESULTS: dict[str, str] = {
    "cnn.plots": "draws figures of numbers computed elsewhere (the steps' PNGs and thumbnails are pictures)",
    "cnn.gallery": "draws the comparison's galleries from stored models; no step calls it",
    "cnn.report": "the comparison's rows, tables, sentences and figures, made from the steps' results afterwards",
    "cnn.publishing": "writes the comparison's report and latest-rows files; no step calls it",
    "cnn.markdown": "escapes text for Markdown",
    "cnn.storage": "moves bytes the steps made to and from the store (paths, atomic writes, retries)",
    "cnn.errors": "error classes and their one-line texts: what a failure says",
    "cnn.fastchecks": "the CLI's early rejections; a run that passes them goes on with the same inputs",
    "cnn.codehash": "computes these keys",
    "cnn.gpus": "picks which GPU runs a variant's steps, never what they compute (the device is in no key either)",
}


def module_file(module: str, base: Path = PACKAGE_DIR) -> Path | None:
    """The file of cnn module `module` under `base` (the cnn package folder), or None when there is none."""
    parts = module.split(".")[1:]
    candidates = (
        [base.joinpath(*parts).with_suffix(".py"), base.joinpath(*parts, "__init__.py")]
        if parts
        else [base / "__init__.py"]
    )
    return next((path for path in candidates if path.is_file()), None)


def all_modules(base: Path = PACKAGE_DIR) -> list[str]:
    """Every cnn module under `base`, sorted."""
    names = []
    for path in sorted(base.rglob("*.py")):
        parts = path.relative_to(base).with_suffix("").parts
        names.append(".".join(("cnn", *(parts[:-1] if parts[-1] == "__init__" else parts))))
    return names


def is_excluded(module: str, excluded: Iterable[str] = NOT_RESULTS) -> bool:
    """True when `module` or a package above it is in `excluded`."""
    return any(module == name or module.startswith(name + ".") for name in excluded)


def result_modules(base: Path = PACKAGE_DIR) -> list[str]:
    """The modules under `base` that a cached step's key hashes: all of them but NOT_RESULTS, sorted."""
    return [name for name in all_modules(base) if not is_excluded(name)]


def code_digest(modules: Iterable[str], base: Path = PACKAGE_DIR) -> str:
    """Digest of the names and sources of `modules` (cnn modules under `base`)."""
    h = hashlib.blake2b(digest_size=12)
    for name in sorted(set(modules)):
        path = module_file(name, base)
        if path is None:
            raise ValueError(f"no cnn module {name!r} under {base}")
        source = path.read_bytes()
        h.update(f"{name}\0{len(source)}\0".encode() + source)
    return h.hexdigest()


def results_digest(base: Path = PACKAGE_DIR) -> str:
    """Digest of every result-bearing module under `base` (the code part of each cached step's key)."""
    return code_digest(result_modules(base), base)
