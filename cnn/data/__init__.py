"""Datasets: a name-keyed registry, train-only normalisation, seeded splits and device-resident batches."""

from cnn.data.batches import BatchLoader
from cnn.data.registry import (
    DatasetSpec,
    get_dataset_spec,
    list_datasets,
    load_dataset,
    register_dataset,
    unregister_dataset,
)
from cnn.data.splits import DatasetSplits
from cnn.data.stats import compute_normalization, fingerprint

__all__ = [
    "BatchLoader",
    "DatasetSpec",
    "DatasetSplits",
    "compute_normalization",
    "fingerprint",
    "get_dataset_spec",
    "list_datasets",
    "load_dataset",
    "register_dataset",
    "unregister_dataset",
]
