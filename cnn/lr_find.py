"""Leslie Smith's learning-rate range test: an exponential lr sweep, a smoothed loss curve and a suggested lr.

Follows davidtvs/pytorch-lr-finder (exponential schedule, smoothing, divergence stop, steepest-descent
suggestion) but returns plain data and always puts model, optimizer and RNG state back. Kept by hand rather than
calling torch-lr-finder (which the tests install to check this against): its `LRFinder` iterates a DataLoader and
steps its own training loop, while the range test here must step the trainer's resident batches with the trainer's
precision (`step_fn`, cnn.lr_policy.range_test_sweep), offer fastai's min-loss/10 rule beside steepest descent, and
restore the RNG state so that training after the test starts from the same random stream (tests/test_lr_find.py).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor, nn

from cnn.errors import ConfigError
from cnn.params import LR_RULES as RULES  # the lr_rule parameter's choices, defined once

_MIN_STEPS_BEFORE_DIVERGE = 3  # divergence is only checked once this many losses are recorded


@dataclass
class LRFindResult:
    """Outcome of one range test: the curve, the suggested lr and how it was chosen."""

    lrs: list[float]
    losses: list[float]
    raw_losses: list[float]
    suggestion: float
    rule: str
    suggestions: dict[str, float | None]
    flag: str | None
    diverged: bool
    num_steps: int
    images_seen: int

    def to_dict(self) -> dict:
        """Return a JSON-serialisable dict of every field."""
        return asdict(self)


def suggest_steepest(lrs: list[float], losses: list[float], skip_start: int = 10, skip_end: int = 5) -> float:
    """Return the lr at the most negative gradient of loss vs log10(lr), after trimming both ends."""
    if skip_start < 0 or skip_end < 0:
        raise ValueError("skip_start and skip_end cannot be negative")
    if len(lrs) != len(losses):
        raise ValueError(f"lrs and losses differ in length ({len(lrs)} vs {len(losses)})")
    needed = skip_start + skip_end + 2
    if len(lrs) < needed:
        raise ValueError(f"too few points to suggest an lr: {len(lrs)} recorded, need at least {needed}")
    stop = len(lrs) - skip_end
    lr_arr = np.asarray(lrs[skip_start:stop], dtype=float)
    loss_arr = np.asarray(losses[skip_start:stop], dtype=float)
    grads = np.gradient(loss_arr, np.log10(lr_arr))
    return float(lr_arr[int(np.argmin(grads))])


def suggest_min_loss_div10(lrs: list[float], losses: list[float]) -> float:
    """Return fastai's suggestion: the lr at the minimum (smoothed) loss, divided by 10."""
    if not lrs or len(lrs) != len(losses):
        raise ValueError("lrs and losses must be non-empty and of equal length")
    return float(lrs[int(np.argmin(np.asarray(losses, dtype=float)))]) / 10.0


def _check_rule(rule: str) -> None:
    """Raise ConfigError for an unknown suggestion rule."""
    if rule not in RULES:
        raise ConfigError("lr_rule", f"unknown rule {rule!r}", allowed=list(RULES))


def _curve_flag(losses: list[float], suggestions: dict[str, float | None]) -> str | None:
    """Name what is wrong with the curve, or None: too_short, no_descent or disagree (in that order)."""
    if suggestions["steepest"] is None:
        return "too_short"
    if min(losses[1:]) >= losses[0]:
        return "no_descent"
    ratio = suggestions["steepest"] / suggestions["min_loss_div10"]
    if ratio > 10 or ratio < 0.1:
        return "disagree"
    return None


def suggest_lr(
    lrs: list[float], losses: list[float], rule: str = "steepest", fallback_lr: float | None = None
) -> tuple[float, str, dict, str | None]:
    """Return (suggestion, rule_used, all_suggestions, flag); an unusable curve gives fallback_lr or raises ValueError.

    A curve is unusable when it is too short for the steepest rule (flag "too_short") or its loss never
    falls below its first value (flag "no_descent"); "disagree" (rules >10x apart) only warns.
    """
    _check_rule(rule)
    if len(lrs) != len(losses):
        raise ValueError(f"lrs and losses differ in length ({len(lrs)} vs {len(losses)})")
    suggestions: dict[str, float | None] = {"steepest": None, "min_loss_div10": None}
    if lrs:
        suggestions["min_loss_div10"] = suggest_min_loss_div10(lrs, losses)
    try:
        suggestions["steepest"] = suggest_steepest(lrs, losses)
    except ValueError:
        pass
    flag = _curve_flag(losses, suggestions)
    if flag in ("too_short", "no_descent"):
        if fallback_lr is None:
            raise ValueError(
                f"cannot suggest an lr: the loss curve is {flag.replace('_', ' ')} ({len(lrs)} points); "
                "run more steps, widen the lr range or pass fallback_lr"
            )
        return float(fallback_lr), "fallback", suggestions, flag
    return float(suggestions[rule]), rule, suggestions, flag


def exp_lrs(start_lr: float, end_lr: float, num_steps: int) -> list[float]:
    """Return the sweep: lr_i = start_lr * (end_lr / start_lr) ** (i / (num_steps - 1)), i = 0..num_steps-1."""
    return [start_lr * (end_lr / start_lr) ** (i / (num_steps - 1)) for i in range(num_steps)]


def _validate(
    start_lr: float, end_lr: float, num_steps: int, smooth_f: float, diverge_th: float, fallback_lr: float | None
) -> None:
    """Raise ConfigError naming the first invalid range-test setting."""
    if not start_lr > 0:
        raise ConfigError("start_lr (lr_min)", f"must be > 0, got {start_lr}")
    if not end_lr > start_lr:
        raise ConfigError("end_lr (lr_max)", f"must be > start_lr (lr_min) = {start_lr}, got {end_lr}")
    if num_steps < 2:
        raise ConfigError("num_steps", f"must be >= 2, got {num_steps}")
    if not 0 <= smooth_f < 1:
        raise ConfigError("smooth_f", f"must be in [0, 1), got {smooth_f}")
    if not diverge_th > 1:
        raise ConfigError("diverge_th", f"must be > 1, got {diverge_th}")
    if fallback_lr is not None and not fallback_lr > 0:
        raise ConfigError("fallback_lr", f"must be > 0 or None, got {fallback_lr}")


def _cycle(batches: Iterable[tuple[Tensor, Tensor]]) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield batches forever, re-iterating `batches` (not caching it) each time it runs out."""
    while True:
        empty = True
        for batch in batches:
            empty = False
            yield batch
        if empty:
            raise ConfigError("batches", "yielded no batches")


class _Snapshot:
    """Copies of model, optimizer, per-module mode, grads and RNG state, restorable in one call."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer):
        self.model, self.optimizer = model, optimizer
        self.model_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.optim_state = copy.deepcopy(optimizer.state_dict())
        self.modes = [m.training for m in model.modules()]
        self.grads = [None if p.grad is None else p.grad.detach().clone() for p in model.parameters()]
        self.cpu_rng = torch.get_rng_state()
        self.cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None

    def restore(self) -> None:
        """Put everything back exactly as it was when the snapshot was taken."""
        self.model.load_state_dict(self.model_state)
        self.optimizer.load_state_dict(self.optim_state)
        for module, mode in zip(self.model.modules(), self.modes):
            module.training = mode
        for param, grad in zip(self.model.parameters(), self.grads):
            param.grad = grad
        torch.set_rng_state(self.cpu_rng)
        if self.cuda_rng is not None:
            torch.cuda.set_rng_state_all(self.cuda_rng)


def _sweep(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Iterable[tuple[Tensor, Tensor]],
    schedule: list[float],
    smooth_f: float,
    diverge_th: float,
    step_fn: Callable[[nn.Module, Tensor, Tensor], Tensor],
) -> tuple[list[float], list[float], list[float], bool, int]:
    """Train one step per lr in `schedule`; return (lrs, smoothed, raw, diverged, images_seen)."""
    lrs: list[float] = []
    raw: list[float] = []
    smoothed: list[float] = []
    beta, avg, best, images = 1.0 - smooth_f, 0.0, math.inf, 0
    model.train()
    data = _cycle(batches)
    for lr in schedule:
        x, y = next(data)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        loss = step_fn(model, x, y)
        value = float(loss.detach())
        if not math.isfinite(value):
            return lrs, smoothed, raw, True, images
        loss.backward()
        optimizer.step()
        avg = beta * avg + smooth_f * value
        smooth = value if smooth_f == 0 else avg / (1.0 - beta ** (len(raw) + 1))
        lrs.append(lr)
        raw.append(value)
        smoothed.append(smooth)
        images += len(x)
        best = min(best, smooth)
        if len(raw) >= _MIN_STEPS_BEFORE_DIVERGE and smooth > diverge_th * best:
            return lrs, smoothed, raw, True, images
    return lrs, smoothed, raw, False, images


def lr_range_test(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Iterable[tuple[Tensor, Tensor]],
    *,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_steps: int = 100,
    smooth_f: float = 0.05,
    diverge_th: float = 5.0,
    rule: str = "steepest",
    fallback_lr: float | None = 1e-2,
    loss_fn: Callable | None = None,
    step_fn: Callable | None = None,
) -> LRFindResult:
    """Sweep lr_i = start_lr * (end_lr/start_lr) ** (i/(num_steps-1)), one training step each, and suggest an lr.

    The smoothed loss is a bias-corrected EMA (weight smooth_f on the newest loss). The sweep stops early
    when it exceeds diverge_th * its best value or the loss is NaN/inf (that step is not recorded).
    Model, optimizer, module modes, grads and torch RNG state are restored afterwards, even on error.
    """
    _validate(start_lr, end_lr, num_steps, smooth_f, diverge_th, fallback_lr)
    _check_rule(rule)
    criterion = loss_fn or nn.functional.cross_entropy
    forward = step_fn or (lambda m, x, y: criterion(m(x), y))
    snapshot = _Snapshot(model, optimizer)
    try:
        lrs, losses, raw, diverged, images = _sweep(
            model, optimizer, batches, exp_lrs(start_lr, end_lr, num_steps), smooth_f, diverge_th, forward
        )
    finally:
        snapshot.restore()
    suggestion, rule_used, suggestions, flag = suggest_lr(lrs, losses, rule, fallback_lr)
    return LRFindResult(
        lrs=lrs,
        losses=losses,
        raw_losses=raw,
        suggestion=suggestion,
        rule=rule_used,
        suggestions=suggestions,
        flag=flag,
        diverged=diverged,
        num_steps=len(lrs),
        images_seen=images,
    )
