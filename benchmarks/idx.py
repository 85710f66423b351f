"""IDX files in torchvision's raw layout (`<root>/<folder>/raw/train-images-idx3-ubyte`, ...): the one writer that the
benchmarks and the tests share; each brings its own image generator."""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np

FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
ImageMaker = Callable[[int, int], tuple[np.ndarray, np.ndarray]]  # (n, seed) -> uint8 images (N, H, W), labels (N,)


def write_idx_images(path: Path, images: np.ndarray) -> None:
    """Write uint8 (N, H, W) images as an IDX3 file."""
    n, h, w = images.shape
    path.write_bytes(struct.pack(">IIII", 0x803, n, h, w) + images.astype(np.uint8).tobytes())


def write_idx_labels(path: Path, labels: np.ndarray) -> None:
    """Write uint8 labels as an IDX1 file."""
    path.write_bytes(struct.pack(">II", 0x801, len(labels)) + labels.astype(np.uint8).tobytes())


def write_idx_dataset(
    root: str | Path, make: ImageMaker, n_train: int, n_test: int, *, seed: int = 0, folder: str = "FashionMNIST"
) -> Path:
    """Write the train (seed + 1) and test (seed) splits that `make` draws under <root>/<folder>/raw/; returns root."""
    raw = Path(root) / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for train, n in ((True, n_train), (False, n_test)):
        images, labels = make(n, seed + int(train))
        img_name, lbl_name = FILES[train]
        write_idx_images(raw / img_name, images)
        write_idx_labels(raw / lbl_name, labels)
    return Path(root)
