"""The `train-variant` flow: one (variant, seed) end to end (LR test, train, evaluate, features); the unit a
comparison dispatches to a training deployment (a GPU pool)."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.states import Failed

from cnn.models import builtin_variants
from cnn.params import parse_params
from flows.failures import fail_in_one_line
from flows.parameters import VARIANT_FIELDS, VARIANT_RUN_NAME, run_parameters
from flows.settings import prepare_run
from flows.variant_steps import run_seeds
from tasks.progress import announce_run


def run_name() -> str:
    """This flow run's name from its parameters: the variant, the seed it trains, the dataset."""
    from prefect.runtime import flow_run

    p = flow_run.parameters
    return VARIANT_RUN_NAME.format(
        variant=p["variant"], seed=int(p["seed"]) + int(p.get("repeat", 0)), dataset=p["dataset"]
    )


@flow(name="train-variant", flow_run_name=run_name)
@fail_in_one_line
@run_parameters(VARIANT_FIELDS, notes={"variant": f"Built in: {', '.join(builtin_variants())}."})
def train_variant_flow(**values: Any) -> dict[str, Any]:
    """Train and inspect one CNN variant at one seed; its row is stored as row.json in its folder."""
    params = parse_params(values)
    config = prepare_run(params, variants=[params.variant])
    announce_run(config.run)
    [row] = run_seeds(config.variant, config, [config.seed + config.repeat], subdirs=[config.subdir or None])
    if row["status"] != "ok":
        return Failed(message=str(row["error"]), data=row)
    get_run_logger().info("%s: test accuracy %.4f, files in %s", config.variant, row["test_acc"], row["folder"])
    return row
