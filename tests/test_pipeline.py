"""The plain (no Prefect) pipeline of one variant: files written, metrics, model checks."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from cnn.errors import CheckpointError, ConfigError
from cnn.params import RunParams
from cnn.pipeline import evaluate_variant, run_variant
from cnn.step_inputs import DatasetRef, get_dataset, variant_dir
from cnn.predictions import PREDICTIONS
from cnn.publishing import build_comparison
from cnn.report import make_row


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    storage = tmp_path_factory.mktemp("store")
    config = RunParams(dataset="digits", epochs=8, batch_size=16, device="cpu", storage=str(storage), run="r1")
    return storage, run_variant(config, "generic_2"), config


def test_run_variant_writes_the_layout(digits_run) -> None:
    storage, _, _ = digits_run
    folder = storage / "digits" / "r1" / "generic_2"
    for name in (
        "losses.png",
        "confusion_matrix.png",
        "classification_report.csv",
        "lr_finder.png",
        "metrics.json",
        "history.csv",
        "checkpoint.pt",
        "model.pt",
        PREDICTIONS,
    ):
        assert (folder / name).stat().st_size > 0, name
    assert (folder / "filters" / "conv1.png").is_file()
    assert {p.stem for p in (folder / "feature_maps").glob("*.png")} >= {"conv1", "relu1", "pool1", "fc1", "output"}
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["params"] == 11854 and 0 <= metrics["accuracy"] <= 1


def test_evaluate_stores_each_test_images_prediction_and_the_test_sets_identity(digits_run) -> None:
    storage, out, _ = digits_run
    predicted = np.load(storage / "digits" / "r1" / "generic_2" / PREDICTIONS, allow_pickle=False)
    data = get_dataset(DatasetRef("digits"))
    assert predicted.dtype == np.uint8 and predicted.shape == (360,)  # ten classes, digits' 360 test images
    assert np.mean(predicted == data.test_y.numpy()) == pytest.approx(out["eval"]["accuracy"])
    identity = out["eval"]["test_set"]
    assert identity == {"dataset": "digits", "fingerprint": data.test_set().fingerprint, "size": 360, "split_seed": 0}
    assert make_row("generic_2", 0, out["lr"], out["train"], out["eval"])["test_set"] == identity
    other = get_dataset(DatasetRef("digits", max_test=200, seed=1)).test_set()
    assert other.fingerprint != identity["fingerprint"] and other.size == 200


def test_the_report_tests_stored_predictions_and_skips_a_damaged_file(digits_run, caplog) -> None:
    storage, out, config = digits_run
    row = make_row("generic_2", 0, out["lr"], out["train"], out["eval"], out["train"]["folder"])
    built = build_comparison(config, [row])
    (summary,) = built["summaries"]
    assert summary["group"] == "best" and summary["acc_low"] < summary["test_acc"] < summary["acc_high"]
    assert "95% CI" in built["comparison_md"] and "verdict" in built["images"]
    path = storage / "digits" / "r1" / "generic_2" / PREDICTIONS
    original = path.read_bytes()
    try:
        path.write_bytes(b"\x93NUMPY garbage")
        with caplog.at_level(logging.WARNING, logger="cnn.predictions"):
            built = build_comparison(config, [row])
    finally:
        path.write_bytes(original)
    assert f"{path}: not a .npy array" in caplog.text and "left out of the paired tests" in caplog.text
    (summary,) = built["summaries"]
    assert summary["group"] == "untested" and "no paired test ran" in built["comparison_md"]


def test_digits_learns_with_the_auto_lr(digits_run) -> None:
    _, out, _ = digits_run
    assert out["lr"]["rule"].startswith(("steepest", "min_loss_div10", "base lr")) and out["lr"]["lr"] > 0
    assert (
        out["lr"]["num_steps"] <= 64 and out["lr"]["budget_share"] <= 0.1
    )  # 10% of 8 epochs x 1,293 images at batch 16
    assert out["eval"]["accuracy"] > 0.7
    assert out["train"]["input_size"] == 28  # 8x8 digits upsampled to the side the seeds were designed for


def test_a_budget_too_small_for_a_curve_uses_the_base_lr(tmp_path) -> None:
    config = RunParams(dataset="digits", epochs=1, batch_size=64, device="cpu", storage=str(tmp_path), run="r2")
    out = run_variant(config, "lenet1", features=False)
    assert out["lr"]["lr"] == 3e-3 and out["lr"]["rule"].startswith("base lr: range test budget")
    assert not (tmp_path / "digits" / "r2" / "lenet1" / "lr_finder.png").exists()


def test_above_batch_128_no_range_test_runs_as_its_suggestion_would_not_be_used(tmp_path, monkeypatch) -> None:
    from cnn import pipeline, recipe

    monkeypatch.setattr(recipe, "lr_test_steps", lambda *_: 100)  # a budget that would allow a curve
    monkeypatch.setattr(pipeline, "range_test_sweep", lambda *a, **k: pytest.fail("the sweep ran"))
    config = RunParams(dataset="digits", epochs=1, batch_size=256, device="cpu", storage=str(tmp_path), run="r3")
    out = pipeline.lr_range_test(config, "lenet1")
    assert out["lr"] == recipe.base_lr("adam", 256) == 6e-3  # what chosen_lr gives at 256 whatever the curve
    assert out["rule"] == "base lr: linear scaling above batch 128 (no range test)"
    folder = tmp_path / "digits" / "r3" / "lenet1"
    assert json.loads((folder / "lr_finder.json").read_text())["rule"] == out["rule"]
    assert not (folder / "lr_finder.png").exists()


def test_evaluate_refuses_weights_that_changed(digits_run) -> None:
    _, out, config = digits_run
    with pytest.raises(CheckpointError, match="not the trained model"):
        evaluate_variant(config, "generic_2", out["train"]["folder_rel"], model_id="0" * 24)


def test_unsafe_names_never_become_paths() -> None:
    for bad in ("../up", "/abs", "a/b", ""):
        with pytest.raises(ConfigError, match="run"):
            variant_dir("digits", bad, "lenet1")
