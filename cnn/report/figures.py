"""The comparison's figures, sized in inches for the width they are shown at (at plots.UI_DPI, one inch is 100 px)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from cnn.errors import ConfigError  # noqa: E402
from cnn.plots import UI_WIDTH_IN  # noqa: E402
from cnn.report.analysis import pareto_front  # noqa: E402
from cnn.report.metrics import HEADLINE, SCORE  # noqa: E402
from cnn.report.rows import Row, is_ok, learned  # noqa: E402
from cnn.report.verdict import BEST, TIED  # noqa: E402

COSTS = {"params": "parameters (log scale)", "train_seconds": "training seconds"}


def plot_f1_heatmap(table: pd.DataFrame) -> Figure:
    """Per-class F1 as a classes x variants heatmap with the values (three decimals) written in the cells."""
    if table.empty:
        raise ConfigError("table", "the per-class F1 table is empty (no finished variant)")
    values = table.to_numpy(dtype=float)
    rows, cols = values.shape
    fig, ax = plt.subplots(figsize=(min(UI_WIDTH_IN, 3.0 + 0.75 * cols), min(16, 1.6 + 0.4 * rows)))
    image = ax.imshow(values, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(
        range(cols), [str(c) for c in table.columns], rotation=30, ha="right", rotation_mode="anchor", fontsize=10
    )
    ax.set_yticks(range(rows), [str(c) for c in table.index], fontsize=10)
    if rows * cols <= 400:
        for (r, c), v in np.ndenumerate(values):
            if not math.isnan(v):
                ax.text(
                    c, r, format(v, SCORE), ha="center", va="center", fontsize=9, color="black" if v > 0.6 else "white"
                )
    fig.colorbar(image, ax=ax, label="F1", fraction=0.04, pad=0.02)
    ax.set_title("per-class F1 (mean over seeds)", fontsize=11)
    fig.tight_layout()
    return fig


def plot_accuracy_vs_cost(summaries: Sequence[Row], cost: str = "params") -> Figure:
    """Test accuracy against parameters (log x) or training seconds; the Pareto front is a line of stars."""
    if cost not in COSTS:
        raise ConfigError("cost", f"unknown cost {cost!r}", allowed=list(COSTS))
    ok = [s for s in summaries if is_ok(s) and s.get(cost) is not None]
    if not ok:
        raise ConfigError("summaries", "no finished variant to plot")
    points = {s["variant"]: (float(s[cost]), float(s[HEADLINE]), float(s.get(f"{HEADLINE}_std") or 0.0)) for s in ok}
    front = pareto_front(
        (n, c, a) for n, (c, a, _) in points.items() if learned(next(s for s in ok if s["variant"] == n))
    )
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    others = [n for n in points if n not in front]
    for names, marker, label in ((others, "o", "dominated"), (front, "*", "Pareto front")):
        if names:
            xs, ys, es = zip(*(points[n] for n in names))
            ax.errorbar(
                xs,
                ys,
                yerr=es,
                fmt=marker,
                markersize=12 if marker == "*" else 7,
                capsize=3,
                label=label,
                linestyle="-" if marker == "*" else "none",
            )
    for name, (x, y, _) in points.items():
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=9)
    if cost == "params":
        ax.set_xscale("log")
    ax.set_xlabel(COSTS[cost])
    ax.set_ylabel("test accuracy")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=9)
    ax.set_title(f"accuracy vs {cost.replace('_', ' ')}")
    fig.tight_layout()
    return fig


def with_interval(summaries: Sequence[Row]) -> list[Row]:
    """The learned variants whose accuracy has an interval: what the verdict figure shows."""
    return [
        s
        for s in summaries
        if is_ok(s) and learned(s) and s.get("acc_low") is not None and s.get("acc_high") is not None
    ]


def plot_verdict(summaries: Sequence[Row]) -> Figure:
    """Each tested learned variant's test accuracy with its 95% interval, one row each, drawn for the UI's width: the
    group tied for best (or the lone winner) on a shaded band at the top, significantly worse variants grey (variants
    that did not learn are left out: the tables mark them)."""
    shown = with_interval(summaries)
    if not shown:
        raise ConfigError("summaries", "no variant has an accuracy interval (no paired test ran)")
    top = [s for s in shown if s.get("group") in (BEST, TIED)]
    rest = [s for s in shown if s not in top]
    ordered = sorted(top, key=lambda s: -s[HEADLINE]) + sorted(rest, key=lambda s: -s[HEADLINE])
    fig, ax = plt.subplots(figsize=(UI_WIDTH_IN, 1.5 + 0.36 * len(ordered)))
    if top:
        ax.axhspan(-0.5, len(top) - 0.5, color="tab:blue", alpha=0.12, linewidth=0)
    for y, s in enumerate(ordered):
        acc, low, high = float(s[HEADLINE]), float(s["acc_low"]), float(s["acc_high"])
        colour = "tab:blue" if s in top else "0.45"
        ax.errorbar(acc, y, xerr=[[acc - low], [high - acc]], fmt="o", color=colour, capsize=4, markersize=6)
        label = f"{acc:{SCORE}} [{low:{SCORE}}, {high:{SCORE}}]"  # a column right of the axes, beside its row
        ax.text(1.01, y, label, transform=ax.get_yaxis_transform(), va="center", fontsize=9)
    ax.set_yticks(range(len(ordered)), [str(s["variant"]) for s in ordered], fontsize=10)
    ax.set_ylim(len(ordered) - 0.5, -0.5)
    lows, highs = [float(s["acc_low"]) for s in ordered], [float(s["acc_high"]) for s in ordered]
    span = max(highs) - min(lows) or 0.05
    ax.set_xlim(min(lows) - 0.05 * span, min(1.0, max(highs) + 0.05 * span))  # an accuracy never passes 1
    ax.set_xlabel("test accuracy (95% interval)")
    ax.grid(axis="x", alpha=0.3)
    test = ordered[0].get("test") or "paired test"
    shaded = (
        "the best, p < 0.05 against each other variant"
        if [s.get("group") for s in top] == [BEST]
        else "tied for best (p \u2265 0.05 against the best)"
    )
    ax.set_title(f"{test}\nshaded: {shaded}", fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.8, 1))  # the right fifth holds the numbers' column
    return fig
