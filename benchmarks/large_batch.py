"""Large batches keep accuracy: cnn-lab's default recipe at the recipe's batch size and at large ones, same epochs.

Each row is one (variant, batch): the test accuracy, its difference from the first batch size given, and the lr the
range test chose at that batch. On CPU the issue's check is batch 1024 against 64 on the 60,000-image set:

    python -m benchmarks.large_batch --dataset distorted-digits-large --variants lenet5,cnn2_5 --batches 64,1024
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from benchmarks.datasets import register_distorted_digits
from benchmarks.recipe import TOLERANCE, run_cnn_lab
from benchmarks.record import command_line, environment, output_path, write_result
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


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Run and print the table."""
    p = argparse.ArgumentParser(description="cnn-lab's recipe at large batch sizes against a small one, same epochs")
    p.add_argument("--dataset", default="distorted-digits-large")
    p.add_argument("--variants", default="lenet5,cnn2_5")
    p.add_argument(
        "--batches", default="64,1024", type=option_type(BATCHES), help="comma-separated; the first is the baseline"
    )
    p.add_argument("--seed", type=option_type(check_of("seed")), default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--epochs", default=AUTO, type=option_type(check_of("epochs")), help="default: the recipe's")
    p.add_argument("--json-out", default=None, help="default: benchmarks/results/large-batch.json")
    args = p.parse_args(argv)
    rows = bench_batches(args.dataset, args.variants.split(","), args.batches, args.seed, args.device, args.epochs)
    print(format_rows(rows))
    result = {
        "command": command_line("python -m benchmarks.large_batch", argv),
        "environment": environment(args.device),
        "dataset": args.dataset,
        "rows": rows,
    }
    if out := output_path(args.json_out, "large-batch"):
        write_result(result, out)
    return rows


if __name__ == "__main__":
    main()
