"""Is the verdict calibrated? The false-alarm rate and the power of the comparison's paired tests on trained networks.

False alarm: cnn2_5 against generic_0 (the same network, 7,090 parameters) under different seeds must be called tied
in at least 95% of trials. Power: two variants that really differ must be told apart, the better one named. Each
check runs for the one-seed test (exact McNemar) and for the repeats test (the paired bootstrap, `--repeat-seeds` a
variant), both through cnn.report.verdict.decide as a comparison runs it.

A pool of seeds is trained once per (dataset, variant) with the default recipe (cnn.pipeline.run_variant, as a
comparison with no options; the predictions read back from each run's predictions.npy), and every trial draws its
runs from the pools, never the same seed on both sides (cnn2_5 and generic_0 build identical networks from one seed).
Trials that share a trained network are not independent, so a rate's interval (Wilson, over trials) is narrower than
it should be; a larger pool brings the trials closer to independent. Figures: docs/verdict.md. One module: the pools,
the trials, the rates and their page are one benchmark, read top to bottom.

    python -m benchmarks.verdict [--pool 10] [--trials 40] [--json benchmarks/results/verdict.json]
    python -m benchmarks.render   # docs/verdict.md from the JSON
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from importlib import metadata
from typing import Any

import numpy as np
import torch

from benchmarks.datasets import register_distorted_digits
from benchmarks.record import environment, output_path, write_result
from cnn import pipeline
from cnn.step_inputs import DatasetRef, get_dataset
from cnn.checks import AUTO
from cnn.checks import option_type
from cnn.params import RunParams, check_of, default_of
from cnn.predictions import Run, load_runs
from cnn.testset import TestSet
from cnn.report import make_row
from cnn.report.verdict import (
    ALPHA,
    MIN_SEEDS,
    REPLICATES,
    Verdict,
    decide,
    first_round,
    looks_of,
    plan_seeds,
    wilson_interval,
)
from cnn.storage import open_storage

FALSE_ALARM, POWER = "false alarm", "power"
REQUIRED = {FALSE_ALARM: 0.95}  # the bar: identical networks called tied in at least 95% of trials
DEFAULT_MAX_SEEDS = default_of("max_seeds")
ONE_SEED, REPEATS, AUTO_SEEDS = "one seed", "repeats", "auto"  # AUTO_SEEDS: --repeats auto's rounds, up to a budget


@dataclass(frozen=True)
class Check:
    """One calibration check: variants `a` and `b` on `dataset`; `kind` says what a trial should find."""

    kind: str  # FALSE_ALARM: a and b are the same network, a trial should call them tied; POWER: they differ
    dataset: str
    a: str
    b: str


CHECKS = (
    Check(FALSE_ALARM, "digits", "cnn2_5", "generic_0"),
    Check(FALSE_ALARM, "distorted-digits-small", "cnn2_5", "generic_0"),
    Check(POWER, "digits", "lenet1", "lenet5_dropout"),
    Check(POWER, "distorted-digits-small", "cnn2_5", "lenet5"),
)


def train_pool(
    dataset: str,
    variant: str,
    seeds: Sequence[int],
    device: str = "cpu",
    *,
    epochs: int | str = AUTO,
    max_train: int | None = None,
    on_run: Callable[[str, str, int, dict[str, Any]], None] | None = None,
) -> dict[int, dict[str, Any]]:
    """Per seed: the run's per-image correctness (read back from its predictions.npy), accuracy and seconds; `epochs`
    and `max_train` only shrink the benchmark for its test (the recipe's rules and every image otherwise)."""
    ref = DatasetRef(name=dataset, download=False, max_train=max_train)
    data = get_dataset(ref)
    pool = {}
    for seed in seeds:
        url = f"memory://verdict-{dataset}-{variant}-{seed}-{epochs}-{max_train}"
        store = open_storage(url)
        start = time.perf_counter()
        config = RunParams(
            dataset=dataset, max_train=max_train or 0, device=device, epochs=epochs, storage=url, run="bench"
        )
        out = pipeline.run_variant(config, variant, seed=seed, features=False)
        row = make_row(variant, seed, out["lr"], out["train"], out["eval"], out["train"]["folder"])
        (run,), _ = load_runs(
            store, [(row, out["train"]["folder_rel"])], data.test_set(), data.test_y.numpy(), data.num_classes
        )
        pool[seed] = {
            "run": run,
            "accuracy": float(out["eval"]["accuracy"]),
            "seconds": time.perf_counter() - start,
            "learned": bool(row["learned"]),
        }
        if on_run:
            on_run(dataset, variant, seed, pool[seed])
    return pool


def draw_trials(
    pool_seeds: Sequence[int], per_side: int, trials: int, seed: int = 0
) -> list[tuple[tuple[int, ...], ...]]:
    """`trials` (a seeds, b seeds) draws of `per_side` seeds each from the pool, no seed on both sides, no draw twice
    (fewer when the pool has fewer distinct draws)."""
    rng = np.random.default_rng(seed)
    seeds = list(pool_seeds)
    if per_side == 1:
        every = [((a,), (b,)) for a, b in itertools.permutations(seeds, 2)]
        picked = rng.permutation(len(every))[:trials]
        return [every[i] for i in picked]
    drawn: dict[tuple[tuple[int, ...], ...], None] = {}
    for _ in range(trials * 50):
        if len(drawn) == trials:
            break
        order = [int(s) for s in rng.permutation(seeds)[: 2 * per_side]]
        drawn.setdefault((tuple(sorted(order[:per_side])), tuple(sorted(order[per_side:]))), None)
    return list(drawn)


def _auto_span(r: dict[str, Any]) -> str:
    """ "3, then up to 5": the seeds an auto trial starts with and its budget."""
    return f"{first_round(r['seeds_per_side'])}, then up to {r['seeds_per_side']}"


def trial_label(r: dict[str, Any]) -> str:
    """ "one seed (1 a side)", "repeats (3 a side)", "auto (3, then up to 5 a side)"."""
    if r["test"] == AUTO_SEEDS:
        return f"auto ({_auto_span(r)} a side)"
    return f"{r['test']} ({r['seeds_per_side']} a side)"


def auto_verdict(drawn: dict[str, list[Run]], max_seeds: int, replicates: int, seed: int) -> Verdict:
    """The verdict `--repeats auto` reaches on these runs: MIN_SEEDS a variant first, then the rounds plan_seeds asks
    for, each taking the next of a variant's drawn runs, until it stops."""
    have = dict.fromkeys(drawn, first_round(max_seeds))
    while True:
        runs = [r for v, runs in drawn.items() for r in runs[: have[v]]]
        verdict = decide(runs, replicates=replicates, seed=seed, looks=looks_of(max_seeds))
        plan = plan_seeds(verdict, max_seeds)
        if plan.stop:
            return verdict
        have.update(dict.fromkeys(plan.add, plan.seeds))


def run_check(
    check: Check,
    pools: dict[str, dict[int, dict[str, Any]]],
    per_side: int,
    trials: int,
    replicates: int = REPLICATES,
    auto: bool = False,
) -> dict[str, Any]:
    """The check's trials at `per_side` seeds a variant (with `auto`: as --repeats auto trains them, up to `per_side`):
    how often the verdict called the pair tied, told them apart (naming the variant with the higher pool mean), or
    named the other one; the rate that matters, its Wilson interval."""
    a, b = pools[check.a], pools[check.b]
    better = check.a if _mean(a) >= _mean(b) else check.b
    counts = {"tied": 0, "apart": 0, "wrong": 0}
    for trial, (seeds_a, seeds_b) in enumerate(draw_trials(sorted(set(a) & set(b)), per_side, trials)):
        drawn = {check.a: [a[s]["run"] for s in seeds_a], check.b: [b[s]["run"] for s in seeds_b]}
        verdict = (
            auto_verdict(drawn, per_side, replicates, trial)
            if auto
            else decide([r for runs in drawn.values() for r in runs], replicates=replicates, seed=trial)
        )
        outcome = "tied" if not verdict.decided else ("apart" if verdict.best == better else "wrong")
        counts[outcome] += 1
    done = sum(counts.values())
    hits = counts["tied"] if check.kind == FALSE_ALARM else counts["apart"]
    low, high = wilson_interval(hits, done)
    required = REQUIRED.get(check.kind)
    return {
        **asdict(check),
        "test": AUTO_SEEDS if auto else (ONE_SEED if per_side == 1 else REPEATS),
        "seeds_per_side": per_side,
        "trials": done,
        **counts,
        "rate": hits / done if done else None,
        "rate_low": low,
        "rate_high": high,
        "better": better,
        "required": required,
        "passes": None if required is None else hits / done >= required,
    }


def _mean(pool: dict[int, dict[str, Any]]) -> float:
    """A pool's mean test accuracy."""
    return statistics.fmean(r["accuracy"] for r in pool.values())


def bench_verdict(
    checks: Sequence[Check] = CHECKS,
    pool: int = 10,
    trials: int = 40,
    repeat_seeds: Sequence[int] = (3,),
    device: str = "cpu",
    replicates: int = REPLICATES,
    *,
    auto_seeds: int | None = None,
    epochs: int | str = AUTO,
    max_train: int | None = None,
    reuse: dict[str, Any] | None = None,
    command: str = "python -m benchmarks.verdict",
    on_run: Callable[[str, str, int, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train every pool the checks need (or take them from `reuse`, an earlier result), then run every check for one
    seed, for each of `repeat_seeds` seeds a variant, and as --repeats auto trains them up to `auto_seeds` a variant
    (default: max_seeds' default, at most half the pool, since no seed is drawn for both sides; 0: none)."""
    env = {
        **environment(torch.device(device)),
        **{name: metadata.version(name) for name in ("numpy", "scipy", "statsmodels")},
    }
    start = time.perf_counter()
    if reuse is not None:
        pools, trained_s = pools_from_json(reuse["pools"]), reuse["settings"]["train_seconds"]
        pool, epochs, max_train = reuse["settings"]["pool"], reuse["settings"]["epochs"], reuse["settings"]["max_train"]
    else:
        if any(c.dataset.startswith("distorted-digits") for c in checks):
            register_distorted_digits()
        pools = {}
        for check in checks:
            for variant in (check.a, check.b):
                if variant not in pools.setdefault(check.dataset, {}):
                    pools[check.dataset][variant] = train_pool(
                        check.dataset, variant, range(pool), device, epochs=epochs, max_train=max_train, on_run=on_run
                    )
        trained_s = time.perf_counter() - start
    if auto_seeds is None:
        auto_seeds = min(DEFAULT_MAX_SEEDS, pool // 2)
    results = [
        run_check(c, pools[c.dataset], per_side, trials, replicates) for c in checks for per_side in (1, *repeat_seeds)
    ]
    if auto_seeds >= 2:
        results += [run_check(c, pools[c.dataset], auto_seeds, trials, replicates, auto=True) for c in checks]
    return {
        "environment": {**env, "load_avg_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None},
        "command": command,
        "settings": {
            "pool": pool,
            "trials": trials,
            "repeat_seeds": list(repeat_seeds),
            "auto_seeds": auto_seeds,
            "pools_from": (reuse["settings"].get("pools_from") or reuse["command"]) if reuse else None,
            "pools_environment": (reuse["settings"].get("pools_environment") or reuse["environment"]) if reuse else env,
            "replicates": replicates,
            "alpha": ALPHA,
            "epochs": epochs,
            "max_train": max_train,
            "train_seconds": trained_s,
            "trials_seconds": time.perf_counter() - start - (0 if reuse else trained_s),
        },
        "pools": pools_to_json(pools),
        "checks": results,
    }


def pools_to_json(pools: dict[str, dict[str, dict[int, dict[str, Any]]]]) -> dict[str, Any]:
    """The pools as JSON: per (dataset, variant), each seed's accuracy, seconds and per-image correctness ("0110...")."""
    return {
        dataset: {
            variant: {
                "test_set": next(iter(p.values()))["run"].test_set.to_dict(),
                "seeds": {
                    str(seed): {
                        "accuracy": r["accuracy"],
                        "learned": r["learned"],
                        "seconds": round(r["seconds"], 2),
                        "correct": "".join("1" if c else "0" for c in r["run"].correct),
                    }
                    for seed, r in sorted(p.items())
                },
            }
            for variant, p in variants.items()
        }
        for dataset, variants in pools.items()
    }


def pools_from_json(data: dict[str, Any]) -> dict[str, dict[str, dict[int, dict[str, Any]]]]:
    """The pools of an earlier result, for rerunning the trials without training again."""
    pools: dict[str, dict[str, dict[int, dict[str, Any]]]] = {}
    for dataset, variants in data.items():
        for variant, p in variants.items():
            test_set = TestSet(**p["test_set"])
            pools.setdefault(dataset, {})[variant] = {
                int(seed): {
                    **{k: r[k] for k in ("accuracy", "learned", "seconds")},
                    "run": Run(
                        variant, int(seed), test_set, np.frombuffer(r["correct"].encode(), np.uint8) == ord("1")
                    ),
                }
                for seed, r in p["seeds"].items()
            }
    return pools


def format_table(result: dict[str, Any]) -> str:
    """One line per (check, test): the pair, trials, outcomes and the rate with its interval."""
    head = f"{'check':<12} {'dataset':<23} {'a':<10} {'b':<15} {'test':<30} {'trials':>6} {'tied':>5} {'apart':>5} {'wrong':>5}  rate (95% CI)"
    lines = [head, "-" * len(head)]
    for r in result["checks"]:
        verdict = "" if r["passes"] is None else ("  pass" if r["passes"] else "  FAIL")
        lines.append(
            f"{r['kind']:<12} {r['dataset']:<23} {r['a']:<10} {r['b']:<15} {trial_label(r):<30} {r['trials']:>6} "
            f"{r['tied']:>5} {r['apart']:>5} {r['wrong']:>5}  {r['rate']:.3f} ({r['rate_low']:.3f}-{r['rate_high']:.3f}){verdict}"
        )
    return "\n".join(lines)


def render_markdown(result: dict[str, Any], source: str) -> str:
    """docs/verdict.md from a result: how it was measured, the pools' accuracies, the rates."""
    s, env = result["settings"], result["environment"]
    trained_env = s.get("pools_environment") or env
    pools = []
    for dataset, variants in result["pools"].items():
        for variant, p in variants.items():
            acc = [r["accuracy"] for r in p["seeds"].values()]
            pools.append(
                f"| {dataset} | {variant} | {len(acc)} | {p['test_set']['size']} | {statistics.fmean(acc):.4f} | "
                f"{statistics.pstdev(acc):.4f} | {min(acc):.4f}-{max(acc):.4f} |"
            )
    rows = []
    for r in result["checks"]:
        what = "called tied" if r["kind"] == FALSE_ALARM else f"told apart ({r['better']} named)"
        bar = "" if r["required"] is None else f" (needs {r['required']:.0%}: {'pass' if r['passes'] else 'FAIL'})"
        rows.append(
            f"| {r['kind']} | {r['dataset']} | {r['a']} vs {r['b']} | {trial_label(r)} | "
            f"{r['trials']} | {r['tied']} / {r['apart']} / {r['wrong']} | {what}: {r['rate']:.3f} "
            f"({r['rate_low']:.3f}-{r['rate_high']:.3f}){bar} |"
        )
    return "\n".join(
        [
            "# Is the verdict calibrated?",
            "",
            "The comparison names a lone winner only when the paired tests say it beats every other variant "
            "(cnn/report/verdict.py). This page measures how often those tests raise a false alarm (the same network "
            "under two seeds called different) and how often they tell apart two variants that really differ. "
            f"Rendered from `{source}` (written by `{result['command']}`"
            + (f", on the pools trained by `{s['pools_from']}`" if s.get("pools_from") else "")
            + "); do not edit by hand.",
            "",
            f"Each trial draws its runs from a pool of {s['pool']} trained seeds per variant (the default recipe, as "
            f"`cnn-lab compare` trains them), never one seed on both sides. One seed: exact McNemar on the images "
            f"where the two runs disagree. Repeats: {' or '.join(map(str, s['repeat_seeds']))} seeds a side, the paired "
            "bootstrap over seeds "
            f"and test images ({s['replicates']} replicates)."
            + (
                f" Auto: as `--repeats auto`, the default, trains them: {MIN_SEEDS} seeds a side, and while the pair "
                f"is tied twice as many, up to {s['auto_seeds']} a side (the default budget is "
                f"{DEFAULT_MAX_SEEDS}; a pool of {s['pool']} holds {s['pool'] // 2} a side "
                "with no seed on both), the paired bootstrap at each look."
                if s.get("auto_seeds")
                else ""
            )
            + f" Significance level {s['alpha']}. Trials that share a "
            "trained network are not independent, so the intervals (Wilson, over trials) are too narrow.",
            "",
            "| check | dataset | pair | test | trials | tied / apart / wrong | rate (95% CI) |",
            "|---|---|---|---|---|---|---|",
            *rows,
            "",
            *_reading(result["checks"]),
            "",
            "The pools (test accuracy over the pool's seeds):",
            "",
            "| dataset | variant | seeds | test images | mean | std | range |",
            "|---|---|---|---|---|---|---|",
            *pools,
            "",
            f"Measured on {env.get('device_name')} ({env.get('cpu_count')} CPUs, {env.get('threads')} torch threads, "
            f"load average {', '.join(f'{x:.1f}' for x in env.get('load_avg') or [])} at the start), torch "
            f"{env.get('torch')}, numpy {env.get('numpy')}, scipy {env.get('scipy')}, statsmodels "
            f"{env.get('statsmodels')}; training the pools took {s['train_seconds'] / 60:.1f} minutes (load average "
            f"{', '.join(f'{x:.1f}' for x in trained_env.get('load_avg') or [])} at their start, "
            f"{trained_env.get('threads')} torch threads).",
            "",
        ]
    )


def readme_label(r: dict[str, Any]) -> str:
    """How the README names a test's seeds: "1 (`--repeats 1`)", "3", "`--repeats auto` (the default): 3, then up to 5"."""
    if r["test"] == AUTO_SEEDS:
        return f"`--repeats auto` (the default): {_auto_span(r)}"
    return f"{r['seeds_per_side']}" + (" (`--repeats 1`)" if r["test"] == ONE_SEED else "")


def readme_rates(result: dict[str, Any]) -> str:
    """The README's short table: each check's rate per dataset for each test (one seed, fixed repeats, auto), the
    pairs, and where the rest is."""
    checks = result["checks"]
    datasets = list(dict.fromkeys(r["dataset"] for r in checks))
    rate = {(r["kind"], readme_label(r), r["dataset"]): r["rate"] for r in checks}
    what = {
        FALSE_ALARM: f"identical networks called tied (needs {REQUIRED[FALSE_ALARM]:.0%})",
        POWER: "different variants told apart",
    }
    rows = [
        f"| {what[kind]} | {label} | "
        + " | ".join("" if rate.get((kind, label, d)) is None else f"{rate[(kind, label, d)]:.3f}" for d in datasets)
        + " |"
        for kind in (FALSE_ALARM, POWER)
        for label in dict.fromkeys(readme_label(r) for r in checks if r["kind"] == kind)
    ]
    pairs = {
        kind: ", ".join(sorted({f"{r['a']} vs {r['b']}" for r in checks if r["kind"] == kind}))
        for kind in (FALSE_ALARM, POWER)
    }
    trials = min(r["trials"] for r in checks)
    return "\n".join(
        [
            f"| check | seeds a variant | {' | '.join(datasets)} |",
            "|---|---|" + "---|" * len(datasets),
            *rows,
            "",
            f"At least {trials} trials a cell; identical: {pairs[FALSE_ALARM]}; different: {pairs[POWER]}. Measured "
            "by `cnn-lab bench --verdict`; the method, the pools and the exact commands: "
            "[docs/verdict.md](docs/verdict.md).",
        ]
    )


def _reading(checks: Sequence[dict[str, Any]]) -> list[str]:
    """What the false-alarm rows say: which tests meet the bar on every dataset, which miss it and where."""
    by_test: dict[str, list[dict[str, Any]]] = {}
    for r in checks:
        if r["kind"] == FALSE_ALARM:
            by_test.setdefault(trial_label(r), []).append(r)
    meet = [t for t, rows in by_test.items() if all(r["passes"] for r in rows)]
    miss = [
        f"{t}: " + ", ".join(f"{r['rate']:.3f} on {r['dataset']}" for r in rows if not r["passes"])
        for t, rows in by_test.items()
        if t not in meet
    ]
    return [
        f"Reading it: the false-alarm bar ({REQUIRED[FALSE_ALARM]:.0%} called tied) is met on every dataset by "
        f"{', '.join(meet) or 'no test'}; missed by {'; '.join(miss) or 'none'}. The one-seed test (exact McNemar) "
        "asks whether two trained models differ on the population of test images: a seed's own noise is outside "
        "it, so when seeds scatter (the pools' ranges below) one network under two seeds is called different. So "
        "a comparison trains seeds until its verdict is decided by default (`--repeats auto`, "
        f"cnn.report.verdict.plan_seeds: {MIN_SEEDS} seeds a variant first), and a one-seed verdict (`--repeats 1`) "
        "says its lead holds on those test images only and never calls a variant the most accurate. Auto looks at "
        "the data more than once (at 3 seeds a variant, then at twice as many for the variants still tied), and each "
        "look is one more chance of a false alarm: its p-values are Bonferroni-corrected over the looks its budget "
        f"allows (cnn.report.verdict.looks_of; {looks_of(DEFAULT_MAX_SEEDS)} for the default budget of "
        f"{DEFAULT_MAX_SEEDS})."
    ]


def get_args_parser() -> argparse.ArgumentParser:
    """Options of the calibration benchmark."""
    p = argparse.ArgumentParser(description="false-alarm rate and power of the comparison's paired tests")
    p.add_argument("--pool", type=int, default=10, help="seeds trained per (dataset, variant)")
    p.add_argument("--trials", type=int, default=40, help="trials per check and test (at least 20 for the README)")
    p.add_argument("--repeat-seeds", default="3", help="seeds a variant in the repeats test's trials (comma-separated)")
    p.add_argument(
        "--auto-max-seeds",
        type=int,
        default=None,
        help="the budget of the --repeats auto trials (default: max_seeds' default, at most half the pool; 0: none)",
    )
    p.add_argument("--replicates", type=int, default=REPLICATES, help="bootstrap replicates per trial")
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--epochs",
        default=AUTO,
        type=option_type(check_of("epochs")),
        help="default: the recipe's (a smaller run for tests)",
    )
    p.add_argument("--max-train", type=int, default=None, help="train on at most this many images (for tests)")
    p.add_argument("--checks", default="all", help="'all', or kind:dataset:a:b;... (kind: false-alarm or power)")
    p.add_argument("--json", default=None, help="where the result goes (default benchmarks/results/verdict.json)")
    p.add_argument("--reuse-pools", default=None, help="run the trials on the pools of this result (no training)")
    return p


def parse_checks(text: str) -> list[Check]:
    """ "all", or "false-alarm:digits:cnn2_5:generic_0;power:digits:lenet1:lenet5"."""
    if text == "all":
        return list(CHECKS)
    checks = []
    for part in text.split(";"):
        kind, dataset, a, b = part.split(":")
        checks.append(Check(kind.replace("-", " "), dataset, a, b))
    return checks


def _read_json(path: str) -> dict[str, Any]:
    with open(path) as fh:
        return json.load(fh)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print the table and write the JSON (docs/verdict.md: benchmarks/render.py)."""
    argv = sys.argv[1:] if argv is None else argv
    args = get_args_parser().parse_args(argv)

    def show(dataset: str, variant: str, seed: int, run: dict[str, Any]) -> None:
        print(f"{dataset} {variant} seed {seed}: {run['accuracy']:.4f} ({run['seconds']:.1f}s)", file=sys.stderr)

    result = bench_verdict(
        parse_checks(args.checks),
        args.pool,
        args.trials,
        [int(k) for k in args.repeat_seeds.split(",")],
        args.device,
        args.replicates,
        epochs=args.epochs,
        max_train=args.max_train,
        auto_seeds=args.auto_max_seeds,
        reuse=_read_json(args.reuse_pools) if args.reuse_pools else None,
        command=" ".join(["python -m benchmarks.verdict", *argv]),
        on_run=show,
    )
    print(format_table(result))
    if out := output_path(args.json, "verdict"):
        write_result(result, out)
    return result


if __name__ == "__main__":
    main()
