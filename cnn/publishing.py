"""What a comparison publishes: the stored report, per-variant summaries, and the rows a retrain merges into."""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from cnn import report
from cnn.errors import ConfigError
from cnn.gallery import gallery_pngs, load_variant_model
from cnn.pipeline import DatasetRef, as_ref, get_dataset
from cnn.storage import Storage, open_storage, safe_name

log = logging.getLogger(__name__)

LATEST = "latest.json"  # <dataset>/latest.json: the rows of the last published comparison


def relative_folder(store: Storage, folder: str | None) -> str | None:
    """A row's folder URL made relative to the store's base (None stays None)."""
    if not folder:
        return None
    base = store.url.rstrip("/") + "/"
    return folder[len(base):] if folder.startswith(base) else folder.strip("/")


def build_comparison(ref: DatasetRef | Mapping[str, Any], storage: str | Storage, run: str, rows: Sequence[Mapping[str, Any]], repeats: int = 1, plugins: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Aggregate rows, render galleries of the trained variants, write report.md/comparison.md/csv and latest.json
    (with the `plugins` a later retrain loads to rebuild the variants of this table)."""
    ref, store = as_ref(ref), open_storage(storage)
    data = get_dataset(ref)
    summaries = report.aggregate_repeats(rows)
    models = {}
    for row in rows:
        rel = relative_folder(store, row.get("folder"))
        if row.get("status") == "ok" and rel and row["variant"] not in models:
            try:
                models[row["variant"]] = load_variant_model(store, rel, row["variant"], data)
            except ConfigError as err:  # a plug-in variant this process cannot load: its row stays, its galleries go
                log.warning("no galleries for %s: %s", row["variant"], err)
    galleries = gallery_pngs(models, data) if models else {}
    folder = f"{safe_name(ref.name, 'dataset')}/{safe_name(run, 'run')}"
    written = report.write_report(store, folder, summaries, list(rows), data.classes, ref.name, repeats, galleries)
    store.write_json(f"{ref.name}/{LATEST}", {"run": run, "repeats": repeats, "rows": list(rows), "plugins": dict(plugins or {})})
    return {**written, "summaries": summaries, "folder": store.path(folder)}


def latest_rows(storage: str | Storage, dataset: str) -> dict[str, Any]:
    """The last published comparison's {run, repeats, rows}, or an empty one if none was published."""
    store = open_storage(storage)
    rel = f"{safe_name(dataset, 'dataset')}/{LATEST}"
    return store.read_json(rel) if store.exists(rel) else {"run": None, "repeats": 1, "rows": []}


def merge_rows(previous: Sequence[Mapping[str, Any]], fresh: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Replace the previous rows of the variants in `fresh` by the fresh ones; other variants' rows stay."""
    replaced = {r["variant"] for r in fresh}
    return [dict(r) for r in previous if r["variant"] not in replaced] + [dict(r) for r in fresh]


def variant_markdown(row: Mapping[str, Any], lr_info: Mapping[str, Any], train_info: Mapping[str, Any], eval_info: Mapping[str, Any], features: Mapping[str, Any]) -> str:
    """The per-variant artifact: headline numbers, classification report, small embedded plots, storage paths."""
    lines = [
        f"# {row['variant']} (seed {row['seed']})",
        "",
        f"test accuracy **{row['test_acc']:.4f}**, macro F1 {row['macro_f1']:.4f}, {row['params']:,} parameters, "
        f"{row['epochs']} epochs, lr {report.lr_text(row['lr'], row['lr_rule'], row['lr_flag'])}, "
        f"{row['train_seconds']:.1f} s at {row['images_per_sec']:.0f} img/s",
        "",
        "## Classification report",
        "",
        str(eval_info.get("report_markdown", "")),
        "",
        "## Plots",
        "",
    ]
    for title, key, source in (("loss curves", "losses_small", train_info), ("confusion matrix", "confusion_small", eval_info), ("LR sweep", "plot_small", lr_info)):
        if source.get(key):
            lines += [f"![{title}]({source[key]})", ""]
    lines += ["## Files", "", f"- folder: `{row['folder']}`"]
    lines += [f"- filters: `{p}`" for p in features.get("filters", [])]
    lines += [f"- feature maps: `{p}`" for p in features.get("feature_maps", [])]
    return "\n".join(lines)


def artifact_key(*parts: str) -> str:
    """A Prefect artifact key (lowercase letters, digits, dashes) from names like 'fashion-mnist', 'cnn2_5'."""
    text = "-".join(parts).lower()
    return "".join(c if c.isalnum() else "-" for c in text).strip("-")


def comparison_table_rows(summaries: Sequence[Mapping[str, Any]], repeats: int) -> list[dict[str, Any]]:
    """The comparison's rows as JSON-safe records (NaN -> None) for a Prefect table artifact."""
    frame = report.comparison_frame(list(summaries), repeats)
    return [{k: (None if isinstance(v, float) and v != v else v) for k, v in rec.items()} for rec in frame.to_dict("records")]


def link_url(url: str) -> str:
    """A clickable link for a stored file: s3:// and other URLs as they are, local paths as file:// URLs."""
    return url if "://" in url else f"file://{url}"
