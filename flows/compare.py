"""The `compare-architectures` flow: prepare the dataset once, run every variant, publish the comparison."""
from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_progress_artifact
from prefect.states import Failed

from cnn.errors import ConfigError, StorageError
from cnn.models import builtin_variants, load_variants
from cnn.params import parse_params
from cnn.pipeline import check_batch_size
from cnn.publishing import artifact_key, latest_rows
from cnn.report import failed_row
from flows.dispatch import check_deployment, dispatch_variants
from flows.failures import error_line, fail_in_one_line
from flows.parameters import COMPARE_FIELDS, run_parameters
from flows.results import with_result_storage
from flows.settings import RunSettings, build_settings
from flows.variant import run_variant_steps
from tasks import prepare_dataset, publish_comparison
from tasks.progress import announce_run


def run_in_process(settings: RunSettings, variants: list[str], seeds: list[int], progress_id: str) -> list[dict[str, Any]]:
    """Each variant's steps in this process; a failing variant becomes a failed row and the rest go on."""
    logger = get_run_logger()
    rows: list[dict[str, Any]] = []
    total = len(variants) * len(seeds)
    for i, variant in enumerate(variants):
        lr_info = None
        for j, seed in enumerate(seeds):
            progress = {"artifact_id": progress_id, "done": i * len(seeds) + j, "total": total}
            subdir = f"seed-{seed}" if len(seeds) > 1 else None
            try:
                out = run_variant_steps(variant, settings, seed=seed, lr_info=lr_info, subdir=subdir, progress=progress)
            except StorageError:
                raise  # the store is every variant's: the next ones would fail the same way, after as long a wait
            except Exception as err:  # noqa: BLE001 - one failed variant must not sink the others
                logger.error("variant %s (seed %d) failed: %s", variant, seed, error_line(err))
                rows.append(failed_row(variant, seed, error_line(err)))
                continue
            lr_info = out["lr_info"]
            rows.append(out["row"])
    return rows


def republish_with(settings: RunSettings, fresh: list[dict[str, Any]]) -> dict[str, Any]:
    """Publish a new version of the comparison: every variant's latest rows, `fresh` replacing its variants' rows
    (the plug-ins of the published variants are loaded first, so they can be rebuilt for the galleries)."""
    previous = latest_rows(settings.storage, settings.ref.name)
    earlier = previous.get("plugins") or {}
    files = {name: text for name, text in earlier.get("variant_files", {}).items() if name not in settings.plugins["variant_files"]}
    try:
        load_variants(earlier.get("variant_modules", []), files)
    except ConfigError as err:
        get_run_logger().warning("the last comparison's plug-ins did not load (%s); their variants get no galleries", err)
    plugins = {"variant_modules": list(dict.fromkeys([*earlier.get("variant_modules", []), *settings.plugins["variant_modules"]])), "variant_files": {**files, **settings.plugins["variant_files"]}}
    return publish_comparison(settings.ref.to_dict(), settings.storage, settings.run, fresh, 1, with_latest=True, plugins=plugins)


@flow(name="compare-architectures", flow_run_name="compare-{dataset}")
@fail_in_one_line
@run_parameters(COMPARE_FIELDS, notes={"variants": f"Built in: {', '.join(builtin_variants())}."})
def compare_architectures(**values: Any) -> dict[str, Any]:
    """Train, evaluate and inspect several CNN variants on one dataset and publish a ranked comparison."""
    logger = get_run_logger()
    settings = build_settings(parse_params(values))
    names, repeats, seed, train_deployment = list(settings.variants), settings.params.repeats, settings.params.seed, settings.params.train_deployment
    if train_deployment:
        check_deployment(train_deployment)
    announce_run(settings.run)
    info = with_result_storage(prepare_dataset, settings.storage)(settings.ref.to_dict())
    check_batch_size(settings.params.batch_size, info["num_train"])  # before any variant's LR test or training
    logger.info("%s: %d train / %d val / %d test images, %d classes, mean %s std %s", info["name"], info["num_train"], info["num_val"], info["num_test"], len(info["classes"]), info["mean"], info["std"])
    seeds = [seed + k for k in range(repeats)]
    progress_id = str(create_progress_artifact(0.0, key=artifact_key(settings.ref.name, "progress"), description="variants x epochs done"))
    if train_deployment:
        rows = dispatch_variants(train_deployment, settings, names, seeds)
    else:
        rows = run_in_process(settings, names, seeds, progress_id)
    published = publish_comparison(settings.ref.to_dict(), settings.storage, settings.run, rows, repeats, plugins=settings.plugins)
    failed = [r for r in rows if r["status"] != "ok"]
    result = {"run": settings.run, "rows": rows, "report": published["report"], "comparison_md": published["comparison_md"]}
    if len(failed) == len(rows):
        return Failed(message=f"every variant failed: {'; '.join(r['variant'] + ': ' + str(r['error']) for r in failed)}", data=result)
    if failed:
        logger.warning("%d of %d variant runs failed: %s", len(failed), len(rows), ", ".join(r["variant"] for r in failed))
    return result
