"""The numbers a run reports and how every table shows them: one Metric per number, one Column per table column.

Adding a metric: a field in `RunRow` (cnn/report/rows.py) and a line in METRICS; make_row reads it from the step
that computes it, aggregate_repeats averages it over seeds, and every table that lists metrics shows it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cnn.errors import ConfigError

SCORE = ".3f"  # accuracy, F1, precision and recall: three decimals in every table, artifact and figure
CSV, UI, TERMINAL = "csv", "ui", "terminal"  # where a column shows: comparison.csv, the UI's tables, the terminal
EVERYWHERE = (CSV, UI, TERMINAL)
HEADLINE = "test_acc"  # the metric that ranks variants; its cell says when a run failed or did not learn
NOT_LEARNED = "\u2717"  # after the test accuracy of a variant that did not learn (the summary says what it means)
WARN = "\u26a0"
ARROW = "\u2192"

Row = Mapping[str, Any]


@dataclass(frozen=True)
class Metric:
    """A number every finished run reports: where make_row reads it, its column, its format, where it shows."""

    field: str  # RunRow field
    step: str  # "train" or "eval": the step output holding it
    key: str  # its key in that output
    header: str
    fmt: str
    views: tuple[str, ...] = EVERYWHERE
    spread: bool = False  # shows "mean ± std" over seeds when a comparison repeats


METRICS = (
    Metric("best_val_acc", "train", "best_val_acc", "val acc", SCORE, (CSV,)),
    Metric("test_acc", "eval", "accuracy", "test acc", SCORE, spread=True),
    # the tables' width goes to the verdict's columns: macro F1 and img/s are in the CSV (and each variant's page) only
    Metric("macro_f1", "eval", "macro_f1", "macro F1", SCORE, (CSV,), spread=True),
    Metric("train_seconds", "train", "seconds", "train s", ".1f"),
    Metric("images_per_sec", "train", "images_per_sec", "img/s", ",.0f", (CSV,)),
)


def format_number(value: Any, fmt: str) -> str:
    """`value` in format `fmt` ("" for None or NaN; text as it is)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return format(int(value) if fmt in (",", "d") else value, fmt)


def with_spread(value: float | None, std: float | None, fmt: str, repeats: int) -> str:
    """ "0.860 ± 0.040" when the comparison repeats over seeds, else "0.860"."""
    text = format_number(value, fmt)
    return f"{text} \u00b1 {format_number(std or 0.0, fmt)}" if repeats > 1 and text else text


def lr_cell(lr: float | None, flag: str | None = None) -> str:
    """The LR column: "0.031", with ⚠ when the finder flagged it."""
    return "" if lr is None else f"{lr:.3g}" + (f" {WARN}" if flag else "")


def lr_text(lr: float | None, rule: str | None, flag: str | None = None) -> str:
    """The LR with how it was chosen: "0.031 (steepest, ⚠ disagree)"."""
    if lr is None:
        return ""
    notes = [n for n in (rule, f"{WARN} {str(flag).replace('_', ' ')}" if flag else None) if n]
    return f"{lr:.3g}" + (f" ({', '.join(notes)})" if notes else "")


def pair_text(true: str, predicted: str, count: int | None = None) -> str:
    """A confused pair as "Shirt→T-shirt/top" (with " (12)" when a count is given)."""
    return f"{true}{ARROW}{predicted}" + (f" ({count})" if count is not None else "")


def accuracy_per_1k_params(acc: float, params: int | float) -> float:
    """Accuracy (a fraction) per thousand trainable parameters."""
    if params is None or params <= 0:
        raise ConfigError("params", f"must be a positive parameter count, got {params!r}")
    return float(acc) * 1000.0 / float(params)


@dataclass(frozen=True)
class Column:
    """A comparison-table column: header, its text for one variant's summary (given the seed count), where it shows."""

    header: str
    cell: Callable[[Row, int], str]
    views: tuple[str, ...] = EVERYWHERE
    repeats_only: bool = False  # shown only when the comparison repeats over seeds
    when_differs: bool = False  # outside the CSV, shown only when the rows' cells differ


def _metric_cell(metric: Metric) -> Callable[[Row, int], str]:
    def cell(s: Row, repeats: int) -> str:
        std = s.get(f"{metric.field}_std") if metric.spread else None
        seeds = int(s.get("n_seeds") or 1) if metric.spread else 1  # the row's own seeds: no ± on a single seed
        text = with_spread(s.get(metric.field), std, metric.fmt, seeds)
        if metric.field == HEADLINE and s.get("status", "ok") != "ok":
            return "failed"
        if metric.field == HEADLINE and text and s.get("learned") is False:
            text += f" {NOT_LEARNED}"
        return text

    return cell


def _per_1k(s: Row, repeats: int) -> str:
    return (
        format_number(accuracy_per_1k_params(s[HEADLINE], s["params"]), ".3g")
        if s.get("params") and s.get(HEADLINE) is not None
        else ""
    )


def _most_confused(s: Row, repeats: int) -> str:
    top = (s.get("most_confused") or [None])[0]
    return pair_text(top["true"], top["predicted"], top["count"]) if top else ""


def _interval(s: Row, repeats: int) -> str:
    """ "0.742–0.812": the test accuracy's 95% interval from the verdict ('' when it was not tested)."""
    low, high = s.get("acc_low"), s.get("acc_high")
    return "" if low is None or high is None else f"{format_number(low, SCORE)}\u2013{format_number(high, SCORE)}"


def _ok_cell(key: str, fmt: str) -> Callable[[Row, int], str]:
    """The cell of a finished row's `key` in `fmt` ('' for a failed row)."""
    return lambda s, r: format_number(s.get(key), fmt) if s.get("status", "ok") == "ok" else ""


_AFTER_HEADLINE = [m.field for m in METRICS].index(HEADLINE) + 1
# The verdict's columns (cnn/report/verdict.py: with_verdict), beside the test accuracy they qualify
VERDICT_COLUMNS = (
    Column("95% CI", _interval, (UI, TERMINAL)),
    Column("95% CI low", _ok_cell("acc_low", SCORE), (CSV,)),
    Column("95% CI high", _ok_cell("acc_high", SCORE), (CSV,)),
    Column("group", lambda s, r: str(s.get("group") or "")),
    Column("p vs best", _ok_cell("p_vs_best", ".2g"), (CSV,)),  # Holm-adjusted
    Column("best - this", _ok_cell("diff_vs_best", "+.4f"), (CSV,)),
    Column("best - this 95% low", _ok_cell("diff_low", "+.4f"), (CSV,)),  # bootstrap only
    Column("best - this 95% high", _ok_cell("diff_high", "+.4f"), (CSV,)),
    Column("P(best > this)", _ok_cell("prob_best_better", ".3f"), (CSV,)),
    Column("test", lambda s, r: str(s.get("test") or ""), (CSV,)),
)

COLUMNS = (
    Column("variant", lambda s, r: str(s["variant"])),
    Column("params", lambda s, r: format_number(s.get("params"), ",")),
    Column("LR", lambda s, r: lr_cell(s.get("lr"), s.get("lr_flag"))),
    Column("LR rule", lambda s, r: str(s.get("lr_rule") or ""), (CSV,)),
    *(Column(m.header, _metric_cell(m), m.views) for m in METRICS[:_AFTER_HEADLINE]),
    *VERDICT_COLUMNS,
    *(Column(m.header, _metric_cell(m), m.views) for m in METRICS[_AFTER_HEADLINE:]),
    Column("acc/1k params", _per_1k, (CSV,)),
    Column("seeds", _ok_cell("n_seeds", "d"), when_differs=True),  # rows may differ (a retrain, --repeats auto)
    Column("wins", _ok_cell("wins", ".3g"), repeats_only=True),  # a seed's win shared by the variants tied on it
    Column("most confused", _most_confused, (CSV, TERMINAL)),  # the UI has them in the error analysis
    Column("optimizer", lambda s, r: str(s.get("optimizer") or ""), (CSV,)),
    Column("schedule", lambda s, r: str(s.get("schedule") or ""), (CSV,)),
    Column("batch", lambda s, r: format_number(s.get("batch_size"), "d"), (CSV,)),
    Column("epochs", lambda s, r: format_number(s.get("epochs"), "d"), (CSV,)),
    Column("error", lambda s, r: str(s.get("error") or ""), (CSV,)),
    Column("files", lambda s, r: str(s.get("folder") or ""), (CSV,)),
)


def _finished(s: Row) -> bool:
    return s.get("status", "ok") == "ok"


def columns_for(view: str, repeats: int, summaries: Sequence[Row] = ()) -> list[Column]:
    """The columns `view` shows for a comparison over `repeats` seeds of these `summaries`, in table order."""
    return [
        c
        for c in COLUMNS
        if view in c.views
        and (repeats > 1 or not c.repeats_only)
        and (view == CSV or not c.when_differs or len({c.cell(s, repeats) for s in summaries if _finished(s)}) > 1)
    ]
