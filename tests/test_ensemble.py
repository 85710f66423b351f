"""Seeds trained together (cnn.ensemble, cnn.grouped, fitting.fit_seeds): the same metrics as each seed alone, each
seed's own init, data order and dropout masks, the fallback for models that cannot be batched, the learn check."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest
import torch
from torch import nn

from cnn import fitting
from cnn.checkpoints import CheckpointIO
from cnn.data import load_dataset
from cnn.data.batches import SeedBatches
from cnn.ensemble import SeedsTrainer, train_seeds
from cnn.errors import TrainingDiverged
from cnn.evaluate import predict
from cnn.models import create_variant
from cnn.step_inputs import build_model
from cnn.train import train
from cnn.train_setup import TrainConfig, make_loader, seed_everything

SEEDS = (0, 1, 2)
# Batched seeds follow each seed's own run up to float rounding (grouped convolutions and batched matmuls add in
# another order), which a few epochs leave far below these bounds.
LOSS_RTOL = 1e-3
ACC_ATOL = 0.01  # at most ~3 of the 360 test images change their prediction
WEIGHT_ATOL = 1e-3


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", val_size=0.15, seed=0)


def _model(seed: int, name: str = "generic_2", size: int = 8) -> nn.Module:
    seed_everything(seed)
    return create_variant(name, 1, 10, size)


class Residual(nn.Module):
    """Not a Sequential (a skip connection), so only vmap batches it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.skip = nn.Conv2d(1, 4, 1)
        self.out = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out((torch.relu(self.conv(x)) + self.skip(x)).flatten(1))


class WithBatchNorm(nn.Sequential):
    def __init__(self) -> None:
        super().__init__(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))


class ReadsAScalar(nn.Module):
    """Calls .item() in its forward, which vmap refuses."""

    def __init__(self) -> None:
        super().__init__()
        self.out = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(x.flatten(1)) * (1.0 if x.sum().item() > -1e9 else 0.0)


def _build(cls: type[nn.Module]):
    def build(seed: int) -> nn.Module:
        torch.manual_seed(seed)
        return cls()

    return build


def _test_acc(model: nn.Module, data) -> float:
    y_true, y_pred, _ = predict(model, make_loader(data, "test", batch_size=512, input_size=8, device="cpu"))
    return float(np.mean(y_true == y_pred))


def _alone(build, data, config: TrainConfig) -> list[tuple[nn.Module, object]]:
    out = []
    for seed in SEEDS:
        model = build(seed)
        out.append((model, train(model, data, dataclasses.replace(config, seed=seed), input_size=8)))
    return out


@pytest.mark.parametrize(("build", "method"), [(_model, "grouped"), (_build(Residual), "vmap")])
def test_batched_seeds_give_the_metrics_of_each_seed_alone(digits, build, method: str) -> None:
    config = TrainConfig(epochs=3, batch_size=32, lr=3e-3, device="cpu")
    models = [build(seed) for seed in SEEDS]
    results = train_seeds(models, digits, config, SEEDS, input_size=8, variant="v")
    for model, result, (own_model, own) in zip(models, results, _alone(build, digits, config)):
        assert result.extra == {"batched_seeds": 3, "batched_by": method}
        assert len(result.history) == 3
        for key in ("train_loss", "val_loss"):
            assert [r[key] for r in result.history] == pytest.approx([r[key] for r in own.history], rel=LOSS_RTOL)
        assert result.history[-1]["val_acc"] == pytest.approx(own.history[-1]["val_acc"], abs=ACC_ATOL)
        assert _test_acc(model, digits) == pytest.approx(_test_acc(own_model, digits), abs=ACC_ATOL)
        for name, weight in own_model.state_dict().items():  # the trained weights went back into each seed's model
            assert torch.allclose(model.state_dict()[name], weight, atol=WEIGHT_ATOL)
    assert results[0].history[-1]["train_loss"] != results[1].history[-1]["train_loss"]


def test_each_seed_starts_from_its_own_initial_weights(digits) -> None:
    models = [build_model("lenet5", digits, seed)[0] for seed in SEEDS]
    trainer = SeedsTrainer(models, digits, TrainConfig(epochs=1, device="cpu"), SEEDS, input_size=28)
    for k, seed in enumerate(SEEDS):
        own = build_model("lenet5", digits, seed)[0].state_dict()
        weights = trainer.weights(k)
        assert weights.keys() == own.keys() and all(torch.equal(weights[name], own[name]) for name in own)
    assert not torch.equal(trainer.weights(0)["c1.weight"], trainer.weights(1)["c1.weight"])


def test_seeds_keep_their_own_data_order(digits) -> None:
    loader = make_loader(digits, "train", batch_size=64, input_size=8, device="cpu", shuffle=True)
    stacked = SeedBatches(loader, SEEDS)
    for _epoch in range(2):  # every epoch draws each seed's next permutation
        labels = torch.cat([y for _, y in stacked], dim=1)
        for k, seed in enumerate(SEEDS):
            alone = make_loader(digits, "train", batch_size=64, input_size=8, device="cpu", shuffle=True, seed=seed)
            if _epoch:
                next(iter(alone))  # its first epoch's permutation, as the stacked loader drew it
            assert torch.equal(labels[k], torch.cat([y for _, y in alone]))
        assert not torch.equal(labels[0], labels[1])
    x, y = next(iter(stacked))
    assert x.shape == (3, 64, 1, 8, 8) and y.shape == (3, 64)


@pytest.mark.parametrize("method", ["grouped", "vmap"])
def test_dropout_masks_differ_between_seeds(digits, method: str) -> None:
    same = [_model(0, "cnn2_3", 10) for _ in SEEDS]  # identical weights, so only the masks can differ
    trainer = SeedsTrainer(same, digits, TrainConfig(epochs=1, device="cpu"), SEEDS, input_size=10)
    if method == "vmap":
        trainer.grouped = None
    assert trainer.method == method
    x = torch.rand(16, 1, 10, 10).expand(3, -1, -1, -1, -1)
    trained = trainer.forward(x)
    assert not torch.allclose(trained[0], trained[1])
    trainer.base.eval()
    evaluated = trainer.forward(x)
    assert torch.allclose(evaluated[0], evaluated[1]) and torch.allclose(evaluated[1], evaluated[2])


@pytest.mark.parametrize(
    ("cls", "why"), [(WithBatchNorm, "it has buffers (1.running_mean"), (ReadsAScalar, "vmap cannot run it")]
)
def test_a_model_that_cannot_be_batched_trains_its_seeds_one_after_another(digits, caplog, cls, why: str) -> None:
    config = TrainConfig(epochs=1, batch_size=64, lr=3e-3, device="cpu")
    models = [_build(cls)(seed) for seed in SEEDS]
    with caplog.at_level(logging.WARNING, logger="cnn.ensemble"):
        results = train_seeds(models, digits, config, SEEDS, input_size=8, variant="odd")
    assert f"odd: training its 3 seeds one after another, not batched: {why}" in caplog.text
    for result, (_, own) in zip(results, _alone(_build(cls), digits, config)):
        assert "batched_seeds" not in result.extra
        assert result.history[-1]["val_loss"] == own.history[-1]["val_loss"]  # exactly the one-seed path


def test_a_diverging_seed_leaves_the_batch_and_the_others_are_unharmed(digits) -> None:
    config = TrainConfig(epochs=2, batch_size=32, lr=3e-3, device="cpu")
    models = [_model(seed) for seed in SEEDS]
    with torch.no_grad():
        models[1].output.weight.fill_(float("inf"))
    with pytest.raises(TrainingDiverged, match=r"seed 1 diverged: loss became nan at epoch 1, step 1 "):
        train_seeds(models, digits, config, SEEDS, input_size=8, variant="v")
    models = [_model(seed) for seed in SEEDS]
    with torch.no_grad():
        models[1].output.weight.fill_(float("inf"))
    trainer = SeedsTrainer(models, digits, config, SEEDS, input_size=8)
    assert [len(rows) for rows in trainer.epochs()] == [2, 2]
    own = train(_model(2), digits, dataclasses.replace(config, seed=2), input_size=8)
    assert [r["val_loss"] for r in trainer.result(2).history] == pytest.approx(
        [r["val_loss"] for r in own.history], rel=LOSS_RTOL
    )


def _memory_checkpoints() -> tuple[dict, object]:
    saved: dict[tuple[int, str], dict] = {}

    def io(seed: int) -> CheckpointIO:
        return CheckpointIO(
            load=lambda name: saved.get((seed, name)),
            save=lambda name, state: saved.__setitem__((seed, name), state),
        )

    return saved, io


def test_fit_seeds_keeps_batched_seeds_that_learn_and_refits_a_failing_one_alone(digits) -> None:
    def build(seed: int) -> nn.Module:
        model = _model(seed)
        if seed == 1:  # dead ReLUs: it can learn the class prior and nothing else
            with torch.no_grad():
                for p in model.parameters():
                    p.zero_()
        return model

    saved, io = _memory_checkpoints()
    rows: list[tuple[int, int]] = []
    config = TrainConfig(epochs=2, batch_size=32, lr=1e-2, device="cpu")
    fitted = fitting.fit_seeds(
        build,
        digits,
        config,
        SEEDS,
        input_size=8,
        variant="v",
        checkpoints=io,
        callback=lambda seed, row: rows.append((seed, int(row["epoch"]))),
    )
    for seed in (0, 2):
        model, fit = fitted[seed]
        assert fit.learned and fit.fallbacks == [] and fit.config.seed == seed
        assert fit.result.extra["batched_seeds"] == 3 and _test_acc(model, digits) > 0.5
        assert saved[(seed, "checkpoint.pt")]["epoch"] == 2 and saved[(seed, "checkpoint.pt")]["config"]["seed"] == seed
    _, failed = fitted[1]
    assert not failed.learned and failed.fallbacks[0] == "did not learn at adam 0.01"
    assert "batched_seeds" not in failed.result.extra
    # the failed batched attempt was resumed from its checkpoint, not retrained: 2 batched epochs, then 2 per fallback
    assert [epoch for seed, epoch in rows if seed == 1] == [1, 2, 1, 2, 1, 2]


def test_a_seed_with_a_batched_checkpoint_resumes_alone(digits) -> None:
    config = TrainConfig(epochs=2, batch_size=32, lr=1e-2, device="cpu")
    trainer = SeedsTrainer([_model(seed) for seed in SEEDS], digits, config, SEEDS, input_size=8)
    next(trainer.epochs())  # the batched run stops after epoch 1 of 2
    saved, io = _memory_checkpoints()
    saved[(0, "checkpoint.pt")] = trainer.state(0, 1)
    fitted = fitting.fit_seeds(_model, digits, config, SEEDS[:2], input_size=8, checkpoints=io)
    resumed = fitted[0][1].result
    assert resumed.resumed_from == 1 and "batched_seeds" not in resumed.extra
    own = train(_model(0), digits, dataclasses.replace(config, seed=0), input_size=8)  # uninterrupted, alone
    for key in ("train_loss", "val_loss"):
        assert [r[key] for r in resumed.history] == pytest.approx([r[key] for r in own.history], rel=LOSS_RTOL)
