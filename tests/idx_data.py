"""Test-made datasets: IDX files in torchvision's raw layout, with a learnable class structure."""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def write_idx_images(path: Path, images: np.ndarray) -> None:
    """Write uint8 (N, H, W) images as an IDX3 file."""
    n, h, w = images.shape
    path.write_bytes(struct.pack(">IIII", 0x803, n, h, w) + images.astype(np.uint8).tobytes())


def write_idx_labels(path: Path, labels: np.ndarray) -> None:
    """Write uint8 labels as an IDX1 file."""
    path.write_bytes(struct.pack(">II", 0x801, len(labels)) + labels.astype(np.uint8).tobytes())


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


def write_mnist_like(root: Path, folder: str = "FashionMNIST", n_train: int = 600, n_test: int = 200, size: int = 28, num_classes: int = 10, seed: int = 0) -> Path:
    """Write train/test IDX files under <root>/<folder>/raw/ as torchvision expects; returns root."""
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for train, n in ((True, n_train), (False, n_test)):
        images, labels = make_images(n, num_classes, size, seed + int(train))
        img_name, lbl_name = FILES[train]
        write_idx_images(raw / img_name, images)
        write_idx_labels(raw / lbl_name, labels)
    return root
