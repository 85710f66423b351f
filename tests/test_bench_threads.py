"""benchmarks.threads: training steps timed at one torch thread and at every core, written as JSON."""

from __future__ import annotations

import json

import torch

from benchmarks import threads
from cnn.parallel import usable_cpus


def test_each_variant_is_timed_at_one_thread_and_every_core_and_written(tmp_path) -> None:
    before = torch.get_num_threads()
    out = tmp_path / "threads.json"
    result = threads.main(
        ["--variants", "lenet1", "--batch-size", "8", "--steps", "2", "--repeats", "1", "--json-out", str(out)]
    )
    assert torch.get_num_threads() == before  # the benchmark's thread counts do not leak
    assert [(r["variant"], r["threads"]) for r in result["rows"]] == [("lenet1", n) for n in sorted({1, usable_cpus()})]
    assert all(r["wall_ms"] > 0 and r["cpu_ms"] >= 0 and len(r["runs"]) == 1 for r in result["rows"])
    written = json.loads(out.read_text())
    assert written["command"].endswith(f"--json-out {out}") and written["environment"]["load_avg"]
    assert "lenet1" in threads.format_rows(written["rows"])
