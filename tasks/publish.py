"""Publishing tasks: per-variant and comparison artifacts in the Prefect UI, report files in storage."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.events import emit_event
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

from cnn import publishing
from cnn.comparisons import VariantRows
from cnn.params import RunParams
from cnn.report.changes import Change, change_text, regressions
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


@task(name="publish_comparison", task_run_name="publish comparison {config.comparison} on {config.dataset}", **_PUBLISH)
def publish_comparison(
    config: RunParams,
    rows: list[dict[str, Any]],
    previous: dict[str, VariantRows] | None = None,
    notes: list[str] | None = None,
) -> dict[str, Any]:
    """Write this run's report.md/comparison.md/csv from the table's `rows` (with the changes since each variant's
    `previous` rows, and `notes`), publish the comparison, table, error-analysis, galleries and link artifacts (every
    run creates its own versions: this task is never cached), and emit a REGRESSED event for each regression."""
    built = publishing.build_comparison(config, rows, previous=previous, notes=notes or ())
    announce_regressions(config, [Change(**c) for c in built["changes"]])
    dataset, repeats = config.dataset, built["repeats"]

    def key(*parts: str) -> str:
        return publishing.comparison_artifact_key(config, *parts)

    comparison_id = create_markdown_artifact(
        publishing.comparison_artifact_markdown(built),
        key=key("comparison"),
        description=f"{dataset}: variants ranked by test accuracy",
    )
    table = publishing.comparison_table_rows(built["summaries"], repeats)
    create_table_artifact(table, key=key("comparison-table"), description=f"{dataset}: comparison rows")
    create_markdown_artifact(
        built["error_analysis_md"], key=key("error-analysis"), description=f"{dataset}: errors across variants"
    )
    galleries = publishing.galleries_markdown(built, dataset)
    if galleries:
        create_markdown_artifact(
            galleries,
            key=key("galleries"),
            description=f"{dataset}: the same probe images through each variant's first and last conv; first-layer filters",
        )
    for name, url in publishing.browser_links(built["images"]).items():
        create_link_artifact(
            url,
            link_text=name,
            key=key("plot", name),
            description=publishing.link_description(name, dataset),
        )
    return {
        "report": built["report"],
        "folder": built["folder"],
        "comparison_artifact": str(comparison_id),
        "rows": len(built["rows"]),
        "comparison_md": built["comparison_md"],
        "changes": built["changes"],
        "notes": list(notes or ()),
        "summaries": built["summaries"],  # with the verdict's intervals and groups, for the terminal's table
    }


REGRESSED = "cnn-lab.variant.regressed"  # the event an automation turns into a notification (deployments/automations)


def announce_regressions(config: RunParams, changes: list[Change]) -> None:
    """A warning in the run's log and a REGRESSED event for each variant that got worse past the noise, or stopped
    learning, since its last publication; the run itself ends as it would (Completed)."""
    logger = get_run_logger()
    for change in regressions(changes):
        logger.warning("%s regressed since its last publication: %s", change.variant, change_text(change))
        emit_event(
            event=REGRESSED,
            resource={
                "prefect.resource.id": f"cnn-lab.comparison.{config.dataset}.{config.comparison}.{change.variant}",
                "prefect.resource.name": f"{change.variant} in {config.comparison} on {config.dataset}",
            },
            payload={**change.to_dict(), "comparison": config.comparison, "dataset": config.dataset, "run": config.run},
        )
