"""Training that cannot fail silently: a learn check after every epoch and at the end, with documented fallbacks.

Attempt 1 trains at the chosen lr. If its loss turns non-finite, its first epoch raises the validation loss well
above the untrained model's, its validation accuracy collapses back to chance after learning, or its last epoch is not
clearly above chance, attempt 2 retrains from the same initial weights at a lower lr (`lower_lr`), or at the base lr
when the lr was below it; if that fails too, attempt 3 uses the other optimizer family at its base lr. When none
learns, the finished attempt whose last epoch validated best is kept, and the result says it did not learn.
Each attempt has its own checkpoint, so a crash resumes the attempt it was in. The result records every failure.

`fit_seeds` does the same for several seeds of one variant: their first attempts train together as one batched model
(cnn.ensemble), judged per seed; a seed that fails goes on alone through `fit`, from its batched checkpoint.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from cnn import recipe
from cnn.checkpoints import CheckpointIO
from cnn.data.splits import DatasetSplits
from cnn.ensemble import SeedCallback, SeedsTrainer, batched_trainer, release_memory
from cnn.errors import TrainingDiverged
from cnn.train import Trainer, TrainResult, check_resumable
from cnn.train_setup import TrainConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Attempt:
    """One try: the optimizer and lr it trains with, and the checkpoint name it writes."""

    optimizer: str
    lr: float
    checkpoint: str


@dataclass
class FitResult:
    """The final attempt's training result, the config it used, and why earlier attempts were abandoned."""

    result: TrainResult
    config: TrainConfig
    fallbacks: list[str] = field(default_factory=list)
    learned: bool = True


def attempts(optimizer: str, lr: float, batch_size: int) -> list[Attempt]:
    """The chosen setting; then the optimizer's base lr if `lr` was below it, else a lower lr (`lower_lr`); then the
    other optimizer family at its base lr (at most two fallbacks)."""
    other = "sgd" if optimizer in ("adam", "adamw") else "adam"
    base = recipe.base_lr(optimizer, batch_size)
    return [
        Attempt(optimizer, lr, "checkpoint.pt"),
        Attempt(optimizer, base if lr < base else lower_lr(lr, batch_size), "checkpoint-fallback1.pt"),
        Attempt(other, recipe.base_lr(other, batch_size), "checkpoint-fallback2.pt"),
    ]


def lower_lr(lr: float, batch_size: int) -> float:
    """The lr after a failure at `lr`: a tenth of it, or above batch 128 the square-root scaling of the same base lr
    instead of the linear one (the other published rule; docs/recipe.md's batch 1024 table shows a fallback that learned
    this way)."""
    scale = recipe.lr_scale(batch_size)
    return lr / scale**0.5 if scale > 1 else lr / 10


def first_epoch_failure(row: Mapping[str, float], initial_val_loss: float, chance: float, n_val: int) -> str | None:
    """ "loss rose" when the first epoch left the validation loss far above the untrained model's (and not above
    chance), else None: the cheap check that catches an lr too high without waiting for the whole run."""
    rose = not row["val_loss"] <= initial_val_loss * (1 + recipe.FIRST_EPOCH_MAX_RISE)
    return "loss rose" if rose and not recipe.learned(row["val_acc"], chance, n_val) else None


def epoch_failure(
    history: Sequence[Mapping[str, float]], initial_val_loss: float, chance: float, n_val: int
) -> str | None:
    """Why to abandon the attempt after the latest epoch, or None: the first epoch's loss rose, or the validation
    accuracy collapsed back to chance after learning (waiting for the end would keep the collapsed weights)."""
    if len(history) == 1:
        return first_epoch_failure(history[0], initial_val_loss, chance, n_val)
    return "collapsed" if recipe.collapsed([r["val_acc"] for r in history], chance, n_val) else None


def _failure(
    trainer: Trainer,
    check: Callable[[Sequence[Mapping[str, float]]], str | None],
    learned: Callable[[float], bool],
    save: Callable[[dict], None],
) -> tuple[str | None, TrainResult | None]:
    """Run the remaining epochs, stopping when `check` rejects the history so far; return (why it failed or None, the
    result). The end check judges the last epoch: its weights are the ones kept."""
    try:
        for done in range(1, len(trainer.history) + 1):  # a resumed attempt is judged on the epochs it already ran
            if why := check(trainer.history[:done]):
                return why, None
        for row in trainer.epochs():
            save(trainer.state(int(row["epoch"])))
            if why := check(trainer.history):
                return why, None
    except TrainingDiverged:
        return "diverged", None
    result = trainer.result()
    return (None if learned(result.history[-1]["val_acc"]) else "did not learn"), result


def fit(
    build: Callable[[], nn.Module],
    data: DatasetSplits,
    config: TrainConfig,
    *,
    input_size: int,
    variant: str = "",
    checkpoints: CheckpointIO | None = None,
    resume: bool = True,
    fallback: bool = True,
    callback: Callable[[dict[str, float]], None] | None = None,
) -> tuple[nn.Module, FitResult]:
    """Train a fresh `build()` model with the learn check and (unless fallback=False, as for a user's own lr) the
    fallbacks; returns the kept model and its FitResult. Without fallbacks a non-finite loss raises TrainingDiverged."""
    io = checkpoints or CheckpointIO()
    chance, n_val = recipe.chance_level(data.val_y), int(data.val_y.numel())
    fallbacks: list[str] = []
    finished: list[Kept] = []  # attempts that ran every epoch without learning: the best is kept if none learns
    plan = attempts(config.optimizer, config.lr, config.batch_size)[: 3 if fallback else 1]
    for i, attempt in enumerate(plan):
        cfg = dataclasses.replace(config, optimizer=attempt.optimizer, lr=attempt.lr).check()
        trainer = Trainer(build(), data, cfg, input_size=input_size, variant=variant, callback=callback)
        initial_val_loss, _ = trainer.validate()
        saved = io.load(attempt.checkpoint) if resume else None
        if saved is not None:
            check_resumable(saved.get("config") or {}, cfg, io.where(attempt.checkpoint))
            trainer.restore(saved)
        resumed_from = trainer.start_epoch - 1
        last = i == len(plan) - 1
        if not fallback:
            return trainer.model, _single(
                trainer, lambda state, name=attempt.checkpoint: io.save(name, state), chance, n_val, resumed_from
            )
        check = (
            (lambda rows: None) if last else (lambda rows, v=initial_val_loss: epoch_failure(rows, v, chance, n_val))
        )
        why, result = _failure(
            trainer,
            check,
            lambda acc: recipe.learned(acc, chance, n_val),
            lambda state, name=attempt.checkpoint: io.save(name, state),
        )
        if result is None and last:
            result = _diverged_result(trainer)
        if result is not None:  # None: abandoned mid-run, never a candidate to keep
            result.resumed_from = resumed_from
            if why is None:
                return trainer.model, FitResult(result, cfg, fallbacks, learned=True)
            finished.append(Kept(trainer.model, result, cfg))
        if last:
            return best_attempt(finished, fallbacks, why)
        fallbacks.append(f"{why} at {attempt.optimizer} {attempt.lr:.3g}")
        nxt = plan[i + 1]
        log.warning(
            "%s: %s at %s lr %.3g; retrying at %s lr %.3g",
            variant,
            why,
            attempt.optimizer,
            attempt.lr,
            nxt.optimizer,
            nxt.lr,
        )
    raise AssertionError("unreachable")


@dataclass
class Kept:
    """A finished attempt: its final model, result and config."""

    model: nn.Module
    result: TrainResult
    config: TrainConfig

    def val_acc(self) -> float:
        """The last epoch's validation accuracy (-1 when it is not a number)."""
        acc = self.result.history[-1].get("val_acc") if self.result.history else None
        return float(acc) if acc is not None and math.isfinite(acc) else -1.0


def best_attempt(finished: Sequence[Kept], fallbacks: list[str], why: str) -> tuple[nn.Module, FitResult]:
    """No attempt learned: keep the finished one whose last epoch validated best (the last on a tie), so a fallback
    never leaves a worse model than an earlier try (the other optimizer family can train far worse than a lower lr)."""
    best = max(reversed(finished), key=Kept.val_acc)
    last = finished[-1]
    if best is not last:
        fallbacks = [
            *fallbacks,
            f"{why} at {last.config.optimizer} {last.config.lr:.3g}",
            f"kept {best.config.optimizer} {best.config.lr:.3g} (best validation accuracy)",
        ]
    return best.model, FitResult(best.result, best.config, fallbacks, learned=False)


def _single(trainer: Trainer, save: Callable[[dict], None], chance: float, n_val: int, resumed_from: int) -> FitResult:
    """One attempt, no fallbacks: errors propagate, the learn check only sets the flag."""
    for row in trainer.epochs():
        save(trainer.state(int(row["epoch"])))
    result = trainer.result()
    result.resumed_from = resumed_from
    return FitResult(result, trainer.config, [], learned=recipe.learned(result.history[-1]["val_acc"], chance, n_val))


def _diverged_result(trainer: Trainer) -> TrainResult:
    """Result of a last attempt whose loss turned non-finite: its finished epochs, or one row of NaN losses."""
    if not trainer.history:
        nan = float("nan")
        trainer.history.append(
            {
                "epoch": 1,
                "lr": trainer.config.lr,
                "train_loss": nan,
                "train_acc": 0.0,
                "seconds": 0.0,
                "images_per_sec": 0.0,
                "images": 0,
                "val_loss": nan,
                "val_acc": 0.0,
            }
        )
    return trainer.result()


def fit_seeds(
    build: Callable[[int], nn.Module],
    data: DatasetSplits,
    config: TrainConfig,
    seeds: Sequence[int],
    *,
    input_size: int,
    variant: str = "",
    checkpoints: Callable[[int], CheckpointIO] | None = None,
    resume: bool = True,
    fallback: bool = True,
    callback: SeedCallback | None = None,
) -> list[tuple[nn.Module, FitResult]]:
    """`fit` for each seed (config.seed replaced; `build(seed)` makes its model, `checkpoints(seed)` stores its
    checkpoints): the first attempts of the seeds with no checkpoint to resume train as one batched model, each seed
    judged by the learn check after every epoch and checkpointed as `fit` does. A seed that passes keeps its batched
    result; one that fails, diverges, or has a checkpoint goes through `fit` alone, which resumes the attempt from
    that checkpoint (finding the same failure without retraining; with no checkpoints stored, it retrains the
    attempt) and carries on with the fallbacks."""
    ios = {seed: checkpoints(seed) if checkpoints else CheckpointIO() for seed in seeds}
    first = attempts(config.optimizer, config.lr, config.batch_size)[0]
    fresh = [seed for seed in seeds if not (resume and ios[seed].load(first.checkpoint) is not None)]
    cfg = dataclasses.replace(config, optimizer=first.optimizer, lr=first.lr).check()
    batched = _fit_batched(build, data, cfg, fresh, first, input_size, variant, ios, fallback, callback)
    return [
        batched[seed]
        if seed in batched
        else fit(
            functools.partial(build, seed),
            data,
            dataclasses.replace(config, seed=seed),
            input_size=input_size,
            variant=variant,
            checkpoints=ios[seed],
            resume=resume,
            fallback=fallback,
            callback=functools.partial(callback, seed) if callback else None,
        )
        for seed in seeds
    ]


def _fit_batched(
    build: Callable[[int], nn.Module],
    data: DatasetSplits,
    config: TrainConfig,
    seeds: Sequence[int],
    attempt: Attempt,
    input_size: int,
    variant: str,
    ios: Mapping[int, CheckpointIO],
    fallback: bool,
    callback: SeedCallback | None,
) -> dict[int, tuple[nn.Module, FitResult]]:
    """The first attempt of `seeds` batched: each seed that passes `fit`'s checks (or every seed that finishes, with
    fallback=False) mapped to its model and FitResult; {} when fewer than two seeds or they cannot train batched."""
    if len(seeds) < 2:
        return {}
    models = [build(seed) for seed in seeds]
    trainer = batched_trainer(models, data, config, seeds, input_size=input_size, variant=variant, callback=callback)
    if trainer is None:
        return {}
    try:
        _judge_epochs(trainer, attempt, ios, data, fallback)
    except torch.OutOfMemoryError as err:  # each seed resumes alone from its last checkpoint
        log.warning("%s: out of memory batched (%s); its seeds go on one after another", variant, err)
        trainer = None
    if trainer is None:
        release_memory(config.device)  # here, once the error and its frames holding the stacked weights are gone
        return {}
    chance, n_val = recipe.chance_level(data.val_y), int(data.val_y.numel())
    kept = {}
    for k, seed in enumerate(trainer.seeds):
        if seed.failure is None:
            result = trainer.result(k)
            learned = recipe.learned(result.history[-1]["val_acc"], chance, n_val)
            if learned or not fallback:
                kept[seed.seed] = (models[k], FitResult(result, seed.config, [], learned=learned))
    return kept


def _judge_epochs(
    trainer: SeedsTrainer, attempt: Attempt, ios: Mapping[int, CheckpointIO], data: DatasetSplits, fallback: bool
) -> None:
    """Run the batched epochs, saving each seed's checkpoint and (with fallbacks) dropping a seed as soon as
    `epoch_failure` rejects its history."""
    chance, n_val = recipe.chance_level(data.val_y), int(data.val_y.numel())
    initial_val_loss, _ = trainer.validate()
    for rows in trainer.epochs():
        for k, row in rows:
            seed = trainer.seeds[k]
            ios[seed.seed].save(attempt.checkpoint, trainer.state(k, int(row["epoch"])))
            if fallback and (why := epoch_failure(seed.run.history, initial_val_loss[k], chance, n_val)):
                trainer.drop(k, f"{why}; it retries alone")
