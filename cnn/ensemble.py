"""Several seeds of one variant trained together as one batched model (figures: benchmarks/seeds.py).

torch.func.stack_module_state stacks the K seeds' parameters; functional_call under vmap runs them as one model on K
batches at once (randomness="different": each seed its own dropout masks), each seed drawing its own data order.
A Sequential of common layers (every built-in variant but AlexNet) runs through cnn.grouped instead, which lays the
same computation out faster on CPU, once a first batch shows it gives each seed's own outputs.
One optimizer over the stacked parameters is K independent optimizers: SGD (momentum, weight decay), Adam and AdamW
update every element from that element's own gradient and state, and every seed takes the same steps at the same lr,
so seed k's slice gets the updates its own optimizer would make. The loss is the sum of the seeds' mean losses, so
seed k's gradient is its own loss's. What stays per seed: initial weights, data order, dropout masks, history, early
stopping, the NaN check (a diverged seed leaves the batch, the others go on) and, in cnn.fitting.fit_seeds, the learn
check. A model with buffers (BatchNorm updates its running statistics in place, which vmap cannot batch), one vmap
refuses on a first batch, torch.compile, or running out of memory trains its seeds one after another with
cnn.train.train instead, and the log says why.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from cnn.data.batches import SeedBatches
from cnn.data.splits import DatasetSplits
from cnn.errors import ConfigError, TrainingDiverged
from cnn.grouped import GroupedSequential
from cnn.train import (
    RunLog,
    TrainResult,
    checkpoint_state,
    epoch_stats,
    log_epoch,
    nonfinite_message,
    rng_state,
    run_epoch,
    train,
)
from cnn.train_setup import Precision, TrainConfig, build_optimizer, build_scheduler, make_loader, resolve_device

log = logging.getLogger(__name__)

SeedCallback = Callable[[int, dict[str, float]], None]  # (seed, history row) after every epoch
LAYOUTS = ("auto", "vmap")  # auto: cnn.grouped where it fits, else vmap; vmap: always (benchmarks/seeds.py --vmap)


@dataclass
class SeedRun:
    """One seed in the batch: its config, its history, and why it left the batch (None while it trains)."""

    seed: int
    config: TrainConfig
    run: RunLog = field(default_factory=RunLog)
    failure: str | None = None
    out_of_patience: bool = False

    @property
    def active(self) -> bool:
        """Whether the seed still records epochs."""
        return self.failure is None and not self.out_of_patience


def seed_losses(logits: Tensor, y: Tensor, reduction: str = "mean") -> Tensor:
    """Cross-entropy per seed of (K, batch, classes) logits against (K, batch) labels: K means (or sums)."""
    losses = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="none").view(y.shape)
    return losses.mean(1) if reduction == "mean" else losses.sum(1)


def unbatchable_reason(model: nn.Module, config: TrainConfig) -> str | None:
    """Why `model`'s seeds cannot train as one vmapped model under `config`, before trying (None: try)."""
    buffers = [name for name, _ in model.named_buffers()]
    if buffers:
        names = ", ".join(buffers[:3]) + (", ..." if len(buffers) > 3 else "")
        return f"it has buffers ({names}), which training may update in place (BatchNorm does) and vmap cannot batch"
    if config.compile:
        return "compile is on, and the batched model is not compiled"
    return None


class SeedsTrainer:
    """Runs epochs of K seeds' models as one batched model; create with the models (model k built with seeds[k]),
    call `probe`, iterate `epochs`, then take each seed's `result`, which writes its weights back into its model."""

    def __init__(
        self,
        models: Sequence[nn.Module],
        data: DatasetSplits,
        config: TrainConfig,
        seeds: Sequence[int],
        *,
        input_size: int,
        variant: str = "",
        callback: SeedCallback | None = None,
        layout: str = "auto",
    ) -> None:
        if not seeds or len(models) != len(seeds) or len(set(seeds)) != len(seeds):
            raise ConfigError("seeds", f"need one model per distinct seed, got {len(models)} for {list(seeds)}")
        if layout not in LAYOUTS:
            raise ConfigError("layout", f"unknown layout {layout!r}", allowed=LAYOUTS)
        self.config = config.check()
        self.device = resolve_device(config.device)
        # both batched layouts pick their own memory format (cnn.grouped folds the seeds into channels_last maps)
        self.precision = Precision(self.device, config.amp, channels_last=False)
        self.variant = variant
        self.callback = callback
        self.base = copy.deepcopy(models[0]).to("meta")  # the structure both layouts run, without weights
        self.models = [m.to(self.device) for m in models]
        self.params, self.buffers = stack_module_state(self.models)
        self.seeds = [SeedRun(s, dataclasses.replace(self.config, seed=s)) for s in seeds]
        self.train_loader = make_loader(
            data,
            "train",
            batch_size=config.batch_size,
            input_size=input_size,
            device=self.device,
            shuffle=True,
            seed=seeds[0],
            max_batches=config.max_steps,
        )
        self.batches = SeedBatches(self.train_loader, seeds)
        self.val_loader = make_loader(
            data, "val", batch_size=max(config.batch_size, 512), input_size=input_size, device=self.device
        )
        self.optimizer = build_optimizer(
            config.optimizer, list(self.params.values()), config.lr, config.momentum, config.weight_decay
        )
        self.scheduler = build_scheduler(
            config.schedule, self.optimizer, config.lr, config.epochs * len(self.train_loader)
        )
        self.grouped = GroupedSequential.of(self.base) if layout == "auto" else None
        self._vmapped = vmap(self._call, in_dims=(0, 0, 0), randomness="different")  # each seed its own batch
        self._vmapped_shared = vmap(self._call, in_dims=(0, 0, None), randomness="different")  # one batch for all

    @property
    def method(self) -> str:
        """How the seeds run together: "grouped" (cnn.grouped) or "vmap"."""
        return "grouped" if self.grouped is not None else "vmap"

    def _call(self, params: dict[str, Tensor], buffers: dict[str, Tensor], x: Tensor) -> Tensor:
        return functional_call(self.base, (params, buffers), (x,))

    def forward(self, x: Tensor, per_seed: bool = True) -> Tensor:
        """(K, batch, classes) logits on (K, batch, C, H, W) images, or on one (batch, C, H, W) batch for all seeds."""
        if self.grouped is not None:
            return self.grouped(self.params, x, per_seed)
        return (self._vmapped if per_seed else self._vmapped_shared)(self.params, self.buffers, x)

    def probe(self) -> str | None:
        """Why a forward and backward pass on a first batch fails (None when it runs): an op vmap cannot batch, an
        in-place update of unbatched state, or too little memory. The grouped forward is kept only where it gives
        each seed's own outputs on that batch; the gradients are dropped afterwards."""
        x, y = next(iter(SeedBatches(self.train_loader, [s.seed for s in self.seeds])))  # the real generators untouched
        if self.grouped is not None and not self._grouped_matches(x):
            self.grouped = None
        try:
            with self.precision.autocast():
                logits = self.forward(x)
            seed_losses(logits, y).sum().backward()
        except (RuntimeError, NotImplementedError) as err:  # torch.OutOfMemoryError is a RuntimeError
            return f"{self.method} cannot run it: {type(err).__name__}: {str(err).strip().splitlines()[0][:200]}"
        finally:
            for p in self.params.values():
                p.grad = None
        return None

    @torch.no_grad()
    def _grouped_matches(self, x: Tensor) -> bool:
        """Whether the grouped forward gives every seed's own model's eval-mode outputs on its batch and on a shared
        one, up to the rounding of other kernels (TF32 on a GPU): a layout error mixes seeds at full scale."""
        self.base.eval()
        try:
            own = torch.stack([model.eval()(x[k]) for k, model in enumerate(self.models)])
            shared = torch.stack([model(x[0]) for model in self.models])
            return _close(self.grouped(self.params, x), own) and _close(
                self.grouped(self.params, x[0], per_seed=False), shared
            )
        except (RuntimeError, ValueError, KeyError) as err:  # shapes the layer list did not foresee
            log.info("%s: the grouped forward does not fit (%s); vmap instead", self.variant, err)
            return False
        finally:
            self.base.train()
            for model in self.models:
                model.train()

    def active(self) -> list[int]:
        """Indices of the seeds still training."""
        return [k for k, s in enumerate(self.seeds) if s.active]

    def drop(self, k: int, why: str) -> None:
        """Take seed k out of the batch's results (it keeps computing with the others, unrecorded)."""
        self.seeds[k].failure = why
        log.warning("%s seed %d leaves the batch: %s", self.variant, self.seeds[k].seed, why)

    def _train_epoch(self, epoch: int) -> list[dict[str, float]]:
        """One pass over every seed's batches; per seed, its training figures with its share of the time."""
        self.base.train()
        loss_sum, correct, seen, seconds = run_epoch(
            self.batches,
            self._step,
            lambda: self.optimizer.param_groups[0]["lr"],
            lambda losses, lrs, first_step: self._check_finite(losses, lrs, epoch, first_step),
            self.device,
        )
        share = seconds / len(self.seeds)  # a seed's seconds: its share of the batched epoch
        return [epoch_stats(total, hits, seen, share) for total, hits in zip(loss_sum.tolist(), correct.tolist())]

    def _step(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """One step of every seed on its own batch; returns the seeds' detached losses and their logits."""
        with self.precision.autocast():
            logits = self.forward(x)
        losses = seed_losses(logits, y)
        self.optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        return losses.detach(), logits

    def _check_finite(self, losses: list[Tensor], lrs: list[float], epoch: int, first_step: int) -> None:
        """Drop each active seed with a non-finite loss in the chunk (cnn.train's message, naming the seed)."""
        stacked = torch.stack(losses)
        for k in self.active():
            if why := nonfinite_message(stacked[:, k], lrs, epoch, first_step):
                self.drop(k, f"diverged: {why}")

    @torch.no_grad()
    def validate(self) -> tuple[list[float], list[float]]:
        """Each seed's mean loss and accuracy on the validation split (one pass, the batch shared by all seeds)."""
        self.base.eval()
        n_seeds = len(self.seeds)
        loss_sum = torch.zeros(n_seeds, device=self.device)
        correct = torch.zeros(n_seeds, dtype=torch.long, device=self.device)
        n = 0
        try:
            for x, y in self.val_loader:
                with self.precision.autocast():
                    logits = self.forward(x, per_seed=False)
                loss_sum += seed_losses(logits, y.expand(n_seeds, -1), reduction="sum")
                correct += (logits.argmax(-1) == y).sum(1)
                n += y.numel()
        finally:
            self.base.train()
        return [v / max(n, 1) for v in loss_sum.tolist()], [v / max(n, 1) for v in correct.tolist()]

    def epochs(self) -> Iterator[list[tuple[int, dict[str, float]]]]:
        """Run the epochs while any seed trains, yielding (seed index, history row) for each seed still recording."""
        torch.manual_seed(self.seeds[0].seed)  # every seed's dropout masks come from the global generator
        for epoch in range(1, self.config.epochs + 1):
            if not self.active():
                return
            lr = self.optimizer.param_groups[0]["lr"]
            stats = self._train_epoch(epoch)
            val_loss, val_acc = self.validate()
            rows = []
            for k in self.active():
                seed = self.seeds[k]
                row = {"epoch": epoch, "lr": lr, **stats[k], "val_loss": val_loss[k], "val_acc": val_acc[k]}
                seed.out_of_patience = seed.run.record(row, functools.partial(self.weights, k), seed.config.patience)
                if self.callback:
                    self.callback(seed.seed, dict(row))
                log_epoch(row, self.config.epochs, prefix=f"{self.variant} seed {seed.seed}: ")
                rows.append((k, row))
            yield rows

    def weights(self, k: int) -> dict[str, Tensor]:
        """Seed k's current parameters and buffers as a state dict (copies: a view would save all K seeds)."""
        return {name: t.detach()[k].clone() for name, t in (*self.params.items(), *self.buffers.items())}

    def _optimizer_state(self, k: int) -> dict[str, Any]:
        """Seed k's slice of the optimizer state, as its own optimizer would hold it (the step count is shared)."""
        full = self.optimizer.state_dict()
        stacked = list(self.params.values())
        state = {
            i: {
                name: v[k].clone() if torch.is_tensor(v) and v.shape == stacked[i].shape else v
                for name, v in per_param.items()
            }
            for i, per_param in full["state"].items()
        }
        return {"state": state, "param_groups": full["param_groups"]}

    def state(self, k: int, epoch: int) -> dict[str, Any]:
        """Seed k's checkpoint after `epoch`: cnn.train.Trainer resumes it alone (the dropout stream excepted)."""
        seed = self.seeds[k]
        return checkpoint_state(
            self.variant,
            epoch,
            seed.config,
            seed.run,
            model=self.weights(k),
            optimizer=self._optimizer_state(k),
            scheduler=self.scheduler.state_dict() if self.scheduler else None,
            rng=rng_state(self.batches.generators[k]),
        )

    def result(self, k: int) -> TrainResult:
        """Seed k's TrainResult; its model gets its final weights (with early stopping, its best epoch's)."""
        seed = self.seeds[k]
        if seed.failure:
            raise TrainingDiverged(f"seed {seed.seed} left the batch: {seed.failure}")
        result = seed.run.result(seed.config.epochs)
        best = seed.run.best_state if seed.config.patience else None
        self.models[k].load_state_dict(best if best is not None else self.weights(k))
        result.extra.update(batched_seeds=len(self.seeds), batched_by=self.method)
        return result


def _close(got: Tensor, want: Tensor, rel: float = 1e-2) -> bool:
    """Same shape, and no element further from `want` than `rel` of its largest magnitude."""
    return got.shape == want.shape and bool((got - want).abs().max() <= rel * want.abs().max() + 1e-6)


def batched_trainer(
    models: Sequence[nn.Module],
    data: DatasetSplits,
    config: TrainConfig,
    seeds: Sequence[int],
    *,
    input_size: int,
    variant: str = "",
    callback: SeedCallback | None = None,
) -> SeedsTrainer | None:
    """A SeedsTrainer for the models, or None (logged with the reason) when they cannot train batched."""
    why = unbatchable_reason(models[0], config)
    trainer = None
    if why is None:
        try:
            trainer = SeedsTrainer(
                models, data, config, seeds, input_size=input_size, variant=variant, callback=callback
            )
        except RuntimeError as err:  # stack_module_state on models whose shapes differ, or too little memory
            why = f"its seeds cannot be stacked: {str(err).strip().splitlines()[0][:200]}"
        else:
            why = trainer.probe()
    if why is None:
        return trainer
    del trainer
    release_memory(config.device)
    log.warning("%s: training its %d seeds one after another, not batched: %s", variant, len(seeds), why)
    return None


def release_memory(device: str | torch.device) -> None:
    """Hand cached CUDA blocks back after a batched attempt, so the one-seed path has the memory."""
    if resolve_device(device).type == "cuda":
        torch.cuda.empty_cache()


def train_seeds(
    models: Sequence[nn.Module],
    data: DatasetSplits,
    config: TrainConfig,
    seeds: Sequence[int],
    *,
    input_size: int,
    variant: str = "",
    callback: SeedCallback | None = None,
) -> list[TrainResult]:
    """cnn.train.train for several seeds: train `models` (model k built with seeds[k]) in place, as one batched
    model when they allow (else one after another); one TrainResult per seed. A seed whose loss turns non-finite
    raises TrainingDiverged naming it, once the others have finished."""
    trainer = None
    if len(seeds) > 1:
        trainer = batched_trainer(
            models, data, config, seeds, input_size=input_size, variant=variant, callback=callback
        )
    if trainer is not None:
        try:
            for _ in trainer.epochs():
                pass
        except torch.OutOfMemoryError as err:
            trainer = None
            log.warning("%s: out of memory batched (%s); training its seeds one after another", variant, err)
    if trainer is None:
        release_memory(config.device)  # here, once the error and its frames holding the stacked weights are gone
        return [
            train(
                model,
                data,
                dataclasses.replace(config, seed=seed),
                input_size=input_size,
                variant=variant,
                callback=functools.partial(callback, seed) if callback else None,
            )
            for model, seed in zip(models, seeds)
        ]
    failed = [f"seed {s.seed} {s.failure}" for s in trainer.seeds if s.failure]
    if failed:
        raise TrainingDiverged("; ".join(failed))
    return [trainer.result(k) for k in range(len(seeds))]
