"""The checks a run's settings get before torch or Prefect loads (the CLI's sub-second path): variant and dataset
names against the built-in catalog, the run name, CUDA against the driver and MPS against the platform, a Dask task
runner (prefect-dask installed, its scheduler answering), and the store.

They only ever reject what the full checks (flows/settings.py, after plug-ins load) would reject too: names are not
checked here when variant modules are given (a module may register any name), and CUDA is refused only where no NVIDIA
driver can be present; torch decides everywhere else.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import socket
import sys
from collections.abc import Sequence

from cnn.catalog import BUILTIN_VARIANTS, ENTRY_POINT_GROUP, dataset_names, unknown_dataset, unknown_variant
from cnn.errors import ConfigError, no_dask_error, no_gpu_error, no_mps_error
from cnn.params import RunParams, scheduler_address
from cnn.redaction import redact
from cnn.storage import Storage, safe_name

NVIDIA_DRIVER_FILES = ("/proc/driver/nvidia/version", "/dev/nvidiactl", "/dev/dxg")  # Linux driver; WSL's GPU bridge
CONNECT_TIMEOUT_S = 5.0  # for a Dask scheduler to accept a connection


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
    if params.run:
        safe_name(params.run, "run")
    if params.device.startswith("cuda") and cuda_impossible():
        raise no_gpu_error()
    if params.device == "mps" and sys.platform != "darwin":  # Apple's GPU exists on macOS only; torch decides there
        raise no_mps_error()
    check_task_runner(params.task_runner)

    if not params.storage_block:  # a block's credentials reach the store once Prefect has loaded it (flows.settings)
        Storage(params.storage).check_writable()


def check_task_runner(spec: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """A Dask task runner needs prefect-dask, and a scheduler's address a Dask scheduler there: one that accepts a
    connection and greets first, as Dask's comm handshake does (a client of anything else waits forever, whatever its
    timeout). Over tls:// the client speaks first, so only the connection is checked."""
    if not spec:
        return
    if importlib.util.find_spec("prefect_dask") is None:
        raise no_dask_error(spec)
    address = scheduler_address(spec)
    if address is None:
        return
    allowed = "the address a running `dask scheduler` prints, or dask for a local cluster"
    try:
        sock = socket.create_connection(address, timeout=timeout)
    except OSError as err:
        raise ConfigError(
            "task_runner", f"no Dask scheduler answers at {redact(spec)} ({type(err).__name__}: {err})", allowed=allowed
        ) from None
    with sock:
        if spec.startswith("tls://"):
            return
        try:
            greeted = bool(sock.recv(1))
        except OSError:
            greeted = False
    if not greeted:
        raise ConfigError(
            "task_runner",
            f"{redact(spec)} accepts connections but is not a Dask scheduler (no greeting within {timeout:g} s)",
            allowed=allowed,
        )
