"""Torch threads against busy cores: training steps at one thread and at every core, while other processes keep some
cores busy or none (the evidence behind cnn.parallel.busy_cpus: a comparison gives torch only the free cores).

    python -m benchmarks.threads [--variants lenet5,generic_1] [--batch-size 128] [--steps 20] [--repeats 3]

Each row: a variant at a thread count, the median milliseconds per step (wall and this process's CPU), and the cores
other processes kept busy meanwhile. JSON: benchmarks/results/threads-cpu.json.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch
import torch.nn.functional as F

from benchmarks.record import command_line, environment, output_path, write_result
from cnn.models import create_variant
from cnn.parallel import busy_cpus, cpu_snapshot, other_load, usable_cpus
from cnn.params import count_option
from cnn.train_setup import build_optimizer

VARIANTS = ("lenet5", "generic_1")


def time_steps(variant: str, threads: int, batch_size: int, steps: int) -> dict[str, Any]:
    """Milliseconds per Adam step of `variant` on random 28x28 images at `threads` torch threads (after 3 warm-up
    steps), wall and CPU, and the cores other processes kept busy meanwhile."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = create_variant(variant, 1, 10, 28).to(memory_format=torch.channels_last)
    x = torch.randn(batch_size, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (batch_size,))
    opt = build_optimizer("adam", model.parameters(), 1e-3)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    for _ in range(3):
        step()
    snapshot, cpu, start = cpu_snapshot(), time.process_time(), time.perf_counter()
    for _ in range(steps):
        step()
    return {
        "wall_ms": 1000 * (time.perf_counter() - start) / steps,
        "cpu_ms": 1000 * (time.process_time() - cpu) / steps,
        "others": other_load(snapshot),
    }


def bench_threads(
    variants: tuple[str, ...] = VARIANTS, batch_size: int = 128, steps: int = 20, repeats: int = 3
) -> list[dict[str, Any]]:
    """One row per (variant, threads in 1 and every core), medians of `repeats` interleaved runs."""
    counts = sorted({1, usable_cpus()})
    rows = []
    for variant in variants:
        runs: dict[int, list[dict[str, Any]]] = {n: [] for n in counts}
        for _ in range(repeats):
            for n in counts:
                runs[n].append(time_steps(variant, n, batch_size, steps))
        for n in counts:
            rows.append(
                {
                    "variant": variant,
                    "threads": n,
                    "batch_size": batch_size,
                    "wall_ms": statistics.median(r["wall_ms"] for r in runs[n]),
                    "cpu_ms": statistics.median(r["cpu_ms"] for r in runs[n]),
                    "others": max((r["others"] or 0.0) for r in runs[n]),
                    "runs": runs[n],
                }
            )
    return rows


def format_rows(rows: list[dict[str, Any]]) -> str:
    """Plain-text table of `bench_threads` rows."""
    lines = [f"{'variant':<12} {'threads':>7} {'ms/step':>8} {'CPU ms':>8} {'others':>7}"]
    for r in rows:
        lines.append(
            f"{r['variant']:<12} {r['threads']:>7} {r['wall_ms']:>8.1f} {r['cpu_ms']:>8.1f} {r['others']:>7.2f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run, print the table and write the JSON."""
    p = argparse.ArgumentParser(description="training steps at one torch thread and at every core, under load")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--batch-size", type=count_option("batch_size"), default=128)
    p.add_argument("--steps", type=count_option("epochs"), default=20)
    p.add_argument("--repeats", type=count_option("repeats"), default=3)
    p.add_argument("--json-out", default=None, help="default: benchmarks/results/threads-cpu.json")
    args = p.parse_args(argv)
    before, busy = torch.get_num_threads(), busy_cpus()
    try:
        rows = bench_threads(tuple(args.variants.split(",")), args.batch_size, args.steps, args.repeats)
    finally:
        torch.set_num_threads(before)
    result = {
        "command": command_line("python -m benchmarks.threads", argv),
        "environment": environment("cpu"),
        "busy_cpus_at_start": busy,
        "rows": rows,
    }
    if out := output_path(args.json_out, "threads-cpu"):
        write_result(result, out)
    print(format_rows(rows))
    return result


if __name__ == "__main__":
    main()
