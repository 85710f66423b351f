"""Training benchmark: cnn-lab's resident-tensor Trainer against the student-style torchvision + DataLoader pipeline.

Both pipelines train the same seeded model on the same IDX files (FashionMNIST-shaped, written here when no
data_root is given) for the same epochs; the report gives img/s, their ratio, batch size, device, torch
version, peak memory and test accuracy. Speed is printed, never asserted. Run: `python -m benchmarks.speed --quick`.

Measured (cnn2_5, 60k images, 1 epoch, 2-core x86_64, torch 2.14.1, idle machine, medians of 3): student-style
5.6k img/s, test acc 0.965; cnn-lab batch 64 18.8k (3.3x), batch 256 25.1k (4.5x, acc 0.968); with channels_last
19.3k (3.4x) and 27.2k (4.8x). The model's conv/pool kernels take ~95% of cnn-lab's step on CPU.
One H200 (torch 2.11, 1 epoch): student-style 6.3k img/s; cnn-lab batch 2048 634k (101x). AlexNet 100x100: student-style
5.0k, cnn-lab batch 512 104k, 2048 144k. `benchmarks.variants` measures every variant x 10 epochs.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmarks.idx import write_idx_dataset
from benchmarks.record import command_line, environment, output_path, write_result
from cnn.data.sources import load_torchvision
from cnn.data.splits import DatasetSplits
from cnn.data.stats import compute_normalization, fingerprint
from cnn.errors import ConfigError
from cnn.evaluate import predict
from cnn.lr_find import LRFindResult
from cnn.pipeline import DEFAULT_LR_RULE, build_model, chosen_lr, range_test_sweep
from cnn import recipe
from cnn.recipe import MIN_LR_TEST_STEPS
from cnn.models import count_parameters
from cnn.params import count_option, default_of
from cnn.parallel import cpu_snapshot, other_load
from cnn.train import Precision, TrainConfig, Trainer, make_loader, resolve_device

DEFAULT_BATCH_SIZE = (
    256  # CPU: 512 is at most ~18% faster and 1024 slower, and both trail student-style's accuracy after 1 epoch
)
STUDENT_BATCH_SIZE = 64
TARGET_RATIO_STUDENT_BATCH, TARGET_RATIO_DEFAULT_BATCH = 5.0, 6.0  # the speed-up targets on CPU
GPU_TARGET_IMG_S = {"cnn2_5": 500_000, "alexnet": 60_000}  # half the resident figures measured on one H100
STUDENT_LR = 0.01
LR_MIN, LR_MAX = default_of("lr_min"), default_of("lr_max")  # the flows' range-test bounds
N_TEST = 10_000
N_VAL = 1_000
QUICK = {
    "n_train": 1_500,
    "n_test": 300,
    "sizes": (500, 1_000, 1_500),
    "variants": ("cnn2_3", "cnn2_5", "lenet1", "cnn2_7"),
}
FULL_SIZES = (10_000, 30_000, 60_000)
SCALING_VARIANTS = ("cnn2_5", "cnn2_3", "cnn2_7", "lenet5")
GPU_NOT_MEASURED = "GPU not measured (no CUDA device)"
SECTIONS = ("training", "lr_finder", "eval", "scaling")
STUDENT_NAME = "student-style"
FAST_NAME = "cnn-lab"


# ---------------------------------------------------------------- data: IDX files in torchvision's raw layout


def make_images(n: int, num_classes: int = 10, size: int = 28, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Noisy images whose jittered bar row and column line encode the class: learnable, but not at 100% in one epoch."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, n)
    images = rng.integers(0, 160, (n, size, size)).astype(np.int16)
    band = max(1, size // num_classes)
    rows = (labels * size) // num_classes + rng.integers(-1, 2, n)
    cols = ((labels * 7) + rng.integers(-2, 3, n)) % size
    r = np.arange(size)
    images += 60 * ((r >= rows[:, None]) & (r < rows[:, None] + band))[:, :, None].astype(np.int16)
    images += 40 * (r == cols[:, None])[:, None, :].astype(np.int16)
    return np.clip(images, 0, 255).astype(np.uint8), labels.astype(np.uint8)


def write_idx(
    root: str | Path, n_train: int, n_test: int = N_TEST, seed: int = 0, folder: str = "FashionMNIST"
) -> Path:
    """Write `make_images` train/test IDX files under <root>/<folder>/raw/ as torchvision reads them; returns root."""
    return write_idx_dataset(root, lambda n, s: make_images(n, seed=s), n_train, n_test, seed=seed, folder=folder)


def load_splits(root: str | Path, n_val: int = N_VAL, max_train: int | None = None) -> DatasetSplits:
    """All training images as the train split (as the student-style run sees them); val is the first n_val test images."""
    (train_x, train_y), (test_x, test_y), classes = load_torchvision("FashionMNIST", str(root), download=False)
    if max_train is not None:
        train_x, train_y = train_x[:max_train].contiguous(), train_y[:max_train].contiguous()
    mean, std = compute_normalization(train_x)
    n_val = min(n_val, test_y.numel())
    return DatasetSplits(
        name="fashion-mnist-bench",
        classes=classes,
        train_x=train_x,
        train_y=train_y,
        val_x=test_x[:n_val].contiguous(),
        val_y=test_y[:n_val].contiguous(),
        test_x=test_x,
        test_y=test_y,
        mean=mean,
        std=std,
        fingerprint=fingerprint(train_x, train_y),
        meta={"n_val": n_val},
    )


# ---------------------------------------------------------------- measuring helpers


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device) -> float | None:
    """Reset the peak-memory counter and return the memory in use (MiB); None where only the process-lifetime peak exists."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device) / 2**20
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: resets VmHWM, the resident-set high-water mark
        return _proc_status_mb("VmRSS:")
    except OSError:
        return None


def _proc_status_mb(key: str) -> float | None:
    """A memory line of /proc/self/status in MiB, or None."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory since the last reset: CUDA max_memory_allocated, else resident-set high-water mark (MiB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    peak = _proc_status_mb("VmHWM:")
    if peak is not None:
        return peak
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def _warm_up(model: nn.Module, x: Tensor, y: Tensor, steps: int = 3) -> None:
    """A few SGD steps on a throwaway copy, so one-time kernel/allocator costs stay out of the timings."""
    clone = copy.deepcopy(model)
    opt = torch.optim.SGD(clone.parameters(), lr=1e-3)
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(clone(x), y).backward()
        opt.step()
    _sync(x.device)


def scaled_lr(batch_size: int) -> float:
    """The default optimizer's base lr at `batch_size`: the recipe's large-batch rule (linear above batch 128)."""
    return recipe.base_lr(default_of("optimizer"), batch_size)


def test_accuracy(
    model: nn.Module, data: DatasetSplits, input_size: int, device: torch.device, batch_size: int = 1024
) -> float:
    """Accuracy on the test split, through cnn-lab's loader and `predict` (the same for both pipelines)."""
    loader = make_loader(data, "test", batch_size=batch_size, input_size=input_size, device=device)
    y_true, y_pred, _ = predict(model.to(device), loader)
    return float((y_true == y_pred).mean())


# ---------------------------------------------------------------- the two pipelines


def _student_loader(
    root: str | Path,
    train: bool,
    batch_size: int,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    input_size: int | None = None,
) -> torch.utils.data.DataLoader:
    """torchvision FashionMNIST with a per-sample [Resize +] ToTensor + Normalize and a DataLoader, as the tutorials write it."""
    from torchvision import datasets, transforms

    if mean is None or std is None:
        raw = datasets.FashionMNIST(str(root), train=True, download=False).data.float().div(255)
        mean, std = (float(raw.mean()),), (float(raw.std()),)
    steps = (
        [transforms.Resize((input_size, input_size), antialias=True)] if input_size not in (None, 28) else []
    )  # AlexNet: 100x100 (student project 004)
    tf = transforms.Compose([*steps, transforms.ToTensor(), transforms.Normalize(tuple(mean), tuple(std))])
    ds = datasets.FashionMNIST(str(root), train=train, download=False, transform=tf)
    return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=train, num_workers=0)


def student_epoch(
    model: nn.Module,
    root: str | Path,
    *,
    batch_size: int = STUDENT_BATCH_SIZE,
    lr: float = STUDENT_LR,
    max_images: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    device: str | torch.device = "cpu",
    optimizer: torch.optim.Optimizer | None = None,
    input_size: int | None = None,
) -> dict[str, Any]:
    """One tutorial-style epoch (float32, SGD momentum 0.9, `loss.item()` per step); returns images, seconds, img/s.

    Pass the same `optimizer` across epochs to keep its momentum; `max_images` stops early (smoke runs).
    """
    dev = resolve_device(device)
    loader = _student_loader(root, True, batch_size, mean, std, input_size)
    model.to(dev).train()
    opt = optimizer or torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    wx, wy = next(iter(loader))
    _warm_up(model, wx.to(dev), wy.to(dev))
    images, running = 0, 0.0
    start = time.perf_counter()
    for x, y in loader:
        x, y = x.to(dev), y.to(dev)
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        running += loss.item()
        images += len(y)
        if max_images is not None and images >= max_images:
            break
    _sync(dev)
    seconds = time.perf_counter() - start
    steps = -(-images // batch_size)
    return {
        "images": images,
        "seconds": seconds,
        "img_per_s": images / max(seconds, 1e-9),
        "train_loss": running / max(steps, 1),
        "dataset_size": len(loader.dataset),
    }


def fast_epochs(model: nn.Module, data: DatasetSplits, config: TrainConfig, input_size: int) -> dict[str, Any]:
    """Train with cnn-lab's Trainer and time the epochs it runs (its per-epoch clock, validation excluded)."""
    dev = resolve_device(config.device)
    precision = Precision(dev, config.amp, config.channels_last)
    warm = copy.deepcopy(model).to(dev)
    if precision.channels_last:
        warm = warm.to(memory_format=torch.channels_last)
    wx, wy = next(
        iter(
            make_loader(
                data,
                "train",
                batch_size=config.batch_size,
                input_size=input_size,
                device=dev,
                channels_last=precision.channels_last,
                max_batches=1,
            )
        )
    )
    with precision.autocast():
        _warm_up(warm, wx, wy)
    start = time.perf_counter()
    trainer = Trainer(model, data, config, input_size=input_size)
    rows = list(trainer.epochs())
    _sync(dev)
    wall = time.perf_counter() - start
    seconds = sum(r["seconds"] for r in rows)
    images = int(sum(r["images"] for r in rows))
    return {
        "images": images,
        "seconds": seconds,
        "wall_seconds": wall,
        "img_per_s": images / max(seconds, 1e-9),
        "epochs": len(rows),
        "epoch_seconds": [r["seconds"] for r in rows],
        "train_loss": rows[-1]["train_loss"],
        "val_acc": rows[-1]["val_acc"],
        "test_acc": test_accuracy(trainer.model, data, input_size, dev),
        "batch_size": config.batch_size,
        "lr": config.lr,
        "channels_last": precision.channels_last,
        "amp": precision.amp,
    }


# ---------------------------------------------------------------- benchmarks


def _data_root(
    data_root: str | Path | None, n_train: int, n_test: int, stack: list[tempfile.TemporaryDirectory]
) -> Path:
    """`data_root` as given, or a temp dir holding freshly written IDX files (kept alive by `stack`)."""
    if data_root is not None:
        return Path(data_root)
    tmp = tempfile.TemporaryDirectory(prefix="cnn-bench-")
    stack.append(tmp)
    return write_idx(tmp.name, n_train, n_test)


def _model(variant: str, data: DatasetSplits, seed: int = 0) -> tuple[nn.Module, int]:
    """The seeded initial model of `variant` for `data`, and its input size, as the flows build it."""
    return build_model(variant, data, seed)


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


def _memory(device: torch.device, baseline: float | None) -> dict[str, Any]:
    """Peak memory of a run, and how far it rose above what was in use when the run started (None if unknown)."""
    peak = peak_memory_mb(device)
    return {
        "peak_mem_mb": peak,
        "mem_growth_mb": None if baseline is None else max(0.0, peak - baseline),
        "peak_mem_scope": "process" if baseline is None else "run",
    }


def run_student(
    model: nn.Module,
    root: Path,
    data: DatasetSplits,
    input_size: int,
    epochs: int,
    device: torch.device,
    *,
    seed: int = 0,
) -> dict[str, Any]:
    """`epochs` student-style epochs with one optimizer, then the test accuracy; one row of the table."""
    baseline = reset_peak_memory(device)
    torch.manual_seed(seed)  # the DataLoader's shuffle and the dropout masks
    model = model.to(device)
    opt = torch.optim.SGD(model.parameters(), lr=STUDENT_LR, momentum=0.9)
    cpu = cpu_snapshot()
    runs = [
        student_epoch(
            model,
            root,
            batch_size=STUDENT_BATCH_SIZE,
            mean=data.mean,
            std=data.std,
            device=device,
            optimizer=opt,
            input_size=input_size,
        )
        for _ in range(epochs)
    ]
    others = other_load(cpu)
    seconds = sum(r["seconds"] for r in runs)
    images = sum(r["images"] for r in runs)
    return {
        "pipeline": STUDENT_NAME,
        "batch_size": STUDENT_BATCH_SIZE,
        "lr": STUDENT_LR,
        "images": images,
        "seconds": seconds,
        "img_per_s": images / max(seconds, 1e-9),
        "epochs": epochs,
        "train_loss": runs[-1]["train_loss"],
        "test_acc": test_accuracy(model, data, input_size, device),
        **_memory(device, baseline),
        "other_load": others,
    }


def run_fast(
    model: nn.Module,
    data: DatasetSplits,
    input_size: int,
    epochs: int,
    batch_size: int,
    device: torch.device,
    *,
    lr: float | None = None,
    channels_last: bool | None = None,
    amp: bool | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """cnn-lab's Trainer at `batch_size` (lr scaled to it unless given; None options keep the Trainer's defaults); one table row."""
    baseline = reset_peak_memory(device)
    config = TrainConfig(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr if lr is not None else scaled_lr(batch_size),
        seed=seed,
        device=str(device),
        channels_last=channels_last,
        amp=amp,
    )
    cpu = cpu_snapshot()
    row = fast_epochs(model, data, config, input_size)
    others = other_load(cpu)
    return {"pipeline": FAST_NAME, **row, **_memory(device, baseline), "other_load": others}


def sweep_steps(num_steps: int, epoch_steps: int) -> int:
    """Steps of the benchmark's LR sweep: at most one epoch, but never fewer than a usable curve needs."""
    return max(2, min(num_steps, max(epoch_steps, MIN_LR_TEST_STEPS)))


def find_lr(
    model: nn.Module,
    data: DatasetSplits,
    input_size: int,
    batch_size: int,
    device: torch.device,
    *,
    num_steps: int = 100,
    seed: int = 0,
    lr_max: float = LR_MAX,
    rule: str = DEFAULT_LR_RULE,
) -> tuple[LRFindResult, float]:
    """The flows' LR range test (`pipeline.range_test_sweep`, default optimizer) at the training batch size for
    `sweep_steps` steps, after a warm-up; returns (result with the flows' chosen lr as its suggestion, seconds)."""
    model = copy.deepcopy(model).to(device)
    wx, wy = next(
        iter(make_loader(data, "train", batch_size=batch_size, input_size=input_size, device=device, max_batches=1))
    )
    _warm_up(copy.deepcopy(model), wx, wy)
    torch.manual_seed(seed)  # dropout masks of the sweep, so the suggestion does not depend on earlier calls
    start = time.perf_counter()
    steps = sweep_steps(num_steps, -(-int(data.train_y.numel()) // batch_size))
    result = range_test_sweep(
        model,
        data,
        input_size,
        TrainConfig(batch_size=batch_size, seed=seed, device=str(device)),
        steps,
        lr_min=LR_MIN,
        lr_max=lr_max,
        rule=rule,
    )
    _sync(device)
    seconds = time.perf_counter() - start
    return dataclasses.replace(result, suggestion=chosen_lr(result, default_of("optimizer"), batch_size)[0]), seconds


def _pick_lr(
    lr: float | str,
    model: nn.Module,
    data: DatasetSplits,
    input_size: int,
    batch_size: int,
    device: torch.device,
    seed: int,
) -> tuple[float, str]:
    """(lr, how it was chosen): "auto" runs the range test at `batch_size`, "scaled" uses `scaled_lr`, a number is kept."""
    if lr == "auto":
        return find_lr(model, data, input_size, batch_size, device, seed=seed)[0].suggestion, "range test"
    if lr == "scaled":
        return scaled_lr(batch_size), "linear scaling"
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
        raise ConfigError(
            "lr",
            f"must be 'auto', 'scaled' or a positive number, got {lr!r}",
            allowed=["auto", "scaled", "a float > 0"],
        )
    return float(lr), "given"


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
    root = _data_root(data_root, n_train, n_test, keep)
    data = load_splits(root)
    model0, size = _model(variant, data, seed)
    lrs = {bs: _pick_lr(lr, model0, data, size, bs, dev, seed) for bs in sizes}
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
    student_row = {**_median_row(student_runs), "ratio": 1.0, "ratio_best": 1.0}
    fast_rows = []
    for setup in setups:
        row = _median_row(fast_runs[setup])
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


def _median_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median img/s (the lower middle one for an even count), with every run's img/s attached."""
    ordered = sorted(rows, key=lambda r: r["img_per_s"])
    row = dict(ordered[(len(ordered) - 1) // 2])
    row["img_per_s_runs"] = [r["img_per_s"] for r in rows]
    row["img_per_s_best"] = ordered[-1]["img_per_s"]
    row["other_load_runs"] = [r.get("other_load") for r in rows]
    return row


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
    data = load_splits(_data_root(data_root, n_train, n_test, keep))
    model, size = _model(variant, data, seed)
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


def _time_eval(run: Callable[[], int], repeats: int) -> float:
    """Median img/s of `repeats` calls of `run` (which returns the images it evaluated)."""
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        images = run()
        rates.append(images / max(time.perf_counter() - start, 1e-9))
    return statistics.median(rates)


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
    root = _data_root(data_root, n_train, n_test, keep)
    data = load_splits(root)
    model, size = _model(variant, data, seed)
    model = model.to(dev).eval()

    def fast() -> int:
        loader = make_loader(data, "test", batch_size=batch_size, input_size=size, device=dev)
        y_true, _, _ = predict(model, loader)
        _sync(dev)
        return len(y_true)

    def student() -> int:
        loader = _student_loader(root, False, STUDENT_BATCH_SIZE, data.mean, data.std, size)
        n = correct = 0
        with torch.no_grad():
            for x, y in loader:  # the tutorials' test loop: one .item() per batch
                correct += (model(x.to(dev)).argmax(1) == y.to(dev)).sum().item()
                n += len(y)
        return n

    fast()
    fast_rate, student_rate = _time_eval(fast, repeats), _time_eval(student, repeats)
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
    root = _data_root(data_root, max(sizes), n_test, keep)
    by_size = []
    for n in sizes:
        data = load_splits(root, max_train=n)
        model, size = _model(variants[0], data, seed)
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
        model, size = _model(name, data, seed)
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
    results["gpu"] = f"measured on {results['environment']['device_name']}" if dev.type == "cuda" else GPU_NOT_MEASURED
    results["targets"] = check_targets(results)
    return results


def check_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each with the measured value and whether it is met (median figures)."""
    checks: list[dict[str, Any]] = []
    training = results.get("training")
    if training:
        checks += _speed_targets(training) + _accuracy_targets(training)
    if "lr_finder" in results:
        lf = results["lr_finder"]
        checks.append(
            {
                "target": f"LR range test at batch {lf['batch_size']}: <= 1 epoch of images",
                "value": lf["epochs_cost"],
                "met": lf["epochs_cost"] <= 1.0,
            }
        )
        checks.append(
            {
                "target": f"LR range test at batch {lf['batch_size']}: <= 1 training epoch of time",
                "value": lf["time_vs_epoch"],
                "met": lf["time_vs_epoch"] <= 1.0,
            }
        )
    return checks


def _speed_targets(training: dict[str, Any]) -> list[dict[str, Any]]:
    """CPU: speed-up over student-style at batch 64 and 256; CUDA: resident img/s of cnn2_5 / alexnet at their best batch."""
    rows = {r["batch_size"]: r for r in training["fast"] if r["pipeline"] == FAST_NAME}
    if not str(training["device"]).startswith("cuda"):
        goals = ((STUDENT_BATCH_SIZE, TARGET_RATIO_STUDENT_BATCH), (DEFAULT_BATCH_SIZE, TARGET_RATIO_DEFAULT_BATCH))
        return [
            {
                "target": f"CPU batch {bs}: img/s >= {goal:g}x student-style",
                "value": rows[bs]["ratio"],
                "met": rows[bs]["ratio"] >= goal,
            }
            for bs, goal in goals
            if bs in rows
        ]
    goal = GPU_TARGET_IMG_S.get(training["variant"])
    if goal is None or not rows:
        return []
    best = max(rows.values(), key=lambda r: r["img_per_s"])
    return [
        {
            "target": f"GPU {training['variant']}: img/s >= {goal:,} (best batch {best['batch_size']})",
            "value": best["img_per_s"],
            "met": best["img_per_s"] >= goal,
        }
    ]


def _accuracy_targets(training: dict[str, Any]) -> list[dict[str, Any]]:
    """Each cnn-lab batch size: test accuracy no worse than student-style's after the same epochs."""
    student = training["student_style"]["test_acc"]
    return [
        {
            "target": f"{FAST_NAME} batch {r['batch_size']}: test acc >= student-style's {student:.4f}",
            "value": r["test_acc"],
            "met": r["test_acc"] >= student,
        }
        for r in training["fast"]
    ]


# ---------------------------------------------------------------- output


def _cell(value: Any, fmt: str) -> str:
    """One table cell: "-" for a missing value, lists joined by commas."""
    if value is None:
        return "-"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return format(value, fmt)


def _table(rows: list[dict[str, Any]], columns: Sequence[tuple[str, str, str]]) -> str:
    """Fixed-width text table of `rows`; columns are (key, header, format)."""
    cells = [[h for _, h, _ in columns]] + [[_cell(r.get(k), f) for k, _, f in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    left = [f == "s" for _, _, f in columns]
    lines = [
        "  ".join(c.ljust(w) if lft else c.rjust(w) for c, w, lft in zip(row, widths, left)).rstrip() for row in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


TRAINING_COLUMNS = [
    ("pipeline", "pipeline", "s"),
    ("batch_size", "batch", "d"),
    ("lr", "lr", ".3g"),
    ("lr_source", "lr from", "s"),
    ("img_per_s", "img/s", ",.0f"),
    ("ratio", "ratio", ".2f"),
    ("img_per_s_best", "best img/s", ",.0f"),
    ("ratio_best", "best ratio", ".2f"),
    ("seconds", "train s", ".2f"),
    ("test_acc", "test acc", ".4f"),
    ("peak_mem_mb", "peak MiB", ",.0f"),
    ("mem_growth_mb", "+MiB", ",.0f"),
    ("other_load", "others", ".2f"),
    ("device", "device", "s"),
    ("torch", "torch", "s"),
]


def _format_training(training: dict[str, Any]) -> str:
    """The pipelines' table: one row per pipeline and batch size."""
    head = (
        f"Training: {training['variant']} ({training['params']} params), {training['n_train']} train / {training['n_test']} test images, "
        f"{training['epochs']} epoch(s), median and best of {training['repeats']} run(s); 'others' = cores other processes kept busy meanwhile"
    )
    rows = [
        {**r, "device": training["device"], "torch": training["torch"]}
        for r in [training["student_style"], *training["fast"]]
    ]
    return head + "\n" + _table(rows, TRAINING_COLUMNS)


def _format_scaling(sc: dict[str, Any]) -> str:
    """Epoch time vs training-set size, then total time vs number of variants."""
    return "\n".join(
        [
            f"Scaling ({FAST_NAME}, batch {sc['batch_size']}): epoch time vs training-set size",
            _table(
                sc["by_size"],
                [
                    ("n_train", "images", ",d"),
                    ("seconds", "epoch s", ".2f"),
                    ("img_per_s", "img/s", ",.0f"),
                    ("other_load", "others", ".2f"),
                ],
            ),
            f"total time (data load {sc['load_seconds']:.2f} s + one epoch per variant) vs number of variants",
            _table(
                sc["by_count"],
                [
                    ("variants", "variants", "d"),
                    ("total_seconds", "total s", ".2f"),
                    ("other_load", "others (max)", ".2f"),
                    ("names", "variants run", "s"),
                ],
            ),
        ]
    )


def format_table(results: dict[str, Any]) -> str:
    """Human-readable tables of what `run_benchmarks`, or any one bench_* function, returned."""
    results = _sections(results)
    env = results.get("environment") or next((v for v in results.values() if isinstance(v, dict) and "torch" in v), {})
    parts = [
        f"device {env.get('device')} ({env.get('device_name')}), torch {env.get('torch')}, {env.get('threads')} threads, {env.get('cpu_count')} cores, load {_load(env)}"
    ]
    if results.get("quick"):
        parts.append("quick run: a few thousand images, a smoke test; its speeds and accuracies say little")
    if "training" in results:
        parts.append(_format_training(results["training"]))
    if "lr_finder" in results:
        lf = results["lr_finder"]
        parts.append(
            f"LR range test at batch {lf['batch_size']}: {lf['num_steps']} steps, {lf['images_seen']} images = {lf['epochs_cost']:.2f} epoch(s); "
            f"{lf['seconds']:.2f} s vs {lf['epoch_seconds']:.2f} s per training epoch ({lf['time_vs_epoch']:.2f}x); suggestion {lf['suggestion']:.3g}"
        )
    if "eval" in results:
        ev = results["eval"]
        parts.append(
            f"Evaluation on {ev['n_test']} test images: {FAST_NAME} {ev['img_per_s']:,.0f} img/s (batch {ev['batch_size']}) "
            f"vs {STUDENT_NAME} {ev['student_img_per_s']:,.0f} img/s (batch {ev['student_batch_size']}), {ev['ratio']:.2f}x"
        )
    if "scaling" in results:
        parts.append(_format_scaling(results["scaling"]))
    if results.get("targets"):
        rows = [{**t, "met": "met" if t["met"] else "MISSED"} for t in results["targets"]]
        parts.append(
            "Targets (median figures)\n"
            + _table(rows, [("target", "target", "s"), ("value", "value", ".3f"), ("met", "", "s")])
        )
    if "gpu" in results:
        parts.append(f"GPU: {results['gpu']}")
    return "\n\n".join(parts)


def _sections(results: dict[str, Any]) -> dict[str, Any]:
    """`results` keyed like run_benchmarks' output, whichever bench_* made it."""
    for key, marker in (
        ("training", "student_style"),
        ("lr_finder", "epochs_cost"),
        ("eval", "student_img_per_s"),
        ("scaling", "by_size"),
    ):
        if marker in results:
            return {key: results}
    return results


def _load(env: dict[str, Any]) -> str:
    load = env.get("load_avg")
    return "n/a" if not load else "/".join(f"{v:.2f}" for v in load)


def _lr_arg(text: str) -> float | str:
    return text if text in ("auto", "scaled") else float(text)


def get_args_parser() -> argparse.ArgumentParser:
    """Command-line options of `python -m benchmarks.speed`."""
    p = argparse.ArgumentParser(description="Benchmark cnn-lab's training against a student-style torchvision pipeline")
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
