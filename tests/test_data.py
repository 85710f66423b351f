"""Datasets: registry, IDX mirrors, digits, train-only normalisation, seeded splits, batches, errors."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from cnn.data import BatchLoader, compute_normalization, list_datasets, load_dataset
from cnn.errors import ConfigError, DataError
from idx_data import write_idx_labels, write_mnist_like


def test_registry_lists_builtins_and_rejects_unknown() -> None:
    names = list_datasets()
    for name in ("fashion-mnist", "mnist", "kmnist", "cifar10", "digits", "cifar100"):
        assert name in names
    with pytest.raises(ConfigError, match=r"dataset: unknown dataset 'fashionmnist2'.*allowed: .*fashion-mnist"):
        load_dataset("fashionmnist2")


def test_idx_mirror_loads_with_classes_and_shapes(fashion_dir) -> None:
    data = load_dataset("fashion-mnist", fashion_dir, val_size=100, seed=0, download=False)
    assert data.train_x.dtype == torch.uint8 and data.train_x.shape == (500, 1, 28, 28)
    assert data.val_x.shape == (100, 1, 28, 28) and data.test_x.shape == (200, 1, 28, 28)
    assert data.classes[0] == "T-shirt/top" and data.num_classes == 10


def test_normalization_uses_train_split_only(fashion_dir) -> None:
    data = load_dataset("fashion-mnist", fashion_dir, val_size=0.2, seed=1, download=False)
    flat = data.train_x.double() / 255
    assert data.mean[0] == pytest.approx(float(flat.mean()), abs=1e-9)
    assert data.std[0] == pytest.approx(float(flat.std(unbiased=False)), abs=1e-9)
    everything = torch.cat([data.train_x, data.val_x, data.test_x]).double() / 255
    assert data.mean[0] != pytest.approx(float(everything.mean()), abs=1e-6)


def test_normalization_per_channel() -> None:
    x = torch.zeros(4, 3, 2, 2, dtype=torch.uint8)
    x[:, 1] = 255
    x[:2, 2] = 255
    mean, std = compute_normalization(x)
    assert mean == pytest.approx((0.0, 1.0, 0.5)) and std[2] == pytest.approx(0.5)


def test_split_is_seeded_and_fingerprint_tracks_data(fashion_dir) -> None:
    a = load_dataset("fashion-mnist", fashion_dir, val_size=100, seed=3, download=False)
    b = load_dataset("fashion-mnist", fashion_dir, val_size=100, seed=3, download=False)
    c = load_dataset("fashion-mnist", fashion_dir, val_size=100, seed=4, download=False)
    assert torch.equal(a.val_y, b.val_y) and a.fingerprint == b.fingerprint
    assert a.fingerprint != c.fingerprint
    assert torch.equal(a.test_x, c.test_x)  # test split untouched by the seed


def test_digits_is_a_real_offline_dataset() -> None:
    data = load_dataset("digits", "/nonexistent", val_size=0.1)
    assert data.image_size == 8 and data.num_classes == 10
    assert data.train_y.numel() + data.val_y.numel() + data.test_y.numel() == 1797
    assert data.train_x.max() == 255


def test_missing_data_offline_names_the_ways_out(tmp_path) -> None:
    with pytest.raises(DataError) as err:
        load_dataset("mnist", tmp_path, download=False)
    assert "data_dir" in str(err.value) and "digits" in str(err.value) and "train-images-idx3-ubyte" in str(err.value)


def test_truncated_idx_file_is_a_data_error(tmp_path) -> None:
    root = write_mnist_like(tmp_path, "MNIST", n_train=50, n_test=20)
    img = root / "MNIST/raw/train-images-idx3-ubyte"
    img.write_bytes(img.read_bytes()[:1000])
    with pytest.raises(DataError, match="corrupt or truncated"):
        load_dataset("mnist", root, download=False)


def test_labels_out_of_range_are_rejected(tmp_path) -> None:
    root = write_mnist_like(tmp_path, "KMNIST", n_train=50, n_test=20)
    write_idx_labels(root / "KMNIST/raw/t10k-labels-idx1-ubyte", np.full(20, 12))
    with pytest.raises(ConfigError, match=r"labels: .*label 12.*allowed: 0\.\.9"):
        load_dataset("kmnist", root, download=False)


@pytest.mark.parametrize("val_size", [0, 500, 1.5, -0.1, "ten"])
def test_bad_val_size(fashion_dir, val_size) -> None:
    with pytest.raises(ConfigError, match="val_size"):
        load_dataset("fashion-mnist", fashion_dir, val_size=val_size, download=False, max_train=100)


def test_batches_normalise_resize_and_cover_the_split() -> None:
    x = torch.randint(0, 256, (10, 1, 8, 8), dtype=torch.uint8)
    y = torch.arange(10)
    loader = BatchLoader(x, y, mean=[0.5], std=[0.25], batch_size=4, input_size=28, shuffle=True, seed=0)
    batches = list(loader)
    assert len(loader) == 3 and [b[0].shape for b in batches][0] == (4, 1, 28, 28)
    assert sorted(torch.cat([b[1] for b in batches]).tolist()) == list(range(10))
    plain = BatchLoader(x, y, mean=[0.5], std=[0.25], batch_size=10)
    xb, _ = next(iter(plain))
    assert torch.allclose(xb, (x.float() / 255 - 0.5) / 0.25)


def test_shuffle_order_is_seeded() -> None:
    x = torch.zeros(20, 1, 4, 4, dtype=torch.uint8)
    y = torch.arange(20)
    orders = [
        torch.cat([b[1] for b in BatchLoader(x, y, mean=[0], std=[1], batch_size=5, shuffle=True, seed=7)])
        for _ in range(2)
    ]
    assert torch.equal(orders[0], orders[1]) and not torch.equal(orders[0], y)


@pytest.mark.parametrize("bad", [0, -3, 2.5])
def test_bad_batch_size(bad) -> None:
    with pytest.raises(ConfigError, match="batch_size"):
        BatchLoader(
            torch.zeros(4, 1, 2, 2, dtype=torch.uint8),
            torch.zeros(4, dtype=torch.long),
            mean=[0],
            std=[1],
            batch_size=bad,
        )


def test_copy_of_mirror_is_read_without_network(tmp_path, fashion_dir) -> None:
    shutil.copytree(fashion_dir / "FashionMNIST", tmp_path / "FashionMNIST")
    data = load_dataset("fashion-mnist", tmp_path, download=True, val_size=50)
    assert data.train_y.numel() == 550


def test_a_registered_dataset_can_be_removed_and_an_unknown_one_is_named() -> None:
    from cnn.data import register_dataset, unregister_dataset

    register_dataset("Tiny-Set", lambda data_dir, download: None, "for this test")
    assert "tiny-set" in list_datasets()
    unregister_dataset("tiny-set")
    assert "tiny-set" not in list_datasets()
    with pytest.raises(ConfigError, match="tiny-set"):
        unregister_dataset("tiny-set")
