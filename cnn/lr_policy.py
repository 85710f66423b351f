"""How a run's learning rate is picked: the LR range test's sweep on resident batches, when the test is skipped, and how
its suggestion becomes the lr (the recipe's trust band, the base lr, linear scaling above a batch size)."""

from __future__ import annotations

from typing import Any

import torch

from cnn import lr_find, recipe
from cnn.data import DatasetSplits
from cnn.params import default_of
from cnn.train_setup import Precision, TrainConfig, build_optimizer, make_loader, resolve_device

DEFAULT_LR_RULE = default_of("lr_rule")  # why this rule: see cnn/params.py


def no_range_test(steps: int, batch_size: int) -> str | None:
    """Why no range test runs ("base lr: ..."), or None: its budget allows too few steps for a curve, or the batch is
    above the linear rule's start, where `chosen_lr` takes the base lr whatever the curve says."""
    if steps == 0:
        return f"base lr: range test budget below {recipe.MIN_LR_TEST_STEPS} steps"
    if recipe.lr_scale(batch_size) > 1:
        return f"base lr: linear scaling above batch {recipe.LR_SCALE_FROM_BATCH} (no range test)"
    return None


def range_test_sweep(
    model: torch.nn.Module,
    data: DatasetSplits,
    size: int,
    cfg: TrainConfig,
    steps: int,
    *,
    lr_min: float = default_of("lr_min"),
    lr_max: float = default_of("lr_max"),
    rule: str = DEFAULT_LR_RULE,
) -> lr_find.LRFindResult:
    """The sweep itself, on resident batches with the trainer's precision (the flows' step and the benchmarks share it)."""
    dev = resolve_device(cfg.device)
    precision = Precision(dev, None, None)
    model = model.to(dev)
    if precision.channels_last:
        model = model.to(memory_format=torch.channels_last)
    loader = make_loader(
        data,
        "train",
        batch_size=cfg.batch_size,
        input_size=size,
        device=dev,
        shuffle=True,
        seed=cfg.seed,
        channels_last=precision.channels_last,
    )
    opt = build_optimizer(cfg.optimizer, model.parameters(), lr_min, cfg.momentum, cfg.weight_decay)

    def step_fn(m: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with precision.autocast():
            return torch.nn.functional.cross_entropy(m(x).float(), y)

    return lr_find.lr_range_test(
        model,
        opt,
        loader,
        start_lr=lr_min,
        end_lr=lr_max,
        num_steps=steps,
        rule=rule,
        fallback_lr=recipe.base_lr(cfg.optimizer, cfg.batch_size),
        step_fn=step_fn,
    )


def chosen_lr(result: lr_find.LRFindResult, optimizer: str, batch_size: int) -> tuple[float, str]:
    """The suggestion, capped at the top of the optimizer's trust band; the base lr for an unusable curve, a batch above
    the linear rule's start, or a suggestion below the band (the base lr trained better there: docs/recipe.md); and
    how."""
    base = recipe.base_lr(optimizer, batch_size)
    if result.rule == "fallback" or result.flag in recipe.UNTRUSTED_CURVES:
        return base, f"base lr: {str(result.flag).replace('_', ' ')} curve"
    if recipe.lr_scale(batch_size) > 1:  # the linear rule beats a short large-batch curve (recipe.LR_SCALE_FROM_BATCH)
        linear = f"linear scaling above batch {recipe.LR_SCALE_FROM_BATCH}"
        return base, f"base lr: {linear} ({result.rule} suggested {result.suggestion:.2g})"
    if result.suggestion < recipe.trust_band(optimizer, batch_size)[0]:  # a minimum at the sweep's start: no real fall
        return base, f"base lr: {result.rule} {result.suggestion:.2g} below the trust band"
    clipped = recipe.clip_lr(result.suggestion, optimizer, batch_size)
    if clipped != result.suggestion:
        return clipped, f"{result.rule}, clipped from {result.suggestion:.2g}"
    return clipped, result.rule


def base_lr_info(optimizer: str, why: str, cfg: TrainConfig) -> dict[str, Any]:
    """lr_info when no range test ran."""
    return {
        "lr": recipe.base_lr(optimizer, cfg.batch_size),
        "rule": why,
        "suggestions": {},
        "flag": None,
        "num_steps": 0,
        "epochs_cost": 0.0,
        "budget_share": 0.0,
        "batch_size": cfg.batch_size,
        "epochs": cfg.epochs,
    }
