"""The figures a variant's steps leave in its folder, drawn by cnn.plots and written as full-resolution PNGs.

This module names the files a cached step returns (filters/<layer>.png, ...), so it stays in the steps' cache keys
(it is not in cnn.codehash.NOT_RESULTS)."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor

from cnn import plots
from cnn.inspect import select_probe_images
from cnn.lr_find import LRFindResult
from cnn.step_inputs import DatasetRef, get_dataset
from cnn.storage import Storage


def save_png(storage: Storage, rel: str, fig: Any, dpi: int = plots.FULL_DPI) -> str:
    """Render `fig` to PNG at `rel` in `storage`; returns its URL."""
    return storage.write_bytes(rel, plots.figure_to_png(fig, dpi=dpi))


def save_lr_sweep(store: Storage, folder: str, result: LRFindResult, lr: float) -> str:
    """lr_finder.png: the range test's loss against lr, the suggestions and the lr chosen."""
    return save_png(
        store, f"{folder}/lr_finder.png", plots.plot_lr_sweep(result.lrs, result.losses, lr, result.suggestions)
    )


def save_history(store: Storage, folder: str, history: Sequence[Mapping[str, float]]) -> str:
    """losses.png: the training and validation curves of one trained seed."""
    return save_png(store, f"{folder}/losses.png", plots.plot_history(history))


def save_confusion(store: Storage, folder: str, confusion: Any, classes: Sequence[str]) -> str:
    """confusion_matrix.png of the test split."""
    return save_png(store, f"{folder}/confusion_matrix.png", plots.plot_confusion_matrix(confusion, classes))


def save_layer_figures(
    store: Storage, folder: str, variant: str, filters: Mapping[str, Tensor], maps: Mapping[str, Tensor]
) -> dict[str, list[str]]:
    """filters/<layer>.png for each conv layer's weights and feature_maps/<layer>.png for each captured map of two or
    more dimensions; returns their URLs by kind."""
    written: dict[str, list[str]] = {"filters": [], "feature_maps": []}
    for name, weight in filters.items():
        written["filters"].append(
            save_png(store, f"{folder}/filters/{name}.png", plots.plot_filters(weight, title=f"{variant} {name}"))
        )
    for name, fmap in maps.items():
        if fmap.ndim >= 2:
            written["feature_maps"].append(
                save_png(
                    store, f"{folder}/feature_maps/{name}.png", plots.plot_feature_maps(fmap, title=f"{variant} {name}")
                )
            )
    return written


@functools.lru_cache(maxsize=4)
def probe_images_png(ref: DatasetRef, probe_seed: int) -> bytes:
    """The probe images' grid as PNG, drawn once per process: every variant of a run shows the same images."""
    data = get_dataset(ref)
    px, py = select_probe_images(data.test_x, data.test_y, data.num_classes, seed=probe_seed)
    return plots.figure_to_png(
        plots.plot_sample_grid(px, [data.classes[int(i)] for i in py], title="probe images"), dpi=plots.FULL_DPI
    )
