"""The in-memory dataset a run trains on: uint8 splits, class names and train-only normalisation stats."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from cnn.data.stats import fingerprint as tensor_fingerprint
from cnn.testset import TestSet


@dataclass
class DatasetSplits:
    """Train/validation/test splits held as one uint8 (N, C, H, W) tensor and int64 labels each."""

    name: str
    classes: list[str]
    train_x: Tensor
    train_y: Tensor
    val_x: Tensor
    val_y: Tensor
    test_x: Tensor
    test_y: Tensor
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    fingerprint: str = ""  # of the TRAIN split (images and labels)
    meta: dict = field(default_factory=dict)
    test_fingerprint: str = ""  # of the test split; computed on first use when not given

    @property
    def channels(self) -> int:
        """Number of image channels."""
        return int(self.train_x.shape[1])

    @property
    def image_size(self) -> int:
        """Native (square) side of the images."""
        return int(max(self.train_x.shape[2], self.train_x.shape[3]))

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    def split(self, which: str) -> tuple[Tensor, Tensor]:
        """The (images, labels) pair of split `which` ("train", "val" or "test")."""
        if which not in ("train", "val", "test"):
            from cnn.errors import ConfigError

            raise ConfigError("split", f"unknown split {which!r}", allowed=["train", "val", "test"])
        return getattr(self, f"{which}_x"), getattr(self, f"{which}_y")

    def test_set(self) -> TestSet:
        """The test split's identity: dataset, a hash of its images and labels, its size and the split seed."""
        if not self.test_fingerprint:
            self.test_fingerprint = tensor_fingerprint(self.test_x, self.test_y)
        seed = self.meta.get("seed")
        return TestSet(self.name, self.test_fingerprint, int(self.test_y.numel()), None if seed is None else int(seed))

    def info(self) -> dict:
        """A small JSON-serialisable description (no tensors) for logs, caches and artifacts."""
        return {
            "name": self.name,
            "classes": list(self.classes),
            "channels": self.channels,
            "image_size": self.image_size,
            "num_train": int(self.train_y.numel()),
            "num_val": int(self.val_y.numel()),
            "num_test": int(self.test_y.numel()),
            "mean": list(self.mean),
            "std": list(self.std),
            "fingerprint": self.fingerprint,
            "test_set": self.test_set().to_dict(),
        }


def to_nchw_uint8(data: object) -> Tensor:
    """Convert a dataset's `.data` (N,H,W) / (N,H,W,C) array or tensor to a contiguous uint8 (N,C,H,W) tensor."""
    x = torch.as_tensor(data)
    if x.dtype != torch.uint8:
        raise TypeError(f"expected uint8 images, got {x.dtype}")
    if x.ndim == 3:
        return x.unsqueeze(1).contiguous()
    if x.ndim == 4 and x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
        return x.permute(0, 3, 1, 2).contiguous()
    if x.ndim == 4:
        return x.contiguous()
    raise TypeError(f"expected (N,H,W) or (N,H,W,C) images, got shape {tuple(x.shape)}")
