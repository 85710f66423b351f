"""Test-made image sets for the recipe benchmark: scikit-learn's digits, distorted into harder 28x28 images.

Each image is a real 8x8 digit upsampled, randomly rotated, scaled, sheared and shifted, overlaid with a faint
fragment of another digit and Gaussian noise. Train images come only from the digits' training bases and test
images only from its test bases, so no base digit appears in both splits.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor

from cnn.data import register_dataset
from cnn.data.sources import load_digits
from cnn.errors import ConfigError

SIDE = 28
SIZES = {"small": 540, "medium": 5_400, "large": 60_000}  # training images (before the validation split)
TEST_IMAGES = {"small": 500, "medium": 2_000, "large": 10_000}
NOISE_STD = 0.25  # on [0, 1] intensities; keeps the reference loop below 95% test accuracy
CLUTTER = 0.4  # intensity of the overlaid fragment of another digit


def _warp(base: Tensor, gen: torch.Generator) -> Tensor:
    """Random affine warp of float (N, 1, 28, 28) images in [0, 1]."""
    n = base.shape[0]
    angle = (torch.rand(n, generator=gen) - 0.5) * math.radians(50)
    scale = 0.75 + 0.4 * torch.rand(n, generator=gen)
    shear = (torch.rand(n, generator=gen) - 0.5) * 0.4
    shift = (torch.rand(n, 2, generator=gen) - 0.5) * (6.0 / SIDE) * 2
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin + shear, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(base.shape), align_corners=False)
    return F.grid_sample(base, grid, align_corners=False, padding_mode="zeros")


def _upsampled(images: Tensor) -> Tensor:
    """uint8 (N, 1, 8, 8) digits -> float (N, 1, 28, 28) in [0, 1], the digit filling the middle 20x20."""
    x = F.interpolate(images.float() / 255.0, size=(20, 20), mode="bilinear", align_corners=False)
    return F.pad(x, (4, 4, 4, 4))


def distort(images: Tensor, labels: Tensor, n: int, seed: int) -> tuple[Tensor, Tensor]:
    """`n` distorted 28x28 uint8 images drawn (with replacement) from the base `images`, and their labels."""
    gen = torch.Generator().manual_seed(seed)
    base = _upsampled(images)
    pick = torch.randint(0, len(labels), (n,), generator=gen)
    other = torch.randint(0, len(labels), (n,), generator=gen)
    x = _warp(base[pick], gen)
    clutter = _warp(base[other], gen) * CLUTTER
    x = torch.maximum(x, clutter) + NOISE_STD * torch.randn(x.shape, generator=gen)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8), labels[pick].clone()


def check_size(size: str) -> str:
    """A known size name."""
    if size not in SIZES:
        raise ConfigError("size", f"unknown size {size!r}", allowed=list(SIZES))
    return size


@functools.lru_cache(maxsize=4)
def distorted_digits(size: str = "small", seed: int = 0) -> tuple:
    """((train_x, train_y), (test_x, test_y), classes) of the named size; the same every call."""
    (tx, ty), (vx, vy), classes = load_digits()
    check_size(size)
    train = distort(tx, ty, SIZES[size], seed)
    test = distort(vx, vy, TEST_IMAGES[size], seed + 1)
    return train, test, classes


def dataset_name(size: str) -> str:
    """Registry name of a distorted-digits set."""
    return f"distorted-digits-{check_size(size)}"


def register_distorted_digits() -> list[str]:
    """Register every size as a dataset (idempotent); returns their names."""
    from cnn.data import list_datasets

    names = []
    for size in SIZES:
        name = dataset_name(size)
        if name not in list_datasets():
            register_dataset(
                name,
                lambda data_dir, download, s=size: distorted_digits(s),
                f"test-made distorted digits, {SIZES[size]} train images",
            )
        names.append(name)
    return names
