"""Batches straight from resident uint8 tensors: index slices, per-batch normalise and resize, no per-sample Python."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from cnn.errors import ConfigError


def place_on_device(x: Tensor, device: torch.device) -> Tensor:
    """Move a uint8 split to `device` once; on CUDA fall back to pinned host memory if it does not fit."""
    if device.type != "cuda":
        return x
    try:
        return x.to(device, non_blocking=True)
    except torch.OutOfMemoryError:
        return x.pin_memory()


def epoch_order(n: int, generator: torch.Generator) -> Tensor:
    """One epoch's shuffled order of `n` images, drawn from a seeded CPU `generator` (the same on every device)."""
    return torch.randperm(n, generator=generator)


class BatchLoader:
    """Iterate (images, labels) batches of a uint8 split, normalised and resized on the training device.

    The split is moved to the device once; each epoch shuffles by an index permutation drawn from a
    seeded generator whose state can be saved and restored for exact resumes.
    """

    def __init__(
        self,
        x: Tensor,
        y: Tensor,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        batch_size: int,
        input_size: int | None = None,
        device: torch.device | str = "cpu",
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        channels_last: bool = False,
        max_batches: int | None = None,
    ) -> None:
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ConfigError("batch_size", f"must be a positive integer, got {batch_size!r}", allowed="an int >= 1")
        if drop_last and batch_size > y.numel():
            raise ConfigError(
                "batch_size",
                f"{batch_size} is larger than the {y.numel()} images of the split",
                allowed=f"1..{y.numel()}",
            )
        self.device = torch.device(device)
        self.x = place_on_device(x, self.device)
        self.y = y.to(self.x.device)  # beside the images (x.device is cuda:0 where self.device says cuda)
        channels = x.shape[1]
        self.mean = torch.tensor(list(mean), dtype=torch.float32, device=self.device).view(1, channels, 1, 1)
        self.std = torch.tensor(list(std), dtype=torch.float32, device=self.device).view(1, channels, 1, 1)
        self.batch_size = batch_size
        self.input_size = input_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.channels_last = channels_last
        self.max_batches = max_batches
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        n = self.y.numel()
        full = n // self.batch_size if self.drop_last else -(-n // self.batch_size)
        return min(full, self.max_batches) if self.max_batches is not None else full

    def transform(self, xb: Tensor) -> Tensor:
        """uint8 batch -> float, normalised with the train stats, resized to `input_size`."""
        xb = xb.to(self.device, non_blocking=True).float().div_(255.0).sub_(self.mean).div_(self.std)
        size = self.input_size
        if size is not None and (xb.shape[-2] != size or xb.shape[-1] != size):
            xb = F.interpolate(
                xb, size=(size, size), mode="bilinear", align_corners=False, antialias=size < xb.shape[-1]
            )
        if self.channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        return xb

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        n = self.y.numel()
        order = epoch_order(n, self.generator).to(self.x.device) if self.shuffle else None
        for b in range(len(self)):
            lo, hi = b * self.batch_size, min(n, (b + 1) * self.batch_size)
            if order is None:
                xb, yb = self.x[lo:hi], self.y[lo:hi]
            else:
                idx = order[lo:hi]
                xb, yb = self.x[idx], self.y[idx]
            yield self.transform(xb), yb.to(self.device, non_blocking=True)


class SeedBatches:
    """A shuffled split's batches for K seeds at once: seed k sees its images in the order a BatchLoader seeded with
    `seeds[k]` gives, stacked into (K, batch, C, H, W) images and (K, batch) labels, transformed in one call."""

    def __init__(self, loader: BatchLoader, seeds: Sequence[int]) -> None:
        self.loader = loader
        self.generators = [torch.Generator().manual_seed(seed) for seed in seeds]

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        loader, k = self.loader, len(self.generators)
        n = loader.y.numel()
        orders = torch.stack([epoch_order(n, g) for g in self.generators]).to(loader.x.device)
        for b in range(len(self)):
            idx = orders[:, b * loader.batch_size : min(n, (b + 1) * loader.batch_size)].reshape(-1)
            xb = loader.transform(loader.x[idx])
            yield xb.unflatten(0, (k, -1)), loader.y[idx].to(loader.device, non_blocking=True).view(k, -1)
