"""Variants from outside cnn-lab: modules (or .py files) using @register_variant, and GenericCNN JSON configs by name."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import json
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from cnn.errors import ConfigError
from cnn.models.generic import load_generic_config, register_generic_variant
from cnn.models.registry import _REGISTRY, get_variant, list_variants, load_entry_point_variants, unregister_variant

MODULE_ALLOWED = "an importable module name (installed or on PYTHONPATH) or a path to a .py file"
FILE_ALLOWED = "a GenericCNN JSON config file (see examples/generic_small.json) or its JSON text"


def is_module_file(entry: str) -> bool:
    """Whether a variant_modules entry names a .py file rather than an importable module."""
    return entry.endswith(".py") or "/" in entry


def module_reference(entry: str) -> str:
    """The entry as another process on this machine can load it: a .py file by its absolute path."""
    return str(Path(entry).expanduser().resolve()) if is_module_file(entry) else entry


def load_variant_module(entry: str) -> list[str]:
    """Import a module name or a .py file whose @register_variant functions add variants; the names it added."""
    before = set(_REGISTRY)
    try:
        if is_module_file(entry):
            _import_file(Path(module_reference(entry)))
        else:
            importlib.import_module(entry)
    except ConfigError:
        raise
    except SystemExit as err:  # a module that exits as it is imported must not end cnn-lab silently, with its code
        raise ConfigError(
            "variant_modules",
            f"{entry!r} called sys.exit({err.code!r}) while it was imported",
            allowed=MODULE_ALLOWED,
        ) from None
    except Exception as err:  # noqa: BLE001 - the user's module: any error, named with the module
        raise ConfigError(
            "variant_modules",
            f"cannot import {entry!r}: {type(err).__name__}: {err}".splitlines()[0],
            allowed=MODULE_ALLOWED,
        ) from err
    return sorted(set(_REGISTRY) - before)


def _import_file(path: Path) -> None:
    if not path.is_file():
        raise ConfigError("variant_modules", f"no such file: {path}", allowed=MODULE_ALLOWED)
    module_name = f"cnn_lab_plugin_{path.stem}_{hashlib.blake2b(str(path).encode(), digest_size=4).hexdigest()}"
    if module_name in sys.modules:
        return  # imported once per process, as any module
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ConfigError("variant_modules", f"{path} is not a Python file", allowed=MODULE_ALLOWED)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise


def load_variant_file(name: str, source: str) -> None:
    """Register the GenericCNN config in file (or JSON text) `source` as variant `name`; a file variant may be replaced."""
    existing = _REGISTRY.get(name)
    if existing is not None and not existing.origin.startswith("file "):
        raise ConfigError(
            "variant_files",
            f"{name!r} is already a variant ({'built-in' if existing.builtin else existing.origin}); pick another name",
            allowed=f"a name other than {', '.join(list_variants())}",
        )
    text = source.strip()
    where = "JSON text" if text.startswith("{") else str(Path(text).expanduser().resolve())
    try:
        config = load_generic_config(text if text.startswith("{") else where)
    except ConfigError as err:
        detail = err.message if err.field == "config" else f"{err.field}: {err.message}"
        raise ConfigError(
            "variant_files", f"variant {name!r} from {where}: {detail}", allowed=err.allowed or FILE_ALLOWED
        ) from None
    if existing is not None:
        unregister_variant(name)
    register_generic_variant(
        name,
        config,
        description=f"GenericCNN from {Path(where).name if where != 'JSON text' else where}",
        origin=f"file {where}",
    )


def portable_plugins(modules: Iterable[str] = (), files: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The plug-ins as another process can load them: .py modules by absolute path, file variants as their JSON text."""
    return {
        "variant_modules": [module_reference(m) for m in modules],
        "variant_files": {name: variant_config_text(name) or source for name, source in (files or {}).items()},
    }


def load_variants(modules: Iterable[str] = (), files: Mapping[str, str] | None = None) -> list[str]:
    """Entry points of installed packages, then `modules`, then `files`; the names they added."""
    added = load_entry_point_variants()
    for entry in modules:
        added += load_variant_module(entry)
    for name, source in (files or {}).items():
        load_variant_file(name, source)
        added.append(name)
    return added


def check_variant_names(names: Iterable[str], field: str = "variants") -> list[str]:
    """Each name registered (a near miss gets a suggestion); errors name `field`."""
    checked = []
    for name in names:
        try:
            get_variant(name)
        except ConfigError as err:
            raise ConfigError(field, err.message, allowed=err.allowed) from None
        checked.append(name)
    return checked


def plugin_variants(names: Iterable[str]) -> list[str]:
    """Those of `names` that a plug-in the user names defines (a module or a JSON file: not built in, not installed)."""
    return [n for n in names if not get_variant(n).builtin and not get_variant(n).origin.startswith("entry point")]


def builtin_variants() -> list[str]:
    """Names of the variants shipped with cnn-lab (plug-ins are not loaded for this)."""
    return sorted(name for name, spec in _REGISTRY.items() if spec.builtin)


def variant_config_text(name: str) -> str | None:
    """The JSON text of a file variant's config (what a worker needs instead of the file), else None."""
    spec = get_variant(name)
    return (
        json.dumps(dict(spec.config), sort_keys=True)
        if spec.origin.startswith("file ") and spec.config is not None
        else None
    )


def variant_fingerprint(name: str) -> str:
    """A digest of what defines variant `name`: its builder's source file, and its config when built from one."""
    spec = get_variant(name)
    h = hashlib.blake2b(digest_size=12)
    try:
        source = inspect.getsourcefile(spec.builder)
    except TypeError:
        source = None
    if source and Path(source).is_file():
        h.update(Path(source).read_bytes())
    else:
        h.update(getattr(spec.builder, "__qualname__", repr(spec.builder)).encode())
    if spec.config is not None:
        h.update(json.dumps(dict(spec.config), sort_keys=True).encode())
    return h.hexdigest()
