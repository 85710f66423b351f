"""What a training run is built from: its config (TrainConfig, checked once by `check`), the device, seeding, the
optimizer and LR schedule by name, the precision settings and the resident batch loaders. The trainer (cnn/train.py)
and the batched seeds (cnn/ensemble.py) build from these."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from cnn.data.batches import BatchLoader
from cnn.data.splits import DatasetSplits
from cnn.errors import ConfigError, no_gpu_error, no_mps_error
from cnn.params import DEVICES, OPTIMIZERS, SCHEDULES, RunParams  # the run parameters, defined once (torch-free)


@dataclass
class TrainConfig:
    """Hyperparameters of one training run; `check` names the bad field and its allowed values."""

    epochs: int = 5
    batch_size: int = 256
    lr: float = 1e-3
    optimizer: str = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "onecycle"
    seed: int = 0
    device: str = "auto"
    patience: int | None = None
    max_steps: int | None = None
    channels_last: bool | None = None
    amp: bool | None = None
    compile: bool = False

    def check(self) -> TrainConfig:
        """Raise ConfigError on the first invalid field; return self."""
        check_positive_int("epochs", self.epochs)
        check_positive_int("batch_size", self.batch_size)
        if (
            isinstance(self.lr, bool)
            or not isinstance(self.lr, (int, float))
            or not math.isfinite(self.lr)
            or self.lr <= 0
        ):
            raise ConfigError(
                "lr", f"must be a positive finite number, got {self.lr!r}", allowed="a float > 0, or 'auto' in flows"
            )
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError("optimizer", f"unknown optimizer {self.optimizer!r}", allowed=OPTIMIZERS)
        if self.schedule not in SCHEDULES:
            raise ConfigError("schedule", f"unknown schedule {self.schedule!r}", allowed=SCHEDULES)
        if not 0 <= self.momentum < 1:
            raise ConfigError("momentum", f"must be in [0, 1), got {self.momentum!r}", allowed="[0, 1)")
        if self.weight_decay < 0:
            raise ConfigError("weight_decay", f"must be >= 0, got {self.weight_decay!r}", allowed=">= 0")
        if self.patience is not None:
            check_positive_int("patience", self.patience)
        if self.max_steps is not None:
            check_positive_int("max_steps", self.max_steps)
        resolve_device(self.device)
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the fields."""
        return dataclasses.asdict(self)

    @classmethod
    def from_run(cls, run: RunParams, **values: Any) -> TrainConfig:
        """The trainer's config from a run's parameters (every field both have, by name: a new run parameter that
        training reads is a field in each) with `values` on top: what the run resolves (epochs, batch size, lr, seed)."""
        shared = {f.name: getattr(run, f.name) for f in dataclasses.fields(cls) if f.name in RunParams.model_fields}
        return cls(**{**shared, **values})


def check_positive_int(name: str, value: object) -> None:
    """ConfigError naming `name` unless `value` is an int >= 1 (a bool is not one)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(name, f"must be a positive integer, got {value!r}", allowed="an int >= 1")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """CUDA when present for "auto", else the named device; an unknown name lists the choices."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ConfigError("device", f"unknown device {device!r}", allowed=DEVICES) from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise no_gpu_error()
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise no_mps_error()
    return dev


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) RNGs."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


FUSED_DEVICES = ("cpu", "cuda")  # where torch has fused Adam/AdamW kernels


def build_optimizer(
    name: str, params: Any, lr: float, momentum: float = 0.9, weight_decay: float = 0.0
) -> torch.optim.Optimizer:
    """Optimizer by name: sgd (momentum optional), adam or adamw (fused kernels where torch has them)."""
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name in ("adam", "adamw"):
        params = list(params)
        cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
        return cls(params, lr=lr, weight_decay=weight_decay, fused=_fusable(params) or None)
    raise ConfigError("optimizer", f"unknown optimizer {name!r}", allowed=OPTIMIZERS)


def _fusable(params: list[Any]) -> bool:
    """Whether every tensor is a float on a device with fused Adam: one kernel per step instead of one per op (the
    per-tensor default re-reads the parameters several times)."""
    tensors = [p for group in params for p in (group["params"] if isinstance(group, dict) else [group])]
    return bool(tensors) and all(t.is_floating_point() and t.device.type in FUSED_DEVICES for t in tensors)


def build_scheduler(
    name: str, optimizer: torch.optim.Optimizer, lr: float, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """Per-step LR schedule by name: none, onecycle (peak at `lr`) or cosine (from `lr` to 0)."""
    if name == "none":
        return None
    if name == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=max(total_steps, 2))
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total_steps, 1))
    raise ConfigError("schedule", f"unknown schedule {name!r}", allowed=SCHEDULES)


class Precision:
    """Device-specific speed settings: bf16 autocast on CUDA (float32 on CPU), channels_last on both."""

    def __init__(self, device: torch.device, amp: bool | None, channels_last: bool | None) -> None:
        self.device = device
        self.amp = device.type == "cuda" if amp is None else bool(amp)
        # channels_last also pays on CPU, where oneDNN's convolutions prefer it (docs/architecture.md)
        self.channels_last = device.type in ("cuda", "cpu") if channels_last is None else bool(channels_last)

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast when enabled, else a no-op."""
        if not self.amp:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)


def make_loader(
    data: DatasetSplits,
    split: str,
    *,
    batch_size: int,
    input_size: int,
    device: torch.device,
    shuffle: bool = False,
    seed: int = 0,
    channels_last: bool = False,
    max_batches: int | None = None,
) -> BatchLoader:
    """A BatchLoader over one split with the dataset's train-only normalisation; on CUDA, shuffled splits keep one batch shape."""
    x, y = data.split(split)
    return BatchLoader(
        x,
        y,
        mean=data.mean,
        std=data.std,
        batch_size=batch_size,
        input_size=input_size,
        device=device,
        shuffle=shuffle,
        seed=seed,
        drop_last=fixed_batch_shape(device, shuffle, y.numel(), batch_size),
        channels_last=channels_last,
        max_batches=max_batches,
    )


def fixed_batch_shape(device: torch.device, shuffle: bool, n: int, batch_size: int) -> bool:
    """Drop a shuffled split's ragged last batch on CUDA: cudnn autotunes each new shape (benchmarks/variants.py times
    it in its warm-up epoch), and a fresh permutation each epoch still reaches every image. CPU keeps every image of
    every epoch."""
    return torch.device(device).type == "cuda" and shuffle and n > batch_size
