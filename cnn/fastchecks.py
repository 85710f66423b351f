"""The checks a run's settings get before torch or Prefect loads (the CLI's sub-second path): variant and dataset
names against the built-in catalog, CUDA against the driver, and the store.

They only ever reject what the full checks (flows/settings.py, after plug-ins load) would reject too: names are not
checked here when variant modules are given (a module may register any name), and CUDA is refused only where no NVIDIA
driver can be present; torch decides everywhere else.
"""

from __future__ import annotations

import importlib.metadata
import os
import sys
from collections.abc import Sequence

from cnn.catalog import BUILTIN_VARIANTS, ENTRY_POINT_GROUP, dataset_names, unknown_dataset, unknown_variant
from cnn.errors import no_gpu_error
from cnn.params import RunParams

NVIDIA_DRIVER_FILES = ("/proc/driver/nvidia/version", "/dev/nvidiactl", "/dev/dxg")  # Linux driver; WSL's GPU bridge


def cuda_impossible() -> bool:
    """True where no NVIDIA driver can be present (Linux without its device files, or macOS); else torch must tell."""
    if sys.platform == "darwin":
        return True
    return sys.platform.startswith("linux") and not any(os.path.exists(path) for path in NVIDIA_DRIVER_FILES)


def known_variants(params: RunParams) -> set[str]:
    """Built-in names, installed packages' entry points and the run's file variants (read without importing them)."""
    entry_points = {ep.name for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}
    return {*BUILTIN_VARIANTS, *entry_points, *params.variant_files}


def fast_checks(params: RunParams, variants: Sequence[str] | None = None) -> None:
    """Raise the first ConfigError or StorageError the run would meet when it starts; `variants` defaults to the
    comparison's (`params.compared()`), as in flows.settings.prepare_run."""
    if not params.variant_modules:
        known = known_variants(params)
        field = "variants" if variants is None else "variant"
        for name in variants if variants is not None else params.compared():
            if name not in known:
                raise unknown_variant(name, known, field)
        if params.dataset.lower() not in dataset_names():
            raise unknown_dataset(params.dataset)
    if params.device.startswith("cuda") and cuda_impossible():
        raise no_gpu_error()
    from cnn.storage import Storage

    store = Storage(params.storage)
    if not params.storage_block:  # a block's credentials reach the store once Prefect has loaded it (flows.settings)
        store.check_writable()
