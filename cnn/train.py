"""Training: seeded, resumable from a saved state (the caller stores it: cnn/checkpoints.py), with device-side metrics
and a per-epoch history. What a run is built from (config, device, optimizer, precision, loaders) is in
cnn/train_setup.py; the epoch loop's pieces stay here with the Trainer, since cnn/ensemble.py's batched seeds share
them (RunLog, run_epoch, checkpoint_state)."""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cnn.data.batches import BatchLoader
from cnn.data.splits import DatasetSplits
from cnn.errors import CheckpointError, ConfigError, TrainingDiverged
from cnn.train_setup import Precision, TrainConfig, build_optimizer, build_scheduler, make_loader, resolve_device

log = logging.getLogger(__name__)

NAN_CHECK_EVERY = 50  # steps between host syncs that look for a non-finite loss


@dataclass
class TrainResult:
    """What a training run leaves: its history and the figures a comparison table needs."""

    history: list[dict[str, float]]
    best_epoch: int
    best_val_acc: float
    seconds: float
    images_per_sec: float
    resumed_from: int = 0
    stopped_early: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary."""
        return dataclasses.asdict(self)


@dataclass
class RunLog:
    """One run's per-epoch history and early-stopping state: the best validation loss, epochs since it, its weights."""

    history: list[dict[str, float]] = field(default_factory=list)
    best_val_loss: float = math.inf
    bad_epochs: int = 0
    best_state: dict[str, Tensor] | None = None

    def record(self, row: dict[str, float], weights: Callable[[], Mapping[str, Tensor]], patience: int | None) -> bool:
        """Append `row` and track the best validation loss (with `patience`, a CPU copy of `weights()` too); True when
        `patience` epochs passed without improvement."""
        self.history.append(row)
        if row["val_loss"] < self.best_val_loss:
            self.best_val_loss = row["val_loss"]
            self.bad_epochs = 0
            if patience:
                self.best_state = {k: v.detach().clone().cpu() for k, v in weights().items()}
        else:
            self.bad_epochs += 1
        return bool(patience) and self.bad_epochs >= patience

    def result(self, epochs: int) -> TrainResult:
        """Summarise the history of a run planned for `epochs` epochs."""
        if not self.history:
            raise ConfigError("epochs", "no epoch was run", allowed="epochs > already completed epochs")
        best = min(self.history, key=lambda r: r["val_loss"])
        seconds = sum(r["seconds"] for r in self.history)
        images = sum(r["images"] for r in self.history)
        return TrainResult(
            history=[dict(r) for r in self.history],
            best_epoch=int(best["epoch"]),
            best_val_acc=max(r["val_acc"] for r in self.history),
            seconds=seconds,
            images_per_sec=images / max(seconds, 1e-9),
            resumed_from=0,
            stopped_early=len(self.history) < epochs,
        )

    def restore(self, ckpt: Mapping[str, Any]) -> None:
        """Take the history and early-stopping state of a checkpoint written by `checkpoint_state`."""
        self.history = list(ckpt.get("history", []))
        self.best_state = ckpt.get("best_model")
        self.best_val_loss = float(ckpt.get("best_val_loss", math.inf))
        self.bad_epochs = int(ckpt.get("bad_epochs", 0))


def checkpoint_state(
    variant: str,
    epoch: int,
    config: TrainConfig,
    run: RunLog,
    *,
    model: Mapping[str, Tensor],
    optimizer: Mapping[str, Any],
    scheduler: Mapping[str, Any] | None,
    rng: Mapping[str, Tensor],
) -> dict[str, Any]:
    """The checkpoint dict after `epoch` that `Trainer.restore` continues from (batched seeds write it too)."""
    return {
        "variant": variant,
        "epoch": epoch,
        "model": model,
        "optimizer": optimizer,
        "scheduler": scheduler,
        "rng": rng,
        "history": run.history,
        "best_model": run.best_state,
        "best_val_loss": run.best_val_loss,
        "bad_epochs": run.bad_epochs,
        "config": config.to_dict(),
    }


def nonfinite_message(losses: Tensor, lrs: Sequence[float], epoch: int, first_step: int) -> str | None:
    """Why training diverged, naming epoch, step and lr of the first non-finite loss in `losses` (one per step), or
    None when all are finite."""
    finite = torch.isfinite(losses)
    if bool(finite.all()):
        return None
    i = int((~finite).nonzero()[0])
    return f"loss became {float(losses[i])} at epoch {epoch}, step {first_step + i} (lr={lrs[i]:.3g}); lower lr or check the inputs"


def run_epoch(
    batches: Iterable[tuple[Tensor, Tensor]],
    step: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]],
    lr: Callable[[], float],
    check: Callable[[list[Tensor], list[float], int], None],
    device: torch.device,
) -> tuple[Tensor, Tensor, int, float]:
    """One training pass: `step(x, y)` trains on a batch and returns its detached loss and logits (both with a
    leading seed dimension when seeds train batched); `check(losses, lrs, first_step)` sees the losses every
    NAN_CHECK_EVERY steps and at the end, so the host syncs rarely. Returns the summed loss over the images and the
    correct predictions (per seed when batched), the images seen (by each seed) and the seconds taken."""
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    seen = 0
    losses: list[Tensor] = []
    lrs: list[float] = []
    start = time.perf_counter()
    i = 0
    for i, (x, y) in enumerate(batches, start=1):
        lrs.append(lr())
        loss, logits = step(x, y)
        losses.append(loss)
        loss_sum = loss_sum + loss * y.shape[-1]
        correct = correct + (logits.argmax(-1) == y).sum(-1)
        seen += y.shape[-1]
        if i % NAN_CHECK_EVERY == 0:
            check(losses, lrs, i - len(losses) + 1)
            losses, lrs = [], []
    if losses:
        check(losses, lrs, i - len(losses) + 1)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return loss_sum, correct, seen, time.perf_counter() - start


def epoch_stats(loss_sum: float, correct: int, seen: int, seconds: float) -> dict[str, float]:
    """A history row's training figures from one pass's totals."""
    return {
        "train_loss": loss_sum / max(seen, 1),
        "train_acc": correct / max(seen, 1),
        "seconds": seconds,
        "images_per_sec": seen / max(seconds, 1e-9),
        "images": seen,
    }


def log_epoch(row: Mapping[str, float], epochs: int, prefix: str = "") -> None:
    """The per-epoch log line."""
    log.info(
        "%sepoch %d/%d loss %.4f acc %.4f val_loss %.4f val_acc %.4f lr %.3g %.0f img/s",
        prefix,
        row["epoch"],
        epochs,
        row["train_loss"],
        row["train_acc"],
        row["val_loss"],
        row["val_acc"],
        row["lr"],
        row["images_per_sec"],
    )


def rng_state(generator: torch.Generator) -> dict[str, Tensor]:
    """The global RNG states and a loader's shuffle `generator` state, as a checkpoint keeps them."""
    state = {"torch": torch.get_rng_state(), "shuffle": generator.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: Mapping[str, Tensor], loader: BatchLoader) -> None:
    torch.set_rng_state(state["torch"])
    loader.generator.set_state(state["shuffle"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def load_weights(model: nn.Module, ckpt: Mapping[str, Any], source: str = "checkpoint") -> None:
    """Load a checkpoint's model weights, turning shape mismatches into a CheckpointError."""
    try:
        model.load_state_dict(ckpt.get("best_model") or ckpt["model"])
    except RuntimeError as err:
        raise CheckpointError(f"{source} does not fit this model: {str(err).splitlines()[0]}") from err


class Trainer:
    """Runs epochs of one model on one dataset; create with the model, data and config, then call `fit`."""

    def __init__(
        self,
        model: nn.Module,
        data: DatasetSplits,
        config: TrainConfig,
        *,
        input_size: int,
        variant: str = "",
        callback: Callable[[dict[str, float]], None] | None = None,
    ) -> None:
        self.config = config.check()
        self.device = resolve_device(config.device)
        self.precision = Precision(self.device, config.amp, config.channels_last)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = (
                True  # fixed batch shapes: autotuned once per shape, then the fastest kernels
            )
        self.variant = variant
        self.callback = callback
        self.model = model.to(self.device)
        if self.precision.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.forward = torch.compile(self.model) if config.compile else self.model
        self.train_loader = make_loader(
            data,
            "train",
            batch_size=config.batch_size,
            input_size=input_size,
            device=self.device,
            shuffle=True,
            seed=config.seed,
            channels_last=self.precision.channels_last,
            max_batches=config.max_steps,
        )
        self.val_loader = make_loader(
            data,
            "val",
            batch_size=max(config.batch_size, 512),
            input_size=input_size,
            device=self.device,
            channels_last=self.precision.channels_last,
        )
        self.optimizer = build_optimizer(
            config.optimizer, self.model.parameters(), config.lr, config.momentum, config.weight_decay
        )
        self.scheduler = build_scheduler(
            config.schedule, self.optimizer, config.lr, config.epochs * len(self.train_loader)
        )
        self.run = RunLog()
        self.start_epoch = 1

    @property
    def history(self) -> list[dict[str, float]]:
        """The per-epoch rows so far."""
        return self.run.history

    def loss_step(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Forward one batch under the device's precision; returns (loss, logits)."""
        with self.precision.autocast():
            logits = self.forward(x)
            loss = F.cross_entropy(logits.float(), y)
        return loss, logits

    def _train_epoch(self, epoch: int) -> dict[str, float]:
        self.model.train()
        loss_sum, correct, seen, seconds = run_epoch(
            self.train_loader,
            self._step,
            lambda: self.optimizer.param_groups[0]["lr"],
            lambda losses, lrs, first_step: self._check_finite(losses, lrs, epoch, first_step),
            self.device,
        )
        return epoch_stats(float(loss_sum), int(correct), seen, seconds)

    def _step(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """One optimizer (and schedule) step on a batch; returns the detached loss and the logits."""
        loss, logits = self.loss_step(x, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        return loss.detach(), logits

    def _check_finite(self, losses: list[Tensor], lrs: list[float], epoch: int, first_step: int) -> None:
        """Raise TrainingDiverged naming epoch, step and lr at the first non-finite loss of the chunk."""
        if why := nonfinite_message(torch.stack(losses), lrs, epoch, first_step):
            raise TrainingDiverged(why)

    @torch.no_grad()
    def validate(self) -> tuple[float, float]:
        """Mean loss and accuracy on the validation split."""
        was_training = self.model.training
        self.model.eval()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        n = 0
        try:
            for x, y in self.val_loader:
                with self.precision.autocast():
                    logits = self.forward(x)
                loss_sum += F.cross_entropy(logits.float(), y, reduction="sum")
                correct += (logits.argmax(1) == y).sum()
                n += y.numel()
        finally:
            self.model.train(was_training)
        return float(loss_sum) / max(n, 1), float(correct) / max(n, 1)

    def state(self, epoch: int) -> dict[str, Any]:
        """The checkpoint dict after `epoch`."""
        return checkpoint_state(
            self.variant,
            epoch,
            self.config,
            self.run,
            model=self.model.state_dict(),
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict() if self.scheduler else None,
            rng=rng_state(self.train_loader.generator),
        )

    def restore(self, ckpt: Mapping[str, Any]) -> None:
        """Continue from a checkpoint written by `state`."""
        try:
            self.model.load_state_dict(ckpt["model"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
            if self.scheduler is not None and ckpt.get("scheduler"):
                self.scheduler.load_state_dict(ckpt["scheduler"])
        except (RuntimeError, KeyError, ValueError) as err:
            raise CheckpointError(
                f"checkpoint does not fit variant {self.variant!r} with this config: {str(err).splitlines()[0]}"
            ) from err
        _set_rng_state(ckpt["rng"], self.train_loader)
        self.run.restore(ckpt)
        self.start_epoch = int(ckpt["epoch"]) + 1

    def epochs(self) -> Iterator[dict[str, float]]:
        """Run the remaining epochs, yielding each history row (callers checkpoint between them)."""
        if self.start_epoch == 1:
            torch.manual_seed(self.config.seed)  # dropout masks follow the seed; resumes restore the saved state
        for epoch in range(self.start_epoch, self.config.epochs + 1):
            row = {"epoch": epoch, "lr": self.optimizer.param_groups[0]["lr"]}
            row.update(self._train_epoch(epoch))
            row["val_loss"], row["val_acc"] = self.validate()
            out_of_patience = self.run.record(row, self.model.state_dict, self.config.patience)
            if self.callback:
                self.callback(dict(row))
            log_epoch(row, self.config.epochs)
            yield row
            if out_of_patience:
                break

    def result(self) -> TrainResult:
        """Summarise the history; with early stopping, put the best epoch's weights back."""
        result = self.run.result(self.config.epochs)
        if self.config.patience and self.run.best_state is not None:
            self.model.load_state_dict(self.run.best_state)
        return result


RESUME_KEYS = (
    "seed",
    "epochs",
    "batch_size",
    "lr",
    "optimizer",
    "momentum",
    "weight_decay",
    "schedule",
    "max_steps",
    "patience",
)


def check_resumable(saved: Mapping[str, Any], config: TrainConfig, url: str) -> None:
    """A checkpoint resumes only under the settings it was written with (schedule length, batch order, optimizer)."""
    now = config.to_dict()
    changed = [f"{k} {saved[k]!r} -> {now[k]!r}" for k in RESUME_KEYS if k in saved and saved[k] != now[k]]
    if changed:
        raise CheckpointError(
            f"checkpoint {url} was written with other settings ({', '.join(changed)}); resume with the same settings, or use another run name to train afresh"
        )


def train(
    model: nn.Module,
    data: DatasetSplits,
    config: TrainConfig,
    *,
    input_size: int,
    variant: str = "",
    resume_from: Mapping[str, Any] | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    callback: Callable[[dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train `model` in place, continuing from the state `resume_from` if given; `on_epoch` receives the state after
    every epoch (the caller saves it, as torchvision's reference scripts do: the trainer never touches storage)."""
    trainer = Trainer(model, data, config, input_size=input_size, variant=variant, callback=callback)
    if resume_from is not None:
        check_resumable(resume_from.get("config") or {}, config, f"the checkpoint of {variant or 'this model'}")
        trainer.restore(resume_from)
        log.info("resuming %s from epoch %d", variant, trainer.start_epoch - 1)
    resumed_from = trainer.start_epoch - 1
    for row in trainer.epochs():
        if on_epoch is not None:
            on_epoch(trainer.state(int(row["epoch"])))
    result = trainer.result()
    result.resumed_from = resumed_from
    return result
