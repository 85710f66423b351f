"""The verdict's statistics (cnn/report/verdict.py) and what they change in the report: paired tests on hand-made
predictions against scipy/statsmodels, the tied group, the lone winner, intervals in the tables, predictions read back."""

from __future__ import annotations

import io
import logging
import pickle

import matplotlib.pyplot as plt
import numpy as np
import pytest
from scipy import stats

from cnn import plots, report
from cnn.errors import ConfigError
from cnn.predictions import PREDICTIONS, Run, load_runs, parse_predictions, predictions_bytes
from cnn.testset import TestSet
from cnn.report import verdict as V
from cnn.storage import Storage

N = 300
TEST_SET = TestSet("toy", "0123456789abcdef01234567", N, 0)
CLASSES = [str(c) for c in range(10)]


def correct_with(disagree: dict[str, tuple[int, int]], base: int = 240) -> dict[str, np.ndarray]:
    """Per variant, correctness on N images: the reference "best" is right on the first `base`; each other variant
    differs from it on (b, c) images: b where best is right and it is wrong, c where best is wrong and it is right."""
    best = np.zeros(N, dtype=bool)
    best[:base] = True
    out = {"best": best}
    for name, (b, c) in disagree.items():
        mine = best.copy()
        mine[:b] = False  # best right, this one wrong
        mine[base : base + c] = True  # best wrong, this one right
        out[name] = mine
    return out


def runs_of(correct: dict[str, np.ndarray], seed: int = 0, test_set: TestSet = TEST_SET) -> list[Run]:
    return [Run(v, seed, test_set, c) for v, c in correct.items()]


def rows_for(correct_by_seed: dict[str, list[np.ndarray]], params: dict[str, int] | None = None) -> list[dict]:
    """Rows (as make_row builds them, ten classes) whose test accuracies are the hand-made runs' accuracies."""
    rows = []
    for variant, seeds in correct_by_seed.items():
        for seed, correct in enumerate(seeds):
            acc = float(np.mean(correct))
            rows.append(
                report.make_row(
                    variant,
                    seed,
                    {"lr": 0.01, "rule": "given"},
                    {
                        "params": (params or {}).get(variant, 1000),
                        "epochs": 2,
                        "best_val_acc": acc,
                        "seconds": 1.0,
                        "images_per_sec": 100.0,
                    },
                    {
                        "accuracy": acc,
                        "macro_f1": acc,
                        "confusion": np.diag([N // 10] * 10).tolist(),
                        "per_class_f1": dict.fromkeys(CLASSES, acc),
                    },
                    f"memory://runs/{variant}/seed-{seed}",
                )
            )
    return rows


def summaries_for(correct_by_seed: dict[str, list[np.ndarray]], params: dict[str, int] | None = None) -> list[dict]:
    """The hand-made runs' rows aggregated over seeds."""
    return report.aggregate_repeats(rows_for(correct_by_seed, params))


# ---------------------------------------------------------------- pairing


def test_pairing_refuses_runs_on_different_test_sets() -> None:
    other = TestSet("toy", "ffffffffffffffffffffffff", N, 1)
    runs = [Run("a", 0, TEST_SET, np.ones(N, bool)), Run("b", 0, other, np.ones(N, bool))]
    with pytest.raises(ConfigError, match="test_set: b .* cannot be paired"):
        V.decide(runs)


def test_load_runs_leaves_out_rows_of_another_test_set_and_damaged_files(tmp_path, caplog) -> None:
    store = Storage(str(tmp_path))
    y_true = np.arange(N) % 3
    good = y_true.copy()
    good[:30] = (good[:30] + 1) % 3
    damaged = {
        "pickled": pickle.dumps(good),
        "objects": _npy(np.array([1, "a"], dtype=object), allow_pickle=True),
        "short": predictions_bytes(good[:-1], 3),
        "floats": _npy(good.astype(np.float32)),
        "out_of_range": predictions_bytes(np.full(N, 7), 8),
        "huge": b"\x93NUMPY" + b"\0" * (8 * N + 5000),
    }
    rows = [{"variant": "good", "seed": 0, "test_set": TEST_SET.to_dict()}]
    store.write_bytes(f"good/{PREDICTIONS}", predictions_bytes(good, 3))
    for name, raw in damaged.items():
        store.write_bytes(f"{name}/{PREDICTIONS}", raw)
        rows.append({"variant": name, "seed": 0, "test_set": TEST_SET.to_dict()})
    moved = {**TEST_SET.to_dict(), "fingerprint": "another"}
    store.write_bytes(f"moved/{PREDICTIONS}", predictions_bytes(good, 3))
    rows += [{"variant": "moved", "seed": 0, "test_set": moved}, {"variant": "old", "seed": 0}]
    with caplog.at_level(logging.WARNING, logger="cnn.predictions"):
        runs, left_out = load_runs(store, [(r, r["variant"]) for r in rows], TEST_SET, y_true, 3)
    assert [r.variant for r in runs] == ["good"] and runs[0].correct.sum() == N - 30
    assert left_out == [*damaged, "moved", "old"]
    for name in damaged:
        assert f"{tmp_path}/{name}/{PREDICTIONS}" in caplog.text  # each damaged file named
    assert "scored on another test set" in caplog.text and "earlier version" in caplog.text


def _npy(values: np.ndarray, allow_pickle: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, values, allow_pickle=allow_pickle)
    return buffer.getvalue()


def test_predictions_round_trip_in_the_smallest_integer_type() -> None:
    y = np.array([0, 9, 3, 3])
    raw = predictions_bytes(y, 10)
    assert np.load(io.BytesIO(raw)).dtype == np.uint8
    assert np.load(io.BytesIO(predictions_bytes(np.array([0, 300]), 1000))).dtype == np.uint16
    assert parse_predictions(raw, 4, 10).tolist() == [0, 9, 3, 3]
    with pytest.raises(ValueError, match="outside 0..8"):
        parse_predictions(raw, 4, 9)


# ---------------------------------------------------------------- the tests against scipy / statsmodels


@pytest.mark.parametrize("b, c", [(15, 5), (0, 0), (3, 9), (40, 31)])
def test_mcnemar_is_the_exact_binomial_test_on_the_disagreements(b: int, c: int) -> None:
    correct = correct_with({"other": (b, c)})
    expected = 1.0 if b + c == 0 else stats.binomtest(min(b, c), b + c, 0.5).pvalue
    assert V.mcnemar_p(correct["best"], correct["other"]) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("k", [0, 17, 150, 300])
def test_wilson_interval_matches_the_formula(k: int) -> None:
    z, p = stats.norm.ppf(0.975), k / N
    centre = (p + z * z / (2 * N)) / (1 + z * z / N)
    half = z / (1 + z * z / N) * np.sqrt(p * (1 - p) / N + z * z / (4 * N * N))
    assert V.wilson_interval(k, N) == pytest.approx((max(0.0, centre - half), min(1.0, centre + half)), abs=1e-9)


def test_bootstrap_with_one_seed_matches_scipys_paired_bootstrap() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.random(N) < 0.8, rng.random(N) < 0.7
    replicas = V.bootstrap_accuracies([a[None], b[None]], replicates=4000, seed=1)
    mine = V.bootstrap_comparison(replicas[:, 0], replicas[:, 1])
    scipy_ci = stats.bootstrap(
        (a.astype(float), b.astype(float)),
        lambda x, y, axis=-1: x.mean(axis=axis) - y.mean(axis=axis),
        paired=True,
        vectorized=True,
        n_resamples=4000,
        method="percentile",
        random_state=2,
    ).confidence_interval
    assert (mine["low"], mine["high"]) == pytest.approx((scipy_ci.low, scipy_ci.high), abs=0.01)
    assert np.mean(replicas[:, 0]) == pytest.approx(a.mean(), abs=0.005)


def test_bootstrap_resamples_seeds_first() -> None:
    """Two seeds, one right on every image and one wrong on every one: a replicate's accuracy is 0, 1/2 or 1 with
    probabilities 1/4, 1/2, 1/4 whatever images are drawn (the seed level alone)."""
    matrix = np.stack([np.ones(N, bool), np.zeros(N, bool)])
    replicas = V.bootstrap_accuracies([matrix], replicates=4000, seed=0)[:, 0]
    shares = [np.mean(np.isclose(replicas, v)) for v in (0.0, 0.5, 1.0)]
    assert shares == pytest.approx([0.25, 0.5, 0.25], abs=0.03) and sum(shares) == pytest.approx(1.0)


def test_bootstrap_is_seeded_and_identical_variants_are_a_coin_flip() -> None:
    correct = np.random.default_rng(0).random((3, N)) < 0.7
    first = V.bootstrap_accuracies([correct, correct], seed=5)
    assert np.array_equal(first, V.bootstrap_accuracies([correct, correct], seed=5))
    one = V.bootstrap_accuracies([correct[:1], correct[:1]], seed=5)  # one seed each: only the images are drawn
    same = V.bootstrap_comparison(one[:, 0], one[:, 1])
    assert same["p"] == 1.0 and same["prob_better"] == 0.5 and same["low"] == same["high"] == 0.0


# ---------------------------------------------------------------- the verdict


def test_a_lone_winner_only_when_it_beats_every_other_variant() -> None:
    correct = correct_with({"close": (30, 2), "far": (60, 0)})
    verdict = V.decide(runs_of(correct))
    assert verdict.method == V.MCNEMAR and verdict.holm and verdict.decided
    assert verdict.group == ("best",) and verdict.comparisons["close"].p_holm < 0.05
    assert verdict.intervals["best"] == V.wilson_interval(240, N)
    summaries = V.with_verdict(summaries_for({v: [c] for v, c in correct.items()}), verdict)
    assert [s["group"] for s in summaries] == [V.BEST, V.WORSE, V.WORSE]
    text = report.summary_sentences(summaries, [])
    assert text.startswith(
        "On these 300 test images, best's trained model beats every other variant's with 0.800 test accuracy (95% CI 0.751"
    )
    assert "which is not yet a verdict on the architectures" in text
    assert "significantly above them (p < 0.05; exact McNemar, Holm-corrected, 300 test images)" in text
    assert "not the seeds'" in text and "most accurate" not in text  # one seed: no claim about the architecture
    assert "per parameter" not in text  # no group to compare within
    repeated = {v: [c, c] for v, c in correct.items()}  # two seeds each (identical: no seed noise to add)
    runs = [Run(v, s, TEST_SET, c) for v, cs in repeated.items() for s, c in enumerate(cs)]
    text = report.summary_sentences(V.with_verdict(summaries_for(repeated), V.decide(runs)), [])
    assert text.startswith(
        "On these 300 test images, best's 2 runs beat every other variant's with 0.800 test accuracy ± 0.000 over 2"
    )
    assert "paired bootstrap over seeds and test images, Holm-corrected" in text and "not the seeds'" not in text
    assert "With 2 seeds per variant the seeds' noise is under-covered" in text  # 2 seeds: still no architecture claim
    three = {v: [c, c, c] for v, c in correct.items()}
    runs = [Run(v, s, TEST_SET, c) for v, cs in three.items() for s, c in enumerate(cs)]
    text = report.summary_sentences(V.with_verdict(summaries_for(three), V.decide(runs)), [])
    assert text.startswith("best is the most accurate variant with 0.800 test accuracy ± 0.000 over 3 seeds (95% CI")
    assert "under-covered" not in text and "not the seeds'" not in text and "not yet a verdict" not in text


def test_holm_keeps_a_group_tied_that_two_uncorrected_tests_would_split() -> None:
    correct = correct_with({"x": (15, 5), "y": (20, 8)})  # exact McNemar p 0.041 and 0.036 against the best
    verdict = V.decide(runs_of(correct))
    assert [round(verdict.comparisons[v].p, 3) for v in ("x", "y")] == [0.041, 0.036]
    assert all(c.p_holm >= 0.05 for c in verdict.comparisons.values())
    assert verdict.group == ("best", "x", "y") and not verdict.decided
    summaries = V.with_verdict(
        summaries_for({v: [c] for v, c in correct.items()}, {"best": 9000, "x": 1000, "y": 4000}), verdict
    )
    text = report.summary_sentences(summaries, [])
    assert text.startswith(
        "Tied for best (p \u2265 0.05; exact McNemar, Holm-corrected, 300 test images): best 0.800, x 0.767, y 0.760; "
        "no variant is significantly more accurate than another."
    )
    assert "most accurate variant" not in text
    assert "Among those tied for best, x gets the most accuracy per parameter" in text


def test_two_variants_get_no_holm_correction() -> None:
    verdict = V.decide(runs_of(correct_with({"x": (15, 5)})))
    assert not verdict.holm and verdict.test_name == V.MCNEMAR and verdict.decided


def test_a_variant_that_did_not_learn_is_never_in_the_best_group() -> None:
    correct = correct_with({"peer": (3, 2)})
    correct["idle"] = np.ones(N, dtype=bool)  # the highest accuracy, but its model is flagged as not learned
    verdict = V.decide(runs_of(correct), {"idle": False})
    assert verdict.best == "best" and "idle" not in verdict.group and verdict.not_learned == ("idle",)
    assert "idle" not in verdict.comparisons  # nor in the Holm family
    assert V.group_of(verdict, "idle") == report.metrics.NOT_LEARNED


def test_repeats_use_the_paired_bootstrap_and_identical_networks_tie() -> None:
    rng = np.random.default_rng(7)
    base = rng.random(N) < 0.75
    seeds = {v: [base ^ (rng.random(N) < 0.05) for _ in range(3)] for v in ("cnn2_5", "generic_0")}
    seeds["weak"] = [rng.random(N) < 0.6 for _ in range(3)]
    runs = [Run(v, s, TEST_SET, c) for v, cs in seeds.items() for s, c in enumerate(cs)]
    verdict = V.decide(runs)
    assert verdict.method == V.BOOTSTRAP and verdict.seeds == {"cnn2_5": 3, "generic_0": 3, "weak": 3}
    assert set(verdict.group) == {"cnn2_5", "generic_0"} and verdict.comparisons["weak"].p_holm < 0.05
    other = next(v for v in verdict.group if v != verdict.best)
    c = verdict.comparisons[other]
    assert c.low < c.diff < c.high and c.low < 0 < c.high and 0.3 < c.prob_better < 1
    summaries = V.with_verdict(summaries_for(seeds), verdict)
    text = report.summary_sentences(summaries, [])
    assert "paired bootstrap over seeds and test images, Holm-corrected, 300 test images" in text
    assert "the others are significantly less accurate" in text


def test_auto_tests_each_look_at_alpha_over_its_looks() -> None:
    assert [V.looks_of(m) for m in (1, 3, 5, 6, 8, 12, 13)] == [1, 1, 2, 2, 3, 3, 4]  # 3 -> 6 -> 12 -> ...
    rng = np.random.default_rng(3)
    seeds = {v: [rng.random(N) < 0.75 for _ in range(3)] for v in ("a", "b", "c")}
    runs = [Run(v, s, TEST_SET, c) for v, cs in seeds.items() for s, c in enumerate(cs)]
    once, twice = V.decide(runs), V.decide(runs, looks=2)
    for other, c in once.comparisons.items():
        assert twice.comparisons[other].p_holm == pytest.approx(min(1.0, 2 * c.p_holm))
    assert twice.intervals == once.intervals  # the intervals stay 95%
    assert twice.test_name == "paired bootstrap over seeds and test images, Holm-corrected, Bonferroni over 2 looks"


def test_without_predictions_no_winner_is_claimed() -> None:
    summaries = V.with_verdict(summaries_for({"a": [np.ones(N, bool)], "b": [np.zeros(N, bool)]}), None)
    text = report.summary_sentences(summaries, [])
    assert "most accurate" not in text and "no paired test ran" in text
    assert {s["group"] for s in summaries} == {V.UNTESTED}


def test_wins_count_each_seed_once_and_ties_share_it() -> None:
    train = {"epochs": 1, "seconds": 1, "best_val_acc": 0, "images_per_sec": 1}
    rows = [
        report.make_row(v, seed, None, train, {"accuracy": acc, "macro_f1": acc}, "f")
        for v, seed, acc in [("a", 0, 0.9), ("b", 0, 0.9), ("c", 0, 0.5), ("a", 1, 0.7), ("b", 1, 0.8), ("c", 1, 0.1)]
    ]
    wins = report.count_wins(rows)
    assert wins == {"a": 0.5, "b": 1.5} and sum(wins.values()) == 2  # two seeds, two wins


# ---------------------------------------------------------------- --repeats auto planning


def tied_verdict(seeds: int) -> V.Verdict:
    correct = correct_with({"cnn2_7": (3, 2), "weak": (80, 0)})
    runs = [Run(v, s, TEST_SET, c) for v, c in correct.items() for s in range(seeds)]
    return V.decide(runs)


def test_the_planner_adds_seeds_only_to_the_tied_variants() -> None:
    verdict = tied_verdict(3)
    assert set(verdict.group) == {"best", "cnn2_7"}
    plan = V.plan_seeds(verdict, 5)
    assert set(plan.add) == {"best", "cnn2_7"} and plan.stop is None and plan.seeds == 5  # twice 3, within the budget
    assert V.plan_seeds(verdict, 10).seeds == 6


def test_the_planner_stops_at_the_budget_and_says_so() -> None:
    verdict = tied_verdict(5)
    assert V.plan_seeds(verdict, 5) == V.SeedPlan((), V.BUDGET)
    note = V.auto_repeats_note({"best": 3, "cnn2_7": 3, "weak": 5}, verdict, 5)
    assert note == (
        "added 2 seeds to best and cnn2_7; still tied after 5 seeds (the budget: 5 seeds per variant): best and cnn2_7"
    )
    with pytest.raises(ConfigError, match="max_seeds"):
        V.plan_seeds(verdict, 0)


def test_the_planner_stops_when_decided_on_enough_seeds() -> None:
    correct = correct_with({"far": (60, 0)})
    one_seed = V.decide(runs_of(correct))
    assert one_seed.decided and V.plan_seeds(one_seed, 5) == V.SeedPlan(("best", "far"), None, 3)  # McNemar: too few
    three = V.decide([Run(v, s, TEST_SET, c) for v, c in correct.items() for s in range(V.MIN_SEEDS)])
    assert V.plan_seeds(three, 5) == V.SeedPlan((), V.DECIDED)
    assert V.auto_repeats_note({"best": 1, "far": 1}, three, 5) == (
        "added 2 seeds to best and far; decided after 3 seeds: best beats every other variant"
    )
    assert V.auto_repeats_note({"best": 3, "far": 3}, three, 5).startswith("added no seeds; decided after 3 seeds")
    assert "stopped undecided after 3 seeds" in V.auto_repeats_note({}, tied_verdict(3), 5)  # time ran out first


def test_the_planner_stops_when_nothing_learned_and_a_lone_variant_after_its_first_seeds() -> None:
    correct = correct_with({"far": (60, 0)})
    runs = [Run(v, s, TEST_SET, c) for v, c in correct.items() for s in range(V.MIN_SEEDS)]
    idle = V.decide(runs, {"best": False, "far": False})
    assert idle.group == () and V.plan_seeds(idle, 5) == V.SeedPlan((), V.NOTHING_LEARNED)
    assert V.auto_repeats_note({"best": 3, "far": 3}, idle, 5) == (
        "added no seeds; no variant learned, so there is nothing to decide"
    )
    alone = V.decide([r for r in runs if r.variant == "far"])
    assert V.plan_seeds(alone, 5) == V.SeedPlan((), V.DECIDED)
    assert V.auto_repeats_note({"far": 1}, alone, 5) == "added 2 seeds to far; far is the only variant, after 3 seeds"


# ---------------------------------------------------------------- tables and the figure


def test_interval_and_group_columns_in_the_csv_and_the_markdown(tmp_path) -> None:
    correct = correct_with({"x": (15, 5), "far": (60, 0)})
    verdict = V.decide(runs_of(correct))
    rows = rows_for({v: [c] for v, c in correct.items()})
    summaries = V.with_verdict(report.aggregate_repeats(rows), verdict)
    frame = report.comparison_frame(summaries)
    by = frame.set_index("variant")
    assert (by.loc["best", "95% CI low"], by.loc["best", "95% CI high"]) == ("0.751", "0.841")
    assert list(by["group"]) == [V.BEST, V.WORSE, V.WORSE]  # x's p 0.041 stays below 0.05 after Holm (0.041 x 1)
    assert by.loc["far", "p vs best"] != "" and by.loc["best", "p vs best"] == ""
    assert by.loc["far", "test"] == "exact McNemar, Holm-corrected"
    md = report.comparison_markdown(summaries, "toy", 1)
    header = md.splitlines()[2]
    assert "| 95% CI |" in header and "| group |" in header
    assert "| 0.751\u20130.841 |" in md
    written = report.write_report(Storage(str(tmp_path)), "r", summaries, rows, CLASSES, "toy", 1)
    assert (
        "verdict" in written["images"]
        and "![test accuracy with 95% intervals](report/verdict.png)" in (tmp_path / "r" / "report.md").read_text()
    )
    csv = (tmp_path / "r" / "comparison.csv").read_text().splitlines()[0]
    assert "95% CI low,95% CI high,group" in csv


def test_the_verdict_figure_is_drawn_for_the_ui_width() -> None:
    correct = correct_with({f"v{i}": (10 + 5 * i, 2) for i in range(10)})
    summaries = V.with_verdict(summaries_for({v: [c] for v, c in correct.items()}), V.decide(runs_of(correct)))
    fig = report.plot_verdict(summaries)
    assert fig.get_size_inches()[0] == pytest.approx(plots.UI_WIDTH_IN)
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels[0] == "best" and len(labels) == 11
    plt.close(fig)
    png = plots.figure_to_png(report.plot_verdict(summaries), dpi=plots.UI_DPI)
    from PIL import Image

    assert Image.open(io.BytesIO(png)).width <= plots.UI_WIDTH + 10
    with pytest.raises(ConfigError, match="no variant has an accuracy interval"):
        report.plot_verdict(V.with_verdict(summaries, None))


@pytest.mark.parametrize(
    "pvalues",
    [[0.01, 0.04, 0.03, 0.2], [0.5], [0.001, 0.001, 0.9], [0.3, 0.02, 0.6, 0.04, 0.011], []],
)
def test_holm_matches_statsmodels(pvalues: list[float]) -> None:
    from statsmodels.stats.multitest import multipletests

    expected = list(multipletests(pvalues, method="holm")[1]) if pvalues else []
    assert V.holm(pvalues) == pytest.approx(expected)
