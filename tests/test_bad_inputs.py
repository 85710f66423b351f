"""The bad-input matrix (docs/bad-inputs.md): each input a user can type gets one cnn-lab error naming the field and the
allowed values, nothing stored earlier changes, and the flows end Failed with that message."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch

from cnn import pipeline
from cnn.step_inputs import variant_dir
from cnn.data import load_dataset
from cnn.errors import CheckpointError, CnnLabError, ConfigError, DataError, StorageError, TrainingDiverged
from cnn.models import create_variant, load_variant_file, load_variant_module, register_variant, resolve_input_size
from cnn.models.generic import GenericCNN, GenericConfig, load_generic_config
from cnn.params import RunParams, parse_params
from cnn.comparisons import read_comparison
from cnn.storage import Storage
from cnn.train_setup import TrainConfig
from idx_data import write_idx_labels, write_mnist_like
from storage_helpers import BUCKET, SECRET, S3Server, free_port, s3_env

DOC = Path(__file__).parents[1] / "docs" / "bad-inputs.md"
TINY = RunParams(  # 160 training images of digits, one epoch
    dataset="digits", max_train=200, val_size=40, epochs=1, batch_size=64, lr=0.05, optimizer="sgd", device="cpu"
)


def _tiny(ctx: Ctx, run: str, **values: Any) -> RunParams:
    """TINY in the case's store under run folder `run`, with `values` changed."""
    return TINY.model_copy(update={"storage": str(ctx.store), "run": run, **values})


def _train(ctx: Ctx, run: str, variant: str = "lenet1", subdir: str | None = None, **values: Any) -> dict[str, Any]:
    """The training step of `variant` at TINY's settings (with `values` changed) in run folder `run`."""
    config = _tiny(ctx, run, **values)
    return pipeline.train_variant(config, variant, seed=0, lr=float(config.lr), subdir=subdir)


@dataclass
class Ctx:
    """What a case may use: a fresh folder, a local store holding an earlier run, good IDX data, the S3 server."""

    tmp: Path
    store: Path
    data: Path
    s3: S3Server
    mp: pytest.MonkeyPatch
    cleanups: list[Callable[[], None]] = field(default_factory=list)


@dataclass
class Case:
    """One bad input: how to make it, the error type, and a regex for the field and the allowed values."""

    id: str
    call: Callable[[Ctx], Any]
    error: type[Exception]
    match: str
    setup: Callable[[Ctx], None] | None = None
    pure: bool = False  # a parameter check that touches no store: tested without the store fixtures


# --- helpers the cases use ------------------------------------------------------------------------------------------


def _idx_dir(ctx: Ctx, damage: Callable[[Path], None]) -> str:
    root = write_mnist_like(ctx.tmp / "idx", "FashionMNIST", n_train=100, n_test=40)
    damage(root / "FashionMNIST" / "raw")
    return str(root)


def _garbage(raw: Path) -> None:
    (raw / "train-images-idx3-ubyte").write_bytes(b"not an idx file" * 50)


def _truncate(raw: Path) -> None:
    path = raw / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:3000])


def _label_12(raw: Path) -> None:
    import numpy as np

    write_idx_labels(raw / "train-labels-idx1-ubyte", np.r_[np.zeros(99), 12].astype(np.uint8))


def _train_earlier(ctx: Ctx, variant: str = "lenet1") -> dict[str, Any]:
    return _train(ctx, "earlier", variant)


def _checkpoint_of_lenet1_in_cnn2_5(ctx: Ctx) -> None:
    _train_earlier(ctx)
    folder = ctx.store / "digits" / "earlier"
    (folder / "cnn2_5").mkdir()
    shutil.copy(folder / "lenet1" / "checkpoint.pt", folder / "cnn2_5" / "checkpoint.pt")


def _corrupt_checkpoint(ctx: Ctx) -> None:
    Storage(str(ctx.store)).write_bytes("digits/earlier/lenet1/checkpoint.pt", b"PK\x03\x04 half a zip file")


def _no_network(ctx: Ctx) -> str:
    import urllib.error

    import torchvision.datasets.mnist as tv_mnist

    def offline(*args: Any, **kwargs: Any) -> None:
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    ctx.mp.setattr(tv_mnist, "download_and_extract_archive", offline)
    ctx.mp.setattr("cnn.data.sources.time.sleep", lambda s: None)
    return str(ctx.tmp / "empty-data")


def _without_credentials(ctx: Ctx) -> None:
    for var in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
    ):
        ctx.mp.delenv(var, raising=False)
    ctx.mp.setenv("AWS_SHARED_CREDENTIALS_FILE", str(ctx.tmp / "no-credentials"))
    ctx.mp.setenv("AWS_CONFIG_FILE", str(ctx.tmp / "no-config"))


def _wrong_credentials(ctx: Ctx) -> None:
    from moto.core.authorization import enable_iam_authentication

    with enable_iam_authentication():  # the server now checks keys: the test's fake key is unknown to it
        Storage(f"s3://{BUCKET}/x").check_writable()


def _read_only_dir(ctx: Ctx) -> str:
    """A directory this process cannot write: chmod for a normal user; root ignores modes, so chattr +i (immutable) for root."""
    folder = ctx.tmp / "read-only"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        ctx.cleanups.append(lambda: folder.chmod(0o755))
    elif shutil.which("chattr") and subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0:
        ctx.cleanups.append(lambda: subprocess.run(["chattr", "-i", str(folder)], check=False))
    else:
        pytest.skip(
            "running as root without CAP_LINUX_IMMUTABLE: no directory is read-only for root without a read-only mount"
        )
    return str(folder)


def _file_in_place_of_dir(ctx: Ctx) -> str:
    (ctx.tmp / "results").write_text("a file where the results folder should be")
    return str(ctx.tmp / "results")


# --- the matrix -----------------------------------------------------------------------------------------------------

CASES = [
    Case(
        "unknown-dataset",
        lambda c: load_dataset("imagenet-22k"),
        ConfigError,
        r"^dataset: unknown dataset 'imagenet-22k' \(allowed: .*digits, .*fashion-mnist",
    ),
    Case(
        "dataset-typo",
        lambda c: load_dataset("fashion_mnist"),
        ConfigError,
        r"^dataset: unknown dataset 'fashion_mnist'; did you mean 'fashion-mnist'\? \(allowed: .*fashion-mnist",
    ),
    Case(
        "unknown-variant",
        lambda c: create_variant("lenet7", 1, 10),
        ConfigError,
        r"^variant: unknown variant 'lenet7'; did you mean 'lenet5'\? \(allowed: .*lenet1, .*lenet5",
    ),
    Case(
        "unknown-variant-in-list",
        lambda c: _check_names(["lenet1", "cnn2_4"]),
        ConfigError,
        r"^variants: unknown variant 'cnn2_4'; did you mean 'cnn2_\d'\? \(allowed: .*cnn2_5",
        pure=True,
    ),
    Case(
        "variant-typo-in-list",
        lambda c: parse_params({"variants": "lenet1,LeNet5"}),
        ConfigError,
        r"^variants: 'LeNet5' is not a variant name; did you mean 'lenet5'\? \(allowed: lowercase letters, digits and _\)",
        pure=True,
    ),
    Case(
        "empty-variant-list",
        lambda c: parse_params({"variants": []}),
        ConfigError,
        r"^variants: the list is empty \(allowed: one or more variant names",
        pure=True,
    ),
    Case(
        "duplicate-variants",
        lambda c: parse_params({"variants": ["lenet1", "lenet1"]}),
        ConfigError,
        r"^variants: duplicates in \['lenet1', 'lenet1'\] \(allowed: each variant once\)",
        pure=True,
    ),
    Case(
        "unknown-parameter",
        lambda c: parse_params({"epoch": 3}),
        ConfigError,
        r"^epoch: unknown parameter; did you mean 'epochs'\? \(allowed: variant, dataset, comparison, variants, ",
        pure=True,
    ),
    Case(
        "epochs-not-a-number",
        lambda c: parse_params({"epochs": "five"}),
        ConfigError,
        r"^epochs: must be 'auto' or an integer in \[1, 10000\], got 'five' \(allowed: 'auto' or an integer in \[1, 10000\]\)",
        pure=True,
    ),
    Case(
        "fractional-epochs",
        lambda c: parse_params({"epochs": 2.5}),
        ConfigError,
        r"^epochs: must be 'auto' or an integer in \[1, 10000\], got 2\.5 \(allowed: 'auto' or an integer in \[1, 10000\]\)",
        pure=True,
    ),
    Case(
        "zero-epochs-parameter",
        lambda c: parse_params({"epochs": 0}),
        ConfigError,
        r"^epochs: must be 'auto' or an integer in \[1, 10000\], got 0 \(allowed: 'auto' or an integer in \[1, 10000\]\)",
        pure=True,
    ),
    Case(
        "nan-batch-size",
        lambda c: parse_params({"batch_size": math.nan}),
        ConfigError,
        r"^batch_size: must be 'auto' or an integer in \[1, 65536\], got nan \(allowed: 'auto' or an integer in \[1, 65536\]\)",
        pure=True,
    ),
    Case(
        "nan-lr",
        lambda c: parse_params({"lr": "nan"}),
        ConfigError,
        r"^lr: must be 'auto' or a finite number in \(0, 1000\], got 'nan' \(allowed: 'auto' or a finite number in \(0, 1000\]\)",
        pure=True,
    ),
    Case(
        "infinite-lr-max",
        lambda c: parse_params({"lr_max": math.inf}),
        ConfigError,
        r"^lr_max: must be a finite number in \(0, 1000\], got inf \(allowed: a finite number in \(0, 1000\]\)",
        pure=True,
    ),
    Case(
        "negative-weight-decay",
        lambda c: parse_params({"weight_decay": -0.01}),
        ConfigError,
        r"^weight_decay: must be a finite number in \[0, 10\], got -0\.01 \(allowed: a finite number in \[0, 10\]\)",
        pure=True,
    ),
    Case(
        "momentum-parameter-out-of-range",
        lambda c: parse_params({"momentum": 1.0}),
        ConfigError,
        r"^momentum: must be a finite number in \[0, 1\), got 1\.0 \(allowed: a finite number in \[0, 1\)\)",
        pure=True,
    ),
    Case(
        "negative-seed",
        lambda c: parse_params({"seed": -1}),
        ConfigError,
        r"^seed: must be an integer in \[0, 4294967296\), got -1 \(allowed: an integer in \[0, 4294967296\)\)",
        pure=True,
    ),
    Case(
        "repeats-zero",
        lambda c: parse_params({"repeats": 0}),
        ConfigError,
        r"^repeats: must be 'auto' or an integer in \[1, 1000\], got 0 \(allowed: 'auto' or an integer in \[1, 1000\]\)",
        pure=True,
    ),
    Case(
        "val-size-not-whole",
        lambda c: parse_params({"val_size": 1.5}),
        ConfigError,
        r"^val_size: must be a share in \(0, 1\) or a whole count in \[1, 100000000\], got 1\.5",
        pure=True,
    ),
    Case(
        "negative-max-train",
        lambda c: parse_params({"max_train": -5}),
        ConfigError,
        r"^max_train: must be an integer in \[0, 100000000\], got -5 \(allowed: an integer in \[0, 100000000\]\)",
        pure=True,
    ),
    Case(
        "optimizer-typo",
        lambda c: parse_params({"optimizer": "adma"}),
        ConfigError,
        r"^optimizer: unknown optimizer 'adma'; did you mean 'adam'\? \(allowed: sgd, adam, adamw\)",
        pure=True,
    ),
    Case(
        "device-typo",
        lambda c: parse_params({"device": "cuda0"}),
        ConfigError,
        r"^device: unknown device 'cuda0'; did you mean 'cuda'\? \(allowed: auto, cpu, cuda, cuda:N, mps\)",
        pure=True,
    ),
    Case(
        "train-deployment-without-flow-name",
        lambda c: parse_params({"train_deployment": "train-variant-gpu"}),
        ConfigError,
        r"^train_deployment: 'train-variant-gpu' is not flow-name/deployment-name",
        pure=True,
    ),
    Case(
        "variant-file-entry-without-path",
        lambda c: parse_params({"variant_files": ["mine"]}),
        ConfigError,
        r"^variant_files: must be name=path entries, got \['mine'\] \(allowed: name=path/to/config\.json\)",
        pure=True,
    ),
    Case(
        "variant-file-missing",
        lambda c: load_variant_file("mine", str(c.tmp / "mine.json")),
        ConfigError,
        r"^variant_files: variant 'mine' from \S+/mine\.json: no such file: \S+/mine\.json \(allowed: a GenericCNN JSON config file",
        pure=True,
    ),
    Case(
        "variant-file-bad-key",
        lambda c: load_variant_file("mine", '{"conv_channels": [4], "fc_size": [8]}'),
        ConfigError,
        r"^variant_files: variant 'mine' from JSON text: fc_size: unknown key 'fc_size' in generic config; did you mean 'fc_sizes'\? \(allowed: conv_channels, kernel_sizes, pool_sizes, fc_sizes, dropout\)$",
        pure=True,
    ),
    Case(
        "variant-file-name-taken",
        lambda c: load_variant_file("lenet5", '{"conv_channels": [4]}'),
        ConfigError,
        r"^variant_files: 'lenet5' is already a variant \(built-in\); pick another name",
        pure=True,
    ),
    Case(
        "variant-module-not-importable",
        lambda c: load_variant_module("no_such_cnn_lab_plugin"),
        ConfigError,
        r"^variant_modules: cannot import 'no_such_cnn_lab_plugin': ModuleNotFoundError: No module named 'no_such_cnn_lab_plugin' \(allowed: an importable module name",
        pure=True,
    ),
    Case(
        "variant-module-file-missing",
        lambda c: load_variant_module(str(c.tmp / "my_nets.py")),
        ConfigError,
        r"^variant_modules: no such file: \S+/my_nets\.py \(allowed: an importable module name",
        pure=True,
    ),
    Case(
        "variant-module-raises",
        lambda c: load_variant_module(_module_file(c, "raise RuntimeError('needs a GPU library')")),
        ConfigError,
        r"^variant_modules: cannot import '\S+/broken_nets\.py': RuntimeError: needs a GPU library \(allowed: ",
        pure=True,
    ),
    Case(
        "zero-epochs",
        lambda c: TrainConfig(epochs=0).check(),
        ConfigError,
        r"^epochs: must be a positive integer, got 0 \(allowed: an int >= 1\)",
    ),
    Case(
        "negative-batch-size",
        lambda c: TrainConfig(batch_size=-8).check(),
        ConfigError,
        r"^batch_size: must be a positive integer, got -8 \(allowed: an int >= 1\)",
    ),
    Case(
        "batch-larger-than-train-split",
        lambda c: _train(c, "big", batch_size=512),
        ConfigError,
        r"^batch_size: 512 is larger than the 160 training images \(allowed: 1\.\.160, or auto\)",
    ),
    Case(
        "negative-lr",
        lambda c: parse_params({"lr": -0.1}),
        ConfigError,
        r"^lr: must be 'auto' or a finite number in \(0, 1000\], got -0\.1 \(allowed: 'auto' or a finite number in \(0, 1000\]\)",
        pure=True,
    ),
    Case(
        "infinite-lr",
        lambda c: TrainConfig(lr=math.inf).check(),
        ConfigError,
        r"^lr: must be a positive finite number, got inf \(allowed: a float > 0",
    ),
    Case(
        "lr-bounds-reversed",
        lambda c: parse_params({"lr_min": 1.0, "lr_max": 0.01}),
        ConfigError,
        r"^lr_max: must be greater than lr_min=1\.0, got 0\.01 \(allowed: a number in \(1\.0, 1000\]\)",
        pure=True,
    ),
    Case(
        "lr-min-not-positive",
        lambda c: parse_params({"lr_min": 0.0}),
        ConfigError,
        r"^lr_min: must be a finite number in \(0, 1000\], got 0\.0 \(allowed: a finite number in \(0, 1000\]\)",
        pure=True,
    ),
    Case(
        "unknown-optimizer",
        lambda c: TrainConfig(optimizer="rmsprop").check(),
        ConfigError,
        r"^optimizer: unknown optimizer 'rmsprop' \(allowed: sgd, adam, adamw\)",
    ),
    Case(
        "unknown-schedule",
        lambda c: TrainConfig(schedule="step").check(),
        ConfigError,
        r"^schedule: unknown schedule 'step' \(allowed: none, onecycle, cosine\)",
    ),
    Case(
        "momentum-out-of-range",
        lambda c: TrainConfig(momentum=1.5).check(),
        ConfigError,
        r"^momentum: must be in \[0, 1\), got 1\.5 \(allowed: \[0, 1\)\)",
    ),
    Case(
        "unknown-device",
        lambda c: TrainConfig(device="tpu").check(),
        ConfigError,
        r"^device: unknown device 'tpu' \(allowed: auto, cpu, cuda, cuda:N, mps\)",
    ),
    Case(
        "cuda-without-gpu",
        lambda c: _cuda_config(),
        ConfigError,
        r"^device: CUDA was requested but no GPU is available \(allowed: auto, cpu\)",
    ),
    Case(
        "val-size-zero",
        lambda c: load_dataset("digits", val_size=0),
        ConfigError,
        r"^val_size: 0 leaves no training or no validation images of 1437 \(allowed: an int in \[1, 1436\] or a float in \(0, 1\)\)",
    ),
    Case(
        "max-train-zero",
        lambda c: load_dataset("digits", max_train=0),
        ConfigError,
        r"^max_train/max_test: must be positive, got 0 \(allowed: an int >= 1 or None\)",
    ),
    Case(
        "generic-config-shrinks-below-1x1",
        lambda c: GenericCNN(GenericConfig([8, 8, 8, 8], 3, 2), 1, 10, 28),
        ConfigError,
        r"^input_size: 28x28 is too small: layer 'conv4' would shrink .* below 1x1 .*needs at least 46",
    ),
    Case(
        "input-size-too-small-for-variant",
        lambda c: resolve_input_size("lenet5", 28, 8),
        ConfigError,
        r"^input_size: 8 is too small for variant 'lenet5', which needs at least 28: layer 'c3'",
    ),
    Case(
        "malformed-json-config",
        lambda c: load_generic_config('{"conv_channels": [4, 8],\n "dropout": }'),
        ConfigError,
        r"^config: malformed JSON in JSON text at line 2 column 13",
    ),
    Case(
        "unknown-generic-config-key",
        lambda c: load_generic_config({"conv_chanels": [4]}),
        ConfigError,
        r"^conv_chanels: unknown key .*did you mean 'conv_channels'\? \(allowed: conv_channels, kernel_sizes, pool_sizes, fc_sizes, dropout\)",
    ),
    Case(
        "generic-config-file-missing",
        lambda c: load_generic_config(c.tmp / "missing.json"),
        ConfigError,
        r"^config: no such file: .*missing\.json",
    ),
    Case(
        "corrupt-idx-file",
        lambda c: load_dataset("fashion-mnist", _idx_dir(c, _garbage), download=False),
        DataError,
        r"^data_dir: dataset 'FashionMNIST' in .* is corrupt or truncated \(.*\); replace the raw files \(.*train-images-idx3-ubyte",
    ),
    Case(
        "truncated-idx-file",
        lambda c: load_dataset("fashion-mnist", _idx_dir(c, _truncate), download=False),
        DataError,
        r"^data_dir: dataset 'FashionMNIST' in .* is corrupt or truncated \(RuntimeError: shape .* is invalid",
    ),
    Case(
        "labels-out-of-range",
        lambda c: load_dataset("fashion-mnist", _idx_dir(c, _label_12), download=False),
        ConfigError,
        r"^labels: train split has label 12, outside the 10 classes \(allowed: 0\.\.9\)",
    ),
    Case(
        "dataset-missing-download-off",
        lambda c: load_dataset("fashion-mnist", str(c.tmp / "empty"), download=False),
        DataError,
        r"^dataset 'FashionMNIST' is not in data_dir and download is off .*Ways out: pass data_dir .* or use dataset='digits'",
    ),
    Case(
        "dataset-missing-no-network",
        lambda c: load_dataset("fashion-mnist", _no_network(c)),
        DataError,
        r"^dataset 'FashionMNIST' could not be downloaded \(RuntimeError: Error downloading .*Ways out: .*dataset='digits'",
    ),
    Case(
        "unsupported-storage-scheme",
        lambda c: Storage("ftp://host/results"),
        ConfigError,
        r"^storage: unsupported scheme 'ftp' in 'ftp://host/results' \(allowed: file://, s3://, memory://, a local path\)",
    ),
    Case(
        "empty-storage",
        lambda c: Storage(""),
        ConfigError,
        r"^storage: must be a non-empty path or URL, got '' \(allowed: a local path, file://path, s3://bucket/prefix or memory://path\)",
    ),
    Case(
        "credentials-in-storage-url",
        lambda c: Storage(f"s3://AKIDEXAMPLE:{SECRET}@{BUCKET}/x"),
        ConfigError,
        r"^storage: credentials in the URL are not accepted .*'s3://\*\*\*@cnn-lab/x' \(allowed: s3://bucket/prefix with credentials from AWS_ACCESS_KEY_ID",
    ),
    Case(
        "invalid-bucket-name",
        lambda c: Storage("s3://My_Bucket/results"),
        ConfigError,
        r"^storage: 'My_Bucket' is not a valid S3 bucket name .*\(allowed: s3://bucket/prefix, bucket: 3-63 lowercase",
    ),
    Case(
        "missing-bucket",
        lambda c: Storage("s3://no-such-bucket/x").check_writable(),
        StorageError,
        r"^storage: cannot write to s3://no-such-bucket/x: bucket 'no-such-bucket' does not exist at http://127\.0\.0\.1:\d+: create it, or point storage at an existing bucket$",
    ),
    Case(
        "wrong-credentials",
        _wrong_credentials,
        StorageError,
        r"^storage: cannot write to s3://cnn-lab/x: access denied \(.*\): check the credentials \(AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY \(\+ AWS_SESSION_TOKEN\), or AWS_PROFILE\) and the bucket policy$",
    ),
    Case(
        "no-credentials",
        lambda c: Storage(f"s3://{BUCKET}/x", storage_options={"skip_instance_cache": True}).check_writable(),
        StorageError,
        r"^storage: cannot write to s3://cnn-lab/x: no usable credentials for 'cnn-lab': set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
        setup=_without_credentials,
    ),
    Case(
        "unreachable-endpoint",
        lambda c: Storage(f"s3://{BUCKET}/x", retries=2, backoff=0).check_writable(),
        StorageError,
        r"^storage: cannot write to s3://cnn-lab/x: failed after 2 attempt\(s\): EndpointConnectionError: .*; is the endpoint http://127\.0\.0\.1:\d+ \(CNN_LAB_S3_ENDPOINT_URL\) reachable\?$",
        setup=lambda c: c.mp.setenv("CNN_LAB_S3_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}"),
    ),
    Case(
        "endpoint-not-a-url",
        lambda c: Storage(f"s3://{BUCKET}/x"),
        ConfigError,
        r"^CNN_LAB_S3_ENDPOINT_URL: 'localhost:9000' is not an http\(s\) URL \(allowed: http://host:port or https://host\)",
        setup=lambda c: c.mp.setenv("CNN_LAB_S3_ENDPOINT_URL", "localhost:9000"),
    ),
    Case(
        "storage-retries-not-a-number",
        lambda c: Storage("memory://x"),
        ConfigError,
        r"^CNN_LAB_STORAGE_RETRIES: must be an integer in \[1, 100\], got 'many' \(allowed: an integer in \[1, 100\]\)",
        setup=lambda c: c.mp.setenv("CNN_LAB_STORAGE_RETRIES", "many"),
    ),
    Case(
        "read-only-storage-dir",
        lambda c: Storage(_read_only_dir(c)).check_writable(),
        StorageError,
        r"^storage: cannot write to \S+/read-only: (permission denied|operation not permitted): the folder is (not writable|read-only)",
    ),
    Case(
        "file-in-place-of-storage-dir",
        lambda c: Storage(_file_in_place_of_dir(c) + "/run").check_writable(),
        StorageError,
        r"^storage: cannot write to \S+/results/run: a file is in the way: part of the path is a file, not a folder",
    ),
    Case(
        "corrupt-checkpoint",
        lambda c: _train_earlier(c),
        CheckpointError,
        r"^checkpoint .*/digits/earlier/lenet1/checkpoint\.pt is corrupt or unreadable \(RuntimeError: PytorchStreamReader failed reading zip archive: not a ZIP archive\); move it aside or use another run name to train afresh$",
        setup=_corrupt_checkpoint,
    ),
    Case(
        "checkpoint-of-another-variant",
        lambda c: _train_earlier(c, "cnn2_5"),
        CheckpointError,
        r"^checkpoint .*/earlier/cnn2_5/checkpoint\.pt belongs to variant 'lenet1', not 'cnn2_5'; each variant resumes only from its own folder's checkpoint$",
        setup=_checkpoint_of_lenet1_in_cnn2_5,
    ),
    Case(
        "checkpoint-with-other-settings",
        lambda c: _train(c, "earlier", epochs=3, lr=0.1),
        CheckpointError,
        r"^checkpoint .*/earlier/lenet1/checkpoint\.pt was written with other settings \(epochs 1 -> 3, lr 0\.05 -> 0\.1\); resume with the same settings, or use another run name",
        setup=_train_earlier,
    ),
    Case(
        "weights-not-the-trained-model",
        lambda c: pipeline.evaluate_variant(_tiny(c, "earlier"), "lenet1", "digits/earlier/lenet1", model_id="0" * 24),
        CheckpointError,
        r"^.*/earlier/lenet1/model\.pt holds weights \w+, not the trained model 0{24}; retrain the variant$",
        setup=_train_earlier,
    ),
    Case(
        "nan-loss",
        lambda c: _train(c, "diverged", lr=1e6, schedule="none"),
        TrainingDiverged,
        r"^loss became (nan|inf) at epoch 1, step \d+ \(lr=1e\+06\); lower lr or check the inputs$",
    ),
    Case(
        "run-name-with-dotdot",
        lambda c: variant_dir("digits", "../escape", "lenet1"),
        ConfigError,
        r"^run: '\.\./escape' is not a safe name \(allowed: letters, digits, '\.', '_', '-'",
    ),
    Case(
        "absolute-run-name",
        lambda c: variant_dir("digits", "/etc/cron.d", "lenet1"),
        ConfigError,
        r"^run: '/etc/cron\.d' is not a safe name \(allowed: letters, digits",
    ),
    Case(
        "unsafe-subdir",
        lambda c: _train(c, "sub", subdir="../../x"),
        ConfigError,
        r"^subdir: '\.\./\.\./x' is not a safe name \(allowed: letters, digits",
    ),
    Case(
        "unknown-refresh-step",
        lambda c: parse_params({"refresh": ["training"]}),
        ConfigError,
        r"^refresh: unknown step\(s\) \['training'\]; did you mean 'train'\? \(allowed: lr, train, evaluate, features\)",
        pure=True,
    ),
    Case(
        "run-name-used-by-the-store",
        lambda c: _train(c, "latest.json"),
        ConfigError,
        r"^run: 'latest\.json' is reserved: the store keeps <dataset>/comparisons/ .* \(allowed: any safe name except comparisons, latest, latest\.json\)$",
    ),
    Case(
        "variant-name-used-by-the-store",
        lambda c: register_variant("report")(lambda channels, classes, size: None),
        ConfigError,
        r"^variant: 'report' is reserved: the store keeps <dataset>/<run>/report/ .* \(allowed: any safe name except report, ",
    ),
    Case(
        "truncated-comparison-record",
        lambda c: read_comparison(Storage(str(c.store)), "digits", "default"),
        StorageError,
        r"^storage: \S+/digits/comparisons/default/generic_1\.json is not valid JSON \(.* at line 1 column \d+; truncated\?\); move it aside \(or restore it\) and rerun$",
        setup=lambda c: _truncated_record(c, "digits"),
    ),
    Case(
        "generic-config-not-utf8",
        lambda c: load_generic_config(
            _file(c, "latin1.json", '{"conv_channels": [4], "note": "caf\u00e9"}'.encode("latin-1"))
        ),
        ConfigError,
        r"^config: \S+/latin1\.json is not UTF-8 text \(byte 0xe9 at offset \d+\) \(allowed: a UTF-8 JSON file\)$",
    ),
    Case(
        "generic-config-file-huge",
        lambda c: load_generic_config(_file(c, "huge.json", b" " * 2_000_000)),
        ConfigError,
        r"^config: \S+/huge\.json is 2,000,000 bytes, not a GenericCNN config \(allowed: a JSON file of at most 1,000,000 bytes\)$",
    ),
    Case(
        "generic-config-too-big-to-build",
        lambda c: GenericCNN(GenericConfig([4096, 4096], 3, 2, [100_000]), 1, 10, 28),
        ConfigError,
        r"^config: this GenericCNN would have 10,392,140,010 parameters \(41\.6 GB of float32 weights, .*\(allowed: at most 200,000,000 parameters\)$",
    ),
    Case(
        "data-dir-s3-url",
        lambda c: load_dataset("fashion-mnist", "s3://cnn-lab/mirror"),
        ConfigError,
        r"^data_dir: 's3://cnn-lab/mirror' is a URL; dataset mirrors are read from a local folder .*\(allowed: a local folder in torchvision's layout, ~ expanded\)$",
    ),
    Case(
        "storage-block-not-a-block-name",
        lambda c: parse_params({"storage_block": "my-creds"}),
        ConfigError,
        r"^storage_block: 'my-creds' is not aws-credentials/NAME or s3-bucket/NAME \(allowed: aws-credentials/NAME or s3-bucket/NAME\)$",
        pure=True,
    ),
]


def _file(ctx: Ctx, name: str, content: bytes) -> Path:
    path = ctx.tmp / name
    path.write_bytes(content)
    return path


def _truncated_record(ctx: Ctx, dataset: str) -> None:
    """A comparison whose generic_1 record is cut off mid-row, as a full disk or a killed copy leaves it."""
    from cnn.comparisons import record_definition

    config = RunParams(dataset=dataset, storage=str(ctx.store), run="earlier", variants=["lenet1", "generic_1"])
    record_definition(Storage(str(ctx.store)), config)
    (ctx.store / dataset / "comparisons" / "default" / "generic_1.json").write_text(
        '{"schema_version": 1, "run": "earlier", "rows": [{"variant": "generic_1", "test_a'
    )


def _check_names(names: list[str]) -> list[str]:
    from cnn.models import check_variant_names

    return check_variant_names(names)


def _module_file(ctx: Ctx, body: str) -> str:
    path = ctx.tmp / "broken_nets.py"
    path.write_text(f"{body}\n")
    return str(path)


def _cuda_config() -> TrainConfig:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    return TrainConfig(device="cuda").check()


# --- fixtures -------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3_server():
    server = S3Server().start()
    server.client().create_bucket(Bucket=BUCKET)
    yield server
    server.stop()


@pytest.fixture
def ctx(tmp_path, fashion_dir, s3_server, monkeypatch):
    for var in (
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
        "AWS_PROFILE",
        "AWS_SESSION_TOKEN",
        "CNN_LAB_STORAGE_RETRIES",
        "CNN_LAB_STORAGE_BACKOFF",
    ):
        monkeypatch.delenv(var, raising=False)
    for var, value in s3_env(s3_server.endpoint).items():
        monkeypatch.setenv(var, value)
    store = Storage(str(tmp_path / "store"))
    store.write_json("digits/earlier/generic_1/metrics.json", {"accuracy": 0.91})
    store.write_text("digits/earlier/comparison.md", "| variant | test acc |\n| generic_1 | 0.91 |\n")
    Storage(f"s3://{BUCKET}/earlier").write_json("digits/earlier/generic_1/row.json", {"test_acc": 0.91})
    context = Ctx(tmp_path, tmp_path / "store", fashion_dir, s3_server, monkeypatch)
    yield context
    for undo in reversed(context.cleanups):
        undo()


def _snapshot(ctx: Ctx) -> dict[str, bytes]:
    """Every stored file: the local store and the bucket."""
    files = {f"local:{p.relative_to(ctx.store)}": p.read_bytes() for p in ctx.store.rglob("*") if p.is_file()}
    return files | {f"s3:{k}": v for k, v in ctx.s3.objects().items()}


def test_the_matrix_has_at_least_25_bad_inputs_and_matches_the_docs() -> None:
    ids = [c.id for c in CASES] + [c[0] for c in FLOW_CASES] + [c.id for c in CLI_CASES]
    assert len(CASES) >= 25 and len(ids) == len(set(ids))
    documented = re.findall(r"^\| \d+ \| `([a-z0-9-]+)` \|", DOC.read_text(), flags=re.M)
    assert sorted(documented) == sorted(ids), "docs/bad-inputs.md and the tests list different bad inputs"


def test_the_fault_table_names_tests_that_exist() -> None:
    import ast

    refs = re.findall(r"`(tests/test_\w+\.py)::(test_\w+)`", (DOC.parent / "faults.md").read_text())
    assert len(refs) >= 10
    for path, name in refs:
        tree = ast.parse((DOC.parents[1] / path).read_text())
        assert name in {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}, (
            f"docs/faults.md names {path}::{name}, which does not exist"
        )


PURE = [c for c in CASES if c.pure]
STORED = [c for c in CASES if not c.pure]


@pytest.mark.parametrize("case", PURE, ids=[c.id for c in PURE])
def test_bad_parameter_gets_one_clear_error(case: Case, tmp_path: Path) -> None:
    with pytest.raises(case.error) as err:
        case.call(Ctx(tmp_path, tmp_path / "store", tmp_path / "data", None, None))  # type: ignore[arg-type]
    text = str(err.value)
    assert isinstance(err.value, CnnLabError), f"not a cnn-lab error: {type(err.value).__name__}"
    assert re.search(case.match, text), text
    assert "\n" not in text and "Traceback" not in text
    assert not (tmp_path / "store").exists()


@pytest.mark.parametrize("case", STORED, ids=[c.id for c in STORED])
def test_bad_input_gets_one_clear_error_and_loses_nothing(case: Case, ctx: Ctx) -> None:
    if case.setup:
        case.setup(ctx)
    before = _snapshot(ctx)
    with pytest.raises(case.error) as err:
        case.call(ctx)
    text = str(err.value)
    assert isinstance(err.value, CnnLabError), f"not a cnn-lab error: {type(err.value).__name__}"
    assert re.search(case.match, text), text
    assert "\n" not in text and "Traceback" not in text
    assert SECRET not in text
    assert _snapshot(ctx) == before, "a failed call changed what was stored"


# --- through the flows: the Prefect run ends Failed with the same message ------------------------------------------

FLOW_CASES = [
    (
        "flow-repeats-zero",
        "compare",
        {"repeats": 0},
        r"repeats: must be 'auto' or an integer in \[1, 1000\], got 0 \(allowed: 'auto' or an integer in \[1, 1000\]\)",
    ),
    (
        "flow-unknown-optimizer",
        "compare",
        {"optimizer": "rmsprop"},
        r"optimizer: unknown optimizer 'rmsprop' \(allowed: sgd, adam, adamw\)",
    ),
    (
        "flow-nan-lr",
        "compare",
        {"lr": math.nan},
        r"lr: must be 'auto' or a finite number in \(0, 1000\], got nan \(allowed: 'auto' or a finite number in \(0, 1000\]\)",
    ),
    (
        "flow-lr-bounds-reversed",
        "compare",
        {"lr_min": 0.1, "lr_max": 0.01},
        r"ConfigError: lr_max: must be greater than lr_min=0\.1, got 0\.01",
    ),
    (
        "flow-unsafe-variant-name",
        "compare",
        {"variants": ["../../etc"]},
        r"variants: '\.\./\.\./etc' is not a variant name \(allowed: lowercase letters, digits and _\)",
    ),
    (
        "flow-unknown-variant",
        "compare",
        {"variants": ["lenet1", "lenet7"]},
        r"ConfigError: variants: unknown variant 'lenet7'; did you mean 'lenet5'\? \(allowed: .*lenet1",
    ),
    (
        "flow-variant-file-missing",
        "compare",
        {"variant_files": {"mine": "no/such/mine.json"}},
        r"ConfigError: variant_files: variant 'mine' from \S+/no/such/mine\.json: no such file",
    ),
    (
        "flow-variant-module-missing",
        "variant",
        {"variant_modules": ["no_such_cnn_lab_plugin"]},
        r"ConfigError: variant_modules: cannot import 'no_such_cnn_lab_plugin': ModuleNotFoundError",
    ),
    (
        "flow-batch-larger-than-train-split",
        "compare",
        {"batch_size": 1000},
        r"^ConfigError: batch_size: 1000 is larger than the 240 training images \(allowed: 1\.\.240, or auto\)$",
    ),
    (
        "flow-corrupt-idx-file",
        "compare",
        {"data_dir": "corrupt"},
        r"DataError: data_dir: dataset 'FashionMNIST' in .* is corrupt or truncated",
    ),
    (
        "flow-missing-bucket",
        "compare",
        {"storage": "s3://no-such-bucket/results"},
        r"StorageError: storage: cannot write to s3://no-such-bucket/results: bucket 'no-such-bucket' does not exist",
    ),
    (
        "flow-credentials-in-storage-url",
        "compare",
        {"storage": f"s3://AKIDEXAMPLE:{SECRET}@{BUCKET}/results"},
        r"ConfigError: storage: credentials in the URL are not accepted",
    ),
    (
        "flow-file-in-place-of-storage-dir",
        "compare",
        {"storage": "file-in-place"},
        r"StorageError: storage: cannot write to \S+/results/run: a file is in the way",
    ),
    (
        "flow-nan-loss",
        "variant",
        {"lr": 1000, "schedule": "none"},
        r"TrainingDiverged: loss became (nan|inf) at epoch 1, step \d+ \(lr=1e\+03\); lower lr",
    ),
    (
        "flow-resume-with-other-epochs",
        "variant",
        {"epochs": 2, "run": "earlier"},
        r"CheckpointError: checkpoint .*/earlier/lenet1/checkpoint\.pt was written with other settings \(epochs 1 -> 2\)",
    ),
    (
        "flow-run-name-used-by-the-store",
        "compare",
        {"run": "latest.json"},
        r"ConfigError: run: 'latest\.json' is reserved: the store keeps <dataset>/comparisons/",
    ),
    (
        "flow-missing-train-deployment",
        "compare",
        {"train_deployment": "train-variant/no-such-deployment"},
        r"ConfigError: train_deployment: no deployment 'train-variant/no-such-deployment' on the Prefect server",
    ),
    (
        "flow-truncated-comparison-record",
        "retrain",
        {"run": "retrain"},
        r"StorageError: storage: \S+/fashion-mnist/comparisons/default/generic_1\.json is not valid JSON \(.* at line 1 column \d+; truncated\?\)",
    ),
    (
        "flow-data-dir-s3-url",
        "compare",
        {"data_dir": "s3://cnn-lab/mirror"},
        r"ConfigError: data_dir: 's3://cnn-lab/mirror' is a URL; dataset mirrors are read from a local folder",
    ),
    (
        "flow-storage-block-unknown",
        "compare",
        {"storage_block": "aws-credentials/no-such-block"},
        r"^ConfigError: storage_block: no aws-credentials block named 'no-such-block' on the Prefect server at http\S+ \(allowed: aws-credentials/NAME or s3-bucket/NAME, saved on the Prefect server the run reports to\)$",
    ),
]


@pytest.mark.slow
@pytest.mark.parametrize(("case_id", "flow", "override", "match"), FLOW_CASES, ids=[c[0] for c in FLOW_CASES])
def test_bad_input_fails_the_flow_run_with_the_message(
    prefect_harness, ctx: Ctx, case_id: str, flow: str, override: dict[str, Any], match: str
) -> None:
    from flows.compare import compare_architectures
    from flows.retrain import retrain_variant
    from flows.variant import train_variant_flow

    kwargs: dict[str, Any] = {
        "dataset": "fashion-mnist",
        "epochs": 1,
        "batch_size": 64,
        "lr": 0.05,
        "optimizer": "sgd",
        "data_dir": str(ctx.data),
        "storage": str(ctx.store),
        "max_train": 300,
        "val_size": 60,
        "device": "cpu",
        **override,
    }
    if kwargs["data_dir"] == "corrupt":
        kwargs["data_dir"] = _idx_dir(ctx, _truncate)
    if kwargs["storage"] == "file-in-place":
        kwargs["storage"] = _file_in_place_of_dir(ctx) + "/run"
    if case_id == "flow-truncated-comparison-record":
        _truncated_record(ctx, "fashion-mnist")
    if flow == "compare":
        kwargs.setdefault("variants", ["lenet1"])
        run = lambda: compare_architectures(**kwargs, return_state=True)  # noqa: E731
    elif flow == "retrain":
        place = ("dataset", "data_dir", "storage", "device", "run")
        run = lambda: retrain_variant(variant="lenet1", **{k: kwargs[k] for k in place}, return_state=True)  # noqa: E731
    else:
        run = lambda: train_variant_flow(variant="lenet1", **kwargs, return_state=True)  # noqa: E731
        if case_id == "flow-resume-with-other-epochs":
            assert train_variant_flow(variant="lenet1", **{**kwargs, "epochs": 1}, return_state=True).is_completed()
    before = _snapshot(ctx)
    state = run()
    assert state.is_failed()
    assert re.search(match, state.message), state.message
    assert SECRET not in state.message
    after = _snapshot(ctx)
    assert {k: after.get(k) for k in before} == before, "a failed run changed files stored earlier"
    if case_id in (
        "flow-run-name-used-by-the-store",
        "flow-missing-train-deployment",
        "flow-truncated-comparison-record",
        "flow-data-dir-s3-url",
        "flow-batch-larger-than-train-split",
        "flow-storage-block-unknown",
    ):
        assert not [k for k in after if k.endswith("checkpoint.pt") and k not in before], "it trained before failing"


# --- through the command line: issue 22's bounds, secrets and small cases ------------------------------------------

ENDPOINT_SECRET = "endpoint-pw-5d81c0e9"  # not the AWS secret: redaction by the variables' values must not hide it
DRIVER = r"""
import contextlib, io, json, os, sys
from flows.cli import main
out = []
for case in json.loads(sys.argv[1]):
    saved = dict(os.environ)
    os.environ.update(case["env"])
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            code = main(case["argv"])
        except SystemExit as stop:  # argparse's errors
            code = stop.code
    os.environ.clear()
    os.environ.update(saved)
    heavy = sorted(m for m in ("torch", "prefect", "torchvision") if m in sys.modules)
    out.append({"id": case["id"], "code": code, "err": err.getvalue(), "heavy": heavy})
print(json.dumps(out))
"""


@dataclass
class CliCase:
    """One bad input through `cnn-lab`: argv, environment, and a regex for the one line it gets on stderr (exit 2)."""

    id: str
    argv: list[str]
    match: str
    env: dict[str, str] = field(default_factory=dict)
    fast: bool = True  # refused before torch or Prefect loads


COMPARE = ["compare", "--dataset", "digits", "--variants", "lenet1", "--storage", "{tmp}/store"]
CLI_CASES = [
    CliCase(
        "repeats-past-the-bound",
        [*COMPARE, "--repeats", "1000000000"],
        r"^cnn-lab: repeats: must be 'auto' or an integer in \[1, 1000\], got '1000000000' \(allowed: 'auto' or an integer in \[1, 1000\]\)$",
    ),
    CliCase(
        "epochs-past-the-bound",
        [*COMPARE, "--epochs", "100000"],
        r"^cnn-lab: epochs: must be 'auto' or an integer in \[1, 10000\], got '100000' \(allowed: ",
    ),
    CliCase(
        "batch-size-past-the-bound",
        [*COMPARE, "--batch-size", "10000000"],
        r"^cnn-lab: batch_size: must be 'auto' or an integer in \[1, 65536\], got '10000000' \(allowed: ",
    ),
    CliCase(
        "parallel-past-the-bound",
        [*COMPARE, "--parallel", "100000"],
        r"^cnn-lab: parallel: must be 'auto' or an integer in \[1, 256\], got '100000' \(allowed: ",
    ),
    CliCase(
        "max-train-past-the-bound",
        [*COMPARE, "--max-train", "1e12"],
        r"^cnn-lab: max_train: must be an integer in \[0, 100000000\], got '1e12' \(allowed: ",
    ),
    CliCase(
        "lr-past-the-bound",
        [*COMPARE, "--lr", "1e6"],
        r"^cnn-lab: lr: must be 'auto' or a finite number in \(0, 1000\], got '1e6' \(allowed: ",
    ),
    CliCase(
        "variants-table-size-past-the-bound",
        ["variants", "--size", "100000"],
        r"^cnn-lab variants: argument --size: must be an integer in \[1, 4096\], got '100000' \(allowed: ",
    ),
    CliCase(
        "bench-seeds-not-numbers",
        ["bench", "--recipe", "--seeds", "abc"],
        r"^cnn-lab bench: argument --seeds: 'abc' is not an integer in \[0, 4294967296\) \(allowed: a comma-separated list of 1 to 1000 values",
    ),
    CliCase(
        "storage-retries-infinite",
        COMPARE,
        r"^cnn-lab: CNN_LAB_STORAGE_RETRIES: must be an integer in \[1, 100\], got 'inf' \(allowed: an integer in \[1, 100\]\)$",
        env={"CNN_LAB_STORAGE_RETRIES": "inf"},
    ),
    CliCase(
        "storage-backoff-not-a-number",
        COMPARE,
        r"^cnn-lab: CNN_LAB_STORAGE_BACKOFF: must be a finite number in \[0, 60\], got 'soon' \(allowed: ",
        env={"CNN_LAB_STORAGE_BACKOFF": "soon"},
    ),
    CliCase(
        "storage-give-up-past-the-bound",
        COMPARE,
        r"^cnn-lab: CNN_LAB_STORAGE_GIVE_UP_S: must be a finite number in \[0, 86400\], got '1e9' \(allowed: ",
        env={"CNN_LAB_STORAGE_GIVE_UP_S": "1e9"},
    ),
    CliCase(
        "endpoint-with-credentials",
        [*COMPARE[:-1], f"s3://{BUCKET}/x"],
        r"^cnn-lab: AWS_ENDPOINT_URL: credentials in the endpoint are not accepted \(they would show up in logs and messages\): 'http://\*\*\*@127\.0\.0\.1:\d+' \(allowed: ",
        env={"AWS_ENDPOINT_URL": "http://AKIDEXAMPLE:" + ENDPOINT_SECRET + "@127.0.0.1:{dead}"},
    ),
    CliCase(
        "run-name-unsafe-before-torch",
        [*COMPARE, "--run", "../escape"],
        r"^cnn-lab: run: '\.\./escape' is not a safe name \(allowed: letters, digits",
    ),
    CliCase(
        "task-runner-malformed",
        [*COMPARE, "--task-runner", "tcp://scheduler:notaport"],
        r"^cnn-lab: task_runner: 'tcp://scheduler:notaport' is neither dask nor a scheduler's host:port \(allowed: ",
    ),
    CliCase(
        "task-runner-unreachable",
        [*COMPARE, "--task-runner", "tcp://127.0.0.1:{dead}"],
        r"^cnn-lab: task_runner: no Dask scheduler answers at tcp://127\.0\.0\.1:\d+ \(ConnectionRefusedError: .*\) \(allowed: ",
    ),
    CliCase(
        "task-runner-not-a-scheduler",
        [*COMPARE, "--task-runner", "tcp://127.0.0.1:{silent}"],
        r"^cnn-lab: task_runner: tcp://127\.0\.0\.1:\d+ accepts connections but is not a Dask scheduler \(no greeting within 5 s\)",
    ),
    CliCase(
        "prefect-home-is-a-file",
        COMPARE,
        r"^cnn-lab: PREFECT_HOME: \S+/a-file is a file, not a folder \(allowed: ",
        env={"PREFECT_HOME": "{tmp}/a-file"},
    ),
    CliCase(
        "prefect-api-url-dead",
        COMPARE,
        r"^cnn-lab: PREFECT_API_URL: no Prefect server answers at http://127\.0\.0\.1:\d+/api \(.*\) \(allowed: the API URL of a running Prefect server",
        env={"PREFECT_API_URL": "http://127.0.0.1:{dead}/api"},
    ),
    CliCase(
        "prefect-api-url-malformed",
        COMPARE,
        r"^cnn-lab: PREFECT_API_URL: 'localhost:4200/api' is not an http\(s\) URL \(allowed: ",
        env={"PREFECT_API_URL": "localhost:4200/api"},
    ),
    CliCase(
        "prefect-api-url-with-credentials",
        COMPARE,
        r"^cnn-lab: PREFECT_API_URL: credentials in the URL are not accepted \(Prefect prints it in its logs\): 'http://\*\*\*@127\.0\.0\.1:\d+/api'",
        env={"PREFECT_API_URL": "http://me:" + ENDPOINT_SECRET + "@127.0.0.1:{dead}/api"},
    ),
    CliCase(
        "variant-json-nested-too-deep",
        [*COMPARE, "--variant", "deep={tmp}/deep.json"],
        r"^cnn-lab: variant_files: variant 'deep' from \S+/deep\.json: \S+/deep\.json nests lists or objects too deeply to read",
        fast=False,
    ),
    CliCase(
        "plugin-exits-at-import",
        [*COMPARE, "--variant-module", "{tmp}/exits.py"],
        r"^cnn-lab: variant_modules: '\S+/exits\.py' called sys\.exit\(0\) while it was imported \(allowed: ",
        fast=False,
    ),
]
if sys.platform != "darwin":  # MPS can exist on macOS only; there torch decides
    CLI_CASES.insert(
        13,
        CliCase(
            "mps-where-there-is-none",
            [*COMPARE, "--device", "mps"],
            r"^cnn-lab: device: MPS \(Apple's GPU\) was requested but is not available on this machine \(allowed: auto, cpu\)$",
        ),
    )


@contextlib.contextmanager
def _silent_listener() -> Iterator[int]:
    """A port on 127.0.0.1 that accepts connections and never says a word (as a web server waits for a request)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(OSError):
                held.append(server.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        for conn in [*held, server]:
            conn.close()


def test_each_command_line_case_is_one_line_exit_code_2_and_no_secret(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    (tmp_path / "deep.json").write_text('{"conv_channels": ' + "[" * 200_000 + "]" * 200_000 + "}")
    (tmp_path / "exits.py").write_text("import sys\nsys.exit(0)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "AWS_", "CNN_LAB_"))}
    env.update(PYTHONPATH=str(DOC.parents[1]), HOME=str(tmp_path), PREFECT_HOME=str(tmp_path / "prefect"))
    with _silent_listener() as silent:
        values = {"tmp": str(tmp_path), "dead": str(free_port()), "silent": str(silent)}
        cases = [
            {
                "id": c.id,
                "argv": [a.format(**values) for a in c.argv],
                "env": {k: v.format(**values) for k, v in c.env.items()},
            }
            for c in sorted(CLI_CASES, key=lambda c: not c.fast)  # the fast ones first: nothing heavy loaded yet
        ]
        done = subprocess.run(
            [sys.executable, "-c", DRIVER, json.dumps(cases)],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=env,
            timeout=600,
        )
    assert done.returncode == 0, done.stderr[-3000:]
    results = {r["id"]: r for r in json.loads(done.stdout)}
    for case in CLI_CASES:
        got = results[case.id]
        assert got["code"] == 2, (case.id, got)
        assert re.search(case.match, got["err"]), (case.id, got["err"])
        assert got["err"].count("\n") == 1 and "Traceback" not in got["err"], (case.id, got["err"])
        assert ENDPOINT_SECRET not in got["err"] and SECRET not in got["err"], case.id
        if case.fast:
            assert got["heavy"] == [], f"{case.id}: torch or Prefect loaded before the refusal"
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert not any(ENDPOINT_SECRET.encode() in p.read_bytes() for p in written), "a secret reached a file"
