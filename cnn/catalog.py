"""The built-in variant and dataset names, readable without torch, and the one wording of an unknown name.

The CLI checks names against these in milliseconds, before torch loads (cnn/fastchecks.py). The dataset registry
registers exactly DATASETS; the built-in variants are registered by cnn/models (tests/test_catalog.py checks that
their names are BUILTIN_VARIANTS).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from cnn.errors import ConfigError, did_you_mean

VARIANT_NAME = re.compile(r"[a-z0-9_]+")  # every variant name, built-in or registered by a plug-in
VARIANT_NAME_ALLOWED = "lowercase letters, digits and _"
ENTRY_POINT_GROUP = "cnn_lab.variants"  # installed packages' variants: name = variant name, object = builder
BUILTIN_VARIANTS = (
    "alexnet",
    "cnn2_3",
    "cnn2_5",
    "cnn2_7",
    "generic_0",
    "generic_1",
    "generic_2",
    "generic_3",
    "lenet1",
    "lenet5",
    "lenet5_dropout",
)
# name -> (torchvision class, description); None: not from torchvision (digits: scikit-learn's bundled set, offline)
DATASETS: dict[str, tuple[str | None, str]] = {
    "fashion-mnist": ("FashionMNIST", "Zalando Fashion-MNIST, 28x28 grey, 10 classes"),
    "mnist": ("MNIST", "MNIST handwritten digits, 28x28 grey"),
    "kmnist": ("KMNIST", "Kuzushiji-MNIST, 28x28 grey"),
    "cifar10": ("CIFAR10", "CIFAR-10, 32x32 colour"),
    "digits": (None, "scikit-learn's bundled 8x8 digits (offline)"),
}
# torchvision classification sets whose splits load whole into memory (`.data` + `.targets`/`.labels`), by any case
TORCHVISION_SETS = ("MNIST", "FashionMNIST", "KMNIST", "QMNIST", "CIFAR10", "CIFAR100", "SVHN", "USPS", "STL10")


def dataset_names(registered: Iterable[str] = DATASETS) -> list[str]:
    """Every dataset name a run accepts: the registered ones and the torchvision sets in lowercase."""
    return sorted(set(registered) | {n.lower() for n in TORCHVISION_SETS})


def unknown_variant(name: object, known: Iterable[str], field: str = "variant") -> ConfigError:
    """The error for a variant name that is not registered: the closest name as a suggestion, then every name."""
    names = sorted(known)
    return ConfigError(field, f"unknown variant {name!r}{did_you_mean(name, names)}", allowed=names)


def unknown_dataset(name: object, registered: Iterable[str] = DATASETS) -> ConfigError:
    """The error for a dataset name no loader knows: a registered near name first, else any near name; every name."""
    names = sorted(registered)
    hint = did_you_mean(name, names, cutoff=0.6) or did_you_mean(name, dataset_names(names), cutoff=0.6)
    return ConfigError("dataset", f"unknown dataset {name!r}{hint}", allowed=dataset_names(names))
