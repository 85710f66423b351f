"""The recipe benchmarks (`cnn-lab bench --recipe`, `python -m benchmarks.large_batch`) on a few test-made images."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks import large_batch
from benchmarks import recipe as recipe_bench
from benchmarks.datasets import register_distorted_digits
from cnn.data import list_datasets, unregister_dataset

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


@pytest.fixture(scope="module", autouse=True)
def distorted_digits() -> Iterator[list[str]]:
    """The benchmarks register the distorted-digits sets; later test files in this worker expect only the built-in
    datasets (the fast checks' list), so they are removed again."""
    names = register_distorted_digits()
    yield names
    for name in names:
        unregister_dataset(name)


@pytest.fixture(scope="module")
def small_run() -> dict:
    """lenet1 on 120 of the 486-image set's training images, seed 0: cnn-lab's defaults and the reference loop."""
    return recipe_bench.bench_recipe(["distorted-digits-small"], ["lenet1"], [0], max_train={"lenet1": 120})


def test_recipe_rows_hold_both_accuracies_their_difference_and_the_settings(small_run: dict) -> None:
    (row,) = small_run["rows"]
    assert (row["dataset"], row["variant"], row["seeds"]) == ("distorted-digits-small", "lenet1", 1)
    assert row["n_train"] == 108  # 120 less the validation split
    assert (row["epochs"], row["batch_size"]) == (30, 8)  # the rules' values for 108 images
    assert 0.0 <= row["reference"] <= 1.0 and 0.0 <= row["cnn_lab"] <= 1.0
    assert row["diff"] == pytest.approx(row["cnn_lab"] - row["reference"])
    assert row["ok"] is (row["diff"] >= -recipe_bench.TOLERANCE)
    assert row["lr_test_share"] <= 0.10  # the range test's budget


def test_recipe_table_prints_one_line_per_row_and_the_verdict(small_run: dict) -> None:
    text = recipe_bench.format_table(small_run["rows"])
    assert "distorted-digits-small" in text and "lenet1" in text
    assert text.splitlines()[-1].endswith("pairs within 1% of the reference")
    json.dumps(small_run, default=str)  # --json writes it


def test_recipe_markdown_shows_each_row_and_the_command_and_machine_it_came_from(small_run: dict) -> None:
    (row,) = small_run["rows"]
    text = recipe_bench.render_markdown(small_run)
    assert "**distorted-digits-small** (108 training images; 30 epochs at batch 8; " in text
    assert f"| lenet1 | 1 | {row['cnn_lab']:.4f} | {row['reference']:.4f} | {row['diff']:+.4f} |" in text
    env = small_run["environment"]
    assert len(env["load_avg"]) == len(env["load_avg_end"]) == 3 and env["torch"] and env["machine"]
    assert f"Written by `{small_run['command']}` on " in text and f"torch {env['torch']}" in text


def test_large_batch_rows_compare_each_batch_with_the_first_and_its_json_renders(tmp_path: Path) -> None:
    out = tmp_path / "large.json"
    argv = ["--dataset", "distorted-digits-small", "--variants", "lenet1", "--batches", "8,64", "--epochs", "2"]
    large_batch.main([*argv, "--json", str(out)])
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert [(r["batch"], r["epochs"]) for r in rows] == [(8, 2), (64, 2)]
    assert rows[0]["diff"] == 0.0 and rows[1]["diff"] == pytest.approx(rows[1]["test_acc"] - rows[0]["test_acc"])
    assert "lenet1" in large_batch.format_rows(rows)
    assert result["command"] == "python -m benchmarks.large_batch " + " ".join([*argv, "--json", str(out)])
    text = large_batch.render_markdown(result)
    assert "| variant | batch 8 | batch 64 | difference at 64 | lr at 64 |" in text
    assert f"| lenet1 | {rows[0]['test_acc']:.4f} | {rows[1]['test_acc']:.4f} | {rows[1]['diff']:+.4f} | " in text


def test_the_archived_tables_render_with_where_they_came_from() -> None:
    archived = json.loads((RESULTS / "recipe-large-archived.json").read_text())
    for result in archived["recipe"]:
        text = recipe_bench.render_markdown(result)
        assert "Transcribed from the README (commit 14ab26f), not measured again." in text
        assert text.count("\n| ") == len(result["rows"]) + 1  # the heading and one line per row
    large, at_512 = (large_batch.render_markdown(r) for r in archived["large_batch"])
    assert "5 of 10 within 1% of batch 64 or above it" in large  # each row's own pass flag, counted
    assert "| generic_3 | 0.9080 | 0.7285 | -0.1795 | 0.0085 (fallback after: did not learn at adam 0.024) |" in large
    assert "8 of 10 within 1% of batch 64 or above it" in at_512


def test_the_distorted_digits_sets_are_registered_for_the_benchmarks(distorted_digits: list[str]) -> None:
    assert distorted_digits == ["distorted-digits-small", "distorted-digits-medium", "distorted-digits-large"]
    assert set(distorted_digits) <= set(list_datasets())


@pytest.mark.parametrize("option", ["--epochs", "--batch-size"])
def test_a_bad_count_stops_the_benchmark_with_the_allowed_values(option: str, capsys) -> None:
    main = large_batch.main if option == "--epochs" else recipe_bench.main
    with pytest.raises(SystemExit) as stop:
        main([option, "0"])
    assert stop.value.code == 2
    assert f"argument {option}: must be 'auto' or an integer in [1, " in capsys.readouterr().err
