"""The `compare-architectures` flow: prepare the dataset once, run every variant, publish the comparison."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_progress_artifact
from prefect.states import Failed

from cnn.models import builtin_variants
from cnn.params import parse_params
from cnn.publishing import artifact_key
from cnn.pipeline import check_batch_size
from flows.dispatch import check_deployment, dispatch_variants
from flows.failures import fail_in_one_line
from flows.parameters import COMPARE_FIELDS, run_parameters
from flows.results import with_result_storage
from flows.runners import run_variants
from flows.settings import build_settings
from tasks import prepare_dataset, publish_comparison
from tasks.policy import CACHE_EXPIRATION, REPORT_CACHE
from tasks.progress import announce_run


@flow(name="compare-architectures", flow_run_name="compare-{dataset}")
@fail_in_one_line
@run_parameters(COMPARE_FIELDS, notes={"variants": f"Built in: {', '.join(builtin_variants())}."})
def compare_architectures(**values: Any) -> dict[str, Any]:
    """Train, evaluate and inspect several CNN variants on one dataset and publish a ranked comparison."""
    logger = get_run_logger()
    settings = build_settings(parse_params(values))
    names, repeats, seed, train_deployment = (
        list(settings.variants),
        settings.params.repeats,
        settings.params.seed,
        settings.params.train_deployment,
    )
    if train_deployment:
        check_deployment(train_deployment)
    announce_run(settings.run)
    info = with_result_storage(prepare_dataset, settings.storage)(settings.ref.to_dict())
    check_batch_size(settings.params.batch_size, info["num_train"])  # before any variant's LR test or training
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
    seeds = [seed + k for k in range(repeats)]
    progress_id = str(
        create_progress_artifact(
            0.0, key=artifact_key(settings.ref.name, "progress"), description="variants x epochs done"
        )
    )
    if train_deployment:
        rows = dispatch_variants(train_deployment, settings, names, seeds)
    else:
        rows = run_variants(settings, names, seeds, progress_id, info)
    publish = with_result_storage(publish_comparison, settings.storage).with_options(
        cache_policy=REPORT_CACHE,
        cache_expiration=CACHE_EXPIRATION,
        persist_result=True,
        refresh_cache=bool(settings.refresh) or None,
    )
    published = publish(settings.ref.to_dict(), settings.storage, settings.run, rows, repeats, plugins=settings.plugins)
    failed = [r for r in rows if r["status"] != "ok"]
    result = {
        "run": settings.run,
        "rows": rows,
        "report": published["report"],
        "comparison_md": published["comparison_md"],
        "summaries": published.get("summaries"),  # absent from a report cached by an earlier version
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
