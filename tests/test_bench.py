"""benchmarks.speed: both pipelines run on the same IDX data and the report has every figure; speed is never asserted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torchvision import datasets

from benchmarks import speed as bench
from benchmarks.speed_cnn_lab import DEFAULT_BATCH_SIZE, fast_epochs, scaled_lr, sweep_steps
from benchmarks.speed_data import load_splits, make_images, write_idx
from benchmarks.speed_measure import median_row
from benchmarks.speed_report import check_targets, format_table
from benchmarks.speed_student import student_epoch, student_loader
from cnn.errors import ConfigError
from cnn.step_inputs import build_model
from cnn.train_setup import TrainConfig


@pytest.fixture(scope="module")
def quick_results() -> dict:
    """One quick run of every benchmark, shared by the tests that read its report."""
    return bench.run_benchmarks(quick=True, device="cpu")


@pytest.fixture(scope="module")
def small_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """IDX files for 300 training and 100 test images."""
    return write_idx(tmp_path_factory.mktemp("bench"), 300, 100)


def test_run_benchmarks_quick_reports_both_pipelines(quick_results: dict) -> None:
    assert {"environment", "training", "lr_finder", "eval", "scaling", "gpu", "targets"} <= set(quick_results)
    training = quick_results["training"]
    seed, fast = training["student_style"], training["fast"]
    assert seed["pipeline"] == "student-style" and seed["batch_size"] == 64
    assert [row["batch_size"] for row in fast if row["pipeline"] == "cnn-lab"] == [64, DEFAULT_BATCH_SIZE]
    for row in [seed, *fast]:
        assert row["img_per_s"] > 0 and row["seconds"] > 0 and row["peak_mem_mb"] > 0
        assert 0.0 <= row["test_acc"] <= 1.0
        assert row["images"] == training["n_train"]  # one epoch of the same data for every pipeline
    for row in fast:
        assert row["ratio"] == pytest.approx(row["img_per_s"] / seed["img_per_s"])
    assert training["torch"] == torch.__version__ and training["device"] == "cpu"


def test_quick_lr_finder_eval_and_scaling_figures(quick_results: dict) -> None:
    lf = quick_results["lr_finder"]
    # quick data is 6 batches an epoch: the sweep cycles to the 30 steps a usable curve needs
    assert lf["num_steps"] == sweep_steps(100, 6) == 30 and lf["images_seen"] == pytest.approx(
        lf["epochs_cost"] * lf["n_train"]
    )
    assert lf["seconds"] > 0 and lf["epoch_seconds"] > 0 and lf["suggestion"] > 0
    ev = quick_results["eval"]
    assert ev["img_per_s"] > 0 and ev["student_img_per_s"] > 0 and ev["n_test"] == bench.QUICK["n_test"]
    sc = quick_results["scaling"]
    assert [row["n_train"] for row in sc["by_size"]] == list(bench.QUICK["sizes"])
    assert [row["variants"] for row in sc["by_count"]] == [1, 2, 4]
    totals = [row["total_seconds"] for row in sc["by_count"]]
    assert totals == sorted(totals)  # cumulative: more variants never take less time


def test_format_table_names_pipelines_device_and_gpu(quick_results: dict) -> None:
    text = format_table(quick_results)
    assert "student-style" in text and "cnn-lab" in text
    assert "cpu" in text and torch.__version__ in text
    assert "LR range test" in text and "Evaluation" in text and "Scaling" in text and "Targets" in text
    if not torch.cuda.is_available():
        assert "GPU not measured" in text


def test_results_are_json_serialisable(quick_results: dict) -> None:
    again = json.loads(json.dumps(quick_results))
    assert again["training"]["fast"][0]["img_per_s"] == quick_results["training"]["fast"][0]["img_per_s"]


def test_student_epoch_reads_the_idx_files_through_torchvision(small_root: Path) -> None:
    ds = datasets.FashionMNIST(str(small_root), train=True, download=False)
    assert len(ds) == 300
    model, _ = build_model("cnn2_3", load_splits(small_root), 0)
    before = [p.detach().clone() for p in model.parameters()]
    out = student_epoch(model, small_root)
    assert out["images"] == 300 and out["dataset_size"] == 300
    assert out["img_per_s"] == pytest.approx(out["images"] / out["seconds"])
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))  # it really trained


def test_student_epoch_stops_at_max_images(small_root: Path) -> None:
    model, _ = build_model("cnn2_3", load_splits(small_root), 0)
    assert student_epoch(model, small_root, max_images=100)["images"] == 128  # two whole batches of 64


def test_written_idx_files_match_the_generator(small_root: Path) -> None:
    images, labels = make_images(100, seed=0)  # the test split uses seed + 0
    ds = datasets.FashionMNIST(str(small_root), train=False, download=False)
    assert torch.equal(ds.data, torch.from_numpy(images)) and torch.equal(ds.targets, torch.from_numpy(labels).long())
    data = load_splits(small_root, n_val=40)
    assert data.train_y.numel() == 300 and data.val_y.numel() == 40 and data.test_y.numel() == 100


def test_fast_epochs_trains_every_image_each_epoch(small_root: Path) -> None:
    data = load_splits(small_root)
    model, size = build_model("cnn2_3", data, 0)
    out = fast_epochs(model, data, TrainConfig(epochs=2, batch_size=128, lr=0.05, device="cpu"), size)
    assert out["epochs"] == 2 and out["images"] == 600
    assert out["batch_size"] == 128 and 0.0 <= out["test_acc"] <= 1.0


def test_bench_training_uses_the_same_data_and_init(small_root: Path) -> None:
    res = bench.bench_training("cnn2_3", 300, 1, (100,), "cpu", small_root, lr="scaled")
    (plain,) = res["fast"]
    assert res["student_style"]["images"] == plain["images"] == 300
    assert res["n_train"] == 300 and plain["batch_size"] == 100
    assert (plain["pipeline"], plain["channels_last"]) == ("cnn-lab", True)  # the Trainer's default on CPU too
    assert plain["lr"] == pytest.approx(scaled_lr(100)) and plain["lr_source"] == "linear scaling"
    assert "cnn-lab" in format_table(res)  # a bench_training result alone also formats


def test_check_targets_flags_what_is_missed() -> None:
    seed = {"img_per_s": 100.0, "test_acc": 0.9}
    fast = [
        {"pipeline": "cnn-lab", "batch_size": 64, "ratio": 5.5, "test_acc": 0.95},
        {"pipeline": "cnn-lab", "batch_size": DEFAULT_BATCH_SIZE, "ratio": 4.0, "test_acc": 0.85},
    ]
    checks = {
        c["target"]: c["met"]
        for c in check_targets(
            {"training": {"student_style": seed, "fast": fast, "device": "cpu", "variant": "cnn2_5"}}
        )
    }
    assert checks == {
        "CPU batch 64: img/s >= 5x student-style": True,
        f"CPU batch {DEFAULT_BATCH_SIZE}: img/s >= 6x student-style": False,
        "cnn-lab batch 64: test acc >= student-style's 0.9000": True,
        f"cnn-lab batch {DEFAULT_BATCH_SIZE}: test acc >= student-style's 0.9000": False,
    }


def test_gpu_targets_are_resident_img_per_s_at_the_best_batch() -> None:
    seed = {"img_per_s": 7_000.0, "test_acc": 0.9}
    fast = [
        {"pipeline": "cnn-lab", "batch_size": 256, "img_per_s": 300_000.0, "ratio": 43.0, "test_acc": 0.91},
        {"pipeline": "cnn-lab", "batch_size": 2048, "img_per_s": 650_000.0, "ratio": 93.0, "test_acc": 0.9},
    ]
    checks = check_targets({"training": {"student_style": seed, "fast": fast, "device": "cuda", "variant": "cnn2_5"}})
    speed = [c for c in checks if "img/s" in c["target"]]
    assert speed == [{"target": "GPU cnn2_5: img/s >= 500,000 (best batch 2048)", "value": 650_000.0, "met": True}]
    slow = check_targets(
        {"training": {"student_style": seed, "fast": fast[:1], "device": "cuda", "variant": "alexnet"}}
    )
    assert [c["met"] for c in slow if "img/s" in c["target"]] == [True]  # 300k >= alexnet's 60k
    assert not [
        c
        for c in check_targets(
            {"training": {"student_style": seed, "fast": fast, "device": "cuda", "variant": "lenet1"}}
        )
        if "img/s" in c["target"]
    ]


def test_run_benchmarks_runs_only_the_named_sections(small_root: Path) -> None:
    res = bench.run_benchmarks(quick=True, device="cpu", sections=["eval"])
    assert "eval" in res and not {"training", "lr_finder", "scaling"} & set(res) and res["targets"] == []
    with pytest.raises(ConfigError) as err:
        bench.run_benchmarks(quick=True, device="cpu", sections=["evaluation"])
    assert err.value.field == "sections" and "lr_finder" in str(err.value)


def test_student_loader_resizes_for_alexnet(small_root: Path) -> None:
    x, _ = next(iter(student_loader(small_root, False, 8, (0.5,), (0.25,), 100)))
    assert x.shape == (8, 1, 100, 100)
    x, _ = next(iter(student_loader(small_root, False, 8, (0.5,), (0.25,))))
    assert x.shape == (8, 1, 28, 28)


def test_median_row_keeps_every_run_and_the_best() -> None:
    row = median_row([{"img_per_s": 3.0}, {"img_per_s": 1.0}, {"img_per_s": 2.0}])
    assert row["img_per_s"] == 2.0 and row["img_per_s_best"] == 3.0 and row["img_per_s_runs"] == [3.0, 1.0, 2.0]


def test_bench_training_lr_auto_runs_the_range_test(small_root: Path) -> None:
    res = bench.bench_training("cnn2_3", 300, 1, (100,), "cpu", small_root)
    [row] = res["fast"]
    assert row["lr_source"] == "range test" and row["lr"] > 0


def test_bench_training_rejects_a_bad_lr(small_root: Path) -> None:
    with pytest.raises(ConfigError) as err:
        bench.bench_training("cnn2_3", 300, 1, (100,), "cpu", small_root, lr="fast")
    assert err.value.field == "lr"


@pytest.mark.parametrize(
    ("kwargs", "field"), [({"n_train": 0}, "n_train"), ({"epochs": 0}, "epochs"), ({"batch_sizes": ()}, "batch_sizes")]
)
def test_bench_training_rejects_bad_sizes(kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        bench.bench_training(**kwargs)
    assert err.value.field == field


def test_main_prints_json_or_table(
    quick_results: dict, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, tmp_path
) -> None:
    seen = {}

    def fake(quick: bool, device: str, **kwargs: object) -> dict:
        seen.update(quick=quick, device=device, **kwargs)
        return quick_results

    monkeypatch.setattr(bench, "run_benchmarks", fake)
    bench.main(["--quick", "--json", "--device", "cpu", "--n-train", "500", "--epochs", "2", "--variant", "cnn2_3"])
    assert json.loads(capsys.readouterr().out)["gpu"] == quick_results["gpu"]
    assert seen == {
        "quick": True,
        "device": "cpu",
        "variant": "cnn2_3",
        "n_train": 500,
        "epochs": 2,
        "repeats": 1,
        "batch_sizes": None,
        "lr": "auto",
        "sections": list(bench.SECTIONS),
    }
    out = tmp_path / "speed.json"
    bench.main(["--json-out", str(out)])
    assert "student-style" in capsys.readouterr().out
    written = json.loads(out.read_text())  # the figures as JSON beside the table, with the command
    assert (
        written["gpu"] == quick_results["gpu"] and written["command"] == f"python -m benchmarks.speed --json-out {out}"
    )


@pytest.mark.parametrize(("epoch_steps", "steps"), [(235, 100), (938, 100), (40, 40), (6, 30)])
def test_benchmark_sweep_stays_within_one_epoch_unless_a_curve_needs_more(epoch_steps: int, steps: int) -> None:
    assert sweep_steps(100, epoch_steps) == steps
