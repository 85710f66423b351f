"""Test-made datasets: IDX files in torchvision's raw layout, with a learnable class structure."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.idx import FILES, write_idx_dataset, write_idx_images, write_idx_labels  # noqa: F401  (the tests' one writer)


def make_images(n: int, num_classes: int = 10, size: int = 28, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Noisy images whose bright bar position encodes the class, so small CNNs can learn them."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, n)
    images = rng.integers(0, 60, (n, size, size)).astype(np.float32)
    band = max(1, size // num_classes)
    for i, c in enumerate(labels):
        row = (c * size) // num_classes
        images[i, row : row + band, :] += 150
        images[i, :, (c * 7) % size] += 60
    return np.clip(images, 0, 255).astype(np.uint8), labels.astype(np.uint8)


def write_mnist_like(
    root: Path,
    folder: str = "FashionMNIST",
    n_train: int = 600,
    n_test: int = 200,
    size: int = 28,
    num_classes: int = 10,
    seed: int = 0,
) -> Path:
    """Write train/test IDX files under <root>/<folder>/raw/ as torchvision expects; returns root."""
    return write_idx_dataset(
        root, lambda n, s: make_images(n, num_classes, size, s), n_train, n_test, seed=seed, folder=folder
    )
