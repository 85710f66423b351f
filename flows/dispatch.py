"""Send each variant to a training deployment (a GPU work pool) and collect the rows its flow runs stored."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger
from prefect.deployments import run_deployment
from prefect.flow_runs import wait_for_flow_run
from prefect.utilities.asyncutils import run_coro_as_sync

from cnn.errors import ConfigError
from cnn.step_inputs import variant_dir
from cnn.report import failed_row
from cnn.params import RunParams
from flows.parameters import VARIANT_FIELDS, VARIANT_RUN_NAME
from flows.variant_steps import seed_subdir
from tasks.store import read_row

WAIT_TIMEOUT_S = 6 * 3600


def variant_parameters(config: RunParams, variant: str, seed: int, subdir: str | None) -> dict[str, Any]:
    """The train-variant flow's parameters for one (variant, seed) of this comparison: the run's config (its run name
    resolved, file variants as their JSON text so that a worker needs no copy of the file, .py modules by path)."""
    values = {
        **config.model_dump(include=set(VARIANT_FIELDS)),
        "variant": variant,
        "repeat": seed - config.seed,  # the split follows config.seed in every run of the comparison
        "subdir": subdir or "",
    }
    return {name: values[name] for name in VARIANT_FIELDS}


async def _deployment_names() -> list[str] | None:
    """Every deployment's <flow>/<deployment> name on the Prefect server."""
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        flows = {f.id: f.name for f in await client.read_flows()}
        return sorted(f"{flows.get(d.flow_id, '?')}/{d.name}" for d in await client.read_deployments())


def check_deployment(name: str) -> str:
    """`name` if the Prefect server has that deployment; otherwise a ConfigError listing the ones it has (before any work)."""
    if not isinstance(name, str) or name.count("/") != 1 or not all(name.split("/")):
        raise ConfigError(
            "train_deployment",
            f"{name!r} is not a <flow>/<deployment> name",
            allowed="e.g. train-variant/train-variant-gpu",
        )
    known = run_coro_as_sync(_deployment_names()) or []
    if name not in known:
        raise ConfigError(
            "train_deployment",
            f"no deployment {name!r} on the Prefect server; deploy it first (see deployments/README.md)",
            allowed=known or "none deployed yet",
        )
    return name


def dispatch_variants(
    deployment: str, config: RunParams, variants: list[str], seeds: list[int]
) -> list[dict[str, Any]]:
    """Start one linked flow run per (variant, seed) on the deployment's pool, wait for all, read their row.json."""
    logger = get_run_logger()
    started = []
    for variant in variants:
        for seed in seeds:
            subdir = seed_subdir(config, seed)
            run = run_deployment(
                deployment,
                parameters=variant_parameters(config, variant, seed, subdir),
                timeout=0,
                as_subflow=True,
                flow_run_name=VARIANT_RUN_NAME.format(variant=variant, seed=seed, dataset=config.dataset),
            )
            logger.info("dispatched %s (seed %d) to %s as flow run %s", variant, seed, deployment, run.name)
            started.append((variant, seed, subdir, run))
    rows = []
    for variant, seed, subdir, run in started:
        final = run_coro_as_sync(wait_for_flow_run(run.id, timeout=WAIT_TIMEOUT_S))  # wait_for_flow_run is async-only
        rel = variant_dir(config.dataset, config.run, variant) + (f"/{subdir}" if subdir else "")
        row = (
            read_row(config.storage, f"{rel}/row.json")
            if final.state is not None and final.state.is_completed()
            else None
        )
        if row is not None:
            rows.append(row)
        else:
            message = final.state.message if final.state is not None else "no state"
            rows.append(failed_row(variant, seed, f"flow run {final.name} ended {final.state_name}: {message}"))
    return rows
