"""The `train-variant` flow: one variant end to end (LR test, train, evaluate, features); the unit a retrain or a GPU pool runs."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from cnn.models import builtin_variants
from cnn.params import parse_params
from flows.failures import fail_in_one_line
from flows.parameters import VARIANT_FIELDS, VARIANT_RUN_NAME, run_parameters
from flows.republish import republish_with
from flows.settings import prepare_run
from flows.variant_steps import run_variant_steps
from tasks.progress import announce_run
from tasks.store import read_latest_rows


@flow(name="train-variant", flow_run_name=VARIANT_RUN_NAME)
@fail_in_one_line
@run_parameters(VARIANT_FIELDS, notes={"variant": f"Built in: {', '.join(builtin_variants())}."})
def train_variant_flow(**values: Any) -> dict[str, Any]:
    """Train and inspect one CNN variant; with publish=True, also refresh the dataset's comparison table."""
    params = parse_params(values)
    config = prepare_run(params, variants=[params.variant])
    variant, seed, subdir, publish = config.variant, config.seed, config.subdir or None, config.publish
    if publish:
        read_latest_rows(config.storage, config.dataset)  # the published rows this retrain merges into: checked first
    announce_run(config.run)
    result = run_variant_steps(variant, config, seed=seed, subdir=subdir)
    if publish:
        republish_with(config, [result["row"]])
    get_run_logger().info(
        "%s: test accuracy %.4f, files in %s", variant, result["row"]["test_acc"], result["row"]["folder"]
    )
    return result["row"]
