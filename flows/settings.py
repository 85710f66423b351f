"""From checked run parameters (cnn.params.RunParams) to the cnn/ objects a run uses, with the checks that need the
registries, the device or the store: all before any work starts."""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnn.data import get_dataset_spec
from cnn.models import check_variant_names, load_variants, portable_plugins
from cnn.checks import AUTO
from cnn.fastchecks import check_task_runner
from cnn.params import REFRESH_STEPS, RunParams, default_of, parse_params
from cnn.storage import Storage, safe_name
from cnn.train import TrainConfig

if TYPE_CHECKING:
    from cnn.pipeline import DatasetRef

DEFAULT_VARIANTS: list[str] = default_of("variants")


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """Validated settings shared by both flows."""

    params: RunParams
    variants: tuple[str, ...]
    ref: DatasetRef
    config: dict[
        str, Any
    ]  # TrainConfig fields; epochs and batch_size may be "auto" (resolved from the data by cnn.recipe)
    lr: float | str
    storage: str
    run: str
    refresh: tuple[str, ...]
    lr_settings: dict[str, Any]
    plugins: dict[str, Any]  # variant_modules and variant_files as any process can load them


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


def _placeholder(value: int | str) -> int:
    """1 for "auto" (resolved once the data is known, cnn.recipe), else the value, for TrainConfig's other checks."""
    return 1 if value == AUTO else int(value)


def build_settings(
    params: RunParams | None = None, variants: Sequence[str] | None = None, **values: Any
) -> RunSettings:
    """Load the variant plug-ins, then check the variant and dataset names, the device and the store; `variants`
    defaults to the comparison's (`params.compared()`). Keyword values instead of `params` are parsed first."""
    params = params if params is not None else parse_params(values)
    load_variants(params.variant_modules, params.variant_files)
    names = tuple(
        check_variant_names(
            variants if variants is not None else params.compared(), "variants" if variants is None else "variant"
        )
    )
    get_dataset_spec(params.dataset)
    dataset = safe_name(params.dataset.lower(), "dataset")
    lr = params.lr
    checked = TrainConfig(
        epochs=_placeholder(params.epochs),
        batch_size=_placeholder(params.batch_size),
        lr=1.0 if lr == "auto" else float(lr),
        optimizer=params.optimizer,
        schedule=params.schedule,
        seed=params.seed,
        device=params.device,
        weight_decay=params.weight_decay,
        momentum=params.momentum,
    ).validate()
    config = {**checked.to_dict(), "epochs": params.epochs, "batch_size": params.batch_size}
    storage = check_storage(params.storage)
    run = safe_name(params.run, "run") if params.run else default_run_name()
    check_task_runner(params.task_runner)
    from cnn.pipeline import (
        DatasetRef,
    )  # after the checks: the pipeline imports plotting and metrics libraries (seconds)

    data_dir = params.data_dir if "://" in params.data_dir else str(Path(params.data_dir).expanduser())
    ref = DatasetRef(
        name=dataset,
        data_dir=data_dir,
        val_size=params.val_size,
        seed=params.seed,
        max_train=params.max_train or None,
        max_test=params.max_test or None,
    )
    lr_settings = {
        "batch_size": params.batch_size,
        "epochs": params.epochs,
        "optimizer": params.optimizer,
        "momentum": params.momentum,
        "weight_decay": params.weight_decay,
        "seed": params.seed,
        "lr_min": params.lr_min,
        "lr_max": params.lr_max,
        "rule": params.lr_rule,
    }
    plugins = portable_plugins(params.variant_modules, params.variant_files)
    return RunSettings(
        params=params,
        variants=names,
        ref=ref,
        config=config,
        lr=lr,
        storage=storage,
        run=run,
        refresh=tuple(params.refresh),
        lr_settings=lr_settings,
        plugins=plugins,
    )


__all__ = ["DEFAULT_VARIANTS", "REFRESH_STEPS", "RunSettings", "build_settings", "check_storage", "default_run_name"]
