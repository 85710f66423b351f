"""What changed since a comparison's last publication (cnn/report/changes.py), and how --repeats auto adds seeds
(flows/seeds.py): hand-made runs and verdicts, no training."""

from __future__ import annotations

import numpy as np
import pytest
from statsmodels.stats.contingency_tables import mcnemar

from cnn.params import RunParams
from cnn.predictions import Run
from cnn.report import changes as C
from cnn.report import comparison_markdown, comparison_text
from cnn.report.verdict import Verdict
from cnn.testset import TestSet

N = 400
TEST_SET = TestSet("toy", "0123456789abcdef01234567", N, 0)


def _row(acc: float, folder: str, learned: bool = True, status: str = "ok") -> dict:
    return {
        "variant": "a",
        "seed": 0,
        "status": status,
        "test_acc": acc if status == "ok" else None,
        "learned": learned,
        "folder": folder,
    }


def _correct(right: int) -> np.ndarray:
    out = np.zeros(N, dtype=bool)
    out[:right] = True
    return out


def _run(right: int, seed: int = 0) -> Run:
    return Run("a", seed, TEST_SET, _correct(right))


def test_a_drop_past_the_noise_is_a_regression_with_mcnemars_p() -> None:
    before, after = _row(0.9, "s/r1/a"), _row(0.8, "s/r2/a")
    change = C.variant_change("a", [before], [after], [_run(360)], [_run(320)], previous_run="r1")
    expected = mcnemar([[320, 40], [0, 40]], exact=True).pvalue  # 40 images right before and wrong now
    assert change.kind == C.WORSE and change.regressed and change.p == pytest.approx(expected)
    assert C.change_text(change).startswith("a: worse, 0.900 -> 0.800 (exact McNemar p = ")


def test_a_gain_is_better_and_noise_is_unchanged() -> None:
    better = C.variant_change("a", [_row(0.8, "r1")], [_row(0.9, "r2")], [_run(320)], [_run(360)])
    assert better.kind == C.BETTER and not better.regressed
    noise = C.variant_change("a", [_row(0.80, "r1")], [_row(0.805, "r2")], [_run(320)], [_run(322)])
    assert noise.kind == C.SAME and noise.p > 0.05


def test_a_variant_that_stops_learning_or_fails_is_newly_failing() -> None:
    idle = C.variant_change("a", [_row(0.9, "r1")], [_row(0.1, "r2", learned=False)], [_run(360)], [_run(40)])
    failed = C.variant_change("a", [_row(0.9, "r1")], [_row(0.0, "r2", status="failed")], [_run(360)], [])
    assert idle.kind == failed.kind == C.FAILING and idle.regressed and failed.regressed


def test_the_same_models_other_test_images_and_new_variants_are_named() -> None:
    same = C.variant_change("a", [_row(0.9, "r1/a")], [_row(0.9, "r1/a")], [_run(360)], [_run(360)])
    assert same.kind == C.SAME and same.test == C.SAME_MODELS and same.p is None
    other = C.variant_change("a", [_row(0.9, "r1")], [_row(0.8, "r2")], [], [_run(320)])  # earlier images: no pairing
    assert other.kind == C.UNCOMPARABLE and not other.regressed
    assert C.variant_change("a", [], [_row(0.8, "r2")], [], [_run(320)]).kind == C.NEW


def test_the_changes_section_lists_regressions_first_in_markdown_and_terminal() -> None:
    changes = [
        C.Change("b", C.BETTER, 0.7, 0.8, 0.001, "exact McNemar", "r1"),
        C.Change("a", C.WORSE, 0.9, 0.8, 0.002, "exact McNemar", "r1"),
        C.Change("c", C.NEW, None, 0.5),
    ]
    md = C.changes_markdown(changes)
    assert md.index("a: worse") < md.index("b: better") and "c:" not in md
    summaries = [{"variant": "a", "status": "ok", "test_acc": 0.8, "n_seeds": 1, "learned": True}]
    text = comparison_text(summaries, "toy", 1, notes=["Added no seeds."], changes=changes)
    assert "Changes since the last publication:" in text and "- a: worse, 0.900 -> 0.800" in text
    assert "Added no seeds." in comparison_markdown(summaries, "toy", 1, notes=["Added no seeds."], changes=changes)


def _verdict(seeds: dict[str, int], group: tuple[str, ...]) -> Verdict:
    return Verdict(
        method="paired bootstrap over seeds and test images",
        alpha=0.05,
        n_images=N,
        best=group[0],
        group=group,
        accuracy=dict.fromkeys(seeds, 0.9),
        intervals=dict.fromkeys(seeds, (0.85, 0.95)),
        comparisons={},
        seeds=dict(seeds),
    )


def test_repeats_auto_adds_seeds_to_the_tied_variants_and_stops_at_the_budget(monkeypatch) -> None:
    from flows import seeds as S

    config = RunParams(variants=["a", "b", "c"], repeats="auto", max_seeds=5)
    assert S.first_seeds(config) == [0, 1, 2]
    trained: list[tuple[list[str], list[int]]] = []

    def fake_verdict(config, rows):  # a and b stay tied whatever the seeds; c is worse
        counts = {v: sum(1 for r in rows if r["variant"] == v) for v in ("a", "b", "c")}
        return _verdict(counts, ("a", "b"))

    def train(variants: list[str], seeds: list[int]) -> list[dict]:
        trained.append((variants, seeds))
        return [{"variant": v, "seed": s, "status": "ok"} for v in variants for s in seeds]

    monkeypatch.setattr(S, "verdict_of", fake_verdict)
    monkeypatch.setattr(S, "get_run_logger", lambda: __import__("logging").getLogger("test"))
    first = [{"variant": v, "seed": s, "status": "ok"} for v in "abc" for s in range(3)]
    rows, note = S.add_seeds(config, first, train)
    assert trained == [(["a", "b"], [3, 4])]  # the tied pair up to twice its seeds (the budget: 5), none for c
    assert len(rows) == 9 + 4
    assert note == "added 2 seeds to a and b; still tied after 5 seeds (the budget: 5 seeds per variant): a and b"
    trained.clear()
    rows, note = S.add_seeds(config.model_copy(update={"max_seeds": 8}), first, train)
    assert trained == [(["a", "b"], [3, 4, 5]), (["a", "b"], [6, 7])]  # 3 -> 6 -> 8: doubling, then the budget
    assert note.startswith("added 5 seeds to a and b; still tied after 8 seeds")
