"""Name-keyed dataset registry: `list_datasets`, `load_dataset`, and `register_dataset` for new sources."""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch

from cnn.data import sources
from cnn.data.splits import DatasetSplits
from cnn.data.stats import compute_normalization, fingerprint
from cnn.catalog import DATASETS, TORCHVISION_SETS, dataset_names, unknown_dataset
from cnn.errors import ConfigError

# A loader takes (data_dir, download) and returns ((train_x, train_y), (test_x, test_y), classes).
Loader = Callable[[str, bool], tuple[sources.RawSplit, sources.RawSplit, list[str]]]


@dataclass(frozen=True)
class DatasetSpec:
    """How to get one dataset's raw splits."""

    name: str
    loader: Loader
    description: str


_REGISTRY: dict[str, DatasetSpec] = {}


def register_dataset(name: str, loader: Loader, description: str = "") -> None:
    """Register a dataset loader under a lowercase name."""
    key = name.lower()
    if key in _REGISTRY:
        raise ConfigError("dataset", f"dataset {name!r} is already registered")
    _REGISTRY[key] = DatasetSpec(key, loader, description)


def unregister_dataset(name: str) -> None:
    """Remove a registered dataset (for tests and plug-ins); an unknown name raises the usual ConfigError."""
    key = name.lower()
    if key not in _REGISTRY:
        raise unknown_dataset(name, _REGISTRY)
    del _REGISTRY[key]


def _tv_loader(tv_name: str) -> Loader:
    def load(data_dir: str, download: bool) -> tuple:
        return sources.load_torchvision(tv_name, data_dir, download=download)

    return load


def list_datasets(pattern: str = "*") -> list[str]:
    """Registered dataset names (plus every other torchvision set cnn-lab reads, by its torchvision name)."""
    return [n for n in dataset_names(_REGISTRY) if fnmatch.fnmatch(n, pattern)]


def get_dataset_spec(name: str) -> DatasetSpec:
    """The spec of `name`; torchvision names (e.g. "CIFAR100") resolve case-insensitively."""
    key = str(name).lower()
    if key in _REGISTRY:
        return _REGISTRY[key]
    for tv in TORCHVISION_SETS:
        if tv.lower() == key:
            return DatasetSpec(key, _tv_loader(tv), f"torchvision {tv}")
    raise unknown_dataset(name, _REGISTRY)


_OFFLINE_LOADERS: dict[str, Loader] = {"digits": lambda data_dir, download: sources.load_digits()}
for _name, (_tv, _description) in DATASETS.items():
    register_dataset(_name, _tv_loader(_tv) if _tv else _OFFLINE_LOADERS[_name], _description)


def _validate_sizes(val_size: float | int, n_train: int) -> int:
    """Number of validation images from a count or a fraction of the training split."""
    if isinstance(val_size, bool) or not isinstance(val_size, (int, float)):
        raise ConfigError(
            "val_size",
            f"must be a count or a fraction, got {val_size!r}",
            allowed="an int in [1, N-1] or a float in (0, 1)",
        )
    if isinstance(val_size, float) and val_size >= 1 and not val_size.is_integer():
        raise ConfigError(
            "val_size",
            f"{val_size!r} is neither a fraction below 1 nor a whole count",
            allowed="an int in [1, N-1] or a float in (0, 1)",
        )
    count = int(round(val_size * n_train)) if isinstance(val_size, float) and val_size < 1 else int(val_size)
    if not 1 <= count < n_train:
        raise ConfigError(
            "val_size",
            f"{val_size!r} leaves no training or no validation images of {n_train}",
            allowed=f"an int in [1, {n_train - 1}] or a float in (0, 1)",
        )
    return count


def _check_labels(y: torch.Tensor, num_classes: int, split: str) -> None:
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        bad = int(y.max()) if int(y.max()) >= num_classes else int(y.min())
        raise ConfigError(
            "labels",
            f"{split} split has label {bad}, outside the {num_classes} classes",
            allowed=f"0..{num_classes - 1}",
        )


def _subset(
    x: torch.Tensor, y: torch.Tensor, limit: int | None, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    if limit is None or limit >= y.numel():
        return x, y
    if limit < 1:
        raise ConfigError("max_train/max_test", f"must be positive, got {limit}", allowed="an int >= 1 or None")
    idx = torch.randperm(y.numel(), generator=gen)[:limit].sort().values
    return x[idx], y[idx]


def local_data_dir(data_dir: str | os.PathLike[str]) -> str:
    """`data_dir` as a local folder path (~ expanded); a URL such as an s3:// mirror is refused: copy it down first."""
    text = os.fspath(data_dir)
    if "://" in text:
        raise ConfigError(
            "data_dir",
            f"{text!r} is a URL; dataset mirrors are read from a local folder (copy an S3 mirror down first, e.g. with aws s3 sync s3://bucket/data ./data)",
            allowed="a local folder in torchvision's layout, ~ expanded",
        )
    return os.path.expanduser(text)


def load_dataset(
    name: str = "fashion-mnist",
    data_dir: str = "./data",
    *,
    val_size: float | int = 0.1,
    seed: int = 0,
    download: bool = True,
    max_train: int | None = None,
    max_test: int | None = None,
) -> DatasetSplits:
    """Load a dataset, split train/val with a fixed seed, and compute normalisation stats on train only."""
    spec = get_dataset_spec(name)
    (train_x, train_y), (test_x, test_y), classes = spec.loader(local_data_dir(data_dir), download)
    _check_labels(train_y, len(classes), "train")
    _check_labels(test_y, len(classes), "test")
    gen = torch.Generator().manual_seed(seed)
    train_x, train_y = _subset(train_x, train_y, max_train, gen)
    test_x, test_y = _subset(test_x, test_y, max_test, gen)
    n_val = _validate_sizes(val_size, train_y.numel())
    perm = torch.randperm(train_y.numel(), generator=torch.Generator().manual_seed(seed))
    val_idx, tr_idx = perm[:n_val].sort().values, perm[n_val:].sort().values
    tx, ty = train_x[tr_idx].contiguous(), train_y[tr_idx].contiguous()
    mean, std = compute_normalization(tx)
    return DatasetSplits(
        name=spec.name,
        classes=classes,
        train_x=tx,
        train_y=ty,
        val_x=train_x[val_idx].contiguous(),
        val_y=train_y[val_idx].contiguous(),
        test_x=test_x.contiguous(),
        test_y=test_y.contiguous(),
        mean=mean,
        std=std,
        fingerprint=fingerprint(tx, ty),
        test_fingerprint=fingerprint(test_x, test_y),
        meta={"val_size": n_val, "seed": seed, "max_train": max_train, "max_test": max_test},
    )
