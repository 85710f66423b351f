"""Prefect flows end to end on test-made data: completion, artifacts, stored files, caching, retrain, failures."""

from __future__ import annotations

from pathlib import Path

import pytest

from prefect_helpers import artifacts, task_states

pytestmark = pytest.mark.slow

VARIANTS = ["lenet1", "generic_2"]


def _kwargs(fashion_dir: Path, storage: Path, **extra):
    return {
        "dataset": "fashion-mnist",
        "variants": VARIANTS,
        "epochs": 1,
        "batch_size": 64,
        "data_dir": str(fashion_dir),
        "storage": str(storage),
        "max_train": 400,
        "val_size": 80,
        "repeats": 1,  # one seed: the tests of --repeats pass their own
        **extra,
    }


@pytest.fixture(scope="module")
def first_run(prefect_harness, fashion_dir, tmp_path_factory):
    from flows.compare import compare_architectures

    storage = tmp_path_factory.mktemp("results")
    state = compare_architectures(**_kwargs(fashion_dir, storage, run="first"), return_state=True)
    return state, storage


def test_comparison_completes_with_rows_and_files(first_run) -> None:
    state, storage = first_run
    assert state.is_completed(), state.message
    result = state.result()
    assert sorted(r["variant"] for r in result["rows"]) == sorted(VARIANTS)
    assert all(r["status"] == "ok" and 0 <= r["test_acc"] <= 1 for r in result["rows"])
    run_dir = storage / "fashion-mnist" / "first"
    for variant in VARIANTS:
        folder = run_dir / variant
        for name in (
            "losses.png",
            "confusion_matrix.png",
            "classification_report.csv",
            "lr_finder.json",
            "metrics.json",
            "history.csv",
            "checkpoint.pt",
            "row.json",
        ):
            assert (folder / name).is_file(), f"{variant}/{name} missing"
        assert list((folder / "filters").glob("*.png")) and list((folder / "feature_maps").glob("*.png"))
    assert (
        (run_dir / "comparison.md").is_file()
        and (run_dir / "comparison.csv").is_file()
        and (run_dir / "report.md").is_file()
    )


def test_artifacts_hold_the_table(first_run) -> None:
    state, _ = first_run
    comparison = artifacts("fashion-mnist-comparison")
    assert comparison and comparison[0].type == "markdown"
    text = comparison[0].data
    for variant in VARIANTS:
        assert f"| {variant} |" in text
    acc = {r["variant"]: r["test_acc"] for r in state.result()["rows"]}
    assert f"{acc['lenet1']:.3f}" in text
    table = artifacts("fashion-mnist-comparison-table")
    assert table and table[0].type == "table"
    per_variant = artifacts("fashion-mnist-lenet1")
    assert (
        per_variant
        and "data:image/png;base64," in per_variant[0].data
        and "Classification report" in per_variant[0].data
    )
    assert artifacts("fashion-mnist-error-analysis")
    assert "first conv" in artifacts("fashion-mnist-galleries")[0].data
    assert not artifacts("fashion-mnist-plot-f1-heatmap")  # a local file: no link a browser would refuse to open
    assert "f1_heatmap: fashion-mnist/" in text  # the comparison artifact says where the full-size file is
    progress = artifacts("fashion-mnist-progress")
    assert progress and float(progress[0].data) == pytest.approx(100.0)


def test_second_identical_run_hits_the_cache(first_run, fashion_dir) -> None:
    from flows.compare import compare_architectures

    state, storage = first_run
    again = compare_architectures(**_kwargs(fashion_dir, storage, run="second"), return_state=True)
    assert again.is_completed()
    states = task_states(again.state_details.flow_run_id)
    for step in ("train_variant", "evaluate_variant", "extract_features", "lr_range_test"):
        assert states[step] == ["Cached"] * len(VARIANTS), (step, states[step])
    before = {r["variant"]: r["test_acc"] for r in state.result()["rows"]}
    assert {r["variant"]: r["test_acc"] for r in again.result()["rows"]} == before
    # every run publishes its own report and artifacts, cached steps or not
    assert states["publish_comparison"] == ["Completed"]
    assert again.result()["report"].endswith("fashion-mnist/second/report.md")
    assert (storage / "fashion-mnist" / "second" / "comparison.md").is_file()
    assert float(artifacts("fashion-mnist-progress")[0].data) == pytest.approx(100.0)
    keys = ["comparison", "comparison-table", "error-analysis", "galleries", "progress", "lenet1", "generic-2"]
    for key in keys:  # two identical runs: a version of every artifact from each
        runs = {a.flow_run_id for a in artifacts(f"fashion-mnist-{key}")}
        assert {state.state_details.flow_run_id, again.state_details.flow_run_id} <= runs, key


def test_retrain_takes_the_comparisons_settings_and_publishes_its_table(first_run, fashion_dir) -> None:
    from flows.retrain import retrain_variant

    _, storage = first_run
    versions_before = len(artifacts("fashion-mnist-comparison"))
    state = retrain_variant(
        variant="lenet1",
        dataset="fashion-mnist",
        data_dir=str(fashion_dir),
        storage=str(storage),
        run="retrain",
        return_state=True,
    )
    assert state.is_completed(), state.message
    states = task_states(state.state_details.flow_run_id)
    assert states["train_variant"] == ["Completed"] and states["lr_range_test"] == ["Completed"]
    [fresh] = state.result()["fresh"]
    assert (fresh["epochs"], fresh["batch_size"]) == (1, 64)  # the comparison's, not the defaults
    latest = artifacts("fashion-mnist-comparison")
    assert len(latest) == versions_before + 1
    assert "| generic_2 |" in latest[0].data and "| lenet1 |" in latest[0].data
    assert "retrain/lenet1" in latest[0].data


def test_failing_variant_leaves_the_others(prefect_harness, fashion_dir, tmp_path, monkeypatch) -> None:
    from cnn import pipeline
    from cnn.errors import TrainingDiverged
    from flows.compare import compare_architectures

    real = pipeline.train_seeds

    def flaky(config, variant, *args, **kwargs):
        if variant == "lenet1":
            raise TrainingDiverged("loss became nan at epoch 1, step 3 (lr=10)")
        return real(config, variant, *args, **kwargs)

    monkeypatch.setattr(pipeline, "train_seeds", flaky)
    state = compare_architectures(**_kwargs(fashion_dir, tmp_path, run="flaky", refresh=["train"]), return_state=True)
    assert state.is_completed()
    rows = {r["variant"]: r for r in state.result()["rows"]}
    assert rows["lenet1"]["status"] == "failed" and "loss became nan" in rows["lenet1"]["error"]
    assert rows["generic_2"]["status"] == "ok"
    text = (tmp_path / "fashion-mnist" / "flaky" / "comparison.md").read_text()
    assert "failed: TrainingDiverged" in text

    everything = compare_architectures(
        **_kwargs(fashion_dir, tmp_path, run="all-fail", variants=["lenet1"], refresh=["train"]), return_state=True
    )
    assert everything.is_failed() and "every variant failed" in everything.message


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"epochs": 0}, "epochs"),
        ({"variants": []}, "variants"),
        ({"dataset": "imagenet-22k"}, "dataset"),
        ({"lr": -1.0}, "lr"),
        ({"lr_min": 1.0, "lr_max": 0.1}, "lr_max"),
        ({"storage": "ftp://host/x"}, "storage"),
        ({"run": "../escape"}, "run"),
    ],
)
def test_bad_parameters_fail_the_run_with_the_field(prefect_harness, fashion_dir, tmp_path, override, field) -> None:
    from flows.compare import compare_architectures

    state = compare_architectures(**{**_kwargs(fashion_dir, tmp_path), **override}, return_state=True)
    assert state.is_failed()
    assert field in state.message


def test_refresh_train_in_the_same_run_trains_afresh(first_run, fashion_dir) -> None:
    from flows.compare import compare_architectures

    _, storage = first_run
    checkpoint = storage / "fashion-mnist" / "first" / "generic_2" / "checkpoint.pt"
    before = checkpoint.stat().st_mtime_ns
    state = compare_architectures(
        **_kwargs(fashion_dir, storage, run="first", variants=["generic_2"], refresh=["train"]), return_state=True
    )
    assert state.is_completed(), state.message
    states = task_states(state.state_details.flow_run_id)
    assert states["train_variant"] == ["Completed"] and states["lr_range_test"] == ["Cached"]
    row = state.result()["rows"][0]
    assert row["status"] == "ok" and row["epochs"] == 1
    assert checkpoint.stat().st_mtime_ns != before  # trained again rather than "resumed" from the finished checkpoint


def test_repeats_auto_keeps_identical_networks_tied_and_says_what_it_added(prefect_harness, tmp_path) -> None:
    from flows.compare import compare_architectures

    state = compare_architectures(
        dataset="digits",
        variants=["cnn2_5", "generic_0"],  # the same network (7,090 parameters) under two names
        repeats="auto",
        max_seeds=4,
        epochs=2,
        batch_size=32,
        device="cpu",
        storage=str(tmp_path),
        run="auto",
        return_state=True,
    )
    assert state.is_completed(), state.message
    result = state.result()
    assert sorted((r["variant"], r["seed"]) for r in result["rows"]) == [
        (v, s) for v in ("cnn2_5", "generic_0") for s in range(4)
    ]
    assert (
        result["notes"]
        == [
            "Added 1 seed to cnn2_5 and generic_0; still tied after 4 seeds (the budget: 4 seeds per variant): cnn2_5 and generic_0."  # 3, then min(4, twice 3)
        ]
    )
    assert {s["group"] for s in result["summaries"]} == {"tied"}
    md = (tmp_path / "digits" / "auto" / "comparison.md").read_text()
    assert "Added 1 seed to cnn2_5 and generic_0" in md and "Tied for best" in md
    maps = sorted(p.parent.name for p in (tmp_path / "digits" / "auto" / "cnn2_5").glob("seed-*/feature_maps"))
    assert maps == ["seed-0"]  # feature maps and filters of the first seed only, in whichever round


def test_a_retrain_after_two_seeds_retrains_both_and_keeps_the_comparisons_variants(
    prefect_harness, fashion_dir, tmp_path
) -> None:
    from flows.compare import compare_architectures
    from flows.retrain import retrain_variant

    kwargs = _kwargs(fashion_dir, tmp_path, run="two-seeds", repeats=2, comparison="seeds")
    assert compare_architectures(**kwargs, return_state=True).is_completed()
    state = retrain_variant(
        variant="lenet1",
        comparison="seeds",
        dataset="fashion-mnist",
        data_dir=str(fashion_dir),
        storage=str(tmp_path),
        run="again",
        return_state=True,
    )
    assert state.is_completed(), state.message
    result = state.result()
    assert sorted(r["seed"] for r in result["fresh"]) == [0, 1]
    assert sorted((r["variant"], r["seed"]) for r in result["rows"]) == [
        (v, s) for v in sorted(VARIANTS) for s in (0, 1)
    ]
    assert "over 2 seeds" in result["comparison_md"] and "± 0.000" not in result["comparison_md"]
