"""benchmarks.render: the docs/ pages come from the benchmarks' JSON, and --check finds a page its JSON no longer gives."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import render

ENV = {"cpu_count": 2, "device": "cpu", "device_name": "x86_64", "torch": "2.14", "prefect": "3.9", "load_avg": [1.5]}
PARTS = ["training", "around the epochs", "LR range test", "evaluation", "feature maps and plots",
         "the per-variant artifact", "dataset preparation", "publishing"]  # fmt: skip


def _flow(flow_s: float, training: float, variants: dict[str, float], workers: int = 1) -> dict:
    parts = dict.fromkeys(PARTS, 0.5) | {"training": training}
    per_variant = {v: {"wall": wall, "training": wall / 2} for v, wall in variants.items()}
    return {"wall_s": flow_s, "flow_s": flow_s, "parts_s": parts, "prefect_s": 1.0, "workers": workers,
            "idle_worker_s": 0.0, "variants": per_variant, "test_acc": dict.fromkeys(variants, 0.9)}  # fmt: skip


def _end_to_end(fresh: float, rerun: float, auto_s: float, workers: int) -> dict:
    case = {
        "case": "digits, 4 variants x 6 epochs",
        "setup": {},
        "predicted": {"workers": workers, "one_process_s": 14.0, "chosen_s": 13.0, "variant_s": {}},
        "1": _flow(40.0, 2.0, {"lenet1": 5.0}),
        "auto": _flow(auto_s, 2.0, {"lenet1": 5.0}, workers),
        "speedup": round(40.0 / auto_s, 2),
        "identical_metrics": True,
    }
    quick = {"setup": "--dataset digits", "fresh_s": fresh, "rerun_s": rerun, "fresh_cpu_s": fresh - 1,
             "rerun_cpu_s": rerun - 1, "imports_s": 4.0, "runs": [{"fresh": {"others": 0.2}}]}  # fmt: skip
    return {"command": "cnn-lab bench --end-to-end", "environment": ENV, "quickstart": quick, "server_start_s": 3.0,
            "flow": _flow(12.0, 0.6, {"lenet1": 3.0, "cnn2_5": 4.0}), "parallel": [case]}  # fmt: skip


def _full(wall: float, accuracies: dict[str, float], device: str = "cpu") -> dict:
    flow = _flow(wall, 50.0, dict.fromkeys(accuracies, wall / 2), workers=2)
    flow["test_acc"] = accuracies
    setup = {"variants": list(accuracies), "n_train": 60_000}
    predicted = {"workers": 2, "one_process_s": 200.0, "chosen_s": 110.0, "variant_s": dict.fromkeys(accuracies, 20.0)}
    return {"command": "cnn-lab bench --end-to-end --full", "environment": {**ENV, "device": device},
            "full": {**flow, "setup": setup, "device": device, "predicted": predicted}}  # fmt: skip


def _write(folder: Path, name: str, result: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(result))


@pytest.fixture
def results(tmp_path: Path) -> Path:
    folder = tmp_path / "results"
    after = _end_to_end(11.5, 4.5, 39.0, 1)
    after["quickstart"]["repeats"] = "auto"  # records without it were measured at one seed
    _write(folder, "end-to-end-cpu", after)
    _write(folder, "end-to-end-cpu-before", _end_to_end(21.3, 6.8, 45.0, 2))
    _write(folder, "end-to-end-full-cpu", _full(125.0, {"lenet1": 0.91, "generic_3": 0.95}))
    _write(folder, "end-to-end-full-cpu-before", _full(220.0, {"lenet1": 0.91, "generic_3": 0.95}))
    return folder


def test_the_performance_page_shows_before_after_and_says_the_gpu_figure_is_missing(results: Path) -> None:
    page = render.render(results)["performance.md"]
    assert "| `cnn-lab compare`, fresh store: wall (CPU) s | 21.3 (20.3) | 11.5 (10.5) |" in page
    assert "| seeds a variant (`--repeats`: the default when measured) | 1 | auto |" in page
    assert "| identical rerun: wall (CPU) s | 6.8 (5.8) | 4.5 (3.5) |" in page
    assert "| training | 0.6 (5%) | 0.6 (5%) |" in page  # seconds and share of the 12 s flow run
    assert (
        "| digits, 4 variants x 6 epochs | 40.0 / 45.0 (2), 0.89x | 40.0 / 39.0 (1), 1.03x (one process: the run "
        "--parallel 1 makes) |" in page
    )
    assert "After: 125.0 s wall, 2 variants at once" in page and "before: 220.0 s, 2 at once." in page
    assert "The epochs alone took 62 training-seconds: over 2 workers at least 31 s" in page  # the floor
    assert "imports torch and Prefect (4.0 s)" in page and "## Targets" not in page  # no targets recorded here
    assert "| generic_3 | 62.5 | 31.2 |" in page  # per variant: wall, then epochs
    assert "| lenet1 | 20.0 | 62.5 |" in page  # the cost model's prediction against the measured wall
    assert "## The full comparison on a GPU\n\nNot measured" in page and "--full --device cuda" in page
    assert "benchmarks/results/end-to-end-full-cpu-before.json" in page


def test_a_gpu_run_is_checked_against_the_cpu_runs_accuracy(results: Path) -> None:
    _write(results, "end-to-end-full-cuda", _full(48.0, {"lenet1": 0.905, "generic_3": 0.93}, device="cuda:0"))
    page = render.render(results)["performance.md"]
    assert "48.0 s end to end (target 60 s)" in page
    assert "| lenet1 | 24.0 | 0.9050 | 0.9100 | yes |" in page
    assert "| generic_3 | 24.0 | 0.9300 | 0.9500 | NO |" in page  # 2 points under the CPU run


def test_pages_are_written_only_for_json_that_is_there_and_check_finds_stale_ones(results: Path, tmp_path) -> None:
    docs = tmp_path / "docs"
    assert render.main(["--results", str(results), "--docs", str(docs)]) == 0
    assert sorted(p.name for p in docs.iterdir()) == ["performance.md"]  # no seeds or verdict JSON here
    assert render.main(["--results", str(results), "--docs", str(docs), "--check"]) == 0
    _write(results, "end-to-end-cpu", _end_to_end(10.0, 4.0, 39.0, 1))
    assert render.main(["--results", str(results), "--docs", str(docs), "--check"]) == 1


def test_the_docs_in_the_repository_are_what_their_json_renders() -> None:
    assert render.main(["--check"]) == 0


def test_a_prose_page_gets_its_marked_blocks_rendered_and_keeps_the_rest(tmp_path: Path) -> None:
    renderers = {"table": lambda results: f"| rows from {results.name} |"}
    page = "intro\n<!-- rendered: table -->\nstale\n<!-- end rendered -->\noutro\n"
    filled = render.fill_blocks(page, renderers, tmp_path / "results")
    assert filled == "intro\n<!-- rendered: table -->\n| rows from results |\n<!-- end rendered -->\noutro\n"
    assert render.fill_blocks(page, {"table": lambda results: None}, tmp_path) == page  # no JSON: the block stays
    with pytest.raises(ValueError, match="'table': no renderer"):
        render.fill_blocks(page, {}, tmp_path)


def test_the_recipe_page_is_what_its_json_renders() -> None:
    page = render.DOCS / "recipe.md"
    assert render.render(render.RESULTS, render.DOCS)["recipe.md"] == page.read_text()
