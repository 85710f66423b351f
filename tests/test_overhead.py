"""flows.overhead: the comparison flow and the plain loop do the same work; the report compares their fastest runs."""

from __future__ import annotations

import pytest

from flows import overhead


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
    assert overhead._covered_seconds([(0.0, 2.0), (1.0, 3.0), (5.0, 6.0)]) == pytest.approx(4.0)
    assert overhead._covered_seconds([]) == 0.0


def test_end_to_end_report_names_every_phase_prefects_share_and_the_speedup() -> None:
    steps = {phase: 1.0 for phase in dict.fromkeys(overhead.PHASES.values())}
    result = {
        "setup": " ".join(overhead.QUICKSTART),
        "cpus": 2,
        "load": {"before": [1.0, 1, 1], "after": [2.0, 1, 1]},
        "cli_cold_s": 19.5,
        "cli_cached_s": 7.5,
        "imports_s": 4.0,
        "server_start_s": 6.0,
        "flow": {"flow_s": 10.0, "steps_s": steps, "prefect_s": 2.5},
        "parallel": {
            "setup": overhead.PARALLEL_SETUP,
            "seconds": {"1": 40.0, "auto": 24.0},
            "speedup": 1.67,
            "identical_metrics": True,
        },
    }
    text = overhead.format_end_to_end(result)
    assert "identical rerun:" in text and "7.5 s" in text and "load 1.0 -> 2.0" in text
    for phase in steps:
        assert phase in text
    assert "Prefect (outside every step)" in text and "25.0%" in text
    assert (
        "4 variants x 6 epochs on digits: --parallel 1 40.0 s, default 24.0 s, 1.67x; identical metrics: True" in text
    )
