"""The comparison's training floor: every registered variant, the same epochs, at a large batch and at the student pipeline's batch.

Each variant trains on resident data (bf16 autocast + channels_last on CUDA) with the LR its range test picks at
that batch size, timed after a one-epoch warm-up that lets cudnn autotune every batch shape (training and
validation); the student pipeline's batch (64) run says whether the large batch keeps test accuracy. Meant for a GPU:
`python -m benchmarks.variants --json-out variants.json`; it runs on CPU with small sizes (tests).
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from benchmarks.record import command_line, environment, output_path, write_result
from benchmarks.speed_cnn_lab import LR_MAX, find_lr, pick_lr, run_fast
from benchmarks.speed_data import N_TEST, idx_root, load_splits
from benchmarks.speed_student import STUDENT_BATCH_SIZE
from benchmarks.tables import text_table
from cnn.data.splits import DatasetSplits
from cnn.errors import ConfigError, TrainingDiverged
from cnn.models import count_parameters, list_variants
from cnn.params import count_option
from cnn.lr_policy import DEFAULT_LR_RULE
from cnn.step_inputs import build_model
from cnn.train import Trainer
from cnn.train_setup import TrainConfig, check_positive_int, resolve_device

GPU_BATCH_SIZE = 2048  # the H100 floor: 11 s for all variants x 10 epochs at 2048, 35 s at 512
FLOOR_TARGET_SECONDS = 60.0  # all variants x 10 epochs x 60k images on one H100
ACCURACY_TOLERANCE = 0.01  # each variant within 1 point of its student-batch accuracy


def _lr(
    lr: float | str,
    model: torch.nn.Module,
    data: DatasetSplits,
    size: int,
    batch_size: int,
    device: torch.device,
    seed: int,
    lr_max: float = LR_MAX,
    rule: str = DEFAULT_LR_RULE,
) -> tuple[float, str, float]:
    """(lr, how chosen, range-test seconds): "auto" runs the flows' range test at `batch_size` up to `lr_max`."""
    if lr == "auto":
        result, seconds = find_lr(model, data, size, batch_size, device, seed=seed, lr_max=lr_max, rule=rule)
        return result.suggestion, f"range test ({result.rule})", seconds
    value, source = pick_lr(lr, model, data, size, batch_size, device, seed)
    return value, source, 0.0


def warm_up_epoch(
    model: torch.nn.Module, data: DatasetSplits, size: int, batch_size: int, lr: float, device: torch.device, seed: int
) -> float:
    """One throwaway epoch (train + validation) on a copy, so every batch shape is autotuned before timing; its seconds."""
    start = time.perf_counter()
    config = TrainConfig(epochs=1, batch_size=batch_size, lr=lr, seed=seed, device=str(device))
    list(Trainer(copy.deepcopy(model), data, config, input_size=size).epochs())
    return time.perf_counter() - start


def train_timed(
    variant: str,
    data: DatasetSplits,
    *,
    epochs: int,
    batch_size: int,
    device: torch.device,
    lr: float | str = "auto",
    seed: int = 0,
    warmup: bool = True,
    lr_max: float = LR_MAX,
    rule: str = DEFAULT_LR_RULE,
) -> dict[str, Any]:
    """One variant: LR range test at `batch_size`, optional warm-up epoch, then `epochs` timed epochs and test accuracy."""
    model, size = build_model(variant, data, seed)
    head = {
        "variant": variant,
        "params": count_parameters(model),
        "input_size": size,
        "batch_size": batch_size,
        "epochs": epochs,
    }
    lr_value, lr_source, lr_seconds = _lr(lr, model, data, size, batch_size, device, seed, lr_max, rule)
    head.update(lr=lr_value, lr_source=lr_source, lr_seconds=lr_seconds)
    try:
        warm = warm_up_epoch(model, data, size, batch_size, lr_value, device, seed) if warmup else None
        row = run_fast(model, data, size, epochs, batch_size, device, lr=lr_value, seed=seed)
    except TrainingDiverged as err:  # one variant's divergence is a result, not the end of the benchmark
        return {
            **head,
            "warmup_seconds": None,
            "train_seconds": 0.0,
            "img_per_s": None,
            "test_acc": None,
            "peak_mem_mb": None,
            "error": str(err),
        }
    return {
        **head,
        "warmup_seconds": warm,
        "train_seconds": row["seconds"],
        "img_per_s": row["img_per_s"],
        "test_acc": row["test_acc"],
        "peak_mem_mb": row["peak_mem_mb"],
        "error": None,
    }


def _check(variants: Sequence[str] | None, epochs: int, batch_size: int, reference_batch: int | None) -> list[str]:
    """The variant names to run; ConfigError names a bad argument."""
    names = list(variants) if variants else list_variants()
    unknown = sorted(set(names) - set(list_variants()))
    if unknown:
        raise ConfigError("variants", f"unknown variant(s) {unknown}", allowed=list_variants())
    for field, value in (("epochs", epochs), ("batch_size", batch_size), ("reference_batch", reference_batch or 1)):
        check_positive_int(field, value)
    return names


def bench_variants(
    variants: Sequence[str] | None = None,
    *,
    epochs: int = 10,
    batch_size: int = GPU_BATCH_SIZE,
    reference_batch: int | None = STUDENT_BATCH_SIZE,
    n_train: int = 60_000,
    n_test: int = N_TEST,
    device: str = "auto",
    data_root: str | Path | None = None,
    lr: float | str = "auto",
    seed: int = 0,
    warmup: bool = True,
    lr_max: float = LR_MAX,
    rule: str = DEFAULT_LR_RULE,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Every variant at `batch_size` (timed after warm-up), then at `reference_batch` for accuracy; `on_row` sees each row."""
    names = _check(variants, epochs, batch_size, reference_batch)
    dev = resolve_device(device)
    keep: list[tempfile.TemporaryDirectory] = []
    data = load_splits(idx_root(data_root, n_train, n_test, keep))
    result: dict[str, Any] = {
        "epochs": epochs,
        "batch_size": batch_size,
        "reference_batch": reference_batch,
        "n_train": int(data.train_y.numel()),
        "n_test": int(data.test_y.numel()),
        **environment(dev),
        "rows": [],
        "reference": [],
    }
    for key, bs, warm in (("rows", batch_size, warmup), ("reference", reference_batch, False)):
        for name in names if bs else ():
            row = {
                **train_timed(
                    name,
                    data,
                    epochs=epochs,
                    batch_size=bs,
                    device=dev,
                    lr=lr,
                    seed=seed,
                    warmup=warm,
                    lr_max=lr_max,
                    rule=rule,
                ),
                "run": key,
            }
            result[key].append(row)
            if on_row:
                on_row(row)
    result["total_train_seconds"] = sum(r["train_seconds"] for r in result["rows"])
    result["targets"] = variants_targets(result)
    return result


def variants_targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Floor under FLOOR_TARGET_SECONDS (full-size runs only) and each variant within ACCURACY_TOLERANCE of its reference."""
    checks = [
        {
            "target": f"all {len(result['rows'])} variants x {result['epochs']} epochs at batch {result['batch_size']}: train time < {FLOOR_TARGET_SECONDS:g} s",
            "value": result["total_train_seconds"],
            "met": result["total_train_seconds"] < FLOOR_TARGET_SECONDS,
        }
    ]
    reference = {r["variant"]: r for r in result["reference"]}
    for row in result["rows"]:
        ref = reference.get(row["variant"])
        if ref is not None and ref["test_acc"] is not None:
            delta = (row["test_acc"] or 0.0) - ref["test_acc"]  # a diverged run counts as accuracy 0
            row["acc_delta"] = delta
            checks.append(
                {
                    "target": f"{row['variant']}: test acc at batch {row['batch_size']} within {100 * ACCURACY_TOLERANCE:g} pt of batch {ref['batch_size']} ({ref['test_acc']:.4f})",
                    "value": row["test_acc"],
                    "met": delta >= -ACCURACY_TOLERANCE,
                }
            )
    return checks


def bench_compile(
    variant: str = "cnn2_5",
    *,
    epochs: int = 3,
    batch_size: int = GPU_BATCH_SIZE,
    n_train: int = 60_000,
    n_test: int = N_TEST,
    device: str = "auto",
    data_root: str | Path | None = None,
    lr: float = 0.05,
    seed: int = 0,
) -> dict[str, Any]:
    """Per-epoch seconds with and without torch.compile (first epoch includes compiling): is it worth it on short runs?"""
    dev = resolve_device(device)
    keep: list[tempfile.TemporaryDirectory] = []
    data = load_splits(idx_root(data_root, n_train, n_test, keep))
    rows = []
    for compiled in (False, True):
        model, size = build_model(variant, data, seed)
        start = time.perf_counter()
        trainer = Trainer(
            model,
            data,
            TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, device=str(dev), compile=compiled),
            input_size=size,
        )
        history = list(trainer.epochs())
        rows.append(
            {
                "compile": compiled,
                "epoch_seconds": [h["seconds"] for h in history],
                "wall_seconds": time.perf_counter() - start,
                "val_acc": history[-1]["val_acc"],
            }
        )
    plain, compiled_row = rows
    return {
        "variant": variant,
        "batch_size": batch_size,
        "epochs": epochs,
        "rows": rows,
        "break_even_epochs": _break_even(plain["epoch_seconds"], compiled_row["epoch_seconds"]),
        **environment(dev),
    }


def _break_even(plain: list[float], compiled: list[float]) -> float | None:
    """Epochs after which compiling has paid for itself (None if a compiled steady epoch is not faster)."""
    steady_plain, steady_compiled = min(plain[1:] or plain), min(compiled[1:] or compiled)
    saving = steady_plain - steady_compiled
    if saving <= 0:
        return None
    return 1 + max(0.0, compiled[0] - plain[0]) / saving


VARIANT_COLUMNS = [
    ("variant", "variant", "s"),
    ("params", "params", ",d"),
    ("input_size", "input", "d"),
    ("batch_size", "batch", "d"),
    ("lr", "lr", ".3g"),
    ("lr_seconds", "lr test s", ".2f"),
    ("warmup_seconds", "warm-up s", ".2f"),
    ("train_seconds", "train s", ".2f"),
    ("img_per_s", "img/s", ",.0f"),
    ("test_acc", "test acc", ".4f"),
    ("acc_delta", "vs student batch", "+.4f"),
    ("peak_mem_mb", "peak MiB", ",.0f"),
    ("error", "error", "s"),
]


def format_variants(result: dict[str, Any]) -> str:
    """Text tables: the large-batch rows, the reference rows, the targets."""
    parts = [
        f"All variants, {result['epochs']} epochs, {result['n_train']} train / {result['n_test']} test images on {result['device']} ({result['device_name']}), torch {result['torch']}",
        text_table(result["rows"], VARIANT_COLUMNS),
        f"total training time {result['total_train_seconds']:.2f} s (warm-up, LR tests and validation excluded)",
    ]
    if result["reference"]:
        parts += [
            f"Reference at the student pipeline's batch {result['reference_batch']} (no warm-up)",
            text_table(result["reference"], [c for c in VARIANT_COLUMNS if c[0] != "acc_delta"]),
        ]
    rows = [{**t, "met": "met" if t["met"] else "MISSED"} for t in result["targets"]]
    parts.append(
        "Targets\n" + text_table(rows, [("target", "target", "s"), ("value", "value", ".4g"), ("met", "", "s")])
    )
    return "\n\n".join(parts)


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line options of `python -m benchmarks.variants`."""
    p = argparse.ArgumentParser(
        description="Train every variant at a large batch and at the student pipeline's batch; print the comparison's training floor"
    )
    p.add_argument("--variants", nargs="+", default=None, help="default: every registered variant")
    p.add_argument("--epochs", type=count_option("epochs"), default=10)
    p.add_argument("--batch-size", type=count_option("batch_size"), default=GPU_BATCH_SIZE)
    p.add_argument(
        "--reference-batch",
        type=count_option("batch_size", low=0),
        default=STUDENT_BATCH_SIZE,
        help="0 skips the accuracy reference",
    )
    p.add_argument("--n-train", type=count_option("max_train"), default=60_000)
    p.add_argument("--n-test", type=count_option("max_test"), default=N_TEST)
    p.add_argument("--device", default="auto")
    p.add_argument("--lr-max", type=float, default=LR_MAX, help="upper end of the LR range test")
    p.add_argument("--lr-rule", default=DEFAULT_LR_RULE, help="min_loss_div10 or steepest")
    p.add_argument("--no-warmup", action="store_true", help="time the first epoch too (cudnn autotuning included)")
    p.add_argument("--compile", action="store_true", help="instead: per-epoch time with and without torch.compile")
    p.add_argument(
        "--json-out",
        default=None,
        help="default: benchmarks/results/variants-<device>.json (rewritten after every row)",
    )
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the floor (or the compile check), printing rows as they finish and the tables at the end."""
    args = get_args_parser().parse_args(argv)
    kind = "compile" if args.compile else "variants"
    out = output_path(args.json_out, f"{kind}-{resolve_device(args.device).type}")
    if args.compile:
        result = bench_compile(n_train=args.n_train, n_test=args.n_test, batch_size=args.batch_size, device=args.device)
        text = json.dumps(result, indent=2)
    else:
        rows: list[dict[str, Any]] = []

        def on_row(row: dict[str, Any]) -> None:
            rows.append(row)
            print(json.dumps(row), flush=True)
            if out:
                out.write_text(json.dumps({"partial": rows}, indent=2))

        result = bench_variants(
            args.variants,
            epochs=args.epochs,
            batch_size=args.batch_size,
            reference_batch=args.reference_batch or None,
            n_train=args.n_train,
            n_test=args.n_test,
            device=args.device,
            on_row=on_row,
            warmup=not args.no_warmup,
            lr_max=args.lr_max,
            rule=args.lr_rule,
        )
        text = format_variants(result)
    result["command"] = command_line("python -m benchmarks.variants", argv)
    if out:
        write_result(result, out)
    print(text, flush=True)
    return result


if __name__ == "__main__":
    main()
