"""flows.overhead: the comparison flow and the plain loop do the same work; the report compares their fastest runs."""

from __future__ import annotations

import json

import pytest

from flows import breakdown, overhead


@pytest.mark.slow
def test_quick_overhead_times_both_and_compares_the_fastest(prefect_harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(overhead.QUICK, "variants", ["lenet1"])
    result = overhead.bench_prefect_overhead(quick=True, repeats=2)
    runs = result["runs"]
    assert len(runs["plain_loop_s"]) == len(runs["flow_s"]) == 2
    assert result["plain_loop_s"] == min(runs["plain_loop_s"]) and result["flow_s"] == min(runs["flow_s"])
    assert result["overhead_s"] == pytest.approx(result["flow_s"] - result["plain_loop_s"], abs=0.02)
    assert result["overhead_pct_of_flow"] == pytest.approx(100 * result["overhead_s"] / result["flow_s"], abs=0.2)
    assert result["setup"] == {"variants": ["lenet1"], "epochs": 1, "batch_size": 64}


def test_steps_of_variants_running_at_once_are_counted_once() -> None:
    assert breakdown.covered_seconds([(0.0, 2.0), (1.0, 3.0), (5.0, 6.0)]) == pytest.approx(4.0)
    assert breakdown.covered_seconds([]) == 0.0
    assert breakdown.most_at_once([(0.0, 2.0), (1.0, 3.0), (2.5, 4.0)]) == 2


def test_task_runs_are_read_as_step_variant_and_times() -> None:
    assert breakdown.step_run("train_variant-1a2b", "train lenet1 s0-s2", 1.0, 4.0) == breakdown.StepRun(
        "train_variant", "lenet1", 1.0, 4.0
    )
    assert breakdown.step_run("publish_variant-ff", "publish cnn2_5 s1", 0, 1).variant == "cnn2_5"
    assert breakdown.step_run("variant_steps-00", "variant generic_3", 0, 1).variant == "generic_3"
    assert breakdown.step_run("publish_comparison-ab", "publish comparison default on digits", 0, 1).variant is None


def _runs(*specs: tuple[str, str | None, float, float]) -> list[breakdown.StepRun]:
    return [breakdown.StepRun(*spec) for spec in specs]


def test_breakdown_splits_the_wall_time_per_part_and_variant() -> None:
    runs = _runs(
        ("prepare_dataset", None, 0.0, 1.0),
        ("train_variant", "a", 1.0, 5.0),
        ("evaluate_variant", "a", 5.0, 6.0),
        ("extract_features", "a", 6.0, 8.0),
        ("publish_variant", "a", 8.0, 8.5),
        ("train_variant", "b", 9.0, 11.0),
        ("publish_comparison", None, 11.0, 12.0),
    )
    rows = [{"variant": "a", "train_seconds": 3.0, "test_acc": 0.9}, {"variant": "b", "train_seconds": 1.5}]
    out = breakdown.breakdown(runs, rows, wall_s=13.0)
    assert out["parts_s"]["training"] == 4.5 and out["parts_s"][breakdown.AROUND] == 1.5
    assert out["parts_s"]["feature maps and plots"] == 2.0 and out["parts_s"]["publishing"] == 1.0
    assert out["prefect_s"] == 13.0 - 11.5  # outside every step: 8.5-9 and 12-13
    assert out["variants"]["a"]["wall"] == 7.5 and out["variants"]["b"]["training"] == 1.5
    assert out["workers"] == 1 and out["idle_worker_s"] == 0.0
    assert out["test_acc"] == {"a": 0.9, "b": None}
    assert set(out["parts_s"]) == set(breakdown.PARTS)


def test_idle_worker_seconds_are_the_slots_the_variants_left_empty() -> None:
    runs = _runs(
        ("variant_steps", "a", 0.0, 10.0),
        ("train_variant", "a", 0.0, 9.0),
        ("variant_steps", "b", 4.0, 8.0),  # its worker started late and finished early
        ("train_variant", "b", 4.0, 8.0),
    )
    out = breakdown.breakdown(runs, [{"variant": "a"}, {"variant": "b"}], wall_s=11.0)
    assert out["workers"] == 2 and out["idle_worker_s"] == 2 * 10.0 - (10.0 + 4.0)
    assert out["variants"]["a"]["wall"] == 10.0 and out["variants"]["b"]["wall"] == 4.0


def _flow(wall: float) -> dict:
    parts = {part: 1.0 for part in breakdown.PARTS}
    variant = {**dict.fromkeys(breakdown.VARIANT_PARTS, 0.5), "wall": 3.0}
    return {
        "wall_s": wall,
        "flow_s": wall,
        "parts_s": parts,
        "prefect_s": 2.5,
        "workers": 1,
        "idle_worker_s": 0.0,
        "variants": {"lenet1": variant, "cnn2_5": variant},
    }


def test_end_to_end_report_names_every_part_variant_case_and_target() -> None:
    case = {
        "case": "digits, 4 variants x 6 epochs",
        "setup": overhead.PARALLEL_CASES["digits, 4 variants x 6 epochs"],
        "predicted": {"workers": 1, "one_process_s": 14.0, "chosen_s": 14.0},
        "1": _flow(40.0),
        "auto": {**_flow(41.0), "workers": 1},
        "speedup": 0.98,
        "identical_metrics": True,
    }
    result = {
        "environment": {"cpu_count": 2, "device": "cpu", "device_name": "x86_64", "torch": "2", "prefect": "3", "load_avg": [1.0, 1, 1]},
        "load_after": [2.0, 1, 1],
        "quickstart": {"setup": " ".join(overhead.QUICKSTART), "runs": [{}], "fresh_s": 19.5, "rerun_s": 7.5,
                       "fresh_cpu_s": 18.0, "rerun_cpu_s": 7.0, "imports_s": 4.0},
        "server_start_s": 6.0,
        "flow": _flow(10.0),
        "parallel": [case],
    }  # fmt: skip
    result["targets"] = overhead.check_targets(result)
    text = overhead.format_end_to_end(result)
    assert "identical rerun:" in text and "7.5 s wall" in text and "load average 1.0 -> 2.0" in text
    for part in breakdown.PARTS:
        assert part in text
    assert "Prefect (outside every step)" in text and "25.0%" in text and "idle workers (1 at once)" in text
    assert "lenet1" in text and "cnn2_5" in text
    assert "digits, 4 variants x 6 epochs: --parallel 1 40.0 s, auto (1 at once) 41.0 s, 0.98x" in text
    assert [t["met"] for t in result["targets"]] == [False, False, True]  # 19.5 > 12, 7.5 > 5, 41/40 within noise
    assert "quickstart, fresh store <= 12 s: 19.5 MISSED" in text


@pytest.mark.slow
def test_quick_end_to_end_runs_the_breakdown_and_a_parallel_case_and_writes_its_json(prefect_harness, tmp_path) -> None:
    from flows.cli import main

    out = tmp_path / "e2e.json"
    assert main(["bench", "--end-to-end", "--quick", "--json-out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["benchmark"] == "end-to-end" and result["environment"]["load_avg"] and result["command"]
    assert set(result["flow"]["variants"]) == set(overhead.QUICKSTART[3].split(","))
    assert result["flow"]["parts_s"]["training"] > 0 and result["flow"]["workers"] == 1
    [case] = result["parallel"]
    assert case["identical_metrics"] and case["predicted"]["workers"] == case["auto"]["workers"] == 1


@pytest.mark.slow
def test_quick_full_comparison_breaks_down_every_variant(prefect_harness, tmp_path) -> None:
    result = overhead.bench_end_to_end(quick=True, full=True, device="cpu")
    full = result["full"]
    assert set(full["variants"]) == set(overhead.FULL["quick"]["variants"])
    assert all(v["wall"] > 0 and v["training"] > 0 for v in full["variants"].values())
    assert full["test_acc"] and result["targets"] == []  # a smoke run checks no target


def test_auto_in_one_process_counts_as_the_run_parallel_1_is_and_two_workers_must_not_lose() -> None:
    def case(auto_s: float, workers: int) -> dict:
        return {"case": "c", "1": {"wall_s": 20.0}, "auto": {"wall_s": auto_s, "workers": workers}}

    one, two_slow, two_fast = (overhead.check_targets({"parallel": [c]})[0] for c in (
        case(22.0, 1), case(22.0, 2), case(15.0, 2)
    ))  # fmt: skip
    assert one["met"] and one["note"] == "auto chose one process, the same run as --parallel 1"
    assert not two_slow["met"] and "note" not in two_slow  # 1.1x slower with two workers: a loss
    assert two_fast["met"] and two_fast["value"] == 0.75
