"""The `compare-architectures` flow: prepare the dataset once, run every variant, record and publish the comparison."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_progress_artifact
from prefect.states import Failed

from cnn.checks import AUTO
from cnn.models import builtin_variants, plugin_variants
from cnn.params import parse_params
from cnn.step_inputs import check_splits
from cnn.publishing import comparison_artifact_key
from flows.dispatch import check_deployment, dispatch_variants
from flows.failures import fail_in_one_line
from flows.parameters import COMPARE_FIELDS, run_parameters
from flows.runners import run_variants
from flows.seeds import add_seeds, first_seeds
from flows.settings import prepare_run
from flows.variant_steps import step_task
from tasks import prepare_dataset, publish_comparison
from tasks.progress import announce_run
from tasks.store import read_comparison, record_comparison


@flow(name="compare-architectures", flow_run_name="compare-{comparison}-on-{dataset}")
@fail_in_one_line
@run_parameters(COMPARE_FIELDS, notes={"variants": f"Built in: {', '.join(builtin_variants())}."})
def compare_architectures(**values: Any) -> dict[str, Any]:
    """Train, evaluate and inspect several CNN variants on one dataset, record the comparison and publish its ranking."""
    logger = get_run_logger()
    config = prepare_run(parse_params(values))
    if config.train_deployment:
        check_deployment(config.train_deployment)
    previous = read_comparison(config.storage, config.dataset, config.comparison)  # checked before any training
    announce_run(config.run)
    info = step_task(prepare_dataset, config)(config)
    check_splits(config, info)  # before any variant's LR test or training
    logger.info(
        "%s: %d train / %d val / %d test images, %d classes, mean %s std %s",
        info["name"],
        info["num_train"],
        info["num_val"],
        info["num_test"],
        len(info["classes"]),
        info["mean"],
        info["std"],
    )
    progress_id = str(
        create_progress_artifact(
            0.0, key=comparison_artifact_key(config, "progress"), description="variants x epochs done"
        )
    )

    def train(variants: list[str], seeds: list[int]) -> list[dict[str, Any]]:
        if config.train_deployment:
            return dispatch_variants(config.train_deployment, config, variants, seeds)
        return run_variants(config, variants, seeds, progress_id, info)

    rows = train(list(config.variants), first_seeds(config))
    notes = []
    if config.repeats == AUTO:
        rows, note = add_seeds(config, rows, train)
        notes.append(note[0].upper() + note[1:] + ".")
    record_comparison(config, rows, plugin_variants(config.variants))
    published = publish_comparison(config, rows, previous.rows if previous else None, notes)
    failed = [r for r in rows if r["status"] != "ok"]
    result = {
        "run": config.run,
        "rows": rows,
        "report": published["report"],
        "comparison_md": published["comparison_md"],
        "summaries": published["summaries"],
        "changes": published["changes"],
        "notes": published["notes"],
    }
    if len(failed) == len(rows):
        return Failed(
            message=f"every variant failed: {'; '.join(r['variant'] + ': ' + str(r['error']) for r in failed)}",
            data=result,
        )
    if failed:
        logger.warning(
            "%d of %d variant runs failed: %s", len(failed), len(rows), ", ".join(r["variant"] for r in failed)
        )
    return result
