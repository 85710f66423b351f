"""What a variant's steps build from a run's parameters: the dataset (named by a DatasetRef, loaded once per process),
the seeded initial model, the trainer's config with "auto" sizes resolved, the store folder, and the checks the flows
run right after the data step."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from cnn import recipe
from cnn.data import DatasetSplits, load_dataset
from cnn.errors import ConfigError
from cnn.models import check_outputs, create_variant, resolve_input_size, upsampled_side
from cnn.params import RunParams
from cnn.storage import safe_name
from cnn.train_setup import TrainConfig, resolve_device, seed_everything


@dataclass(frozen=True)
class DatasetRef:
    """Everything needed to rebuild the same DatasetSplits in any process (hashable, cache-key friendly)."""

    name: str = "fashion-mnist"
    data_dir: str = "./data"
    val_size: float | int = 0.1
    seed: int = 0
    max_train: int | None = None
    max_test: int | None = None
    download: bool = True

    @classmethod
    def of(cls, config: RunParams) -> DatasetRef:
        """The dataset and splits a run's config names (the split follows its first seed)."""
        return cls(
            name=config.dataset.lower(),
            data_dir=config.data_dir,
            val_size=config.val_size,
            seed=config.seed,
            max_train=config.max_train or None,
            max_test=config.max_test or None,
        )


@functools.lru_cache(maxsize=4)
def get_dataset(ref: DatasetRef) -> DatasetSplits:
    """Load (once per process) the splits that `ref` describes."""
    return load_dataset(
        ref.name,
        ref.data_dir,
        val_size=ref.val_size,
        seed=ref.seed,
        download=ref.download,
        max_train=ref.max_train,
        max_test=ref.max_test,
    )


def variant_dir(dataset: str, run: str, variant: str) -> str:
    """Storage folder of one variant's artifacts: <dataset>/<run>/<variant>."""
    return f"{safe_name(dataset, 'dataset')}/{safe_name(run, 'run')}/{safe_name(variant, 'variant')}"


def build_model(
    variant: str, data: DatasetSplits, seed: int, input_size: int | None = None
) -> tuple[torch.nn.Module, int]:
    """The seeded initial model of `variant` for `data` and its input size (small images are upsized to the
    architecture's design side); the flows, the benchmarks and the reference loop all build through it."""
    size = resolve_input_size(variant, upsampled_side(data.image_size), input_size)
    seed_everything(seed)
    model = create_variant(variant, data.channels, data.num_classes, size)
    return check_outputs(model, variant, data.channels, data.num_classes, size), size


def resolved_sizes(epochs: int | str, batch_size: int | str, n_train: int, device: str) -> dict[str, int]:
    """Epochs and batch size, "auto" resolved by the recipe's rules for `n_train` images on `device`."""
    resolved_epochs = recipe.resolve_epochs(epochs, n_train)
    batch = recipe.resolve_batch_size(batch_size, n_train, resolve_device(device), resolved_epochs)
    return {"epochs": resolved_epochs, "batch_size": batch}


def train_config(config: RunParams, n_train: int, **values: Any) -> TrainConfig:
    """The trainer's config for this run: its parameters with epochs and batch size resolved for `n_train` images,
    and `values` (the chosen lr, the seed) on top."""
    sizes = resolved_sizes(config.epochs, config.batch_size, n_train, config.device)
    return TrainConfig.from_run(config, **{**sizes, **values})


MIN_TEST_PER_CLASS = 10


def check_splits(config: RunParams, info: Mapping[str, Any]) -> None:
    """The run's batch size fits the training split and its test split can measure an accuracy; the flows check this
    right after the data step, before any LR test or training."""
    check_batch_size(config.batch_size, int(info["num_train"]))
    needed, n_test = MIN_TEST_PER_CLASS * len(info["classes"]), int(info["num_test"])
    if n_test < needed:
        field = "max_test" if config.max_test else "dataset"
        raise ConfigError(
            field,
            f"{n_test} test images cannot measure {len(info['classes'])} classes' accuracy (its 95% interval would span more than 20 points)",
            allowed=f"at least {needed} test images ({MIN_TEST_PER_CLASS} per class): max_test 0 (all) or >= {needed}",
        )


def check_batch_size(batch_size: int | str, n_train: int) -> None:
    """A batch size ("auto" always fits) no larger than the training split; the flows check it right after the data step."""
    if batch_size != recipe.AUTO and int(batch_size) > n_train:
        raise ConfigError(
            "batch_size", f"{batch_size} is larger than the {n_train} training images", allowed=f"1..{n_train}, or auto"
        )
