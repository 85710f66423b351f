"""What a paired test needs from each run: its per-image predictions (predictions.npy) on an identified test set.

The store is untrusted: a predictions file is read with `allow_pickle=False` after a size check, and its dtype, shape,
length and class range are checked; a file that fails is named in a warning and its run left out of the tests.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from cnn.errors import ConfigError
from cnn.storage import Storage
from cnn.testset import TestSet

log = logging.getLogger(__name__)

PREDICTIONS = "predictions.npy"  # in the variant's (seed's) folder, beside metrics.json
NPY_HEADER_MAX = 4096  # bytes allowed for a .npy header (numpy writes 128 for a 1-D array)


@dataclass(frozen=True)
class Run:
    """One (variant, seed) run's per-test-image correctness on `test_set` (True where it predicted the label)."""

    variant: str
    seed: int
    test_set: TestSet
    correct: np.ndarray


def prediction_dtype(num_classes: int) -> np.dtype:
    """The smallest unsigned integer type holding class indices 0..num_classes-1 (uint8 up to 256 classes)."""
    if num_classes < 1:
        raise ConfigError("num_classes", f"must be at least 1, got {num_classes}")
    return np.dtype(np.min_scalar_type(num_classes - 1))


def predictions_bytes(y_pred: np.ndarray, num_classes: int) -> bytes:
    """The predicted classes in test order as .npy bytes, in the smallest integer type that holds them."""
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(y_pred).astype(prediction_dtype(num_classes)), allow_pickle=False)
    return buffer.getvalue()


def max_file_bytes(size: int) -> int:
    """The largest predictions file accepted for `size` test images (an int64 per image and a generous header)."""
    return NPY_HEADER_MAX + 8 * size


def parse_predictions(raw: bytes, size: int, num_classes: int) -> np.ndarray:
    """Predicted classes from untrusted .npy bytes; ValueError saying what is wrong (size, dtype, shape, values)."""
    if len(raw) > max_file_bytes(size):
        raise ValueError(f"{len(raw):,} bytes is too large for {size} predictions")
    try:
        values = np.load(io.BytesIO(raw), allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise ValueError(f"not a .npy array ({str(err).splitlines()[0] if str(err) else type(err).__name__})") from None
    if not isinstance(values, np.ndarray) or values.dtype.kind not in "iu":
        raise ValueError(f"dtype {getattr(values, 'dtype', type(values).__name__)} is not an integer type")
    if values.ndim != 1 or len(values) != size:
        raise ValueError(f"shape {values.shape} is not ({size},), one class per test image")
    if len(values) and (int(values.min()) < 0 or int(values.max()) >= num_classes):
        raise ValueError(f"classes outside 0..{num_classes - 1}")
    return values.astype(np.int64)


def load_runs(
    store: Storage,
    rows: Iterable[tuple[Mapping[str, Any], str]],
    test_set: TestSet,
    y_true: np.ndarray,
    num_classes: int,
) -> tuple[list[Run], list[str]]:
    """The runs of finished rows scored on `test_set`, from each (row, its folder in the store)'s predictions.npy
    against the labels `y_true`; and the variants left out (another test set, no file, or a damaged one: each named in
    a warning, never raised, so that a report is always written)."""
    if len(y_true) != test_set.size:
        raise ConfigError("y_true", f"holds {len(y_true)} labels for a test set of {test_set.size} images")
    runs, left_out = [], []
    for row, folder in rows:
        if row.get("status", "ok") != "ok":
            continue
        why = _unpaired_reason(row, test_set)
        rel = f"{folder}/{PREDICTIONS}"
        if why is None:
            try:
                predicted = parse_predictions(_read_limited(store, rel, test_set.size), test_set.size, num_classes)
            except (ValueError, OSError) as err:
                why = f"{store.path(rel)}: {err}"
        if why is not None:
            log.warning("%s (seed %s) left out of the paired tests: %s", row["variant"], row.get("seed"), why)
            left_out.append(str(row["variant"]))
            continue
        runs.append(Run(str(row["variant"]), int(row["seed"]), test_set, predicted == y_true))
    return runs, list(dict.fromkeys(left_out))


def _unpaired_reason(row: Mapping[str, Any], test_set: TestSet) -> str | None:
    """Why a row cannot be paired with runs on `test_set` (None when it can)."""
    stored = TestSet.from_dict(row.get("test_set"))
    if stored is None:
        return "no test-set identity in its row (a run of an earlier version: retrain it to test it)"
    if stored != test_set:
        return f"scored on another test set ({stored.describe()}, not {test_set.describe()})"
    return None


def _read_limited(store: Storage, rel: str, size: int) -> bytes:
    """The file's bytes, refused before reading when it is larger than `size` predictions can be."""
    if not store.exists(rel):
        raise ValueError("no predictions file (written by cnn-lab since per-image predictions are stored)")
    found = store.size(rel)
    if found > max_file_bytes(size):
        raise ValueError(f"{found:,} bytes is too large for {size} predictions")
    return store.read_bytes(rel)
