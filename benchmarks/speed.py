"""Training benchmark: cnn-lab's resident-tensor Trainer against the student projects' torchvision + DataLoader pipeline.

Both pipelines train the same seeded model on the same IDX files (FashionMNIST-shaped, written here when no
data_root is given) for the same epochs; the report gives img/s, their ratio, batch size, device, torch
version, peak memory and test accuracy. Speed is printed, never asserted. Run: `python -m benchmarks.speed --quick`.

This module runs the benchmarks and is the command line; beside it, speed_data makes the IDX files, speed_student is
the students' loop, speed_cnn_lab times cnn-lab's Trainer and LR range test, speed_measure holds the clocks and
memory counters, and speed_report checks the targets and prints the tables. The figures, with the machine, versions,
load and command, go to benchmarks/results/speed-<device>.json; `benchmarks.variants` measures every variant x 10 epochs.
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from benchmarks.record import command_line, environment, gpu_note, output_path, write_result
from benchmarks.speed_cnn_lab import DEFAULT_BATCH_SIZE, FAST_NAME, find_lr, pick_lr, run_fast
from benchmarks.speed_data import N_TEST, idx_root, load_splits, write_idx
from benchmarks.speed_measure import median_rate, median_row, sync
from benchmarks.speed_report import check_targets, format_table
from benchmarks.speed_student import STUDENT_BATCH_SIZE, run_student, student_loader
from cnn.errors import ConfigError
from cnn.evaluate import predict
from cnn.models import count_parameters
from cnn.params import count_option
from cnn.step_inputs import build_model
from cnn.train_setup import make_loader, resolve_device

QUICK = {
    "n_train": 1_500,
    "n_test": 300,
    "sizes": (500, 1_000, 1_500),
    "variants": ("cnn2_3", "cnn2_5", "lenet1", "cnn2_7"),
}
FULL_SIZES = (10_000, 30_000, 60_000)
SCALING_VARIANTS = ("cnn2_5", "cnn2_3", "cnn2_7", "lenet5")
SECTIONS = ("training", "lr_finder", "eval", "scaling")


def _check_sizes(n_train: int, epochs: int, batch_sizes: Iterable[int]) -> list[int]:
    """The batch sizes as ints; ConfigError names the first bad size argument."""
    if isinstance(n_train, bool) or not isinstance(n_train, int) or n_train < 2:
        raise ConfigError("n_train", f"must be an int >= 2, got {n_train!r}", allowed="an int >= 2")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ConfigError("epochs", f"must be a positive integer, got {epochs!r}", allowed="an int >= 1")
    sizes = [int(b) for b in batch_sizes]
    if not sizes or any(b < 1 for b in sizes):
        raise ConfigError("batch_sizes", f"need positive batch sizes, got {sizes}", allowed="ints >= 1")
    return sizes


def bench_training(
    variant: str = "cnn2_5",
    n_train: int = 60_000,
    epochs: int = 1,
    batch_sizes: Sequence[int] = (STUDENT_BATCH_SIZE, DEFAULT_BATCH_SIZE),
    device: str = "auto",
    data_root: str | Path | None = None,
    *,
    n_test: int = N_TEST,
    seed: int = 0,
    repeats: int = 1,
    lr: float | str = "auto",
) -> dict[str, Any]:
    """Student-style vs cnn-lab on the same seeded model and data for `epochs`; img/s is the median over `repeats`.

    cnn-lab's lr follows its batch size: by default the LR range test picks it, as in the flows (its cost is
    reported by `bench_lr_finder`, not counted here). Repeats are interleaved so every pipeline sees the same load.
    """
    sizes = _check_sizes(n_train, epochs, batch_sizes)
    dev = resolve_device(device)
    keep: list[tempfile.TemporaryDirectory] = []
    root = idx_root(data_root, n_train, n_test, keep)
    data = load_splits(root)
    model0, size = build_model(variant, data, seed)
    lrs = {bs: pick_lr(lr, model0, data, size, bs, dev, seed) for bs in sizes}
    setups = [(FAST_NAME, bs, None) for bs in sizes]
    student_runs: list[dict[str, Any]] = []
    fast_runs: dict[tuple, list[dict[str, Any]]] = {setup: [] for setup in setups}
    for _ in range(repeats):
        student_runs.append(run_student(copy.deepcopy(model0), root, data, size, epochs, dev, seed=seed))
        for name, bs, channels_last in setups:
            row = run_fast(
                copy.deepcopy(model0),
                data,
                size,
                epochs,
                bs,
                dev,
                lr=lrs[bs][0],
                channels_last=channels_last,
                seed=seed,
            )
            fast_runs[(name, bs, channels_last)].append({**row, "pipeline": name, "lr_source": lrs[bs][1]})
    student_row = {**median_row(student_runs), "ratio": 1.0, "ratio_best": 1.0}
    fast_rows = []
    for setup in setups:
        row = median_row(fast_runs[setup])
        row["ratio"] = row["img_per_s"] / student_row["img_per_s"]
        row["ratio_best"] = row["img_per_s_best"] / student_row["img_per_s_best"]
        row["acc_delta"] = row["test_acc"] - student_row["test_acc"]
        fast_rows.append(row)
    return {
        "variant": variant,
        "params": count_parameters(model0),
        "input_size": size,
        "n_train": int(data.train_y.numel()),
        "n_test": int(data.test_y.numel()),
        "epochs": epochs,
        "repeats": repeats,
        "student_style": student_row,
        "fast": fast_rows,
        **environment(dev),
    }


def bench_lr_finder(
    variant: str = "cnn2_5",
    n_train: int = 60_000,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: str = "auto",
    data_root: str | Path | None = None,
    *,
    num_steps: int = 100,
    n_test: int = N_TEST,
    seed: int = 0,
) -> dict[str, Any]:
    """Cost of the LR range test at the training batch size (images seen, in epochs; seconds) vs one training epoch."""
    dev = resolve_device(device)
    keep: list[tempfile.TemporaryDirectory] = []
    data = load_splits(idx_root(data_root, n_train, n_test, keep))
    model, size = build_model(variant, data, seed)
    result, seconds = find_lr(model, data, size, batch_size, dev, num_steps=num_steps, seed=seed)
    epoch = run_fast(model, data, size, 1, batch_size, dev, lr=result.suggestion, seed=seed)
    n = int(data.train_y.numel())
    return {
        "batch_size": batch_size,
        "num_steps": result.num_steps,
        "images_seen": result.images_seen,
        "n_train": n,
        "epochs_cost": result.images_seen / n,
        "seconds": seconds,
        "epoch_seconds": epoch["seconds"],
        "time_vs_epoch": seconds / max(epoch["seconds"], 1e-9),
        "suggestion": result.suggestion,
        "flag": result.flag,
        "test_acc_at_suggestion": epoch["test_acc"],
        **environment(dev),
    }


def bench_eval(
    variant: str = "cnn2_5",
    n_train: int = 60_000,
    batch_size: int = 1024,
    device: str = "auto",
    data_root: str | Path | None = None,
    *,
    n_test: int = N_TEST,
    repeats: int = 3,
    seed: int = 0,
) -> dict[str, Any]:
    """Evaluation img/s on the test split: cnn-lab's loader + `predict` vs a student-style DataLoader loop (median of repeats)."""
    dev = resolve_device(device)
    keep: list[tempfile.TemporaryDirectory] = []
    root = idx_root(data_root, n_train, n_test, keep)
    data = load_splits(root)
    model, size = build_model(variant, data, seed)
    model = model.to(dev).eval()

    def fast() -> int:
        loader = make_loader(data, "test", batch_size=batch_size, input_size=size, device=dev)
        y_true, _, _ = predict(model, loader)
        sync(dev)
        return len(y_true)

    def student() -> int:
        loader = student_loader(root, False, STUDENT_BATCH_SIZE, data.mean, data.std, size)
        n = correct = 0
        with torch.no_grad():
            for x, y in loader:  # the tutorials' test loop: one .item() per batch
                correct += (model(x.to(dev)).argmax(1) == y.to(dev)).sum().item()
                n += len(y)
        return n

    fast()
    fast_rate, student_rate = median_rate(fast, repeats), median_rate(student, repeats)
    return {
        "n_test": int(data.test_y.numel()),
        "batch_size": batch_size,
        "student_batch_size": STUDENT_BATCH_SIZE,
        "img_per_s": fast_rate,
        "student_img_per_s": student_rate,
        "ratio": fast_rate / student_rate,
        **environment(dev),
    }


def bench_scaling(
    sizes: Sequence[int] = FULL_SIZES,
    variants: Sequence[str] = SCALING_VARIANTS,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: str = "auto",
    data_root: str | Path | None = None,
    n_test: int = N_TEST,
    seed: int = 0,
) -> dict[str, Any]:
    """cnn-lab epoch time vs training-set size, and total time (data load + one epoch each) vs number of variants."""
    dev = resolve_device(device)
    keep: list[tempfile.TemporaryDirectory] = []
    root = idx_root(data_root, max(sizes), n_test, keep)
    by_size = []
    for n in sizes:
        data = load_splits(root, max_train=n)
        model, size = build_model(variants[0], data, seed)
        row = run_fast(model, data, size, 1, batch_size, dev, seed=seed)
        by_size.append(
            {
                "n_train": int(data.train_y.numel()),
                "seconds": row["seconds"],
                "img_per_s": row["img_per_s"],
                "variant": variants[0],
                "other_load": row["other_load"],
            }
        )
    start = time.perf_counter()
    data = load_splits(root, max_train=max(sizes))
    load_seconds = time.perf_counter() - start
    per_variant = []
    for name in variants:
        start = time.perf_counter()
        model, size = build_model(name, data, seed)
        row = run_fast(model, data, size, 1, batch_size, dev, seed=seed)
        per_variant.append(
            {
                "variant": name,
                "params": count_parameters(model),
                "seconds": row["seconds"],
                "wall_seconds": time.perf_counter() - start,
                "img_per_s": row["img_per_s"],
                "test_acc": row["test_acc"],
                "other_load": row["other_load"],
            }
        )
    counts = [k for k in (1, 2, 4) if k <= len(variants)]
    by_count = [
        {
            "variants": k,
            "names": ", ".join(variants[:k]),
            "total_seconds": load_seconds + sum(v["wall_seconds"] for v in per_variant[:k]),
            "other_load": max((v["other_load"] or 0.0) for v in per_variant[:k]),
        }
        for k in counts
    ]
    return {
        "batch_size": batch_size,
        "by_size": by_size,
        "per_variant": per_variant,
        "load_seconds": load_seconds,
        "by_count": by_count,
        **environment(dev),
    }


def run_benchmarks(
    quick: bool = False,
    device: str = "auto",
    *,
    variant: str = "cnn2_5",
    n_train: int | None = None,
    epochs: int = 1,
    repeats: int = 1,
    batch_sizes: Sequence[int] | None = None,
    lr: float | str = "auto",
    sections: Sequence[str] = SECTIONS,
) -> dict[str, Any]:
    """The benchmarks named in `sections` on one set of IDX files; quick=True shrinks them to a few thousand images (smoke runs, tests)."""
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown or not sections:
        raise ConfigError("sections", f"unknown or no section(s) {unknown or list(sections)}", allowed=SECTIONS)
    dev = resolve_device(device)
    n = n_train or (QUICK["n_train"] if quick else 60_000)
    n_test = QUICK["n_test"] if quick else N_TEST
    sizes = QUICK["sizes"] if quick else FULL_SIZES
    sizes = tuple(s for s in sizes if s <= n) or (n,)
    variants = QUICK["variants"] if quick else SCALING_VARIANTS
    batches = tuple(batch_sizes or (STUDENT_BATCH_SIZE, DEFAULT_BATCH_SIZE))
    with tempfile.TemporaryDirectory(prefix="cnn-bench-") as tmp:
        root = write_idx(tmp, n, n_test)
        runs = {
            "training": lambda: bench_training(
                variant, n, epochs, batches, str(dev), root, n_test=n_test, repeats=repeats, lr=lr
            ),
            "lr_finder": lambda: bench_lr_finder(variant, n, DEFAULT_BATCH_SIZE, str(dev), root, n_test=n_test),
            "eval": lambda: bench_eval(variant, n, device=str(dev), data_root=root, n_test=n_test),
            "scaling": lambda: bench_scaling(
                sizes, variants, batch_size=DEFAULT_BATCH_SIZE, device=str(dev), data_root=root, n_test=n_test
            ),
        }
        results = {
            "quick": quick,
            "environment": environment(dev),
            **{name: runs[name]() for name in SECTIONS if name in sections},
        }
    results["gpu"] = gpu_note(dev)
    results["targets"] = check_targets(results)
    return results


def _lr_arg(text: str) -> float | str:
    return text if text in ("auto", "scaled") else float(text)


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line options of `python -m benchmarks.speed`."""
    p = argparse.ArgumentParser(
        description="Benchmark cnn-lab's training against the student pipeline (torchvision + DataLoader)"
    )
    p.add_argument("--quick", action="store_true", help="a few thousand images (smoke run)")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument(
        "--json-out", default=None, help="default: benchmarks/results/speed-<device>.json (none for --quick)"
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--variant", default="cnn2_5")
    p.add_argument("--n-train", type=count_option("max_train"), default=None)
    p.add_argument("--epochs", type=count_option("epochs"), default=1)
    p.add_argument(
        "--repeats", type=count_option("repeats"), default=1, help="training runs per pipeline; the median is reported"
    )
    p.add_argument(
        "--batch-sizes",
        type=count_option("batch_size"),
        nargs="+",
        default=None,
        help=f"cnn-lab batch sizes (default {STUDENT_BATCH_SIZE} {DEFAULT_BATCH_SIZE})",
    )
    p.add_argument(
        "--sections",
        nargs="+",
        default=list(SECTIONS),
        help=f"which benchmarks to run (default all: {' '.join(SECTIONS)})",
    )
    p.add_argument(
        "--lr",
        type=_lr_arg,
        default="auto",
        help="cnn-lab lr: auto (range test per batch size), scaled (linear rule) or a number",
    )
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmarks and print a table or JSON."""
    args = get_args_parser().parse_args(argv)
    results = run_benchmarks(
        args.quick,
        args.device,
        variant=args.variant,
        n_train=args.n_train,
        epochs=args.epochs,
        repeats=args.repeats,
        batch_sizes=args.batch_sizes,
        lr=args.lr,
        sections=args.sections,
    )
    results["command"] = command_line("python -m benchmarks.speed", argv)
    out = output_path(args.json_out, f"speed-{resolve_device(args.device).type}", args.quick)
    if out:
        write_result(results, out)
    print(json.dumps(results, indent=2) if args.json else format_table(results))
    return results


if __name__ == "__main__":
    main()
