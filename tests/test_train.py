"""Training: determinism, resume equals uninterrupted, non-finite loss, early stopping, checkpoints, config errors."""

from __future__ import annotations

import pytest
import torch

from cnn.data import load_dataset
from cnn.errors import CheckpointError, ConfigError, TrainingDiverged
from cnn.models import create_variant
from cnn.storage import Storage
from cnn.checkpoints import in_storage, load_checkpoint, save_checkpoint
from cnn.train import Trainer, train
from cnn.train_setup import TrainConfig, seed_everything


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", val_size=0.15, seed=0)


def _model(seed: int = 0, name: str = "lenet1", size: int = 8):
    seed_everything(seed)
    return create_variant(name, 1, 10, size)


def _run(data, config, **kw):
    model = _model(config.seed, kw.pop("name", "lenet1"), kw.pop("size", 8))
    return model, train(model, data, config, input_size=kw.pop("input_size", 8), **kw)


def test_training_learns_digits(digits) -> None:
    _, result = _run(
        digits, TrainConfig(epochs=5, batch_size=32, lr=0.05, device="cpu"), name="cnn2_5", size=16, input_size=16
    )
    assert len(result.history) == 5
    assert result.history[-1]["val_acc"] > 0.8
    assert {"train_loss", "val_loss", "train_acc", "val_acc", "lr", "seconds", "images_per_sec"} <= set(
        result.history[0]
    )


def test_same_seed_same_metrics_and_other_seed_differs(digits) -> None:
    cfg = TrainConfig(epochs=2, batch_size=64, lr=0.05, device="cpu", seed=3)
    _, a = _run(digits, cfg, name="cnn2_3", size=10, input_size=10)
    _, b = _run(digits, cfg, name="cnn2_3", size=10, input_size=10)
    _, c = _run(
        digits,
        TrainConfig(epochs=2, batch_size=64, lr=0.05, device="cpu", seed=4),
        name="cnn2_3",
        size=10,
        input_size=10,
    )
    assert [r["val_loss"] for r in a.history] == [r["val_loss"] for r in b.history]
    assert a.history[-1]["train_loss"] != c.history[-1]["train_loss"]


def test_resume_equals_uninterrupted(digits, tmp_path) -> None:
    store = Storage(str(tmp_path))
    cfg = TrainConfig(epochs=3, batch_size=64, lr=0.05, device="cpu", seed=1, schedule="onecycle")
    full_model, full = _run(digits, cfg, name="cnn2_3", size=10, input_size=10)
    # interrupted after epoch 1: same config but the process "dies" after one epoch
    model = _model(1, "cnn2_3", 10)
    trainer = Trainer(model, digits, cfg, input_size=10, variant="cnn2_3")
    first = next(trainer.epochs())
    save_checkpoint(store, "run/ckpt.pt", trainer.state(int(first["epoch"])))
    fresh = _model(99, "cnn2_3", 10)  # a new process: different init, restored from the checkpoint
    resumed = train(
        fresh, digits, cfg, input_size=10, variant="cnn2_3", resume_from=load_checkpoint(store, "run/ckpt.pt", "cnn2_3")
    )
    assert resumed.resumed_from == 1
    assert [r["val_loss"] for r in resumed.history] == pytest.approx([r["val_loss"] for r in full.history], abs=1e-6)
    for p, q in zip(full_model.parameters(), fresh.parameters()):
        assert torch.allclose(p, q, atol=1e-6)


def test_checkpoint_written_every_epoch_and_loads_weights_only(digits, tmp_path) -> None:
    store = Storage(str(tmp_path))
    saved = in_storage(store, "v", "lenet1", resume=True, session=None)
    _run(
        digits,
        TrainConfig(epochs=2, batch_size=128, lr=0.05, device="cpu"),
        on_epoch=lambda state: saved.save("checkpoint.pt", state),
        variant="lenet1",
    )
    ckpt = load_checkpoint(store, "v/checkpoint.pt", "lenet1")
    assert ckpt["epoch"] == 2 and len(ckpt["history"]) == 2 and set(ckpt) >= {"model", "optimizer", "scheduler", "rng"}


def test_checkpoint_of_another_variant_and_corrupt_checkpoint(digits, tmp_path) -> None:
    store = Storage(str(tmp_path))
    _run(
        digits,
        TrainConfig(epochs=1, batch_size=128, lr=0.05, device="cpu"),
        on_epoch=lambda state: save_checkpoint(store, "v/checkpoint.pt", state),
        variant="lenet1",
    )
    with pytest.raises(CheckpointError, match="belongs to variant 'lenet1'"):
        load_checkpoint(store, "v/checkpoint.pt", "cnn2_5")
    store.write_bytes("v/bad.pt", b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(store, "v/bad.pt")


def test_non_finite_loss_names_epoch_step_and_lr(digits) -> None:
    import dataclasses

    broken = dataclasses.replace(digits, std=(0.0,))  # 0/0 in normalisation: NaN inputs from the first batch
    with pytest.raises(TrainingDiverged, match=r"loss became nan at epoch 1, step 1 \(lr=0\.03\)"):
        _run(broken, TrainConfig(epochs=1, batch_size=32, lr=0.03, device="cpu", schedule="none"))


def test_early_stopping_restores_best_weights(digits) -> None:
    cfg = TrainConfig(epochs=12, batch_size=64, lr=0.5, device="cpu", schedule="none", patience=1)
    model, result = _run(digits, cfg)
    best = min(result.history, key=lambda r: r["val_loss"])
    assert result.best_epoch == best["epoch"]
    if result.stopped_early:
        trainer = Trainer(model, digits, cfg, input_size=8)
        assert trainer.validate()[0] == pytest.approx(best["val_loss"], rel=1e-5)


def test_max_steps_limits_each_epoch(digits) -> None:
    _, result = _run(digits, TrainConfig(epochs=1, batch_size=16, lr=0.05, device="cpu", max_steps=3))
    assert result.history[0]["images"] == 48


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("epochs", 0),
        ("epochs", -1),
        ("batch_size", 0),
        ("lr", 0.0),
        ("lr", float("nan")),
        ("optimizer", "rmsprop"),
        ("schedule", "step"),
        ("momentum", 1.5),
        ("weight_decay", -1.0),
        ("device", "tpu"),
    ],
)
def test_bad_config_names_the_field(field, value) -> None:
    with pytest.raises(ConfigError, match=field):
        TrainConfig(**{field: value}).check()


def test_cuda_requested_without_gpu() -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ConfigError, match="device: CUDA was requested"):
        TrainConfig(device="cuda").check()


def test_cuda_training_batches_keep_one_shape_and_cpu_keeps_every_image() -> None:
    from cnn.train_setup import fixed_batch_shape

    assert fixed_batch_shape(torch.device("cuda"), True, 60_000, 512)  # ragged 96-image batch dropped: no re-autotune
    assert not fixed_batch_shape(torch.device("cuda"), False, 60_000, 512)  # evaluation sees every image
    assert not fixed_batch_shape(torch.device("cuda"), True, 300, 512)  # a split smaller than a batch still trains
    assert not fixed_batch_shape(torch.device("cpu"), True, 60_000, 512)
