"""Large batches keep accuracy: cnn-lab's default recipe at the recipe's batch size and at large ones, same epochs.

Each row is one (variant, batch): the test accuracy, its difference from the first batch size given, and the lr the
range test chose at that batch. On CPU the issue's check is batch 1024 against 64 on the 60,000-image set:

    python -m benchmarks.large_batch --dataset distorted-digits-large --variants lenet5,cnn2_5 --batches 64,1024

`--json` writes the rows with their settings and where they were measured; `render_markdown` turns that into
docs/recipe.md's large-batch table.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from typing import Any

import torch

from benchmarks.datasets import register_distorted_digits
from benchmarks.recipe import TOLERANCE, measured_on, run_cnn_lab
from benchmarks.record import command_line, environment, write_result
from cnn.checks import AUTO, NumberList, Number, option_type
from cnn.params import check_of


# --batches: up to 16 batch sizes, each a valid batch_size
BATCHES = NumberList(Number(integer=True, ge=1, le=check_of("batch_size").upper()), max_items=16)


def bench_batches(
    dataset: str,
    variants: list[str],
    batches: list[int],
    seed: int = 0,
    device: str = "cpu",
    epochs: int | str = AUTO,
) -> list[dict[str, Any]]:
    """One row per (variant, batch): accuracy and the difference from the variant's first batch, all at `epochs`
    (the recipe's rule for the dataset when "auto")."""
    register_distorted_digits()
    rows = []
    for variant in variants:
        base = None
        for batch in batches:
            out = run_cnn_lab(dataset, variant, seed, None, device, batch, epochs)
            base = out["test_acc"] if base is None else base
            row = {
                "variant": variant,
                "batch": batch,
                **out,
                "diff": out["test_acc"] - base,
                "ok": out["test_acc"] >= base - TOLERANCE,
            }
            print(
                f"{variant} batch {batch}: {out['test_acc']:.4f} ({out['seconds']:.0f}s, lr {out['lr']:.2g} {out['lr_rule']}, fallbacks {out['fallbacks']})",
                file=sys.stderr,
                flush=True,
            )
            rows.append(row)
    return rows


def format_rows(rows: list[dict[str, Any]]) -> str:
    """Plain-text table of `bench_batches` rows."""
    lines = [f"{'variant':<15} {'batch':>5} {'epochs':>6} {'lr':>8} {'test acc':>8} {'diff':>7} {'s':>6}  ok"]
    for r in rows:
        lines.append(
            f"{r['variant']:<15} {r['batch']:>5} {r['epochs']:>6} {r['lr']:>8.2g} {r['test_acc']:>8.4f} {r['diff']:>+7.4f} {r['seconds']:>6.0f}  {'yes' if r['ok'] else 'NO'}"
        )
    return "\n".join(lines)


def bench_result(
    dataset: str,
    variants: list[str],
    batches: list[int],
    seed: int = 0,
    device: str = "cpu",
    epochs: int | str = AUTO,
    command: str = "python -m benchmarks.large_batch",
) -> dict[str, Any]:
    """`bench_batches` with its settings and where it ran: {"rows", "settings", "environment", "command"}."""
    env = {**environment(torch.device(device)), "machine": platform.platform()}
    rows = bench_batches(dataset, variants, batches, seed, device, epochs)
    env["load_avg_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    settings = {"dataset": dataset, "batches": list(batches), "seed": seed, "device": device, "epochs": epochs}
    return {"rows": rows, "settings": settings, "environment": env, "command": command}


def render_markdown(result: dict[str, Any]) -> str:
    """A result as a Markdown table: each variant's test accuracy at every batch, the difference from the first batch
    and the lr each larger batch trained at, then the command and where it ran."""
    first, *others = result["settings"]["batches"]
    by_variant: dict[str, dict[int, dict[str, Any]]] = {}
    for row in result["rows"]:
        by_variant.setdefault(row["variant"], {})[row["batch"]] = row
    head = ["variant", *(f"batch {b}" for b in (first, *others))]
    head += [f"difference at {b}" for b in others] + [f"lr at {b}" for b in others]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for variant, rows in by_variant.items():
        cells = [variant, *(f"{rows[b]['test_acc']:.4f}" for b in (first, *others))]
        cells += [f"{rows[b]['diff']:+.4f}" for b in others] + [_lr_cell(rows[b]) for b in others]
        lines.append("| " + " | ".join(cells) + " |")
    epochs = sorted({row["epochs"] for row in result["rows"]})
    within = sum(rows[b]["ok"] for rows in by_variant.values() for b in others)
    return "\n".join(
        [
            f"**{result['settings']['dataset']}**, seed {result['settings']['seed']}, "
            f"{' / '.join(map(str, epochs))} epochs at every batch; {within} of {len(by_variant) * len(others)} "
            f"within {TOLERANCE:.0%} of batch {first} or above it:",
            "",
            *lines,
            "",
            measured_on(result),
        ]
    )


def _lr_cell(row: dict[str, Any]) -> str:
    """The lr a row trained at, and the attempts its learn check abandoned first."""
    fallbacks = row.get("fallbacks") or []
    return f"{row['lr']:.2g}" + (f" (fallback after: {'; '.join(fallbacks)})" if fallbacks else "")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run, print the table, and write the JSON when asked."""
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description="cnn-lab's recipe at large batch sizes against a small one, same epochs")
    p.add_argument("--dataset", default="distorted-digits-large")
    p.add_argument("--variants", default="lenet5,cnn2_5")
    p.add_argument(
        "--batches", default="64,1024", type=option_type(BATCHES), help="comma-separated; the first is the baseline"
    )
    p.add_argument("--seed", type=option_type(check_of("seed")), default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--epochs", default=AUTO, type=option_type(check_of("epochs")), help="default: the recipe's")
    p.add_argument("--json", default=None, help="also write the rows, settings and environment to this file")
    args = p.parse_args(argv)
    result = bench_result(
        args.dataset,
        args.variants.split(","),
        args.batches,
        args.seed,
        args.device,
        args.epochs,
        command=command_line("python -m benchmarks.large_batch", argv),
    )
    print(format_rows(result["rows"]))
    if args.json:
        write_result(result, args.json)
    return result


if __name__ == "__main__":
    main()
