"""Matplotlib figures for cnn-lab (Agg backend): filters, feature maps, samples, history, LR sweep, confusion.

Every plot function returns a Figure; `figure_to_png` renders and closes it. Nothing is written to disk here.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from sklearn.metrics import ConfusionMatrixDisplay  # noqa: E402
from torch import Tensor  # noqa: E402

from cnn.errors import ConfigError  # noqa: E402
from cnn.evaluate import normalize_rows  # noqa: E402

MAX_FILTER_TILES = 64
MAX_PROBE_ROWS = 10
FULL_DPI = 110  # the full-size PNGs a run leaves in the store
UI_DPI = 100  # figures embedded in the Prefect UI render at 100 px per inch, so one inch of figure is 100 px on screen
# the artifact page's content column in the Prefect UI at a 1400 px window, where tables never wrap
# (scripts/ui_screenshots.sh takes the screenshots it is read from)
UI_COLUMN_PX = 830
UI_WIDTH = UI_COLUMN_PX - 10  # px an embedded figure is drawn for
UI_WIDTH_IN = UI_WIDTH / UI_DPI


def figure_to_png(fig: Figure, dpi: int = 100) -> bytes:
    """Render `fig` to PNG bytes and close it."""
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(fig)
    return buffer.getvalue()


def png_data_uri(png: bytes) -> str:
    """A `data:image/png;base64,...` URI for embedding PNG bytes in HTML or Markdown."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def display_png(png: bytes, width: int = UI_WIDTH) -> bytes:
    """PNG bytes for showing at most `width` px wide: scaled down (never up) and stored as a 256-colour palette image."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGBA")
    if image.width > width:
        image = image.resize((width, max(1, round(image.height * width / image.width))), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.quantize(256, method=Image.Quantize.FASTOCTREE).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def _grid_shape(count: int) -> tuple[int, int]:
    """Rows and columns of a near-square grid holding `count` tiles."""
    cols = max(1, math.ceil(math.sqrt(count)))
    return math.ceil(count / cols), cols


def _mosaic(tiles: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Lay (K, h, w) tiles row-major into one image with 1-pixel NaN gaps (drawn as background)."""
    _, h, w = tiles.shape
    canvas = np.full((rows * (h + 1) - 1, cols * (w + 1) - 1), np.nan)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        canvas[r * (h + 1) : r * (h + 1) + h, c * (w + 1) : c * (w + 1) + w] = tile
    return canvas


def _grey() -> matplotlib.colors.Colormap:
    """Grey colormap with NaN (tile gaps) drawn white."""
    return matplotlib.colormaps["gray"].with_extremes(bad="white")


def _minmax(tiles: np.ndarray) -> np.ndarray:
    """Scale each tile of a (K, ...) array to [0, 1]; constant tiles become 0."""
    flat = tiles.reshape(len(tiles), -1)
    low, high = flat.min(axis=1, keepdims=True), flat.max(axis=1, keepdims=True)
    span = np.where(high > low, high - low, 1.0)
    return ((flat - low) / span).reshape(tiles.shape)


def _numpy(t: Tensor | np.ndarray) -> np.ndarray:
    """Float numpy copy of a tensor or array."""
    if isinstance(t, Tensor):
        return t.detach().float().cpu().numpy()
    return np.asarray(t, dtype=float)


def plot_filters(weight: Tensor, title: str = "") -> Figure:
    """Conv kernels (out, in, kh, kw) as a grey grid, at most 64 tiles; only the first input channel if out*in > 64."""
    w = _numpy(weight)
    if w.ndim != 4:
        raise ConfigError("weight", f"expected a conv weight (out, in, kh, kw), got shape {tuple(w.shape)}")
    out_ch, in_ch, kh, kw = w.shape
    if out_ch * in_ch <= MAX_FILTER_TILES and in_ch > 1:
        tiles, (rows, cols) = w.reshape(-1, kh, kw), (out_ch, in_ch)
        note = f"{out_ch} filters x {in_ch} input channels"
    else:
        tiles = w[:MAX_FILTER_TILES, 0]
        rows, cols = _grid_shape(len(tiles))
        note = f"{len(tiles)} of {out_ch} filters" + (", input channel 0" if in_ch > 1 else "")
    limit = float(np.abs(tiles).max()) or 1.0
    fig, ax = plt.subplots(figsize=(min(12, 1 + 0.6 * cols), min(12, 1 + 0.6 * rows)))
    ax.imshow(_mosaic(tiles, rows, cols), cmap=_grey(), vmin=-limit, vmax=limit, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"{title}\n{note}" if title else note, fontsize=9)
    return fig


def plot_feature_maps(maps: Tensor, title: str = "", max_maps: int = 16) -> Figure:
    """Feature maps (N, C, H, W) or (C, H, W): rows = probe images (max 10), cols = channels (max `max_maps`).

    1-D outputs (N, F) are drawn as a heat strip, one row per image.
    """
    m = _numpy(maps)
    if m.ndim == 3:
        m = m[None]
    if m.ndim == 2:
        return _plot_vectors(m[:MAX_PROBE_ROWS], title)
    if m.ndim != 4:
        raise ConfigError("maps", f"expected (N, C, H, W), (C, H, W) or (N, F), got shape {tuple(maps.shape)}")
    if max_maps < 1:
        raise ConfigError("max_maps", f"must be at least 1, got {max_maps}")
    m = m[:MAX_PROBE_ROWS, :max_maps]
    rows, cols, h, w = m.shape
    tiles = _minmax(m.reshape(rows * cols, h, w))
    fig, ax = plt.subplots(figsize=(min(16, 1.5 + 0.9 * cols), min(12, 0.5 + 0.9 * rows)))
    ax.imshow(_mosaic(tiles, rows, cols), cmap=_grey(), vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([c * (w + 1) + (w - 1) / 2 for c in range(cols)], [str(c) for c in range(cols)], fontsize=7)
    ax.set_yticks([r * (h + 1) + (h - 1) / 2 for r in range(rows)], [f"img {r}" for r in range(rows)], fontsize=7)
    ax.tick_params(length=0)
    ax.set_xlabel(f"channel (first {cols} of {_numpy(maps).shape[-3]})", fontsize=8)
    ax.set_title(title, fontsize=9)
    return fig


def _plot_vectors(v: np.ndarray, title: str) -> Figure:
    """(N, F) outputs as a heat strip with a colorbar."""
    fig, ax = plt.subplots(figsize=(8, 0.8 + 0.4 * len(v)))
    image = ax.imshow(v, aspect="auto", cmap="viridis", interpolation="nearest")
    ax.set_yticks(range(len(v)), [f"img {r}" for r in range(len(v))], fontsize=7)
    ax.set_xlabel(f"feature ({v.shape[1]})", fontsize=8)
    fig.colorbar(image, ax=ax)
    ax.set_title(title, fontsize=9)
    return fig


def _display_images(images: Tensor) -> np.ndarray:
    """(N, C, H, W) uint8 or float -> (N, H, W, C) floats in [0, 1]; floats outside [0, 1] are min-max scaled."""
    if images.dtype == torch.uint8:
        return images.permute(0, 2, 3, 1).float().div(255).cpu().numpy()
    x = _numpy(images).transpose(0, 2, 3, 1)
    if x.size and (x.min() < 0 or x.max() > 1):
        x = _minmax(x)
    return x


def plot_sample_grid(images: Tensor, labels: Sequence[str], title: str = "") -> Figure:
    """Images (N, C, H, W), C in {1, 3}, uint8 or float, in a near-square grid captioned with `labels`."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ConfigError("images", f"expected (N, C, H, W) with C in {{1, 3}}, got shape {tuple(images.shape)}")
    if len(labels) != len(images):
        raise ConfigError("labels", f"got {len(labels)} labels for {len(images)} images")
    pixels = _display_images(images)
    rows, cols = _grid_shape(len(pixels))
    fig, axes = plt.subplots(rows, cols, figsize=(1.4 * cols, 1.5 * rows + 0.3), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, label in zip(axes.flat, pixels, labels):
        ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=1)
        ax.set_title(str(label), fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def plot_history(history: Sequence[Mapping]) -> Figure:
    """Loss and accuracy per epoch (train and val) in two panels; missing values leave gaps."""
    epochs = [row.get("epoch", i + 1) for i, row in enumerate(history)]

    def series(key: str) -> list[float]:
        return [np.nan if row.get(key) is None else float(row[key]) for row in history]

    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in ((loss_ax, "loss"), (acc_ax, "acc")):
        for split in ("train", "val"):
            ax.plot(epochs, series(f"{split}_{metric}"), marker="o", label=split)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("loss" if metric == "loss" else "accuracy")
        ax.grid(alpha=0.3)
        ax.legend()
    loss_ax.set_title("loss")
    acc_ax.set_title("accuracy")
    fig.tight_layout()
    return fig


def plot_lr_sweep(
    lrs: Sequence[float],
    losses: Sequence[float],
    suggestion: float | None = None,
    suggestions: Mapping[str, float | None] | None = None,
) -> Figure:
    """Loss against learning rate (log x), a dashed line per named suggestion and a red line at the chosen one."""
    x, y = np.asarray(lrs, dtype=float), np.asarray(losses, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ConfigError("losses", f"expected one loss per learning rate, got {y.shape} losses for {x.shape} lrs")
    if np.any(x <= 0):
        raise ConfigError("lrs", "learning rates must be positive for a log axis")
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(x, np.where(np.isfinite(y), y, np.nan), color="tab:blue", label="loss")
    ax.set_xscale("log")
    colors = iter(plt.rcParams["axes.prop_cycle"].by_key()["color"][1:])
    for name, lr in (suggestions or {}).items():
        if lr is not None:
            ax.axvline(lr, linestyle="--", linewidth=1, color=next(colors, "grey"), label=f"{name}: {lr:.2e}")
    if suggestion is not None:
        ax.axvline(suggestion, color="red", linewidth=2.5, label=f"chosen: {suggestion:.2e}")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("loss")
    ax.set_title("LR range test")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return fig


def plot_confusion_matrix(
    confusion: np.ndarray, class_names: Sequence[str], normalize: bool = True, title: str = ""
) -> Figure:
    """Confusion matrix (rows true, cols predicted) via ConfusionMatrixDisplay; row-normalised by default."""
    counts = np.asarray(confusion)
    n = len(class_names)
    if counts.shape != (n, n):
        raise ConfigError("confusion", f"expected shape ({n}, {n}) for {n} class names, got {counts.shape}")
    values = normalize_rows(counts) if normalize else counts
    size = min(16, 3 + 0.5 * n)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    display = ConfusionMatrixDisplay(confusion_matrix=values, display_labels=[str(c) for c in class_names])
    display.plot(
        ax=ax,
        cmap="Blues",
        xticks_rotation=45,
        include_values=n <= 20,
        values_format=".2f" if normalize else ("d" if np.issubdtype(counts.dtype, np.integer) else ".3g"),
        colorbar=True,
    )
    plt.setp(ax.get_xticklabels(), ha="right", rotation_mode="anchor")
    if normalize:
        display.im_.set_clim(0, 1)
    ax.set_title(title or ("confusion (row-normalised)" if normalize else "confusion (counts)"))
    fig.tight_layout()
    return fig
