"""The `retrain-variant` flow: retrain one variant of a recorded comparison, every seed, with the comparison's
settings (any given here override them), and publish the comparison's table again. The CLI's `cnn-lab retrain`, a
deployment run and the UI form all run this flow, so the rule is one."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_progress_artifact
from prefect.states import Failed

from cnn.comparisons import Comparison, list_comparisons
from cnn.errors import ConfigError
from cnn.params import RunParams, parse_params
from cnn.publishing import comparison_artifact_key
from cnn.storage import open_storage
from flows.credentials import use_storage_block
from flows.failures import fail_in_one_line
from flows.parameters import RETRAIN_FIELDS, RETRAIN_OVERRIDES, run_parameters
from flows.seeds import first_seeds
from flows.settings import prepare_run
from flows.variant_steps import run_seeds
from tasks import publish_comparison
from tasks.progress import announce_run
from tasks.store import read_comparison, record_variant_rows


def retrain_params(values: dict[str, Any], comparison: Comparison) -> RunParams:
    """The retrain's parameters: the comparison's recorded settings, the values given here on top (None: not given),
    every cached step refreshed."""
    given = {k: v for k, v in values.items() if v is not None}
    return parse_params({**comparison.definition.settings, **given, "variants": [values["variant"]], "refresh": True})


def check_retrainable(variant: str, comparison: Comparison | None, storage: str, dataset: str, name: str) -> Comparison:
    """The comparison, if the store has it and it has `variant`; else one line saying what there is."""
    if comparison is None:
        known = list_comparisons(open_storage(storage), dataset)
        raise ConfigError(
            "comparison",
            f"no comparison {name!r} of {dataset} in {open_storage(storage).url}; run `cnn-lab compare` first",
            allowed=known or "none recorded yet",
        )
    if variant not in comparison.definition.variants:
        raise ConfigError(
            "variant",
            f"{variant!r} is not a variant of comparison {name!r}; a comparison run adds variants",
            allowed=comparison.definition.variants,
        )
    return comparison


def overridden(values: dict[str, Any], comparison: Comparison) -> dict[str, tuple[Any, Any]]:
    """The recorded settings given here with another value: name -> (the comparison's, this retrain's)."""
    recorded = comparison.definition.settings
    return {k: (recorded.get(k), v) for k, v in values.items() if v is not None and recorded.get(k) != v}


@flow(name="retrain-variant", flow_run_name="retrain-{variant}-in-{comparison}-on-{dataset}")
@fail_in_one_line
@run_parameters(RETRAIN_FIELDS, optional=RETRAIN_OVERRIDES)
def retrain_variant(**values: Any) -> dict[str, Any]:
    """Retrain one variant of a comparison afresh (every seed it has, every cached step refreshed) with the comparison's
    settings, and publish a new version of its table. A setting left empty is the comparison's."""
    logger = get_run_logger()
    place = parse_params({k: v for k, v in values.items() if k not in RETRAIN_OVERRIDES and v is not None})
    dataset = place.dataset.lower()
    use_storage_block(place.storage_block)  # the store's credentials, before its first read
    found = read_comparison(place.storage, dataset, place.comparison)  # checked before any training
    comparison = check_retrainable(place.variant, found, place.storage, dataset, place.comparison)
    config = prepare_run(retrain_params(values, comparison), variants=[place.variant])
    changed = overridden({k: values[k] for k in RETRAIN_OVERRIDES}, comparison)
    if changed:
        logger.info(
            "retraining %s with %s",
            place.variant,
            "; ".join(f"{k} {v} (comparison: {c})" for k, (c, v) in changed.items()),
        )
    announce_run(config.run)
    recorded = comparison.rows.get(config.variant)
    seeds = sorted({int(r["seed"]) for r in recorded.rows}) if recorded else first_seeds(config)  # every seed it has
    progress_id = str(
        create_progress_artifact(
            0.0, key=comparison_artifact_key(config, "progress"), description="seeds x epochs done"
        )
    )
    fresh = run_seeds(config.variant, config, seeds, {"artifact_id": progress_id, "done": 0, "total": len(seeds)})
    record_variant_rows(config, fresh)
    rows = comparison.table_rows(fresh)
    published = publish_comparison(config, rows, comparison.rows)
    result = {
        "run": config.run,
        "rows": rows,
        "fresh": fresh,
        "report": published["report"],
        "comparison_md": published["comparison_md"],
        "summaries": published["summaries"],
        "changes": published["changes"],
    }
    if all(r["status"] != "ok" for r in fresh):
        return Failed(message=f"{config.variant} failed: {fresh[0]['error']}", data=result)
    return result
