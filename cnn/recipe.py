"""The default recipe: batch size and epochs that follow the data, the LR range test's budget, and what "learned" means.

Every rule here is a pure function of the training-set size, the device and the labels, so the flows, the CLI,
the benchmarks and the tests all call the same one. Why these values: docs/recipe.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from cnn.checks import AUTO
from cnn.recipe_rules import (
    AUTO_BATCH_BOUNDS,
    AUTO_EPOCH_BOUNDS,
    EPOCH_IMAGES,
    LR_SCALE_FROM_BATCH,
    MIN_STEPS_PER_EPOCH,
    MIN_TOTAL_STEPS,
)

LR_TEST_SHARE = 0.10  # the LR range test sees at most this share of the training budget's images ...
LR_TEST_MAX_EPOCHS = 1.0  # ... and at most one epoch
MIN_LR_TEST_STEPS = 30  # fewer steps than this give no usable curve: the optimizer's base lr is used instead
# Used when the range test is skipped or its curve is not trusted. It is one-cycle's peak: Adam 3e-3 (fastai's default
# one-cycle lr; the schedule's mean lr is about half its peak): a peak of 1e-3, Adam's usual constant lr, trains below
# the reference loop (docs/recipe.md, "Where the constants come from"; benchmarks/recipe.py measures the recipe against
# that loop).
BASE_LR = {"adam": 3e-3, "adamw": 3e-3, "sgd": 0.01}
LR_TRUST = {"adam": (3e-4, 3e-3), "adamw": (3e-4, 3e-3), "sgd": (3e-3, 0.1)}  # suggestions are clipped into this band
UNTRUSTED_CURVES = (
    "too_short",
    "no_descent",
    "disagree",
)  # range-test flags whose suggestion is replaced by the base lr
CHANCE_SIGMAS = 3.0  # "clearly above chance": this many binomial standard deviations ...
CHANCE_MIN_MARGIN = 0.05  # ... and at least this many points above the majority-class share
# A first epoch whose validation loss rises by more than this share over the untrained model's aborts the attempt.
# Only a rise: under one-cycle warm-up a deep stack (generic_3) can keep its loss flat for an epoch and then learn
# (docs/recipe.md).
FIRST_EPOCH_MAX_RISE = 0.5


def _device_type(device: str | torch.device) -> str:
    """'cuda' for any CUDA device, else 'cpu' (the bounds used for CPU and other devices)."""
    return "cuda" if str(device).startswith("cuda") else "cpu"


def auto_batch_size(n_train: int, device: str | torch.device = "cpu", epochs: int | None = None) -> int:
    """Largest power of two that keeps >= MIN_STEPS_PER_EPOCH steps per epoch and >= MIN_TOTAL_STEPS in `epochs`
    (the epoch rule's when None), within the device's bounds."""
    low, high = AUTO_BATCH_BOUNDS[_device_type(device)]
    epochs = auto_epochs(n_train) if epochs is None else epochs
    fit = max(1, min(n_train // MIN_STEPS_PER_EPOCH, n_train * epochs // MIN_TOTAL_STEPS))
    batch = 2 ** int(math.floor(math.log2(fit)))
    return int(min(high, max(low, batch)))


def few_steps_note(n_train: int, epochs: int, batch_size: int, device: str | torch.device = "cpu") -> str | None:
    """A warning when `batch_size` leaves fewer than MIN_TOTAL_STEPS optimizer steps in the run, naming the rule's
    batch (None when the run has enough, or the batch is no larger than the rule's): large batches with few steps
    lose accuracy that no lr rule gives back."""
    steps = epochs * math.ceil(n_train / batch_size)
    auto = auto_batch_size(n_train, device, epochs)
    if steps >= MIN_TOTAL_STEPS or batch_size <= auto:
        return None
    return (
        f"batch size {batch_size} leaves {steps} optimizer steps in {epochs} epochs of {n_train} images "
        f"(the recipe wants at least {MIN_TOTAL_STEPS}); expect lower accuracy than at batch size auto ({auto})"
    )


def auto_epochs(n_train: int) -> int:
    """Enough epochs to see EPOCH_IMAGES images, within AUTO_EPOCH_BOUNDS."""
    low, high = AUTO_EPOCH_BOUNDS
    return int(min(high, max(low, math.ceil(EPOCH_IMAGES / max(n_train, 1)))))


def resolve_batch_size(
    batch_size: int | str, n_train: int, device: str | torch.device = "cpu", epochs: int | None = None
) -> int:
    """The user's batch size, or the rule's for "auto" (for `epochs` of training)."""
    return auto_batch_size(n_train, device, epochs) if batch_size == AUTO else int(batch_size)


def resolve_epochs(epochs: int | str, n_train: int) -> int:
    """The user's epochs, or the rule's for "auto"."""
    return auto_epochs(n_train) if epochs == AUTO else int(epochs)


def lr_test_steps(epochs: int, n_train: int, batch_size: int) -> int:
    """Steps the range test may take: LR_TEST_SHARE of the training images, at most one epoch (0 = too few to run)."""
    images = min(LR_TEST_SHARE * epochs * n_train, LR_TEST_MAX_EPOCHS * n_train)
    steps = int(images // batch_size)
    return steps if steps >= MIN_LR_TEST_STEPS else 0


def lr_scale(batch_size: int) -> float:
    """How much the base lr and trust band grow at `batch_size`: 1 up to LR_SCALE_FROM_BATCH, then linearly."""
    return max(1.0, batch_size / LR_SCALE_FROM_BATCH)


def base_lr(optimizer: str, batch_size: int) -> float:
    """The optimizer's base learning rate (one-cycle's peak: Adam 3e-3, SGD 0.01), scaled for large batches."""
    return BASE_LR[optimizer] * lr_scale(batch_size)


def trust_band(optimizer: str, batch_size: int) -> tuple[float, float]:
    """The (low, high) lr band a range-test suggestion is kept in, scaled for large batches."""
    scale = lr_scale(batch_size)
    low, high = LR_TRUST[optimizer]
    return low * scale, high * scale


def clip_lr(lr: float, optimizer: str, batch_size: int) -> float:
    """`lr` clipped into the optimizer's trust band at `batch_size`."""
    low, high = trust_band(optimizer, batch_size)
    return float(min(high, max(low, lr)))


def chance_level(labels: torch.Tensor | Sequence[int]) -> float:
    """Accuracy of always predicting the most frequent class."""
    y = torch.as_tensor(labels).reshape(-1)
    if y.numel() == 0:
        return 0.0
    return float(torch.bincount(y).max()) / y.numel()


def chance_threshold(chance: float, n: int) -> float:
    """The accuracy a model must exceed to count as learned: chance + max(CHANCE_MIN_MARGIN, 3 binomial sigmas)."""
    sigma = math.sqrt(max(chance * (1 - chance), 1e-12) / max(n, 1))
    return min(1.0, chance + max(CHANCE_MIN_MARGIN, CHANCE_SIGMAS * sigma))


def learned(accuracy: float | None, chance: float, n: int) -> bool:
    """Whether `accuracy` on `n` images is clearly above `chance`."""
    return accuracy is not None and math.isfinite(accuracy) and accuracy > chance_threshold(chance, n)


def collapsed(accuracies: Sequence[float], chance: float, n: int) -> bool:
    """Whether the last of these per-epoch validation accuracies fell back to chance after an earlier one was twice as
    far above chance as "learned" needs: an lr that blew the model up mid-run, as one-cycle's warm-up can do to a large
    model after it learned (AlexNet on digits: docs/recipe.md)."""
    if len(accuracies) < 2 or learned(accuracies[-1], chance, n):
        return False
    return max(accuracies[:-1]) > chance + 2 * (chance_threshold(chance, n) - chance)
