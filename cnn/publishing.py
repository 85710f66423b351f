"""What a comparison publishes: the stored report, per-variant summaries, and each variant's latest rows.

Each variant's last published rows live in their own file, <dataset>/latest/<variant>.json, written in one atomic
write: two comparisons or retrains publishing at once never overwrite each other's rows, and the dataset's table is
built from all the files. <dataset>/latest.json (one file for the whole table, as earlier versions wrote it) is still
read for variants that have no file of their own, and never written.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from cnn import plots, report
from cnn.errors import ConfigError, StorageError
from cnn.gallery import gallery_pngs, load_variant_model
from cnn.markdown import md_escape
from cnn.params import RunParams
from cnn.pipeline import DatasetRef, get_dataset
from cnn.report.files import GALLERY
from cnn.report.metrics import HEADLINE, METRICS, SCORE, format_number
from cnn.report.tables import relative_path
from cnn.storage import Storage, open_storage, safe_name

log = logging.getLogger(__name__)

LATEST_DIR = "latest"  # <dataset>/latest/<variant>.json: {run, repeats, rows} of the variant's last publication
LATEST = "latest.json"  # <dataset>/latest.json: the whole table, as earlier versions published it (read only)


def relative_folder(store: Storage, folder: str | None) -> str | None:
    """A row's folder URL made relative to the store's base (None stays None)."""
    return relative_path(folder, store.url).strip("/") if folder else None


def build_comparison(
    config: RunParams,
    rows: Sequence[Mapping[str, Any]],
    repeats: int = 1,
    *,
    with_latest: bool = False,
) -> dict[str, Any]:
    """Write the rows' latest files, then aggregate, render galleries, write report.md/comparison.md/csv.

    with_latest=True (a retrain) reports every variant's latest rows, the fresh ones included, instead of `rows` alone.
    Galleries are drawn for the variants this process has registered (built-in, installed, or named by the user);
    nothing read from the store names code to load."""
    ref, store, run = DatasetRef.of(config), open_storage(config.storage), config.run
    publish_latest(store, ref.name, run, rows, repeats)
    if with_latest:
        latest = latest_rows(store, ref.name)
        rows, repeats = latest["rows"], latest["repeats"]
    data = get_dataset(ref)
    summaries = report.aggregate_repeats(rows)
    models = {}
    for row in rows:
        rel = relative_folder(store, row.get("folder"))
        if row.get("status") == "ok" and rel and row["variant"] not in models:
            try:
                models[row["variant"]] = load_variant_model(store, rel, row["variant"], data)
            except ConfigError as err:  # a plug-in variant the user did not name: its row stays, its galleries go
                log.warning("no galleries for %s: %s", row["variant"], err)
    galleries = gallery_pngs(models, data) if models else {}
    folder = f"{safe_name(ref.name, 'dataset')}/{safe_name(run, 'run')}"
    written = report.write_report(store, folder, summaries, list(rows), data.classes, ref.name, repeats, galleries)
    return {
        **written,
        "summaries": summaries,
        "folder": store.path(folder),
        "rows": list(rows),
        "repeats": repeats,
        "root": store.url,
    }


def publish_latest(
    storage: str | Storage,
    dataset: str,
    run: str,
    rows: Sequence[Mapping[str, Any]],
    repeats: int = 1,
) -> list[str]:
    """Write <dataset>/latest/<variant>.json for each variant with a finished row (all its rows, one atomic write each).

    A variant whose rows all failed keeps its earlier latest rows. Returns the URLs written."""
    store = open_storage(storage)
    by_variant: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_variant.setdefault(str(row["variant"]), []).append(dict(row))
    return [
        store.write_json(
            _latest_rel(dataset, variant),
            {"run": run, "repeats": repeats, "rows": group},
        )
        for variant, group in by_variant.items()
        if any(r.get("status") == "ok" for r in group)
    ]


def _latest_rel(dataset: str, variant: str) -> str:
    return f"{safe_name(dataset, 'dataset')}/{LATEST_DIR}/{safe_name(variant, 'variant')}.json"


def _read_published(store: Storage, rel: str, variant: str | None = None) -> dict[str, Any]:
    """One published-rows file, checked: {run, repeats, rows} with every row naming its variant (`variant` if given)."""
    url = store.path(rel)
    try:
        data = json.loads(store.read_bytes(rel).decode("utf-8"))
    except UnicodeDecodeError:
        raise StorageError(f"storage: {url} is not UTF-8 text; move it aside (or restore it) and rerun") from None
    except json.JSONDecodeError as err:
        raise StorageError(
            f"storage: {url} is not valid JSON ({err.msg.removesuffix(' at')} at line {err.lineno} column {err.colno}; truncated?); move it aside (or restore it) and rerun"
        ) from None
    rows = data.get("rows") if isinstance(data, dict) else None
    if not isinstance(rows, list) or not all(isinstance(r, dict) and isinstance(r.get("variant"), str) for r in rows):
        raise StorageError(
            f"storage: {url} is not a published-rows file (expected {{run, repeats, rows: [{{variant, ...}}]}}); move it aside and rerun"
        )
    if variant is not None and any(r["variant"] != variant for r in rows):
        raise StorageError(f"storage: {url} holds rows of another variant than {variant!r}; move it aside and rerun")
    repeats = data.get("repeats", 1)
    # Files written by earlier versions also hold "plugins" (module paths and configs): never read, so that a
    # planted file cannot make a retrain import code
    return {
        "run": data.get("run"),
        "repeats": repeats if isinstance(repeats, int) and repeats >= 1 else 1,
        "rows": rows,
    }


def latest_rows(storage: str | Storage, dataset: str) -> dict[str, Any]:
    """Every variant's last published rows as {run: None, repeats, rows} (empty when nothing was published).

    Each file is checked; a truncated or foreign one raises a StorageError naming it (callers read this before training)."""
    store = open_storage(storage)
    base = safe_name(dataset, "dataset")
    found: dict[str, list[dict[str, Any]]] = {}
    repeats = [1]
    files = [_read_published(store, f"{base}/{LATEST}")] if store.exists(f"{base}/{LATEST}") else []
    for row in files[0]["rows"] if files else []:
        found.setdefault(row["variant"], []).append(row)
    for name in store.list(f"{base}/{LATEST_DIR}"):
        if name.endswith(".json") and not name.startswith("."):
            variant = name.removesuffix(".json")
            files.append(_read_published(store, f"{base}/{LATEST_DIR}/{name}", variant))
            found[variant] = files[-1]["rows"]
    repeats += [published["repeats"] for published in files]
    return {"run": None, "repeats": max(repeats), "rows": [r for group in found.values() for r in group]}


RETRAIN_SETTINGS = (
    "epochs",
    "batch_size",
    "optimizer",
    "schedule",
)  # what a retrain takes over from the published rows


def comparison_settings(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The settings most of the published rows were trained with (and their lr when every row's was given)."""
    ok = [r for r in rows if r.get("status") == "ok"]
    settings: dict[str, Any] = {}
    for key in RETRAIN_SETTINGS:
        values = [r[key] for r in ok if r.get(key) is not None]
        if values:
            settings[key] = max(set(values), key=values.count)
    if ok and all(r.get("lr_rule") == "given" and r.get("lr") is not None for r in ok):
        settings["lr"] = ok[0]["lr"]
    return settings


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
    }
    if name.startswith(GALLERY):
        return f"{dataset}: gallery of {name.removeprefix(GALLERY).replace('_', ' ')}, full size (the galleries artifact embeds it at the page's width)"
    return f"{dataset}: {what.get(name, name.replace('_', ' '))}, full size (the comparison artifact embeds it at the page's width)"


def artifact_key(*parts: str) -> str:
    """A Prefect artifact key (lowercase letters, digits, dashes) from names like 'fashion-mnist', 'cnn2_5'."""
    text = "-".join(parts).lower()
    return "".join(c if c.isalnum() else "-" for c in text).strip("-")


def comparison_table_rows(summaries: Sequence[Mapping[str, Any]], repeats: int) -> list[dict[str, Any]]:
    """The comparison's rows for a Prefect table artifact: the UI's columns, every number in its table format."""
    return report.table_records(list(summaries), repeats)


def browser_links(images: Mapping[str, str]) -> dict[str, str]:
    """The stored files a browser opens from the Prefect UI (http(s) addresses), by name, for link artifacts: a page
    served over http may not open file:// links and s3:// is no web address, so those get none (the comparison
    artifact lists every file's path)."""
    return {name: url for name, url in images.items() if url.startswith(("http://", "https://"))}
