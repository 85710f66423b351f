"""What a comparison publishes: the report files of a run (tables, figures, galleries) and the Markdown of its Prefect
artifacts. Its records in the store (what the comparison is, each variant's rows) are cnn/comparisons.py's."""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from cnn import plots, report
from cnn.checks import AUTO
from cnn.errors import ConfigError
from cnn.gallery import gallery_pngs
from cnn.markdown import md_escape
from cnn.comparisons import VariantRows
from cnn.data import DatasetSplits
from cnn.params import RunParams, default_of
from cnn.step_inputs import DatasetRef, get_dataset
from cnn.trained_models import load_trained_model
from cnn.predictions import load_runs
from cnn.report.files import GALLERY
from cnn.report.metrics import HEADLINE, METRICS, SCORE, format_number
from cnn.report.tables import relative_path
from cnn.report.verdict import looks_of
from cnn.storage import Storage, open_storage, safe_name

log = logging.getLogger(__name__)


def relative_folder(store: Storage, folder: str | None) -> str | None:
    """A row's folder URL made relative to the store's base (None stays None)."""
    return relative_path(folder, store.url).strip("/") if folder else None


def build_comparison(
    config: RunParams,
    rows: Sequence[Mapping[str, Any]],
    *,
    previous: Mapping[str, VariantRows] | None = None,
    notes: Sequence[str] = (),
) -> dict[str, Any]:
    """Aggregate `rows` (the table's: every seed of every variant), test them (the verdict), compare each variant with
    its `previous` rows (its last publication in the comparison), render galleries, and write report.md,
    comparison.md and comparison.csv into the run's folder; `notes` are sentences added to the summary.

    Galleries are drawn for the variants this process has registered (built-in, installed, or named by the user);
    nothing read from the store names code to load."""
    ref, store = DatasetRef.of(config), open_storage(config.storage)
    data = get_dataset(ref)
    summaries = report.aggregate_repeats(rows)
    summaries = report.with_verdict(summaries, comparison_verdict(store, rows, summaries, data, verdict_looks(config)))
    changes = comparison_changes(store, rows, previous or {}, data)
    repeats = max([int(s.get("n_seeds") or 1) for s in summaries] or [1])
    models = {}
    for row in rows:
        rel = relative_folder(store, row.get("folder"))
        if row.get("status") == "ok" and rel and row["variant"] not in models:
            try:
                models[row["variant"]] = load_trained_model(store, rel, row["variant"], data)
            except ConfigError as err:  # a plug-in variant the user did not name: its row stays, its galleries go
                log.warning("no galleries for %s: %s", row["variant"], err)
    galleries = gallery_pngs(models, data) if models else {}
    folder = f"{safe_name(ref.name, 'dataset')}/{safe_name(config.run, 'run')}"
    written = report.write_report(
        store, folder, summaries, list(rows), data.classes, ref.name, repeats, galleries, notes=notes, changes=changes
    )
    return {
        **written,
        "summaries": summaries,
        "changes": [c.to_dict() for c in changes],
        "folder": store.path(folder),
        "rows": list(rows),
        "repeats": repeats,
        "root": store.url,
    }


def _runs(store: Storage, rows: Sequence[Mapping[str, Any]], data: DatasetSplits) -> list[Any]:
    """The paired-test runs of `rows` on `data`'s test set (rows on other images, or without predictions, left out)."""
    located = [(row, relative_folder(store, row.get("folder"))) for row in rows]
    runs, _ = load_runs(
        store,
        [(row, folder) for row, folder in located if folder],
        data.test_set(),
        data.test_y.numpy(),
        data.num_classes,
    )
    return runs


def comparison_changes(
    store: Storage, rows: Sequence[Mapping[str, Any]], previous: Mapping[str, VariantRows], data: DatasetSplits
) -> list[report.Change]:
    """Each variant of `rows` against its previous rows, with the verdict's paired test on this run's test images."""
    changes = []
    for variant, now in report.rows_by_variant(rows).items():
        before = previous.get(variant)
        then = list(before.rows) if before is not None else []
        changes.append(
            report.variant_change(
                variant, then, now, _runs(store, then, data), _runs(store, now, data), before.run if before else None
            )
        )
    return changes


def verdict_looks(config: RunParams) -> int:
    """How many times the comparison's seeds may test the data: --repeats auto's rounds (looks_of), else once."""
    return looks_of(config.max_seeds) if config.repeats == AUTO else 1


def comparison_verdict(
    store: Storage,
    rows: Sequence[Mapping[str, Any]],
    summaries: Sequence[Mapping[str, Any]],
    data: DatasetSplits,
    looks: int = 1,
) -> report.Verdict | None:
    """The paired tests over the rows scored on `data`'s test set, from each run's stored predictions.npy (a run on
    another test set, or with a missing or damaged file, is named in a warning and left out), corrected over `looks`
    (verdict_looks); None when none is left."""
    runs = _runs(store, rows, data)
    if not runs:
        return None
    return report.decide(runs, {str(s["variant"]): report.learned(s) for s in summaries}, looks=looks)


VARIANT_PLOTS = (("loss curves", "losses.png"), ("confusion matrix", "confusion_matrix.png"))  # in the variant's folder


def variant_images(store: Storage, row: Mapping[str, Any], lr_info: Mapping[str, Any]) -> dict[str, bytes]:
    """The variant's stored plots (loss curves, confusion matrix, LR sweep) as PNG bytes, by title; missing ones left out."""
    folder = relative_folder(store, row.get("folder"))
    wanted = [(title, f"{folder}/{name}") for title, name in VARIANT_PLOTS] if folder else []
    if lr_info.get("plot"):
        wanted.append(("LR sweep", relative_folder(store, str(lr_info["plot"]))))
    return {title: store.read_bytes(rel) for title, rel in wanted if rel and store.exists(rel)}


def classification_table(store: Storage, row: Mapping[str, Any]) -> str:
    """The variant's classification report (stored CSV) as Markdown, scores in the one score format ('' when missing)."""
    folder = relative_folder(store, row.get("folder"))
    rel = f"{folder}/classification_report.csv"
    if not folder or not store.exists(rel):
        return ""
    frame = pd.read_csv(io.BytesIO(store.read_bytes(rel)), dtype={"class": str})
    body = [
        [
            md_escape(r["class"]),
            *(format_number(r[c], SCORE) for c in ("precision", "recall", "f1-score")),
            format_number(int(r["support"]), ","),
        ]
        for _, r in frame.iterrows()
    ]
    return report.markdown_table(["class", "precision", "recall", "F1", "support"], body)


def variant_markdown(
    row: Mapping[str, Any],
    images: Mapping[str, bytes],
    classification_md: str,
    features: Mapping[str, Any],
    root: str | None = None,
) -> str:
    """The per-variant artifact: headline numbers, classification report, plots rendered for the UI's width, file paths
    (relative to the storage `root` when given)."""
    numbers = ", ".join(
        f"{m.header} **{format_number(row[m.field], m.fmt)}**"
        if m.field == HEADLINE
        else f"{m.header} {format_number(row[m.field], m.fmt)}"
        for m in METRICS
    )
    lines = [
        f"# {md_escape(row['variant'])} (seed {row['seed']})",
        "",
        f"{numbers}; {row['params']:,} parameters, {row['epochs']} epochs, lr {md_escape(report.lr_text(row['lr'], row['lr_rule'], row['lr_flag']))}",
        "",
        "## Classification report",
        "",
        classification_md,
        "",
        "## Plots",
        "",
    ]
    for title, png in images.items():
        lines += [f"![{md_escape(title)}]({plots.png_data_uri(plots.display_png(png))})", ""]
    lines += [
        "## Files" + (f" (under {md_escape(root)})" if root else ""),
        "",
        f"- folder: {md_escape(relative_path(str(row['folder']), root))}",
    ]
    lines += [f"- filters: {md_escape(relative_path(p, root))}" for p in features.get("filters", [])]
    lines += [f"- feature maps: {md_escape(relative_path(p, root))}" for p in features.get("feature_maps", [])]
    return "\n".join(lines)


def comparison_artifact_markdown(built: Mapping[str, Any]) -> str:
    """The comparison artifact: the table, the figures rendered for the UI's width, and where the full-size files are."""
    shown = {name: uri for name, uri in built["images_small"].items() if not name.startswith(GALLERY)}
    images = "\n\n".join(f"![{md_escape(name)}]({uri})" for name, uri in shown.items())
    root = built.get("root")
    paths = "\n".join(
        f"- {md_escape(name)}: {md_escape(relative_path(url, root))}" for name, url in built["images"].items()
    )
    galleries = (
        "Galleries (each variant's first- and last-conv feature maps, first-layer filters): the galleries artifact.\n\n"
        if len(shown) < len(built["images_small"])
        else ""
    )
    under = f" (under {md_escape(root)})" if root else ""
    return f"{built['comparison_md']}\n\n{images}\n\n{galleries}Full-size files{under}: {md_escape(relative_path(built['report'], root))}\n{paths}\n"


def galleries_markdown(built: Mapping[str, Any], dataset: str) -> str:
    """The galleries artifact: every gallery rendered for the UI's width ('' when there is none)."""
    shown = {name.removeprefix(GALLERY): uri for name, uri in built["images_small"].items() if name.startswith(GALLERY)}
    if not shown:
        return ""
    return (
        f"# {md_escape(dataset)}: galleries\n\n"
        + "\n\n".join(
            f"## {md_escape(name.replace('_', ' '))}\n\n![{md_escape(name)}]({uri})" for name, uri in shown.items()
        )
        + "\n"
    )


def link_description(name: str, dataset: str) -> str:
    """What a link artifact to a full-size report image shows."""
    what = {
        "f1_heatmap": "per-class F1 heatmap",
        "accuracy_vs_params": "test accuracy against parameters",
        "accuracy_vs_seconds": "test accuracy against training seconds",
        "verdict": "test accuracy with 95% intervals, the group tied for best shaded",
    }
    if name.startswith(GALLERY):
        return f"{dataset}: gallery of {name.removeprefix(GALLERY).replace('_', ' ')}, full size (the galleries artifact embeds it at the page's width)"
    return f"{dataset}: {what.get(name, name.replace('_', ' '))}, full size (the comparison artifact embeds it at the page's width)"


def artifact_key(*parts: str) -> str:
    """A Prefect artifact key (lowercase letters, digits, dashes) from names like 'fashion-mnist', 'cnn2_5'."""
    text = "-".join(parts).lower()
    return "".join(c if c.isalnum() else "-" for c in text).strip("-")


def comparison_artifact_key(config: RunParams, *parts: str) -> str:
    """An artifact key of the run's comparison: <dataset>-<parts> for the default comparison (the keys of earlier
    versions), <dataset>-<comparison>-<parts> for a named one."""
    name = () if config.comparison == default_of("comparison") else (config.comparison,)
    return artifact_key(config.dataset, *name, *parts)


def comparison_table_rows(summaries: Sequence[Mapping[str, Any]], repeats: int) -> list[dict[str, Any]]:
    """The comparison's rows for a Prefect table artifact: the UI's columns, every number in its table format."""
    return report.table_records(list(summaries), repeats)


def browser_links(images: Mapping[str, str]) -> dict[str, str]:
    """The stored files a browser opens from the Prefect UI (http(s) addresses), by name, for link artifacts: a page
    served over http may not open file:// links and s3:// is no web address, so those get none (the comparison
    artifact lists every file's path)."""
    return {name: url for name, url in images.items() if url.startswith(("http://", "https://"))}
