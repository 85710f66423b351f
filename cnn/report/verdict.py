"""The verdict of a comparison: each variant's accuracy interval, paired tests against the best, the tied-for-best group.

Which test runs when (docs/architecture.md, "The verdict"):
- one seed per variant: an exact McNemar test on the images where the two variants disagree (statsmodels), and a
  Wilson interval per variant; the runs are fixed, so only the test set's sampling noise is tested;
- repeats: a paired two-level bootstrap, resampling each variant's seeds and then the test images (the same images for
  every variant, which pairs them): each difference gets a 95% percentile interval, P(A > B) and a two-sided p, and
  each variant an interval, so both the training noise and the test set's are in them;
- Holm's correction over the comparisons with the best when there are several.
The best is the learned variant with the highest accuracy; every learned variant not significantly worse is tied with
it, and a lone winner is named only when it beats every other one. Calibration: docs/verdict.md (benchmarks/verdict.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.proportion import proportion_confint

from cnn.errors import ConfigError
from cnn.predictions import Run
from cnn.testset import TestSet
from cnn.report.metrics import NOT_LEARNED
from cnn.report.rows import Row

ALPHA = 0.05
REPLICATES = 2000  # bootstrap replicates: p-values to 1/1000, enough for Holm over ten comparisons
MCNEMAR = "exact McNemar"
BOOTSTRAP = "paired bootstrap over seeds and test images"
# a row's group: the lone winner, tied for best, significantly worse than the best, not learned, or not tested
BEST, TIED, WORSE, UNTESTED = "best", "tied", "worse", "untested"
DECIDED, BUDGET, NOTHING_LEARNED = "decided", "budget", "nothing learned"  # why `plan_seeds` adds no seed
# seeds a variant before `--repeats auto` trusts a verdict: with one seed the exact McNemar test leaves the seeds' own
# noise out, and the bootstrap at two seeds is too narrow on a small set (docs/verdict.md, benchmarks/verdict.py)
MIN_SEEDS = 3


@dataclass(frozen=True)
class Comparison:
    """The best variant against `other`: accuracy difference (best minus other), its test, Holm-adjusted p."""

    other: str
    diff: float
    p: float
    p_holm: float
    low: float | None = None  # 95% interval of the difference (bootstrap only)
    high: float | None = None
    prob_better: float | None = None  # P(best > other) over the bootstrap replicates, ties counted half


@dataclass(frozen=True)
class Verdict:
    """What the paired tests decided for the variants whose runs share one test set."""

    method: str  # MCNEMAR or BOOTSTRAP
    alpha: float
    n_images: int
    best: str | None
    group: tuple[str, ...]  # tied for best, the best first; one name when it beats every other variant
    accuracy: dict[str, float]
    intervals: dict[str, tuple[float, float]]
    comparisons: dict[str, Comparison]  # with the best, by the other variant
    seeds: dict[str, int]
    not_learned: tuple[str, ...] = ()
    looks: int = 1  # how many times --repeats auto may test the data (its p-values are Bonferroni-corrected over them)

    @property
    def holm(self) -> bool:
        """Whether Holm's correction applied (more than one comparison with the best)."""
        return len(self.comparisons) > 1

    @property
    def test_name(self) -> str:
        """ "exact McNemar, Holm-corrected" or "paired bootstrap over seeds and test images, Bonferroni over 2 looks"."""
        return (
            self.method
            + (", Holm-corrected" if self.holm else "")
            + (f", Bonferroni over {self.looks} looks" if self.looks > 1 else "")
        )

    @property
    def decided(self) -> bool:
        """Whether one variant beats every other learned one (or is the only one)."""
        return len(self.group) == 1


def pair_runs(runs: Iterable[Run]) -> tuple[TestSet, dict[str, np.ndarray]]:
    """The runs' common test set and each variant's (seeds, images) correctness matrix, in order of first appearance;
    runs on different test sets raise ConfigError: their images are not the same, so nothing pairs them."""
    runs = list(runs)
    if not runs:
        raise ConfigError("runs", "no run with stored predictions to test")
    test_set = runs[0].test_set
    for run in runs:
        if run.test_set != test_set:
            raise ConfigError(
                "test_set",
                f"{run.variant} (seed {run.seed}) was scored on {run.test_set.describe()}, {runs[0].variant} on "
                f"{test_set.describe()}; runs on different test sets cannot be paired",
                allowed="runs scored on the same test images",
            )
        if np.shape(run.correct) != (test_set.size,):
            raise ConfigError("correct", f"{run.variant} has {np.size(run.correct)} results for {test_set.size} images")
    grouped: dict[str, list[np.ndarray]] = {}
    for run in runs:
        grouped.setdefault(run.variant, []).append(np.asarray(run.correct, dtype=bool))
    return test_set, {v: np.stack(rows) for v, rows in grouped.items()}


def wilson_interval(correct: int, n: int, alpha: float = ALPHA) -> tuple[float, float]:
    """Wilson score interval of an accuracy of `correct` out of `n` (statsmodels proportion_confint)."""
    low, high = proportion_confint(correct, n, alpha=alpha, method="wilson")
    return float(low), float(high)


def mcnemar_p(correct_a: np.ndarray, correct_b: np.ndarray) -> float:
    """Exact McNemar p-value (statsmodels) of two classifiers' per-image correctness on the same images."""
    a, b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    table = [[int(np.sum(a & b)), int(np.sum(a & ~b))], [int(np.sum(~a & b)), int(np.sum(~a & ~b))]]
    return float(mcnemar(table, exact=True).pvalue)


def bootstrap_accuracies(
    matrices: Sequence[np.ndarray], replicates: int = REPLICATES, seed: int = 0, chunk: int = 250
) -> np.ndarray:
    """(replicates, variants) accuracies: each replicate draws every variant's seeds with replacement (independently:
    different networks), then the test images with replacement (the same draw for all variants: the pairing).

    Written by hand: scipy.stats.bootstrap resamples one level of observations, and seeds and images are two crossed
    levels here. Vectorised over replicates in chunks (image counts as a (chunk, images) matrix)."""
    if not matrices:
        raise ConfigError("matrices", "no variant to resample")
    n = matrices[0].shape[1]
    rng = np.random.default_rng(seed)
    out = np.empty((replicates, len(matrices)))
    for start in range(0, replicates, chunk):
        size = min(chunk, replicates - start)
        images = rng.multinomial(n, np.full(n, 1.0 / n), size=size).astype(np.float64)
        for j, matrix in enumerate(matrices):
            seeds = matrix.shape[0]
            weights = rng.multinomial(seeds, np.full(seeds, 1.0 / seeds), size=size)
            per_seed = images @ matrix.T.astype(np.float64)  # correct answers of each seed on the drawn images
            out[start : start + size, j] = (weights * per_seed).sum(axis=1) / (seeds * n)
    return out


def bootstrap_comparison(acc_a: np.ndarray, acc_b: np.ndarray, alpha: float = ALPHA) -> dict[str, float]:
    """A - B over paired bootstrap replicates: the difference's percentile interval, a two-sided p (twice the smaller
    share of replicates on either side of 0, +1 corrected, so never 0) and P(A > B) (ties counted half)."""
    diff = np.asarray(acc_a) - np.asarray(acc_b)
    count = len(diff)
    low, high = np.quantile(diff, [alpha / 2, 1 - alpha / 2])
    tail = min(int(np.sum(diff <= 0)), int(np.sum(diff >= 0)))
    return {
        "low": float(low),
        "high": float(high),
        "p": float(min(1.0, 2 * (tail + 1) / (count + 1))),
        "prob_better": float(np.mean(diff > 0) + 0.5 * np.mean(diff == 0)),
    }


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values, in the order given: the k-th smallest times (n - k + 1), made non-decreasing, capped at 1.

    By hand, and checked against statsmodels' multipletests(method="holm") in tests/test_verdict.py: that function
    runs a full gc.collect() on every call, which in a process holding torch and Prefect costs far more than the
    correction, and the calibration benchmark calls it once per trial."""
    p = np.asarray(pvalues, dtype=float)
    order = np.argsort(p, kind="stable")
    stepped = np.maximum.accumulate(p[order] * np.arange(len(p), 0, -1))
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(stepped, 1.0)
    return [float(x) for x in adjusted]


def decide(
    runs: Iterable[Run],
    learned: Mapping[str, bool] | None = None,
    *,
    alpha: float = ALPHA,
    replicates: int = REPLICATES,
    seed: int = 0,
    looks: int = 1,
) -> Verdict:
    """The verdict over `runs` (one test set): McNemar when every variant has one run, else the paired bootstrap;
    Holm over the comparisons with the best, Bonferroni over `looks` (the times --repeats auto may test the data:
    `looks_of`); `learned[v]` False keeps v out of the best group (and the tests)."""
    test_set, matrices = pair_runs(runs)
    learned = learned or {}
    names = list(matrices)
    accuracy = {v: float(m.mean()) for v, m in matrices.items()}
    candidates = [v for v in names if learned.get(v, True) is not False]
    one_seed = all(m.shape[0] == 1 for m in matrices.values())
    replicas = None if one_seed else bootstrap_accuracies([matrices[v] for v in names], replicates, seed)
    best = max(candidates, key=lambda v: accuracy[v]) if candidates else None
    others = [v for v in candidates if v != best]
    tests = {o: _test_pair(names, matrices, replicas, best, o, alpha) for o in others}
    adjusted = [min(1.0, p * looks) for p in holm([tests[o]["p"] for o in others])]
    comparisons = {
        o: Comparison(other=o, diff=accuracy[best] - accuracy[o], p_holm=p, **tests[o])
        for o, p in zip(others, adjusted)
    }
    tied = sorted((o for o in others if comparisons[o].p_holm >= alpha), key=lambda v: -accuracy[v])
    return Verdict(
        method=MCNEMAR if replicas is None else BOOTSTRAP,
        alpha=alpha,
        n_images=test_set.size,
        best=best,
        group=(best, *tied) if best else (),
        accuracy=accuracy,
        intervals=_intervals(names, matrices, replicas, alpha),
        comparisons=comparisons,
        seeds={v: int(m.shape[0]) for v, m in matrices.items()},
        not_learned=tuple(v for v in names if v not in candidates),
        looks=looks,
    )


def _intervals(
    names: Sequence[str], matrices: Mapping[str, np.ndarray], replicas: np.ndarray | None, alpha: float
) -> dict[str, tuple[float, float]]:
    """Each variant's accuracy interval: Wilson on one seed, else the bootstrap replicates' percentiles."""
    if replicas is None:
        return {v: wilson_interval(int(matrices[v].sum()), matrices[v].shape[1], alpha) for v in names}
    bounds = np.quantile(replicas, [alpha / 2, 1 - alpha / 2], axis=0)
    return {v: (float(bounds[0, j]), float(bounds[1, j])) for j, v in enumerate(names)}


def _test_pair(
    names: Sequence[str],
    matrices: Mapping[str, np.ndarray],
    replicas: np.ndarray | None,
    best: str,
    other: str,
    alpha: float,
) -> dict[str, float]:
    """The best against `other`: exact McNemar on one seed, else the bootstrap comparison of their replicates."""
    if replicas is None:
        return {"p": mcnemar_p(matrices[best][0], matrices[other][0])}
    return bootstrap_comparison(replicas[:, names.index(best)], replicas[:, names.index(other)], alpha)


def group_of(verdict: Verdict | None, variant: str) -> str:
    """A variant's group in the verdict: best, tied best, worse, not learned, or untested (no usable predictions)."""
    if verdict is None or variant not in verdict.accuracy:
        return UNTESTED
    if variant in verdict.not_learned:
        return NOT_LEARNED
    if variant in verdict.group:
        return BEST if verdict.decided else TIED
    return WORSE


def with_verdict(summaries: Sequence[Row], verdict: Verdict | None) -> list[dict[str, Any]]:
    """The summaries with the verdict's fields: acc_low and acc_high (the accuracy's interval), group, and against the
    best: diff_vs_best (best minus this), diff_low and diff_high (bootstrap), prob_best_better, p_vs_best (Holm);
    test and n_test (which test, on how many images)."""
    out = []
    for s in summaries:
        row = dict(s)
        variant = str(row["variant"])
        tested = verdict is not None and variant in verdict.accuracy
        if row.get("status", "ok") == "ok":
            low, high = verdict.intervals[variant] if tested else (None, None)
            c = verdict.comparisons.get(variant) if tested else None
            row.update(
                acc_low=low,
                acc_high=high,
                group=group_of(verdict, variant),
                diff_vs_best=c.diff if c else None,
                diff_low=c.low if c else None,
                diff_high=c.high if c else None,
                prob_best_better=c.prob_better if c else None,
                p_vs_best=c.p_holm if c else None,
                test=verdict.test_name if tested else None,
                n_test=verdict.n_images if tested else None,
            )
        out.append(row)
    return out


def first_round(max_seeds: int, min_seeds: int = MIN_SEEDS) -> int:
    """The seeds a variant trains before --repeats auto's first look: `min_seeds`, at most the budget."""
    return min(min_seeds, max_seeds)


def looks_of(max_seeds: int, min_seeds: int = MIN_SEEDS) -> int:
    """How many times --repeats auto may test the data: at `min_seeds` a variant, then at each doubling up to
    `max_seeds` (plan_seeds). Each look is one more chance of a false alarm, so each tests at ALPHA / looks (Bonferroni;
    the false-alarm rate of auto with it: docs/verdict.md, benchmarks/verdict.py)."""
    seeds, count = first_round(max_seeds, min_seeds), 1
    while seeds < max_seeds:
        seeds, count = min(max_seeds, 2 * seeds), count + 1
    return count


@dataclass(frozen=True)
class SeedPlan:
    """What `--repeats auto` does next: train each of `add` up to `seeds` seeds, or stop (`stop` says why)."""

    add: tuple[str, ...]
    stop: str | None  # DECIDED, BUDGET, NOTHING_LEARNED, or None while seeds are added
    seeds: int = 0  # the seeds each variant in `add` has after this round


def plan_seeds(verdict: Verdict, max_seeds: int, min_seeds: int = MIN_SEEDS) -> SeedPlan:
    """The learned variants below `min_seeds` seeds up to `min_seeds` (fewer leave the seeds' own noise out of the
    tests), then the variants still tied for best (the best included) up to twice the group's seeds, at most
    `max_seeds`; none once one variant beats every other one on `min_seeds` seeds or more (DECIDED), every tied
    variant has `max_seeds` (BUDGET) or no variant learned (NOTHING_LEARNED). Doubling keeps the looks at the data
    few (each look is one more chance of a false alarm) and trains each round's seeds as one batched model."""
    if isinstance(max_seeds, bool) or not isinstance(max_seeds, int) or max_seeds < 1:
        raise ConfigError("max_seeds", f"must be a whole number of seeds >= 1, got {max_seeds!r}", allowed="1, 2, ...")
    learned = [v for v in verdict.accuracy if v not in verdict.not_learned]
    floor = first_round(max_seeds, min_seeds)
    few = tuple(v for v in learned if verdict.seeds[v] < floor)
    if few:
        return SeedPlan(few, None, floor)
    if not verdict.group:  # no variant learned: more seeds of chance-level runs decide nothing
        return SeedPlan((), NOTHING_LEARNED)
    if verdict.decided:
        return SeedPlan((), DECIDED)
    target = min(max_seeds, 2 * max(verdict.seeds.get(v, 0) for v in verdict.group))
    add = tuple(v for v in verdict.group if verdict.seeds.get(v, 0) < target)
    return SeedPlan(add, None, target) if add else SeedPlan((), BUDGET)


def auto_repeats_note(
    start_seeds: Mapping[str, int], verdict: Verdict, max_seeds: int, min_seeds: int = MIN_SEEDS
) -> str:
    """What `--repeats auto` did: "added 2 seeds to cnn2_7 and lenet5; still tied after 5 seeds (the budget: 5 seeds
    per variant): cnn2_7 and lenet5" (or "decided after ...", or "stopped undecided" when time ran out first)."""
    added: dict[int, list[str]] = {}
    for variant, seeds in verdict.seeds.items():
        extra = seeds - int(start_seeds.get(variant, 0))
        if extra > 0:
            added.setdefault(extra, []).append(variant)
    parts = [f"{n} seed{'s' * (n != 1)} to {_and(names)}" for n, names in sorted(added.items(), reverse=True)]
    did = f"added {', '.join(parts)}" if parts else "added no seeds"
    most = max((verdict.seeds.get(v, 0) for v in verdict.group), default=0)
    after = f"after {most} seed{'s' * (most != 1)}"
    stop = plan_seeds(verdict, max_seeds, min_seeds).stop
    if stop == NOTHING_LEARNED:
        return f"{did}; no variant learned, so there is nothing to decide"
    if stop == DECIDED and len(verdict.accuracy) == 1:
        return f"{did}; {verdict.best} is the only variant, {after}"
    if stop == DECIDED:
        return f"{did}; decided {after}: {verdict.best} beats every other variant"
    if stop == BUDGET:
        return f"{did}; still tied {after} (the budget: {max_seeds} seeds per variant): {_and(list(verdict.group))}"
    return f"{did}; stopped undecided {after}: {_and(list(verdict.group))}"


def _and(names: Sequence[str]) -> str:
    """ "a", "a and b", "a, b and c"."""
    names = sorted(names)
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
