"""cnn-lab's default recipe against the plain PyTorch reference loop, variant x dataset x seed.

cnn-lab runs exactly what a comparison runs with no recipe options given (the same pipeline functions: batch size and
epochs from the data, the LR range test within its budget, training with the learn check and fallbacks, evaluation);
the reference runs Adam 1e-3 at batch 32 for the same number of epochs on the same split and normalisation.

    python -m benchmarks.recipe --datasets digits,distorted-digits-small --seeds 0,1,2 [--json out.json]

The JSON holds every pair, the rows and where they were measured (machine, versions, threads, load, command);
`render_markdown` turns it into docs/recipe.md's tables.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from benchmarks.datasets import register_distorted_digits
from benchmarks.reference import train_reference
from benchmarks.record import command_line, environment, write_result
from cnn import pipeline, recipe
from cnn.step_inputs import DatasetRef, get_dataset
from cnn.checks import Number, option_type
from cnn.params import check_of, count_option, seed_list
from cnn.models import list_variants
from cnn.params import RunParams

DATASETS = ("digits", "distorted-digits-small", "distorted-digits-medium", "distorted-digits-large")
TOLERANCE = 0.01  # cnn-lab's mean may trail the reference's by at most one point


def run_cnn_lab(
    dataset: str,
    variant: str,
    seed: int,
    max_train: int | None,
    device: str,
    batch_size: int | str = recipe.AUTO,
    epochs: int | str = recipe.AUTO,
) -> dict[str, Any]:
    """One comparison row as the flows make it (features skipped), in a throwaway in-memory store; `batch_size` and
    `epochs` as a user would type them (the recipe's rules when "auto")."""
    config = RunParams(
        dataset=dataset,
        seed=0,
        max_train=max_train or 0,
        device=device,
        batch_size=batch_size,
        epochs=epochs,
        storage=f"memory://recipe-{dataset}-{variant}-{seed}-{batch_size}-{epochs}",
        run="bench",
    )
    start = time.perf_counter()
    out = pipeline.run_variant(config, variant, seed=seed, features=False)
    train = out["train"]
    return {
        "test_acc": out["eval"]["accuracy"],
        "seconds": time.perf_counter() - start,
        "epochs": train["config"]["epochs"],
        "batch_size": train["config"]["batch_size"],
        "lr": train["config"]["lr"],
        "optimizer": train["config"]["optimizer"],
        "lr_rule": out["lr"]["rule"],
        "fallbacks": train["fallbacks"],
        "learned": train["learned"],
        "lr_test_share": out["lr"].get("budget_share", 0.0),
    }


def run_pair(
    dataset: str, variant: str, seed: int, max_train: int | None, device: str, batch_size: int | str = recipe.AUTO
) -> dict[str, Any]:
    """cnn-lab (default recipe, or at `batch_size`) and the reference on one (dataset, variant, seed), at the same epochs."""
    ours = run_cnn_lab(dataset, variant, seed, max_train, device, batch_size)
    data = get_dataset(DatasetRef(name=dataset, seed=0, max_train=max_train, download=False))
    ref = train_reference(variant, data, ours["epochs"], seed)
    return {
        "dataset": dataset,
        "variant": variant,
        "seed": seed,
        "n_train": int(data.train_y.numel()),
        "cnn_lab": ours,
        "reference": {"test_acc": ref.test_acc, "seconds": ref.seconds},
    }


def summarise(pairs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean over seeds per (dataset, variant): accuracies, difference, seconds, settings, pass/fail."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for p in pairs:
        groups.setdefault((p["dataset"], p["variant"]), []).append(p)
    rows = []
    for (dataset, variant), group in groups.items():
        ours = statistics.fmean(p["cnn_lab"]["test_acc"] for p in group)
        ref = statistics.fmean(p["reference"]["test_acc"] for p in group)
        first = group[0]["cnn_lab"]
        rows.append(
            {
                "dataset": dataset,
                "variant": variant,
                "n_train": group[0]["n_train"],
                "seeds": len(group),
                "cnn_lab": ours,
                "reference": ref,
                "diff": ours - ref,
                "ok": ours >= ref - TOLERANCE,
                "cnn_lab_s": statistics.fmean(p["cnn_lab"]["seconds"] for p in group),
                "reference_s": statistics.fmean(p["reference"]["seconds"] for p in group),
                "epochs": first["epochs"],
                "batch_size": first["batch_size"],
                "lr": statistics.fmean(p["cnn_lab"]["lr"] for p in group),
                "fallbacks": sum(len(p["cnn_lab"]["fallbacks"]) for p in group),
                "lr_test_share": max(p["cnn_lab"]["lr_test_share"] for p in group),
            }
        )
    return rows


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """A plain-text table: one line per (dataset, variant)."""
    head = f"{'dataset':<24} {'variant':<15} {'n_train':>7} {'seeds':>5} {'epochs':>6} {'batch':>5} {'lr':>8} {'cnn-lab':>8} {'ref':>8} {'diff':>7} {'cnn-lab s':>9} {'ref s':>7} {'fb':>3} {'lr%':>5}  ok"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['dataset']:<24} {r['variant']:<15} {r['n_train']:>7} {r['seeds']:>5} {r['epochs']:>6} {r['batch_size']:>5} {r['lr']:>8.2g} "
            f"{r['cnn_lab']:>8.4f} {r['reference']:>8.4f} {r['diff']:>+7.4f} {r['cnn_lab_s']:>9.1f} {r['reference_s']:>7.1f} {r['fallbacks']:>3} {100 * r['lr_test_share']:>4.1f}%  {'yes' if r['ok'] else 'NO'}"
        )
    passed = sum(r["ok"] for r in rows)
    lines.append(f"{passed} of {len(rows)} (dataset, variant) pairs within {TOLERANCE:.0%} of the reference")
    return "\n".join(lines)


def render_markdown(result: dict[str, Any]) -> str:
    """A result as Markdown: one table per dataset (each variant's mean test accuracy against the reference's, the
    difference, seconds, lr and abandoned attempts), then the command and where it ran."""
    by_dataset: dict[str, list[dict[str, Any]]] = {}
    for row in result["rows"]:
        by_dataset.setdefault(row["dataset"], []).append(row)
    parts = []
    for dataset, rows in by_dataset.items():
        shapes = sorted({f"{r['epochs']} epochs at batch {r['batch_size']}" for r in rows})
        parts += [
            f"**{dataset}** ({rows[0]['n_train']:,} training images; {', '.join(shapes)}; {sum(r['ok'] for r in rows)} "
            f"of {len(rows)} within {TOLERANCE:.0%} of the reference or above it):",
            "",
            "| variant | seeds | cnn-lab default | reference | difference | cnn-lab s | reference s | lr | fallbacks |",
            "|---|---|---|---|---|---|---|---|---|",
            *(
                f"| {r['variant']} | {r['seeds']} | {r['cnn_lab']:.4f} | {r['reference']:.4f} | {r['diff']:+.4f} | "
                f"{_cell(r['cnn_lab_s'], '.1f')} | {_cell(r['reference_s'], '.1f')} | {_cell(r['lr'], '.2g')} | "
                f"{r['fallbacks']} |"
                for r in rows
            ),
            "",
        ]
    return "\n".join([*parts, measured_on(result)])


def _cell(value: float | None, spec: str) -> str:
    """A number for a table cell; a dash where the source did not record it."""
    return "—" if value is None else format(value, spec)


def measured_on(result: dict[str, Any]) -> str:
    """One paragraph: the command that wrote a benchmark's JSON, the machine, versions, threads and load it ran with,
    and where the figures came from when they were not measured by that command here (`provenance`)."""
    env = result["environment"]
    loads = [env.get("load_avg"), env.get("load_avg_end")]
    load = (
        "load average " + " at the start, ".join("/".join(f"{x:.1f}" for x in v) for v in loads) + " at the end"
        if all(loads)
        else "load average not recorded"
    )
    where = [
        f"{env.get('device_name') or env.get('device')}",
        f"{env['cpu_count']} CPUs" if env.get("cpu_count") else None,
        f"torch threads: {env['threads']}" if env.get("threads") else None,
        load,
    ]
    versions = ", ".join(f"{name} {env[name]}" for name in ("torch", "python") if env.get(name))
    text = f"Written by `{result['command']}` on {'; '.join(w for w in where if w)}; {versions}."
    if env.get("machine"):
        text += f" Machine: {env['machine']}."
    if env.get("note"):
        text += f" {env['note']}"
    source = result.get("provenance")
    if source:
        text += f" {source['source']} (commit {source['commit'][:7]}), not measured again."
    return text


def bench_recipe(
    datasets: Sequence[str],
    variants: Sequence[str],
    seeds: Sequence[int],
    *,
    max_train: dict[str, int] | None = None,
    device: str = "cpu",
    batch_size: int | str = recipe.AUTO,
    on_pair: Callable[[dict[str, Any]], None] | None = None,
    command: str = "python -m benchmarks.recipe",
) -> dict[str, Any]:
    """Every (dataset, variant, seed) pair; returns {"pairs", "rows", "environment", "command"}."""
    register_distorted_digits()
    env = {**environment(torch.device(device)), "machine": platform.platform()}
    pairs = []
    for dataset in datasets:
        for variant in variants:
            for seed in seeds:
                pair = run_pair(dataset, variant, seed, (max_train or {}).get(variant), device, batch_size)
                pairs.append(pair)
                if on_pair:
                    on_pair(pair)
    env["load_avg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    env["rules"] = {"min_steps_per_epoch": recipe.MIN_STEPS_PER_EPOCH, "epoch_images": recipe.EPOCH_IMAGES}
    return {"pairs": pairs, "rows": summarise(pairs), "environment": env, "command": command}


def get_args_parser() -> argparse.ArgumentParser:
    """Options of the recipe benchmark."""
    p = argparse.ArgumentParser(
        description="cnn-lab's default recipe vs a plain PyTorch reference loop (Adam 1e-3, batch 32)"
    )
    p.add_argument("--datasets", default=",".join(DATASETS[:2]), help=f"comma-separated, from {', '.join(DATASETS)}")
    p.add_argument("--variants", default="all", help="comma-separated variant names, or 'all'")
    p.add_argument("--seeds", default="0,1,2", type=option_type(seed_list()), help="comma-separated seeds")
    p.add_argument(
        "--alexnet-max-train",
        type=count_option("max_train"),
        default=None,
        help="train AlexNet on at most this many images (CPU)",
    )
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--batch-size",
        default=recipe.AUTO,
        type=option_type(check_of("batch_size")),
        help="cnn-lab's batch size (default: the recipe's rule); the reference keeps 32",
    )
    p.add_argument(
        "--threads", type=option_type(Number(integer=True, ge=1, le=256)), default=None, help="torch threads"
    )
    p.add_argument("--json", default=None, help="also write every pair and row to this file")
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print a line per pair as it finishes, then the table."""
    argv = sys.argv[1:] if argv is None else argv
    args = get_args_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    variants = list_variants() if args.variants == "all" else args.variants.split(",")
    limits = {"alexnet": args.alexnet_max_train} if args.alexnet_max_train else None

    def show(p: dict[str, Any]) -> None:
        print(
            f"{p['dataset']} {p['variant']} seed {p['seed']}: cnn-lab {p['cnn_lab']['test_acc']:.4f} ({p['cnn_lab']['seconds']:.0f}s, batch {p['cnn_lab']['batch_size']}, lr {p['cnn_lab']['lr']:.2g} {p['cnn_lab']['lr_rule']}, fallbacks {p['cnn_lab']['fallbacks']}) reference {p['reference']['test_acc']:.4f} ({p['reference']['seconds']:.0f}s)",
            file=sys.stderr,
            flush=True,
        )

    result = bench_recipe(
        args.datasets.split(","),
        variants,
        args.seeds,
        max_train=limits,
        device=args.device,
        batch_size=args.batch_size,
        on_pair=show,
        command=command_line("python -m benchmarks.recipe", argv),
    )
    print(format_table(result["rows"]))
    if args.json:
        write_result(result, args.json)
    return result


if __name__ == "__main__":
    main()
