"""cnn-lab's side of the speed benchmark: its Trainer on resident batches timed per epoch, and the flows' LR range test
picking the lr at each batch size."""

from __future__ import annotations

import copy
import dataclasses
import time
from typing import Any

import torch
from torch import nn

from benchmarks.speed_measure import memory_figures, reset_peak_memory, sync, test_accuracy, warm_up
from cnn import recipe
from cnn.data.splits import DatasetSplits
from cnn.errors import ConfigError
from cnn.lr_find import LRFindResult
from cnn.params import default_of
from cnn.parallel import cpu_snapshot, other_load
from cnn.lr_policy import DEFAULT_LR_RULE, chosen_lr, range_test_sweep
from cnn.recipe import MIN_LR_TEST_STEPS
from cnn.train import Trainer
from cnn.train_setup import Precision, TrainConfig, make_loader, resolve_device

# CPU: larger batches are barely faster and trail the student pipeline's accuracy after 1 epoch (`python -m
# benchmarks.speed --batch-sizes 256 512 1024`)
DEFAULT_BATCH_SIZE = 256
FAST_NAME = "cnn-lab"
LR_MIN, LR_MAX = default_of("lr_min"), default_of("lr_max")  # the flows' range-test bounds


def scaled_lr(batch_size: int) -> float:
    """The default optimizer's base lr at `batch_size`: the recipe's large-batch rule (linear above batch 128)."""
    return recipe.base_lr(default_of("optimizer"), batch_size)


def fast_epochs(model: nn.Module, data: DatasetSplits, config: TrainConfig, input_size: int) -> dict[str, Any]:
    """Train with cnn-lab's Trainer and time the epochs it runs (its per-epoch clock, validation excluded)."""
    dev = resolve_device(config.device)
    precision = Precision(dev, config.amp, config.channels_last)
    warm = copy.deepcopy(model).to(dev)
    if precision.channels_last:
        warm = warm.to(memory_format=torch.channels_last)
    wx, wy = next(
        iter(
            make_loader(
                data,
                "train",
                batch_size=config.batch_size,
                input_size=input_size,
                device=dev,
                channels_last=precision.channels_last,
                max_batches=1,
            )
        )
    )
    with precision.autocast():
        warm_up(warm, wx, wy)
    start = time.perf_counter()
    trainer = Trainer(model, data, config, input_size=input_size)
    rows = list(trainer.epochs())
    sync(dev)
    wall = time.perf_counter() - start
    seconds = sum(r["seconds"] for r in rows)
    images = int(sum(r["images"] for r in rows))
    return {
        "images": images,
        "seconds": seconds,
        "wall_seconds": wall,
        "img_per_s": images / max(seconds, 1e-9),
        "epochs": len(rows),
        "epoch_seconds": [r["seconds"] for r in rows],
        "train_loss": rows[-1]["train_loss"],
        "val_acc": rows[-1]["val_acc"],
        "test_acc": test_accuracy(trainer.model, data, input_size, dev),
        "batch_size": config.batch_size,
        "lr": config.lr,
        "channels_last": precision.channels_last,
        "amp": precision.amp,
    }


def run_fast(
    model: nn.Module,
    data: DatasetSplits,
    input_size: int,
    epochs: int,
    batch_size: int,
    device: torch.device,
    *,
    lr: float | None = None,
    channels_last: bool | None = None,
    amp: bool | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """cnn-lab's Trainer at `batch_size` (lr scaled to it unless given; None options keep the Trainer's defaults); one table row."""
    baseline = reset_peak_memory(device)
    config = TrainConfig(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr if lr is not None else scaled_lr(batch_size),
        seed=seed,
        device=str(device),
        channels_last=channels_last,
        amp=amp,
    )
    cpu = cpu_snapshot()
    row = fast_epochs(model, data, config, input_size)
    others = other_load(cpu)
    return {"pipeline": FAST_NAME, **row, **memory_figures(device, baseline), "other_load": others}


def sweep_steps(num_steps: int, epoch_steps: int) -> int:
    """Steps of the benchmark's LR sweep: at most one epoch, but never fewer than a usable curve needs."""
    return max(2, min(num_steps, max(epoch_steps, MIN_LR_TEST_STEPS)))


def find_lr(
    model: nn.Module,
    data: DatasetSplits,
    input_size: int,
    batch_size: int,
    device: torch.device,
    *,
    num_steps: int = 100,
    seed: int = 0,
    lr_max: float = LR_MAX,
    rule: str = DEFAULT_LR_RULE,
) -> tuple[LRFindResult, float]:
    """The flows' LR range test (`lr_policy.range_test_sweep`, default optimizer) at the training batch size for
    `sweep_steps` steps, after a warm-up; returns (result with the flows' chosen lr as its suggestion, seconds)."""
    model = copy.deepcopy(model).to(device)
    wx, wy = next(
        iter(make_loader(data, "train", batch_size=batch_size, input_size=input_size, device=device, max_batches=1))
    )
    warm_up(copy.deepcopy(model), wx, wy)
    torch.manual_seed(seed)  # dropout masks of the sweep, so the suggestion does not depend on earlier calls
    start = time.perf_counter()
    steps = sweep_steps(num_steps, -(-int(data.train_y.numel()) // batch_size))
    result = range_test_sweep(
        model,
        data,
        input_size,
        TrainConfig(batch_size=batch_size, seed=seed, device=str(device)),
        steps,
        lr_min=LR_MIN,
        lr_max=lr_max,
        rule=rule,
    )
    sync(device)
    seconds = time.perf_counter() - start
    return dataclasses.replace(result, suggestion=chosen_lr(result, default_of("optimizer"), batch_size)[0]), seconds


def pick_lr(
    lr: float | str,
    model: nn.Module,
    data: DatasetSplits,
    input_size: int,
    batch_size: int,
    device: torch.device,
    seed: int,
) -> tuple[float, str]:
    """(lr, how it was chosen): "auto" runs the range test at `batch_size`, "scaled" uses `scaled_lr`, a number is kept."""
    if lr == "auto":
        return find_lr(model, data, input_size, batch_size, device, seed=seed)[0].suggestion, "range test"
    if lr == "scaled":
        return scaled_lr(batch_size), "linear scaling"
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
        raise ConfigError(
            "lr",
            f"must be 'auto', 'scaled' or a positive number, got {lr!r}",
            allowed=["auto", "scaled", "a float > 0"],
        )
    return float(lr), "given"
