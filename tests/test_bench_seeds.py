"""benchmarks.seeds: K seeds batched against one after another; figures reported and written, never asserted as speed."""

from __future__ import annotations

import json

import pytest

from benchmarks import render
from benchmarks import seeds as bench_seeds
from benchmarks.record import GPU_NOT_MEASURED


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict, str]:
    folder = tmp_path_factory.mktemp("seeds")
    args = ["--variants", "generic_2", "--ks", "1,3", "--epochs", "1", "--repeats", "1"]
    result = bench_seeds.main([*args, "--json-out", str(folder / "seeds-cpu.json")])
    return result, json.loads((folder / "seeds-cpu.json").read_text()), render.seeds_page(folder)


def test_one_row_per_seed_count_with_both_paths_timed(run) -> None:
    result, _, _ = run
    rows = result["rows"]
    assert [(r["variant"], r["k"]) for r in rows] == [("generic_2", 1), ("generic_2", 3)]
    one = rows[0]["alone_s"]
    for row in rows:
        assert row["batched_by"] == "grouped" and row["batch_size"] == 16  # the recipe's batch for digits on CPU
        assert row["batched_x_one"] == pytest.approx(row["batched_s"] / one)
        assert row["speedup"] == pytest.approx(row["alone_s"] / row["batched_s"])
        assert len(row["runs"]["batched"]) == 1 and len(row["runs"]["batched"][0]["val_acc"]) == row["k"]
        assert row["max_val_acc_diff"] < 0.05  # generic_2 has no dropout: batched seeds match their runs alone
    assert rows[0]["alone_x_one"] == pytest.approx(1.0)


def test_the_target_is_three_seeds_under_three_times_one_on_cpu(run) -> None:
    result, _, _ = run
    (target,) = result["targets"]
    three = result["rows"][1]["batched_x_one"]
    assert target == {"target": "generic_2: 3 seeds batched < 3x one seed (cpu)", "value": three, "met": three < 3}
    assert result["gpu"] == GPU_NOT_MEASURED
    assert "Targets" in bench_seeds.format_result(result)


def test_the_json_names_machine_versions_load_and_command_and_the_page_shows_its_table(run) -> None:
    result, written, page = run
    env = written["environment"]
    assert {"machine", "torch", "python", "threads", "load_avg", "device_name"} <= set(env)
    assert written["command"] and written["rows"] == json.loads(json.dumps(result["rows"]))
    assert page.startswith("# Seeds trained together") and bench_seeds.format_result(written) in page
