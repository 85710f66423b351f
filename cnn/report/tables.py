"""The comparison as tables: a frame (CSV, the UI's table artifact), Markdown (UI, report.md), and terminal text.

Every table takes its columns from `metrics.COLUMNS` for its view; long text (errors, paths, how each setting was
chosen) goes in lines below the table, so the terminal table fits 120 columns and the UI's a 1400 px window.
"""

from __future__ import annotations

import io
import textwrap
from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd
from rich import box
from rich.console import Console
from rich.table import Table

from cnn.markdown import md_escape
from cnn.plots import UI_COLUMN_PX
from cnn.report.changes import NEW, Change, change_text, changes_markdown
from cnn.report.analysis import best_per_class, confusion_shifts, per_class_f1_table
from cnn.report.metrics import CSV, HEADLINE, SCORE, TERMINAL, UI, columns_for, format_number, pair_text
from cnn.report.rows import Row, is_ok, learned
from cnn.report.sentences import summary_sentences
from cnn.report.summaries import best_variant, common_settings

TERMINAL_WIDTH = 120
# a character's width and a table cell's padding in the Prefect UI's tables (scripts/ui_screenshots.sh takes the
# screenshots they are read from)
CHAR_PX, CELL_PX = 7.2, 25
MAX_ERROR = 200  # characters of a failed run's first error line shown below a table


def _ordered(summaries: Sequence[Row]) -> list[Row]:
    """Finished and learned first, by test accuracy; then did-not-learn; failed last."""
    return sorted(summaries, key=lambda s: (not is_ok(s), not learned(s), -(s.get(HEADLINE) or 0.0)))


def _repeats(summaries: Sequence[Row], repeats: int | None) -> int:
    return repeats if repeats is not None else max([int(s.get("n_seeds", 1)) for s in summaries] or [1])


def comparison_frame(summaries: Sequence[Row], repeats: int | None = None, view: str = CSV) -> pd.DataFrame:
    """The comparison table as text cells in `view`'s columns (CSV: all of them), sorted by test accuracy."""
    repeats = _repeats(summaries, repeats)
    columns = columns_for(view, repeats, summaries)
    ordered = _ordered(summaries)
    return pd.DataFrame({c.header: pd.Series([c.cell(s, repeats) for s in ordered], dtype=object) for c in columns})


def settings_line(summaries: Sequence[Row]) -> str:
    """ "adam, batch 32, 4 epochs, onecycle schedule" for the settings every finished variant shares ('' if none)."""
    shared = common_settings(summaries)
    parts = [
        shared.get("optimizer"),
        f"batch {shared['batch_size']}" if "batch_size" in shared else None,
        f"{shared['epochs']} epochs" if "epochs" in shared else None,
        f"{shared['schedule']} schedule" if shared.get("schedule") else None,
    ]
    return ", ".join(str(p) for p in parts if p)


def failure_lines(summaries: Sequence[Row]) -> list[str]:
    """ "lenet1 failed: RuntimeError: CUDA out of memory" for each variant with a failed run (first error line)."""
    lines = []
    for s in summaries:
        if s.get("error"):
            first = (str(s["error"]).strip().splitlines() or ["unknown error"])[0][:MAX_ERROR]
            lines.append(f"{s['variant']} failed: {first}")
    return lines


def files_line(summaries: Sequence[Row], root: str | None = None) -> str:
    """Where the variants' files are, relative to the storage `root`, on one line: "files under ROOT: d/run/<variant>/"."""
    folders = {s["variant"]: relative_path(str(s["folder"]), root) for s in summaries if s.get("folder")}
    if not folders:
        return ""
    where = f"files under {root}: " if root else "files: "
    parents = {_parent_of(f, v) for v, f in folders.items()}
    if len(parents) == 1 and None not in parents:
        return f"{where}{parents.pop()}/<variant>/"
    return where + ", ".join(folders.values())


def _parent_of(folder: str, variant: str) -> str | None:
    """The folder holding `variant`'s folder ("d/run" for "d/run/lenet1" or "d/run/lenet1/seed-0"), None if not in it."""
    parts = folder.split("/")
    if variant not in parts[1:]:
        return None
    return "/".join(parts[: len(parts) - 1 - parts[::-1].index(variant)])


def relative_path(url: str, root: str | None) -> str:
    """`url` relative to the storage `root` (as it is when it lies elsewhere or there is no root)."""
    base = (root or "").rstrip("/") + "/"
    return url[len(base) :] if root and url.startswith(base) else url


def _heading(summaries: Sequence[Row], dataset: str, repeats: int) -> str:
    counts = {int(s.get("n_seeds") or 1) for s in summaries if is_ok(s)}
    seeds = f", mean \u00b1 std over {repeats} seeds" if repeats > 1 else ""
    if len(counts) > 1:
        seeds = f", mean \u00b1 std over {min(counts)}-{max(counts)} seeds (the seeds column)"
    settings = settings_line(summaries)
    return f"{dataset}: {len(summaries)} variant{'s' * (len(summaries) != 1)}{seeds}" + (
        f" ({settings})" if settings else ""
    )


def comparison_markdown(
    summaries: Sequence[Row],
    dataset: str,
    repeats: int,
    root: str | None = None,
    notes: Sequence[str] = (),
    changes: Sequence[Change] = (),
) -> str:
    """Markdown comparison (sorted by test accuracy): heading with the shared settings, table, failures, summary and
    `notes` (what the run did, e.g. the seeds --repeats auto added), the changes since the last publication, files."""
    frame = comparison_frame(summaries, repeats, UI)
    table = markdown_table(list(frame.columns), [[md_escape(v) for v in rec] for rec in frame.itertuples(index=False)])
    below = [f"- {md_escape(line)}" for line in failure_lines(summaries)]
    parts = [
        f"### {md_escape(_heading(summaries, dataset, repeats))}",
        table,
        "\n".join(below),
        " ".join([summary_sentences(summaries), *(md_escape(n) for n in notes)]),
        changes_markdown(changes),
        md_escape(files_line(summaries, root)),
    ]
    return "\n\n".join(p.strip("\n") for p in parts if p) + "\n"


def comparison_text(
    summaries: Sequence[Row],
    dataset: str,
    repeats: int,
    root: str | None = None,
    width: int = TERMINAL_WIDTH,
    notes: Sequence[str] = (),
    changes: Sequence[Change] = (),
) -> str:
    """The comparison for a terminal, every line at most `width` characters: table, failures, summary and `notes`,
    the changes since the last publication, files."""
    frame = comparison_frame(summaries, repeats, TERMINAL)
    table = Table(
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
        show_edge=False,
        title=_heading(summaries, dataset, repeats),
        title_justify="left",
    )
    for header in frame.columns:
        table.add_column(header, justify="left" if header in ("variant", "most confused") else "right", overflow="fold")
    for rec in frame.itertuples(index=False):
        table.add_row(*rec)
    buffer = io.StringIO()
    Console(file=buffer, width=width, color_system=None, legacy_windows=False, soft_wrap=False).print(table)
    wrap = textwrap.TextWrapper(width=width, subsequent_indent="  ", break_on_hyphens=False)
    lines = [line.rstrip() for line in buffer.getvalue().splitlines()] + [""]
    summary = " ".join([summary_sentences(summaries, markdown=False), *notes])
    shown = [c for c in changes if c.kind != NEW]
    since = ["Changes since the last publication:", *(f"- {change_text(c)}" for c in shown)] if shown else []
    for text in [*failure_lines(summaries), summary, *since, files_line(summaries, root)]:
        lines += wrap.wrap(text) if text else []
    return "\n".join(lines) + "\n"


def per_class_f1_markdown(table: pd.DataFrame, fmt: str = SCORE, width_px: float = UI_COLUMN_PX) -> str:
    """The per-class F1 table as Markdown, every best cell of each class in bold (ties all bold); split into tables of
    as many variants as fit `width_px` in the UI, each starting with the class column."""
    best = best_per_class(table, fmt)
    classes = [md_escape(c) for c in table.index]
    columns = {
        str(v): [
            f"**{format_number(f, fmt)}**" if v in best.get(str(c), ()) else format_number(f, fmt)
            for c, f in table[v].items()
        ]
        for v in table.columns
    }

    def fits(part: Sequence[str]) -> bool:
        return _table_px([["class", *classes], *([v, *columns[v]] for v in part)]) <= width_px

    parts, chunk = [], []
    for variant in columns:
        if chunk and not fits([*chunk, variant]):
            parts.append(chunk)
            chunk = []
        chunk.append(variant)
    parts.append(chunk)
    size = -(-len(columns) // len(parts))  # the same number of tables, as even as they go
    even = [list(columns)[i : i + size] for i in range(0, len(columns), size)]
    if len(even) == len(parts) and all(map(fits, even)):
        parts = even
    return "\n\n".join(
        markdown_table(["class", *part], [[c, *(columns[v][i] for v in part)] for i, c in enumerate(classes)])
        for part in parts
        if part
    )


def _table_px(columns: Sequence[Sequence[str]]) -> float:
    """Estimated width in the UI of a table with these columns (header first), bold markers not counted."""
    return sum(max(len(cell.replace("**", "")) for cell in column) * CHAR_PX + CELL_PX for column in columns)


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A GitHub-flavoured Markdown table from already-formatted (and escaped) cells."""
    lines = ["| " + " | ".join(md_escape(h) for h in headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join(lines)


def error_analysis_markdown(rows: Sequence[Row], class_names: Sequence[str], k: int = 3) -> str:
    """Per-class F1 (best cells bold), then each variant's top confused pairs with what it fixes/introduces vs the best."""
    best = best_variant(rows)
    if best is None:
        return "### Error analysis\n\nNo variant finished, so there is nothing to analyse.\n"
    parts = [
        "### Per-class F1",
        "",
        per_class_f1_markdown(per_class_f1_table(rows, class_names)),
        "",
        f"### Most confused pairs (top {k}, counts summed over seeds; fixed/introduced vs the best variant, {best})",
        "",
    ]
    for variant, shift in confusion_shifts(rows, best, k).items():
        top = (
            ", ".join(md_escape(pair_text(p["true"], p["predicted"], p["count"])) for p in shift["top_pairs"]) or "none"
        )
        line = f"- **{variant}**{' (best)' if variant == best else ''}: {top}"
        if variant != best:
            line += f"; fixed: {_pair_list(shift['fixed'])}; introduced: {_pair_list(shift['introduced'])}"
        parts.append(line)
    return "\n".join(parts) + "\n"


def _pair_list(pairs: Sequence[tuple[str, str]]) -> str:
    return ", ".join(md_escape(pair_text(t, p)) for t, p in pairs) or "none"


def table_records(summaries: Sequence[Row], repeats: int) -> list[dict[str, Any]]:
    """The UI's comparison rows as records for a Prefect table artifact (the same cells as the Markdown table)."""
    return comparison_frame(summaries, repeats, UI).to_dict("records")
