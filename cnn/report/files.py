"""The report files of a comparison: report.md with its images beside it, comparison.md and comparison.csv."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from matplotlib.figure import Figure

from cnn import plots
from cnn.report.changes import Change
from cnn.report.analysis import per_class_f1_table
from cnn.report.figures import plot_accuracy_vs_cost, plot_f1_heatmap, plot_verdict, with_interval
from cnn.report.rows import Row, is_ok
from cnn.report.tables import comparison_frame, comparison_markdown, error_analysis_markdown
from cnn.storage import Storage, safe_name

GALLERY = "gallery_"  # name prefix of the gallery images


def _report_figures(
    summaries: Sequence[Row], rows: Sequence[Row], class_names: Sequence[str]
) -> dict[str, Callable[[], Figure]]:
    """Factories (called once per resolution) of the report's figures; none when nothing finished."""
    if not any(is_ok(s) for s in summaries):
        return {}
    return {
        **({"verdict": lambda: plot_verdict(summaries)} if with_interval(summaries) else {}),
        "f1_heatmap": lambda: plot_f1_heatmap(per_class_f1_table(rows, class_names)),
        "accuracy_vs_params": lambda: plot_accuracy_vs_cost(summaries, "params"),
        "accuracy_vs_seconds": lambda: plot_accuracy_vs_cost(summaries, "train_seconds"),
    }


def write_report(
    storage: Storage,
    folder: str,
    summaries: Sequence[Row],
    rows: Sequence[Row],
    class_names: Sequence[str],
    dataset: str,
    repeats: int,
    galleries: Mapping[str, bytes] | None = None,
    notes: Sequence[str] = (),
    changes: Sequence[Change] = (),
) -> dict[str, Any]:
    """Write <folder>/report.md (images under <folder>/report/, linked relatively), comparison.md and comparison.csv.

    Returns their URLs, the Markdown texts, and every image twice: its stored file's URL ("images") and a data URI
    rendered for the UI's width ("images_small")."""
    folder = folder.strip("/")
    images: dict[str, str] = {}
    embedded: dict[str, str] = {}
    links: dict[str, str] = {}

    def put(name: str, full: bytes, shown: bytes) -> None:
        rel = f"report/{safe_name(name, 'image')}.png"
        images[name] = storage.write_bytes(f"{folder}/{rel}", full)
        embedded[name] = plots.png_data_uri(plots.display_png(shown))
        links[name] = rel

    for name, make in _report_figures(summaries, rows, class_names).items():
        put(name, plots.figure_to_png(make(), dpi=plots.FULL_DPI), plots.figure_to_png(make(), dpi=plots.UI_DPI))
    for name, png in (galleries or {}).items():
        put(f"{GALLERY}{name}", png, png)
    comparison_md = comparison_markdown(summaries, dataset, repeats, root=storage.url, notes=notes, changes=changes)
    error_md = error_analysis_markdown(rows, class_names)
    storage.write_text(f"{folder}/comparison.md", comparison_md)
    csv_url = storage.write_text(f"{folder}/comparison.csv", comparison_frame(summaries, repeats).to_csv(index=False))
    report = storage.write_text(f"{folder}/report.md", _report_text(dataset, comparison_md, error_md, links))
    return {
        "report": report,
        "comparison_csv": csv_url,
        "comparison_md": comparison_md,
        "error_analysis_md": error_md,
        "images": images,
        "images_small": embedded,
    }


def _report_text(dataset: str, comparison_md: str, error_md: str, links: Mapping[str, str]) -> str:
    """report.md: comparison and its verdict figure, accuracy-vs-cost plots, error analysis, galleries; images linked
    by relative path."""

    def image(name: str, alt: str) -> str:
        return f"![{alt}]({links[name]})\n" if name in links else ""

    parts = [f"# {dataset}: variant comparison\n", comparison_md, image("verdict", "test accuracy with 95% intervals")]
    if "accuracy_vs_params" in links:
        parts += [
            "## Accuracy vs cost\n",
            image("accuracy_vs_params", "accuracy vs parameters"),
            image("accuracy_vs_seconds", "accuracy vs training seconds"),
        ]
    parts += ["## Error analysis\n", error_md, image("f1_heatmap", "per-class F1 heatmap")]
    gallery = [n for n in links if n.startswith(GALLERY)]
    if gallery:
        parts += ["## Galleries\n"] + [
            f"### {n.removeprefix(GALLERY).replace('_', ' ')}\n\n{image(n, n)}" for n in gallery
        ]
    return "\n".join(parts)
