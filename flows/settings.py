"""Flow parameter types and the checks that turn a flow's parameters into validated cnn/ objects."""
from __future__ import annotations

import dataclasses
import datetime
from pathlib import Path
from typing import Any, Literal

from cnn.data import get_dataset_spec
from cnn.errors import ConfigError
from cnn.models import get_variant, list_variants
from cnn.pipeline import DEFAULT_LR_RULE, DatasetRef
from cnn.recipe import AUTO, DEFAULT_OPTIMIZER
from cnn.storage import SUPPORTED_SCHEMES, Storage, safe_name
from cnn.train import OPTIMIZERS, SCHEDULES, TrainConfig

VariantName = Literal[tuple(list_variants())]  # type: ignore[valid-type]  # the UI shows these as choices
OptimizerName = Literal[OPTIMIZERS]  # type: ignore[valid-type]
ScheduleName = Literal[SCHEDULES]  # type: ignore[valid-type]
RefreshStep = Literal["lr", "train", "evaluate", "features"]
LR_RULES = ("min_loss_div10", "steepest")
LRRule = Literal[LR_RULES]  # type: ignore[valid-type]
REFRESH_STEPS: tuple[str, ...] = ("lr", "train", "evaluate", "features")
DEFAULT_VARIANTS = ["lenet1", "lenet5", "cnn2_5", "generic_1"]


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """Validated settings shared by both flows."""

    ref: DatasetRef
    config: dict[str, Any]  # TrainConfig fields; epochs and batch_size may be "auto" (resolved from the data by cnn.recipe)
    lr: float | str
    storage: str
    run: str
    refresh: tuple[str, ...]
    lr_settings: dict[str, Any]


def check_lr(lr: float | str) -> float | str:
    """'auto' or a positive number."""
    if lr == "auto":
        return lr
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0 or lr != lr:
        raise ConfigError("lr", f"must be 'auto' or a positive number, got {lr!r}", allowed="'auto' or a float > 0")
    return float(lr)


def check_lr_bounds(lr_min: float, lr_max: float) -> None:
    """LR range test bounds: both positive, min below max."""
    if not (isinstance(lr_min, (int, float)) and lr_min > 0):
        raise ConfigError("lr_min", f"must be > 0, got {lr_min!r}", allowed="a float > 0 and < lr_max")
    if not (isinstance(lr_max, (int, float)) and lr_max > lr_min):
        raise ConfigError("lr_max", f"must be greater than lr_min={lr_min!r}, got {lr_max!r}", allowed=f"a float > {lr_min}")


def check_refresh(refresh: bool | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """True = every step, False = none, or a list of step names."""
    if refresh is True:
        return REFRESH_STEPS
    if refresh is False or refresh is None:
        return ()
    unknown = [s for s in refresh if s not in REFRESH_STEPS]
    if unknown:
        raise ConfigError("refresh", f"unknown step(s) {unknown}", allowed=REFRESH_STEPS)
    return tuple(refresh)


def check_variants(variants: list[str]) -> list[str]:
    """A non-empty list of registered variant names, without duplicates."""
    if isinstance(variants, str):
        variants = [v.strip() for v in variants.split(",") if v.strip()]
    if not variants:
        raise ConfigError("variants", "the list is empty", allowed=list_variants())
    for name in variants:
        get_variant(name)
    if len(set(variants)) != len(variants):
        raise ConfigError("variants", f"duplicates in {variants}", allowed="each variant once")
    return list(variants)


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


def _auto_or_int(name: str, value: int | str) -> int:
    """A placeholder 1 for "auto" (checked once the data is known), else the value for TrainConfig's checks."""
    return 1 if value == AUTO else value  # type: ignore[return-value]


def build_settings(*, dataset: str, epochs: int | str, batch_size: int | str, lr: float | str, optimizer: str, schedule: str, seed: int, data_dir: str, storage: str, run: str | None, val_size: float, max_train: int | None, max_test: int | None, device: str, refresh: bool | list[str], lr_min: float = 1e-5, lr_max: float = 1.0, lr_rule: str = DEFAULT_LR_RULE, weight_decay: float = 0.0, momentum: float = 0.9) -> RunSettings:
    """Validate every parameter (errors name the field and the allowed values) before any work starts."""
    get_dataset_spec(dataset)
    safe_name(dataset.lower(), "dataset")
    checked = TrainConfig(epochs=_auto_or_int("epochs", epochs), batch_size=_auto_or_int("batch_size", batch_size), lr=1.0 if lr == "auto" else check_lr(lr), optimizer=optimizer, schedule=schedule, seed=seed, device=device, weight_decay=weight_decay, momentum=momentum).validate()
    config = {**checked.to_dict(), "epochs": epochs, "batch_size": batch_size}
    check_lr(lr)
    check_lr_bounds(lr_min, lr_max)
    if lr_rule not in LR_RULES:
        raise ConfigError("lr_rule", f"unknown rule {lr_rule!r}", allowed=LR_RULES)
    ref = DatasetRef(name=dataset.lower(), data_dir=str(Path(data_dir).expanduser()) if "://" not in data_dir else data_dir, val_size=val_size, seed=seed, max_train=max_train, max_test=max_test)
    lr_settings = {"batch_size": batch_size, "epochs": epochs, "optimizer": optimizer, "momentum": momentum, "weight_decay": weight_decay, "seed": seed, "lr_min": lr_min, "lr_max": lr_max, "rule": lr_rule}
    return RunSettings(ref=ref, config=config, lr=lr, storage=check_storage(storage), run=safe_name(run, "run") if run else default_run_name(), refresh=check_refresh(refresh), lr_settings=lr_settings)


__all__ = ["DEFAULT_LR_RULE", "DEFAULT_OPTIMIZER", "DEFAULT_VARIANTS", "LRRule", "OptimizerName", "REFRESH_STEPS", "RefreshStep", "RunSettings", "ScheduleName", "SUPPORTED_SCHEMES", "VariantName", "build_settings", "check_variants"]
