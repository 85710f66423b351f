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
