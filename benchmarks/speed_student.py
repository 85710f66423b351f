"""The student projects' training loop, the speed benchmark's baseline: torchvision's FashionMNIST with per-sample
transforms, a DataLoader, float32 SGD with momentum and one `loss.item()` per step, as the tutorials write it."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.speed_measure import memory_figures, reset_peak_memory, sync, test_accuracy, warm_up
from cnn.data.splits import DatasetSplits
from cnn.parallel import cpu_snapshot, other_load
from cnn.train_setup import resolve_device

STUDENT_BATCH_SIZE = 64
STUDENT_LR = 0.01
STUDENT_NAME = "student-style"


def student_loader(
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
    loader = student_loader(root, True, batch_size, mean, std, input_size)
    model.to(dev).train()
    opt = optimizer or torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    wx, wy = next(iter(loader))
    warm_up(model, wx.to(dev), wy.to(dev))
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
    sync(dev)
    seconds = time.perf_counter() - start
    steps = -(-images // batch_size)
    return {
        "images": images,
        "seconds": seconds,
        "img_per_s": images / max(seconds, 1e-9),
        "train_loss": running / max(steps, 1),
        "dataset_size": len(loader.dataset),
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
        **memory_figures(device, baseline),
        "other_load": others,
    }
