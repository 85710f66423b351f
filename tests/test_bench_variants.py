"""benchmarks.variants: every variant at a large batch against the student pipeline's batch; figures reported, never asserted as speed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.speed_data import load_splits, write_idx
from benchmarks import variants as bench_variants
from cnn.errors import ConfigError


@pytest.fixture(scope="module")
def floor(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two small variants, one epoch at batch 100 and the 64 reference, on 300 written images."""
    root = write_idx(tmp_path_factory.mktemp("floor"), 300, 100)
    seen: list[dict] = []
    result = bench_variants.bench_variants(
        ["lenet1", "cnn2_3"],
        epochs=1,
        batch_size=100,
        reference_batch=64,
        n_train=300,
        n_test=100,
        device="cpu",
        data_root=root,
        lr="scaled",
        on_row=seen.append,
    )
    result["seen"] = seen
    return result


def test_one_row_per_variant_at_each_batch(floor: dict) -> None:
    assert [(r["variant"], r["batch_size"]) for r in floor["rows"]] == [("lenet1", 100), ("cnn2_3", 100)]
    assert [(r["variant"], r["batch_size"]) for r in floor["reference"]] == [("lenet1", 64), ("cnn2_3", 64)]
    assert [r["params"] for r in floor["rows"]] == [1586, 4424]
    assert floor["seen"] == floor["rows"] + floor["reference"]  # on_row sees every row as it finishes
    for row in floor["rows"]:
        assert row["warmup_seconds"] > 0 and row["train_seconds"] > 0 and 0 <= row["test_acc"] <= 1
    assert all(r["warmup_seconds"] is None for r in floor["reference"])
    assert floor["total_train_seconds"] == pytest.approx(sum(r["train_seconds"] for r in floor["rows"]))


def test_targets_compare_each_variant_with_its_reference(floor: dict) -> None:
    targets = floor["targets"]
    assert targets[0]["target"].startswith("all 2 variants x 1 epochs at batch 100") and targets[0]["met"] == (
        floor["total_train_seconds"] < 60
    )
    ref = {r["variant"]: r["test_acc"] for r in floor["reference"]}
    for row, check in zip(floor["rows"], targets[1:]):
        assert row["acc_delta"] == pytest.approx(row["test_acc"] - ref[row["variant"]])
        assert check["met"] == (row["acc_delta"] >= -bench_variants.ACCURACY_TOLERANCE)
    text = bench_variants.format_variants(floor)
    assert "lenet1" in text and "Reference at the student pipeline's batch 64" in text and "Targets" in text


def test_rejects_unknown_variants_and_bad_sizes() -> None:
    with pytest.raises(ConfigError) as err:
        bench_variants.bench_variants(["lenet6"], device="cpu")
    assert err.value.field == "variants" and "lenet5" in str(err.value)
    with pytest.raises(ConfigError) as err:
        bench_variants.bench_variants(["lenet1"], batch_size=0, device="cpu")
    assert err.value.field == "batch_size"


def test_compile_break_even_on_hand_built_epochs() -> None:
    assert bench_variants._break_even([1.0, 0.5, 0.5], [10.0, 0.25, 0.25]) == pytest.approx(1 + 9.0 / 0.25)
    assert bench_variants._break_even([1.0, 0.5], [10.0, 0.6]) is None  # compiled steady epochs are slower: never pays


def test_main_writes_json_after_every_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    root = write_idx(tmp_path / "data", 200, 50)
    monkeypatch.setattr(bench_variants, "load_splits", lambda _root: load_splits(root, n_val=50))
    out = tmp_path / "floor.json"
    result = bench_variants.main(
        [
            "--variants",
            "lenet1",
            "--epochs",
            "1",
            "--batch-size",
            "50",
            "--reference-batch",
            "0",
            "--n-train",
            "200",
            "--device",
            "cpu",
            "--json-out",
            str(out),
        ]
    )
    assert json.loads(out.read_text())["rows"][0]["variant"] == "lenet1" and result["reference"] == []
    assert "total training time" in capsys.readouterr().out


def test_a_diverged_variant_is_a_row_not_the_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cnn.errors import TrainingDiverged

    def diverge(*args: object, **kwargs: object) -> dict:
        raise TrainingDiverged("loss became nan at epoch 2, step 893 (lr=0.032); lower lr or check the inputs")

    root = write_idx(tmp_path, 200, 50)
    monkeypatch.setattr(bench_variants, "run_fast", diverge)
    result = bench_variants.bench_variants(
        ["lenet1", "cnn2_3"],
        epochs=1,
        batch_size=50,
        reference_batch=None,
        n_train=200,
        n_test=50,
        device="cpu",
        data_root=root,
        lr="scaled",
    )
    assert [r["variant"] for r in result["rows"]] == ["lenet1", "cnn2_3"]
    assert all("loss became nan" in r["error"] and r["test_acc"] is None for r in result["rows"])
    assert "loss became nan" in bench_variants.format_variants(result)


def test_cli_bench_all_variants_quick_prints_both_batches(capsys: pytest.CaptureFixture) -> None:
    from flows.cli import main

    assert main(["bench", "--all-variants", "--quick", "--device", "cpu", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [(r["variant"], r["batch_size"]) for r in result["rows"] + result["reference"]] == [
        ("lenet1", 256),
        ("cnn2_5", 256),
        ("lenet1", 64),
        ("cnn2_5", 64),
    ]
    assert result["targets"][0]["target"].startswith("all 2 variants x 2 epochs at batch 256")
