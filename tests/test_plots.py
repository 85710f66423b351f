"""Tests for cnn.plots: every function returns a Figure that renders to PNG and is closed afterwards."""

from __future__ import annotations

import base64

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from cnn import plots
from cnn.errors import ConfigError

PNG_MAGIC = b"\x89PNG"
HISTORY = [
    {"epoch": 1, "train_loss": 2.0, "val_loss": 1.8, "train_acc": 0.3, "val_acc": 0.35},
    {"epoch": 2, "train_loss": 1.2, "val_loss": 1.3, "train_acc": 0.6, "val_acc": 0.55},
    {"epoch": 3, "train_loss": 0.8, "val_loss": 1.1, "train_acc": 0.75, "val_acc": 0.62},
]


@pytest.fixture(autouse=True)
def no_open_figures():
    plt.close("all")
    yield
    assert plt.get_fignums() == [], "a plot function left a figure open"


def render(fig: Figure) -> bytes:
    assert isinstance(fig, Figure)
    png = plots.figure_to_png(fig, dpi=50)
    assert png.startswith(PNG_MAGIC)
    return png


FIGURES = {
    "filters_1ch": lambda: plots.plot_filters(torch.randn(6, 1, 5, 5), title="conv1"),
    "filters_multi_in": lambda: plots.plot_filters(torch.randn(8, 4, 3, 3)),
    "filters_capped": lambda: plots.plot_filters(torch.randn(128, 32, 3, 3)),
    "maps_4d": lambda: plots.plot_feature_maps(torch.randn(3, 32, 12, 12), title="features.0"),
    "maps_3d": lambda: plots.plot_feature_maps(torch.randn(4, 6, 6)),
    "maps_1d": lambda: plots.plot_feature_maps(torch.randn(3, 10), title="classifier"),
    "samples_uint8_grey": lambda: plots.plot_sample_grid(
        torch.randint(0, 256, (5, 1, 8, 8), dtype=torch.uint8), ["a", "b", "c", "d", "e"], title="samples"
    ),
    "samples_float_rgb": lambda: plots.plot_sample_grid(torch.randn(4, 3, 8, 8), ["w", "x", "y", "z"]),
    "history": lambda: plots.plot_history(HISTORY),
    "lr_sweep": lambda: plots.plot_lr_sweep(
        np.logspace(-5, 0, 20), np.linspace(2.3, 1.0, 20), 1e-2, {"steepest": 1e-2, "valley": 3e-3, "min": None}
    ),
    "confusion": lambda: plots.plot_confusion_matrix(np.array([[5, 1], [0, 4]]), ["cat", "dog"]),
    "confusion_counts": lambda: plots.plot_confusion_matrix(np.array([[5, 1], [0, 0]]), ["cat", "dog"], False),
}


@pytest.mark.parametrize("name", list(FIGURES))
def test_plot_returns_figure_that_renders_to_png_and_closes(name: str) -> None:
    render(FIGURES[name]())
    assert plt.get_fignums() == []


def test_png_data_uri_round_trips() -> None:
    png = render(plots.plot_history(HISTORY))
    uri = plots.png_data_uri(png)
    assert uri.startswith("data:image/png;base64,")
    assert base64.b64decode(uri.split(",", 1)[1]) == png


def test_lower_dpi_gives_a_smaller_png() -> None:
    big = plots.figure_to_png(plots.plot_history(HISTORY), dpi=100)
    small = plots.figure_to_png(plots.plot_history(HISTORY), dpi=40)
    assert len(small) < len(big)


def test_confusion_matrix_tick_labels_are_class_names() -> None:
    names = ["T-shirt/top", "Trouser", "Pullover"]
    fig = plots.plot_confusion_matrix(np.array([[8, 2, 0], [1, 9, 0], [0, 0, 0]]), names)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == names
    assert [t.get_text() for t in ax.get_yticklabels()] == names
    assert all(t.get_rotation() == 45 for t in ax.get_xticklabels())
    shown = ax.images[0].get_array()
    np.testing.assert_allclose(shown[0], [0.8, 0.2, 0.0])
    np.testing.assert_array_equal(shown[2], 0.0)  # no support: stays 0, not NaN
    plt.close(fig)


def test_confusion_matrix_rejects_mismatched_names() -> None:
    with pytest.raises(ConfigError, match="confusion"):
        plots.plot_confusion_matrix(np.eye(3), ["a", "b"])


def test_lr_sweep_draws_vertical_lines_at_suggestions_and_uses_log_x() -> None:
    fig = plots.plot_lr_sweep([1e-4, 1e-3, 1e-2, 1e-1], [2.0, 1.5, 1.0, 3.0], 1e-2, {"valley": 3e-3, "none": None})
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    vertical = [line for line in ax.get_lines() if len(set(line.get_xdata())) == 1 and len(line.get_xdata()) == 2]
    positions = sorted(float(line.get_xdata()[0]) for line in vertical)
    assert positions == pytest.approx([3e-3, 1e-2])
    chosen = next(line for line in vertical if float(line.get_xdata()[0]) == pytest.approx(1e-2))
    assert chosen.get_linewidth() > max(line.get_linewidth() for line in vertical if line is not chosen)
    assert any("1.00e-02" in t.get_text() for t in ax.get_legend().get_texts())
    plt.close(fig)


def test_lr_sweep_without_suggestion_has_no_vertical_line() -> None:
    fig = plots.plot_lr_sweep([1e-4, 1e-3, 1e-2], [2.0, float("inf"), 1.0])
    assert len(fig.axes[0].get_lines()) == 1
    plt.close(fig)


def test_lr_sweep_rejects_mismatched_lengths() -> None:
    with pytest.raises(ConfigError, match="losses"):
        plots.plot_lr_sweep([1e-3, 1e-2], [1.0])


def test_history_has_loss_and_accuracy_panels_with_both_splits() -> None:
    fig = plots.plot_history(HISTORY)
    loss_ax, acc_ax = fig.axes[:2]
    assert [t.get_text() for t in loss_ax.get_legend().get_texts()] == ["train", "val"]
    np.testing.assert_allclose(loss_ax.get_lines()[1].get_ydata(), [1.8, 1.3, 1.1])
    np.testing.assert_allclose(acc_ax.get_lines()[0].get_ydata(), [0.3, 0.6, 0.75])
    np.testing.assert_array_equal(acc_ax.get_lines()[0].get_xdata(), [1, 2, 3])
    plt.close(fig)


def test_feature_maps_cap_rows_and_columns() -> None:
    fig = plots.plot_feature_maps(torch.randn(12, 40, 5, 5), max_maps=8)
    ax = fig.axes[0]
    assert len(ax.get_xticks()) == 8 and len(ax.get_yticks()) == 10
    assert ax.images[0].get_array().shape == (10 * 6 - 1, 8 * 6 - 1)
    plt.close(fig)


def test_filters_show_at_most_64_tiles() -> None:
    fig = plots.plot_filters(torch.randn(100, 3, 3, 3))
    assert "64 of 100 filters" in fig.axes[0].get_title()
    assert fig.axes[0].images[0].get_array().shape == (8 * 4 - 1, 8 * 4 - 1)
    plt.close(fig)


def test_sample_grid_rejects_wrong_label_count_and_channels() -> None:
    with pytest.raises(ConfigError, match="labels"):
        plots.plot_sample_grid(torch.zeros(3, 1, 4, 4), ["a"])
    with pytest.raises(ConfigError, match="images"):
        plots.plot_sample_grid(torch.zeros(3, 2, 4, 4), ["a", "b", "c"])
