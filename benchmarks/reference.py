"""The student projects' recipe as a plain PyTorch loop: Adam 1e-3, batch 32, cross-entropy, a fixed number of epochs.

It shares nothing with cnn-lab's trainer but the model builder and the dataset splits (same split, same train-only
normalisation, same input size), so a gap between the two is the recipe's, not the data's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from cnn.data import DatasetSplits
from cnn.step_inputs import build_model

LR = 1e-3
BATCH_SIZE = 32


@dataclass
class ReferenceResult:
    """Test accuracy and wall time of one reference run."""

    test_acc: float
    seconds: float


def _tensors(x: torch.Tensor, y: torch.Tensor, data: DatasetSplits, size: int) -> TensorDataset:
    """Normalised float images at `size` px with their labels."""
    mean = torch.tensor(data.mean).view(1, -1, 1, 1)
    std = torch.tensor(data.std).view(1, -1, 1, 1)
    xf = (x.float() / 255.0 - mean) / std
    if xf.shape[-1] != size:
        xf = F.interpolate(xf, size=(size, size), mode="bilinear", align_corners=False, antialias=size < xf.shape[-1])
    return TensorDataset(xf, y)


def train_reference(variant: str, data: DatasetSplits, epochs: int, seed: int = 0) -> ReferenceResult:
    """Train `variant` with Adam(1e-3), batch 32 for `epochs` epochs; test accuracy of the last epoch's weights."""
    model, size = build_model(variant, data, seed)  # the same seeded initial weights as cnn-lab's run
    train = DataLoader(
        _tensors(data.train_x, data.train_y, data, size),
        batch_size=BATCH_SIZE,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        for x, y in train:
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
    seconds = time.perf_counter() - start
    return ReferenceResult(test_acc=_accuracy(model, _tensors(data.test_x, data.test_y, data, size)), seconds=seconds)


@torch.no_grad()
def _accuracy(model: torch.nn.Module, test: TensorDataset) -> float:
    """Top-1 accuracy on `test` in eval mode."""
    model.eval()
    correct = sum(int((model(x).argmax(1) == y).sum()) for x, y in DataLoader(test, batch_size=1024))
    return correct / len(test)
