"""The speed benchmark's data: FashionMNIST-shaped IDX files made here (noisy images whose bars encode the class), read
back as the splits both pipelines train on."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from benchmarks.idx import write_idx_dataset
from cnn.data.sources import load_torchvision
from cnn.data.splits import DatasetSplits
from cnn.data.stats import compute_normalization, fingerprint

N_TEST = 10_000
N_VAL = 1_000


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


def idx_root(data_root: str | Path | None, n_train: int, n_test: int, stack: list[tempfile.TemporaryDirectory]) -> Path:
    """`data_root` as given, or a temp dir holding freshly written IDX files (kept alive by `stack`)."""
    if data_root is not None:
        return Path(data_root)
    tmp = tempfile.TemporaryDirectory(prefix="cnn-bench-")
    stack.append(tmp)
    return write_idx(tmp.name, n_train, n_test)
