"""Seeds trained together (cnn.ensemble) against one after another (cnn.train.train), K seeds of a variant at the
recipe's default batch for the data (digits: batch 16 on CPU, as a comparison with --repeats trains them).

    python -m benchmarks.seeds --variants lenet5,cnn2_5,generic_1 --ks 1,3,5 --epochs 3 --repeats 3 [--device cuda]

Each row gives the median seconds of K seeds batched and of K seeds one after another, both also as a multiple of
one seed trained alone (issue 26's targets: 3 seeds batched under 3x one seed on CPU, at most 1.5x on a GPU), how
the seeds were batched, and the largest difference in final validation accuracy between a seed batched and alone
(dropout masks differ between the two, so dropout variants differ by more than rounding). K = 1 batched shows the
batched layout's own cost; --vmap adds rows with every model batched by vmap (cnn.ensemble.LAYOUTS). The JSON
(--json-out, default benchmarks/results/seeds-<device>.json) holds the machine, versions, load, command and every
timing; `python -m benchmarks.render` renders it into docs/seeds.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from benchmarks.record import environment, gpu_note
from benchmarks.tables import load_text, text_table
from cnn.parallel import cpu_snapshot, other_load
from cnn import recipe
from cnn.ensemble import SeedsTrainer
from cnn.errors import ConfigError
from cnn.step_inputs import DatasetRef, build_model, get_dataset
from cnn.train import TrainResult, train
from cnn.train_setup import TrainConfig, resolve_device

RESULTS = Path(__file__).parent / "results"
VARIANTS = ("lenet5", "cnn2_5", "generic_1")
KS = (1, 3, 5)
TARGET_X_ONE_SEED = {"cpu": 3.0, "cuda": 1.5}  # 3 seeds batched, as a multiple of one seed (issue 26)
TARGET_K = 3


def _timed(run: Callable[[], list[TrainResult]]) -> dict[str, Any]:
    """Wall and process CPU seconds of `run`, the cores other processes kept busy meanwhile, and its results."""
    snapshot, cpu, start = cpu_snapshot(), time.process_time(), time.perf_counter()
    results = run()
    return {
        "seconds": time.perf_counter() - start,
        "cpu_seconds": time.process_time() - cpu,
        "other_load": other_load(snapshot),
        "val_acc": [r.history[-1]["val_acc"] for r in results],
        "batched_by": results[0].extra.get("batched_by", "one after another"),
    }


def one_after_another(variant: str, data: Any, config: TrainConfig, seeds: Sequence[int]) -> dict[str, Any]:
    """K seeds trained one after another with cnn.train.train (today's path), each model built before the clock."""
    built = [build_model(variant, data, seed) for seed in seeds]
    return _timed(
        lambda: [
            train(model, data, dataclasses.replace(config, seed=seed), input_size=size, variant=variant)
            for (model, size), seed in zip(built, seeds)
        ]
    )


def batched(variant: str, data: Any, config: TrainConfig, seeds: Sequence[int], layout: str = "auto") -> dict[str, Any]:
    """K seeds as one batched model, as cnn.ensemble.train_seeds trains them (which leaves one seed to
    cnn.train.train: here one seed shows the batched layout's own cost), first-batch probe included."""
    built = [build_model(variant, data, seed) for seed in seeds]
    models, size = [m for m, _ in built], built[0][1]

    def run() -> list[TrainResult]:
        trainer = SeedsTrainer(models, data, config, seeds, input_size=size, variant=variant, layout=layout)
        if why := trainer.probe():
            raise ConfigError("variants", f"{variant} cannot train batched: {why}", allowed="batchable variants")
        for _ in trainer.epochs():
            pass
        return [trainer.result(k) for k in range(len(seeds))]

    return _timed(run)


def _warm_up(variant: str, data: Any, config: TrainConfig, layouts: Sequence[str]) -> None:
    """A few steps of every path, so one-time kernel and allocator costs stay out of the timings."""
    short = dataclasses.replace(config, epochs=1, max_steps=5)
    one_after_another(variant, data, short, [0])
    for layout in layouts:
        batched(variant, data, short, [0, 1], layout)


def bench_variant(
    variant: str, data: Any, config: TrainConfig, ks: Sequence[int], repeats: int, layouts: Sequence[str] = ("auto",)
) -> list[dict[str, Any]]:
    """One row per K and layout: the medians over `repeats` interleaved runs of both paths."""
    _warm_up(variant, data, config, layouts)
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for _ in range(repeats):
        for k in ks:
            seeds = list(range(k))
            runs.setdefault(("alone", k), []).append(one_after_another(variant, data, config, seeds))
            for layout in layouts:
                runs.setdefault((layout, k), []).append(batched(variant, data, config, seeds, layout))
    one = _median(runs[("alone", min(ks))], "seconds") / min(ks)
    one_cpu = _median(runs[("alone", min(ks))], "cpu_seconds") / min(ks)
    rows = []
    for layout in layouts:
        rows += [_row(variant, config, k, layout, runs[("alone", k)], runs[(layout, k)], one, one_cpu) for k in ks]
    return rows


def _row(
    variant: str,
    config: TrainConfig,
    k: int,
    layout: str,
    alone: list[dict[str, Any]],
    together: list[dict[str, Any]],
    one: float,
    one_cpu: float,
) -> dict[str, Any]:
    """The figures of K seeds both ways; `one` and `one_cpu`: one seed alone's wall and CPU seconds."""
    batched_s, alone_s = _median(together, "seconds"), _median(alone, "seconds")
    return {
        "variant": variant,
        "k": k,
        "batch_size": config.batch_size,
        "epochs": config.epochs,
        "layout": layout,
        "batched_by": together[0]["batched_by"],
        "batched_s": batched_s,
        "alone_s": alone_s,
        "batched_x_one": batched_s / one,
        "alone_x_one": alone_s / one,
        "speedup": alone_s / batched_s,
        "batched_cpu_x_one": _median(together, "cpu_seconds") / one_cpu,
        "max_val_acc_diff": max(
            abs(a - b) for run_a, run_b in zip(alone, together) for a, b in zip(run_a["val_acc"], run_b["val_acc"])
        ),
        "other_load": max((r["other_load"] or 0.0) for r in [*alone, *together]),
        "runs": {"batched": together, "alone": alone},
    }


def _median(runs: Sequence[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def bench_seeds(
    variants: Sequence[str] = VARIANTS,
    ks: Sequence[int] = KS,
    *,
    dataset: str = "digits",
    epochs: int = 3,
    repeats: int = 3,
    device: str = "cpu",
    layouts: Sequence[str] = ("auto",),
    on_row: Callable[[dict[str, Any]], None] | None = None,
    command: str = "",
) -> dict[str, Any]:
    """Every variant at every K on `dataset` (the flows' split) at the recipe's default batch for it, batched in
    each of `layouts` (cnn.ensemble.LAYOUTS)."""
    dev = resolve_device(device)
    data = get_dataset(DatasetRef(name=dataset, download=False))
    n_train = int(data.train_y.numel())
    config = TrainConfig(epochs=epochs, batch_size=recipe.auto_batch_size(n_train, dev), lr=3e-3, device=str(dev))
    rows = []
    for variant in variants:
        for row in bench_variant(variant, data, config, ks, repeats, layouts):
            rows.append(row)
            if on_row:
                on_row(row)
    result = {
        "environment": environment(dev),
        "command": command,
        "dataset": dataset,
        "n_train": n_train,
        "config": config.to_dict(),
        "repeats": repeats,
        "rows": rows,
        "gpu": gpu_note(dev),
    }
    result["targets"] = check_targets(result)
    return result


def check_targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 26's target for each variant: TARGET_K seeds batched, as a multiple of one seed, on this device type."""
    kind = "cuda" if str(result["config"]["device"]).startswith("cuda") else "cpu"
    goal = TARGET_X_ONE_SEED[kind]
    return [
        {
            "target": f"{r['variant']}: {TARGET_K} seeds batched {'<' if kind == 'cpu' else '<='} {goal:g}x one seed ({kind})",
            "value": r["batched_x_one"],
            "met": r["batched_x_one"] < goal if kind == "cpu" else r["batched_x_one"] <= goal,
        }
        for r in result["rows"]
        if r["k"] == TARGET_K and r["layout"] == "auto"
    ]


COLUMNS = [
    ("variant", "variant", "s"),
    ("k", "seeds", "d"),
    ("batched_by", "batched by", "s"),
    ("batched_s", "batched s", ".2f"),
    ("alone_s", "one after another s", ".2f"),
    ("batched_x_one", "batched x one seed", ".2f"),
    ("alone_x_one", "one after another x one seed", ".2f"),
    ("speedup", "speed-up", ".2f"),
    ("batched_cpu_x_one", "batched x one seed (CPU s)", ".2f"),
    ("max_val_acc_diff", "max |val acc diff|", ".4f"),
    ("other_load", "others", ".2f"),
]


def format_result(result: dict[str, Any]) -> str:
    """The rows as a table, with the environment and the targets."""
    env = result["environment"]
    cfg = result["config"]
    head = (
        f"{result['dataset']} ({result['n_train']} train images), batch {cfg['batch_size']}, {cfg['epochs']} epochs, "
        f"medians of {result['repeats']}; {env['device']} ({env['device_name']}), torch {env['torch']}, "
        f"{env['threads']} threads, {env['cpu_count']} cores, load {load_text(env)}; 'others' = cores other processes kept "
        "busy meanwhile (process CPU seconds are the figure they disturb least)"
    )
    targets = [{**t, "met": "met" if t["met"] else "MISSED"} for t in result["targets"]]
    checks = text_table(targets, [("target", "target", "s"), ("value", "value", ".2f"), ("met", "", "s")])
    return "\n\n".join(
        [
            head,
            text_table(result["rows"], COLUMNS),
            "Targets\n" + (checks if targets else f"none: no row with {TARGET_K} seeds"),
            f"GPU: {result['gpu']}",
        ]
    )


def get_args_parser() -> argparse.ArgumentParser:
    """Options of `python -m benchmarks.seeds`."""
    p = argparse.ArgumentParser(description="K seeds trained as one batched model against one after another")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--ks", default=",".join(str(k) for k in KS), help="seed counts, comma-separated")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3, help="interleaved runs per path; the median is reported")
    p.add_argument("--device", default="cpu", help="cpu, or cuda where a GPU is present")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    p.add_argument("--vmap", action="store_true", help="also time every model batched by vmap alone")
    p.add_argument("--json-out", default=None, help="default: benchmarks/results/seeds-<device>.json")
    return p


def markdown_page(result: dict[str, Any]) -> str:
    """docs/seeds.md: what was measured, how to rerun it, and the printed table, all from the JSON."""
    return "\n".join(
        [
            "# Seeds trained together",
            "",
            "K seeds of a variant trained as one batched model (`cnn.ensemble`) against one after another "
            "(`cnn.train.train`). Rendered by `python -m benchmarks.render` from the JSON that this command wrote:",
            "",
            f"    {result['command']}",
            "",
            "On a GPU: `python -m benchmarks.seeds --device cuda --vmap` (writes benchmarks/results/seeds-cuda.json).",
            "",
            "```text",
            format_result(result),
            "```",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run, print each row as it finishes and the table at the end, and write the JSON."""
    argv = sys.argv[1:] if argv is None else argv
    args = get_args_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = bench_seeds(
        args.variants.split(","),
        [int(k) for k in args.ks.split(",")],
        dataset=args.dataset,
        epochs=args.epochs,
        repeats=args.repeats,
        device=args.device,
        layouts=("auto", "vmap") if args.vmap else ("auto",),
        command=" ".join(["python -m benchmarks.seeds", *argv]),
        on_row=lambda r: print(
            f"{r['variant']} x{r['k']}: batched ({r['batched_by']}) {r['batched_s']:.2f}s, "
            f"one after another {r['alone_s']:.2f}s",
            file=sys.stderr,
            flush=True,
        ),
    )
    out = Path(args.json_out) if args.json_out else RESULTS / f"seeds-{resolve_device(args.device).type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(format_result(result), flush=True)
    return result


if __name__ == "__main__":
    main()
