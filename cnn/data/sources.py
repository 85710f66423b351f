"""Where raw images come from: torchvision datasets (download with retries, or a local mirror) and scikit-learn's digits."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from urllib.error import URLError

import numpy as np
import torch
from torch import Tensor

from cnn.data.splits import to_nchw_uint8
from cnn.errors import DataError

log = logging.getLogger(__name__)

RawSplit = tuple[Tensor, Tensor]  # uint8 (N, C, H, W) images, int64 labels


def _torchvision_class(tv_name: str) -> type:
    import torchvision.datasets as tvd

    return getattr(tvd, tv_name)


def _instantiate(cls: type, root: str, train: bool, download: bool) -> object:
    """Build a torchvision dataset for one split, whichever of `train=` or `split=` it takes."""
    import inspect

    params = inspect.signature(cls.__init__).parameters
    if "train" in params:
        return cls(root=root, train=train, download=download)
    if "split" in params:
        return cls(root=root, split="train" if train else "test", download=download)
    raise DataError(f"torchvision dataset {cls.__name__} has no train/test split that cnn-lab can read")


def _extract(ds: object, name: str) -> RawSplit:
    """Pull the whole split out of a torchvision dataset's `.data` and `.targets`/`.labels` at once."""
    data = getattr(ds, "data", None)
    targets = getattr(ds, "targets", getattr(ds, "labels", None))
    if data is None or targets is None:
        raise DataError(
            f"torchvision dataset {name!r} does not expose .data and .targets; cnn-lab reads in-memory sets only"
        )
    if isinstance(data, np.ndarray) and data.dtype != np.uint8:
        raise DataError(f"dataset {name!r} has {data.dtype} images; cnn-lab expects uint8")
    x = to_nchw_uint8(data)
    y = torch.as_tensor(np.asarray(targets), dtype=torch.int64).reshape(-1)
    if y.numel() != x.shape[0]:
        raise DataError(f"dataset {name!r}: {x.shape[0]} images but {y.numel()} labels")
    return x, y


def _raw_files_hint(cls: type, root: str) -> str:
    folder = Path(root) / cls.__name__ / "raw"
    resources = getattr(cls, "resources", None)
    if resources:
        names = ", ".join(os.path.splitext(os.path.basename(url))[0] for url, _ in resources)
        return f"{folder}/ holding {names}"
    return f"{root}/ in torchvision's layout for {cls.__name__}"


def load_torchvision(
    tv_name: str, root: str, *, download: bool = True, retries: int = 3, backoff: float = 1.0
) -> tuple[RawSplit, RawSplit, list[str]]:
    """Load (train, test, classes) of a torchvision set from `root`, downloading (with retries) if it is missing."""
    cls = _torchvision_class(tv_name)
    last: Exception | None = None
    for attempt in range(1, max(1, retries) + 1):
        try:
            # torchvision's own download checks each file's MD5 and tries every mirror
            train = _instantiate(cls, root, True, download)
            test = _instantiate(cls, root, False, download)
            break
        except (RuntimeError, URLError, OSError, AssertionError, ValueError) as err:
            if _looks_corrupt(err):
                detail = f"{type(err).__name__}: {err}" if str(err) else f"{type(err).__name__}: bad header or size"
                raise DataError(
                    f"data_dir: dataset {tv_name!r} in {root!r} is corrupt or truncated ({detail}); replace the raw files ({_raw_files_hint(cls, root)}) with complete copies"
                ) from err
            last = err
            if not download or attempt == retries:
                break
            wait = backoff * 2 ** (attempt - 1)
            log.warning(
                "download of %s failed (attempt %d/%d): %s; retrying in %.0fs", tv_name, attempt, retries, err, wait
            )
            time.sleep(wait)
    else:  # pragma: no cover - loop always breaks
        pass
    if last is not None:
        how = "could not be downloaded" if download else "is not in data_dir and download is off"
        raise DataError(
            f"dataset {tv_name!r} {how} ({type(last).__name__}: {str(last).splitlines()[0] if str(last) else ''}). "
            f"Ways out: pass data_dir pointing at a mirror with the raw files ({_raw_files_hint(cls, root)}), "
            f"or use dataset='digits', which ships with scikit-learn and needs no network."
        ) from last
    classes = [str(c) for c in getattr(train, "classes", [])]
    train_split, test_split = _extract(train, tv_name), _extract(test, tv_name)
    if not classes:
        n = int(max(train_split[1].max(), test_split[1].max())) + 1
        classes = [str(i) for i in range(n)]
    return train_split, test_split, classes


def _looks_corrupt(err: Exception) -> bool:
    """True for errors raised while parsing files that exist (bad magic number, short read)."""
    text = str(err).lower()
    return isinstance(err, (AssertionError, ValueError)) or "magic" in text or "buffer" in text or "shape" in text


def load_digits(test_fraction: float = 0.2, seed: int = 0) -> tuple[RawSplit, RawSplit, list[str]]:
    """scikit-learn's bundled 8x8 digits (1,797 images) as uint8, with a fixed-seed stratified test split."""
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_load_digits()
    images = np.clip(np.rint(bunch.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    idx_train, idx_test = train_test_split(
        np.arange(len(images)), test_size=test_fraction, random_state=seed, stratify=bunch.target
    )
    x = to_nchw_uint8(images)
    y = torch.as_tensor(bunch.target, dtype=torch.int64)
    tr, te = torch.as_tensor(idx_train), torch.as_tensor(idx_test)
    return (x[tr], y[tr]), (x[te], y[te]), [str(i) for i in range(10)]
