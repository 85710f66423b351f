"""Compare variants across seeds: the typed per-run row, summaries, analysis, tables, figures and the report files.

Modules: `rows` (RunRow, make_row), `metrics` (the metrics and columns tables, number formats), `summaries` (over
seeds), `verdict` (paired tests, intervals, the group tied for best, the `--repeats auto` planner), `analysis` (Pareto
front, per-class F1, confusions), `sentences`, `tables` (CSV, Markdown, terminal), `figures`, `files` (write_report).
Everything is pure except `files.write_report`, which writes to a Storage.
"""

from __future__ import annotations

from cnn.report.analysis import (
    best_per_class,
    common_confusions,
    confusion_shifts,
    pareto_front,
    per_class_f1_table,
    top_confused,
)
from cnn.report.changes import Change, regressions, rows_by_variant, variant_change
from cnn.report.figures import COSTS, plot_accuracy_vs_cost, plot_f1_heatmap, plot_verdict
from cnn.report.files import write_report
from cnn.report.metrics import COLUMNS, METRICS, Column, Metric, accuracy_per_1k_params, lr_text, pair_text
from cnn.report.rows import RunRow, failed_row, learned, make_row, test_learned
from cnn.report.sentences import summary_sentences
from cnn.report.summaries import aggregate_repeats, best_variant, count_wins, settings_differences
from cnn.report.tables import (
    comparison_frame,
    comparison_markdown,
    comparison_text,
    error_analysis_markdown,
    markdown_table,
    per_class_f1_markdown,
    table_records,
)
from cnn.report.verdict import Verdict, auto_repeats_note, decide, plan_seeds, with_verdict

__all__ = [
    "Change",
    "regressions",
    "rows_by_variant",
    "variant_change",
    "COLUMNS",
    "COSTS",
    "METRICS",
    "Column",
    "Metric",
    "RunRow",
    "Verdict",
    "accuracy_per_1k_params",
    "aggregate_repeats",
    "auto_repeats_note",
    "best_per_class",
    "best_variant",
    "common_confusions",
    "comparison_frame",
    "comparison_markdown",
    "comparison_text",
    "confusion_shifts",
    "count_wins",
    "decide",
    "error_analysis_markdown",
    "failed_row",
    "learned",
    "lr_text",
    "make_row",
    "markdown_table",
    "pair_text",
    "pareto_front",
    "per_class_f1_markdown",
    "per_class_f1_table",
    "plot_accuracy_vs_cost",
    "plot_f1_heatmap",
    "plan_seeds",
    "plot_verdict",
    "settings_differences",
    "summary_sentences",
    "table_records",
    "test_learned",
    "top_confused",
    "with_verdict",
    "write_report",
]
