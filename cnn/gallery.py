"""Side-by-side galleries across variants: the same probe images through each one's first and last conv, and first-layer filters."""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from cnn import plots  # noqa: E402
from cnn.data import BatchLoader, DatasetSplits  # noqa: E402
from cnn.errors import ConfigError  # noqa: E402
from cnn.inspect import capture_feature_maps, conv_filters, list_layers, select_probe_images  # noqa: E402

Models = Mapping[str, tuple[nn.Module, int]]
MAX_MAPS = 8  # channels shown per variant and layer
MAX_FILTERS = 16  # first-layer filters shown per variant
MAP_TILE_IN = 0.65  # inches per feature-map tile: ten probes fill the UI's width (plots.UI_WIDTH_IN), 65 px a tile
FILTER_TILE_IN = 0.6  # inches per filter tile (at most UI_WIDTH_IN wide in all: a row of sixteen is scaled to fit)
GAP_COLOR = "#cfe3f3"


def _cmap() -> matplotlib.colors.Colormap:
    """Grey with tile gaps (NaN) in light blue, so they stay visible next to white pixels."""
    return matplotlib.colormaps["gray"].with_extremes(bad=GAP_COLOR)


def probe_batch(data: DatasetSplits, seed: int = 0) -> tuple[Tensor, Tensor]:
    """The fixed probe images (one per class, uint8) and labels from the test split: the same for every variant and run."""
    return select_probe_images(data.test_x, data.test_y, data.num_classes, seed=seed)


def normalise_probes(data: DatasetSplits, images: Tensor, input_size: int) -> Tensor:
    """uint8 probes -> float batch with the dataset's train mean/std, resized to `input_size`."""
    loader = BatchLoader(
        images,
        torch.zeros(len(images), dtype=torch.long),
        mean=data.mean,
        std=data.std,
        batch_size=max(1, len(images)),
        input_size=input_size,
    )
    return loader.transform(images)


def first_last_convs(model: nn.Module) -> tuple[str, str] | None:
    """Names of the first and last nn.Conv2d layers (the same name twice for one conv), or None without convs."""
    convs = list_layers(model, (nn.Conv2d,))
    return (convs[0], convs[-1]) if convs else None


def gallery_feature_maps(models: Models, data: DatasetSplits, seed: int = 0) -> dict[str, Figure]:
    """Figures "first_conv" and "last_conv": the probes, then the same probes through every variant, a row-block each."""
    images, labels = probe_batch(data, seed)
    inputs = ("input images (grey)", images.float().mean(dim=1, keepdim=True))
    maps: dict[str, dict[str, tuple[str, Tensor]]] = {"first_conv": {"probes": inputs}, "last_conv": {"probes": inputs}}
    for variant, (model, size) in models.items():
        layers = first_last_convs(model)
        if layers is None:
            continue
        captured = capture_feature_maps(model, normalise_probes(data, images, size), list(layers))
        maps["first_conv"][variant] = (layers[0], captured[layers[0]])
        maps["last_conv"][variant] = (layers[1], captured[layers[1]])
    if len(maps["first_conv"]) == 1:
        raise ConfigError("models", "no variant has an nn.Conv2d layer to show", allowed=list(models))
    names = [data.classes[int(i)] for i in labels]
    return {key: _maps_figure(blocks, names, key.replace("_", " ")) for key, blocks in maps.items()}


def _maps_figure(blocks: Mapping[str, tuple[str, Tensor]], probe_names: list[str], title: str) -> Figure:
    """One row-block per variant: probes as columns (aligned across blocks), its first MAX_MAPS channels as rows."""
    cols = min(len(probe_names), plots.MAX_PROBE_ROWS)
    mosaics = {}
    for variant, (layer, fmap) in blocks.items():
        m = fmap[:cols, :MAX_MAPS].float().transpose(0, 1).numpy()  # (channels, probes, h, w)
        rows, _, h, w = m.shape
        mosaics[variant] = (
            layer,
            fmap.shape[1],
            plots._mosaic(plots._minmax(m.reshape(rows * cols, h, w)), rows, cols),
        )
    heights = [min(int(blocks[v][1].shape[1]), MAX_MAPS) for v in mosaics]
    fig, axes = plt.subplots(
        len(mosaics),
        1,
        figsize=(1.5 + MAP_TILE_IN * cols, 0.6 + sum(0.45 + MAP_TILE_IN * n for n in heights)),
        squeeze=False,
        gridspec_kw={"height_ratios": [0.6 + n for n in heights]},
    )
    for ax, (variant, (layer, channels, mosaic)) in zip(axes[:, 0], mosaics.items()):
        ax.imshow(mosaic, cmap=_cmap(), vmin=0, vmax=1, interpolation="nearest")
        tile_w = (mosaic.shape[1] + 1) / cols
        ax.set_xticks([c * tile_w + (tile_w - 2) / 2 for c in range(cols)], probe_names[:cols], fontsize=9)
        ax.set_yticks([])
        ax.tick_params(length=0)
        ax.set_ylabel("channel", fontsize=9)
        shown = "" if variant == "probes" else f" (first {min(channels, MAX_MAPS)} of {channels} channels)"
        ax.set_title(f"{variant}: {layer}{shown}", fontsize=10, loc="left")
    fig.suptitle(f"feature maps, {title} (columns: the same probe images)", fontsize=12)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.45 / fig.get_figheight()))  # room for the suptitle
    return fig


def gallery_filters(models: Models) -> Figure:
    """Every variant's first conv layer's filters (input channel 0, at most MAX_FILTERS) in one figure, a row each."""
    rows = {}
    for variant, (model, _) in models.items():
        weights = conv_filters(model)
        if weights:
            name, weight = next(iter(weights.items()))
            tiles = weight[:MAX_FILTERS, 0].float().numpy()
            limit = float(np.abs(tiles).max()) or 1.0
            rows[variant] = (name, weight.shape, plots._mosaic(tiles / limit, 1, len(tiles)))
    if not rows:
        raise ConfigError("models", "no variant has an nn.Conv2d layer to show", allowed=list(models))
    fig, axes = plt.subplots(
        len(rows),
        1,
        figsize=(1.5 + FILTER_TILE_IN * MAX_FILTERS, 0.5 + (FILTER_TILE_IN + 0.45) * len(rows)),
        squeeze=False,
    )
    for ax, (variant, (name, shape, mosaic)) in zip(axes[:, 0], rows.items()):
        ax.imshow(mosaic, cmap=_cmap(), vmin=-1, vmax=1, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"{variant}: {name} {tuple(shape)}", fontsize=10, loc="left")
    fig.suptitle("first-layer filters (input channel 0)", fontsize=12)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.45 / fig.get_figheight()))  # room for the suptitle
    return fig


def gallery_pngs(models: Models, data: DatasetSplits, seed: int = 0, dpi: int = plots.FULL_DPI) -> dict[str, bytes]:
    """All galleries rendered to PNG bytes ({"first_conv", "last_conv", "filters"}), ready for write_report."""
    figures = {**gallery_feature_maps(models, data, seed), "filters": gallery_filters(models)}
    return {name: plots.figure_to_png(fig, dpi=dpi) for name, fig in figures.items()}
