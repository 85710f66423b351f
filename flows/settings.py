"""The one run config: checked run parameters (cnn.params.RunParams) made ready for every task, with the checks that
need the registries, the device or the store, all before any work starts."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from pathlib import Path

from cnn.data import get_dataset_spec
from cnn.models import check_variant_names, load_variants, portable_plugins
from cnn.fastchecks import check_task_runner
from cnn.params import RunParams, parse_params
from cnn.storage import Storage, safe_name
from cnn.train_setup import resolve_device
from flows.credentials import use_storage_block


def check_storage(storage: str) -> str:
    """A supported storage URL whose base can be written (fails early on a read-only dir or a missing bucket)."""
    Storage(storage).check_writable()
    return storage


def default_run_name() -> str:
    """A run folder name: the flow run's creation time and name (stable across retries of that run)."""
    try:
        from prefect.runtime import flow_run

        created = flow_run.scheduled_start_time or datetime.datetime.now(datetime.UTC)
        name = flow_run.name or "local"
    except Exception:  # noqa: BLE001 - outside a flow run
        created, name = datetime.datetime.now(datetime.UTC), "local"
    stamp = created.strftime("%Y%m%d-%H%M%S") if hasattr(created, "strftime") else str(created)
    return safe_name(f"{stamp}-{name}", "run")


def prepare_run(params: RunParams | None = None, variants: Sequence[str] | None = None, **values: object) -> RunParams:
    """The run config every task and step of this run receives, unchanged: `params` (or `values`, parsed) after the
    plug-ins load and the variant and dataset names, the device and the store pass their checks, with
    - the store's credentials from the `storage_block` block, when one is named (flows.credentials),
    - `variants`: the variants this run trains (`variants` if given, else the comparison's: `params.compared()`),
    - `run`: the run folder's name (the flow run's time and name when none was given),
    - `dataset`: as the store names it (lowercase); `data_dir` with ~ expanded,
    - `variant_modules` / `variant_files`: as any process can load them (.py files by absolute path, JSON as text)."""
    params = params if params is not None else parse_params(values)
    load_variants(params.variant_modules, params.variant_files)
    field = "variants" if variants is None else "variant"
    names = check_variant_names(variants if variants is not None else params.compared(), field)
    get_dataset_spec(params.dataset)
    resolve_device(params.device)
    check_task_runner(params.task_runner)
    use_storage_block(params.storage_block)
    check_storage(params.storage)
    plugins = portable_plugins(params.variant_modules, params.variant_files)
    return params.model_copy(
        update={
            "variants": names,
            "run": safe_name(params.run, "run") if params.run else default_run_name(),
            "dataset": safe_name(params.dataset.lower(), "dataset"),
            "comparison": safe_name(params.comparison, "comparison"),
            "data_dir": params.data_dir if "://" in params.data_dir else str(Path(params.data_dir).expanduser()),
            **plugins,
        }
    )


__all__ = ["check_storage", "default_run_name", "prepare_run"]
