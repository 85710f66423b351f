"""Publishing tasks: per-variant and comparison artifacts in the Prefect UI, report files in storage."""

from __future__ import annotations

from typing import Any

from prefect import task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

from cnn import publishing
from cnn.params import RunParams
from cnn.storage import open_storage
from tasks.policy import RETRY_DELAYS, retry_on_transient

_PUBLISH: dict[str, Any] = {
    "retries": len(RETRY_DELAYS),
    "retry_delay_seconds": RETRY_DELAYS,
    "retry_condition_fn": retry_on_transient,
    "cache_policy": None,
}


@task(name="publish_variant", task_run_name="publish {row[variant]} s{row[seed]}", **_PUBLISH)
def publish_variant(
    dataset: str,
    storage: str,
    row_rel: str,
    row: dict[str, Any],
    lr_info: dict[str, Any],
    train_info: dict[str, Any],
    eval_info: dict[str, Any],
    features: dict[str, Any],
) -> str:
    """Write the row as `row_rel` (this run's row.json) and publish the variant's markdown artifact; returns its key."""
    store = open_storage(storage)
    store.write_json(row_rel, row)
    key = publishing.artifact_key(dataset, row["variant"])
    page = publishing.variant_markdown(
        row,
        publishing.variant_images(store, row, lr_info),
        publishing.classification_table(store, row),
        features,
        root=store.url,
    )
    create_markdown_artifact(page, key=key, description=f"{row['variant']} on {dataset}")
    return key


@task(name="publish_comparison", task_run_name="publish comparison {config.dataset}", **_PUBLISH)
def publish_comparison(
    config: RunParams, rows: list[dict[str, Any]], repeats: int = 1, with_latest: bool = False
) -> dict[str, Any]:
    """Write the rows' latest files and report.md/comparison.md/csv; publish the comparison, table, error-analysis and link artifacts.

    with_latest=True (a retrain): the table holds every variant's latest rows, the fresh ones included."""
    built = publishing.build_comparison(config, rows, repeats, with_latest=with_latest)
    dataset, repeats = config.dataset, built["repeats"]
    comparison_id = create_markdown_artifact(
        publishing.comparison_artifact_markdown(built),
        key=publishing.artifact_key(dataset, "comparison"),
        description=f"{dataset}: variants ranked by test accuracy",
    )
    table = publishing.comparison_table_rows(built["summaries"], repeats)
    create_table_artifact(
        table, key=publishing.artifact_key(dataset, "comparison-table"), description=f"{dataset}: comparison rows"
    )
    create_markdown_artifact(
        built["error_analysis_md"],
        key=publishing.artifact_key(dataset, "error-analysis"),
        description=f"{dataset}: errors across variants",
    )
    galleries = publishing.galleries_markdown(built, dataset)
    if galleries:
        create_markdown_artifact(
            galleries,
            key=publishing.artifact_key(dataset, "galleries"),
            description=f"{dataset}: the same probe images through each variant's first and last conv; first-layer filters",
        )
    for name, url in publishing.browser_links(built["images"]).items():
        create_link_artifact(
            url,
            link_text=name,
            key=publishing.artifact_key(dataset, "plot", name),
            description=publishing.link_description(name, dataset),
        )
    return {
        "report": built["report"],
        "folder": built["folder"],
        "comparison_artifact": str(comparison_id),
        "rows": len(built["rows"]),
        "comparison_md": built["comparison_md"],
    }
