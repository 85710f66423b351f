"""Prefect's overhead: the comparison flow's wall time against the same cnn/ steps called in a plain loop."""

from __future__ import annotations

import tempfile
import time
from typing import Any

from prefect import flow

from cnn.pipeline import DatasetRef, get_dataset, run_variant
from cnn.publishing import build_comparison
from cnn.report import make_row
from cnn.params import RunParams
from flows import cli
from flows.compare import compare_architectures

FULL = {"variants": ["lenet1", "cnn2_5", "generic_1", "lenet5"], "epochs": 6, "batch_size": 32}
QUICK = {"variants": ["lenet1", "generic_2"], "epochs": 1, "batch_size": 64}


@flow(name="cnn-lab-warm-up")
def _warm_up() -> None:
    """A no-op flow: starts Prefect's embedded server (or connects to PREFECT_API_URL) before anything is timed."""


def _plain_loop(setup: dict[str, Any], storage: str) -> float:
    start = time.perf_counter()
    config = RunParams(
        dataset="digits",
        epochs=setup["epochs"],
        batch_size=setup["batch_size"],
        device="cpu",
        storage=storage,
        run="plain",
    )
    rows = []
    for variant in setup["variants"]:
        out = run_variant(config, variant)
        rows.append(make_row(variant, 0, out["lr"], out["train"], out["eval"], out["train"]["folder"]))
    build_comparison(config, rows)
    return time.perf_counter() - start


def _flow_run(setup: dict[str, Any], storage: str) -> float:
    start = time.perf_counter()
    state = compare_architectures(
        dataset="digits",
        variants=setup["variants"],
        epochs=setup["epochs"],
        batch_size=setup["batch_size"],
        storage=storage,
        run="flow",
        device="cpu",
        refresh=True,
        return_state=True,
    )
    if not state.is_completed():
        raise RuntimeError(f"comparison flow ended {state.name}: {state.message}")
    return time.perf_counter() - start


def bench_prefect_overhead(quick: bool = False, repeats: int | None = None) -> dict[str, Any]:
    """Time the plain loop and the flow (every step refreshed, so both do the same work) on digits, interleaved
    `repeats` times (default 1 quick, 2 full); the fastest of each is compared, as 2 cores make single runs noisy."""
    setup = QUICK if quick else FULL
    repeats = repeats or (1 if quick else 2)
    get_dataset(DatasetRef("digits"))
    _warm_up()
    plains, flows = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeats):
            plains.append(_plain_loop(setup, f"{tmp}/plain{i}"))
            flows.append(_flow_run(setup, f"{tmp}/flow{i}"))
    plain, flowed = min(plains), min(flows)
    return {
        "setup": setup,
        "plain_loop_s": round(plain, 2),
        "flow_s": round(flowed, 2),
        "overhead_s": round(flowed - plain, 2),
        "overhead_pct_of_flow": round(100 * (flowed - plain) / flowed, 1),
        "runs": {"plain_loop_s": [round(t, 2) for t in plains], "flow_s": [round(t, 2) for t in flows]},
        "note": "both run LR test, train, evaluate, features and the comparison report; the flow adds task orchestration, result persistence and artifacts",
    }


# --- end to end: where a comparison's wall time goes ------------------------------------------------------------------

QUICKSTART = cli.QUICKSTART.split()[2:]  # the README quickstart's options, after "cnn-lab compare"
PARALLEL_SETUP = {"variants": ["lenet1", "cnn2_5", "generic_1", "lenet5"], "epochs": 6, "batch_size": 32}
QUICK_PARALLEL_SETUP = {"variants": ["lenet1", "generic_2"], "epochs": 2, "batch_size": 64}
PHASES = {  # task name -> the phase its seconds count towards
    "prepare_dataset": "dataset preparation",
    "lr_range_test": "LR range tests",
    "train_variant": "training",
    "evaluate_variant": "evaluation",
    "extract_features": "feature maps and plots",
    "publish_variant": "publishing",
    "publish_comparison": "publishing",
}


def _timed_cli(args: list[str]) -> float:
    """Wall seconds of one `cnn-lab` command in a fresh interpreter (its own temporary server), as a user runs it."""
    import subprocess
    import sys

    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "flows.cli", *args, "--quiet"], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"cnn-lab {' '.join(args)} exited {done.returncode}: {done.stderr[-2000:]}")
    return time.perf_counter() - start


def _import_seconds() -> float:
    """Wall seconds a fresh interpreter takes to import the comparison flow (torch, Prefect, plotting, metrics)."""
    import subprocess
    import sys

    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import flows.compare"], check=True)
    return time.perf_counter() - start


async def _task_runs(flow_run_id: Any) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async with get_client() as client:
        return await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))


def _covered_seconds(intervals: list[tuple[float, float]]) -> float:
    """Length of the union of [start, end] intervals (steps of variants running at once overlap)."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def flow_breakdown(state: Any, wall_s: float) -> dict[str, Any]:
    """Seconds per phase of one comparison flow run, from its task runs (the step seconds of variants that ran at once
    add up to more than the wall time) and its rows (epochs proper inside the training step); Prefect's share is the
    flow's wall time outside every step: task-run and state bookkeeping, parameter checks, result records, artifacts."""
    from prefect.utilities.asyncutils import run_coro_as_sync

    runs = run_coro_as_sync(_task_runs(state.state_details.flow_run_id)) or []
    phases = dict.fromkeys(dict.fromkeys(PHASES.values()), 0.0)
    intervals = []
    for run in runs:
        step = run.name.rsplit("-", 1)[0]
        if step in PHASES and run.start_time and run.end_time:
            seconds = (run.end_time - run.start_time).total_seconds()
            phases[PHASES[step]] += seconds
            intervals.append((run.start_time.timestamp(), run.end_time.timestamp()))
    rows = state.result()["rows"]
    epochs = sum(float(r.get("train_seconds") or 0) for r in rows)
    phases["training: around the epochs (learn check, checkpoints, loss plot)"] = max(phases["training"] - epochs, 0.0)
    phases["training"] = epochs
    return {
        "flow_s": round(wall_s, 2),
        "steps_s": {k: round(v, 2) for k, v in phases.items()},
        "prefect_s": round(max(wall_s - _covered_seconds(intervals), 0.0), 2),
        "rows": {r["variant"]: r.get("test_acc") for r in rows},
    }


def bench_end_to_end(quick: bool = False) -> dict[str, Any]:
    """Where the README quickstart's wall time goes, and what variants at once gain.

    `cnn-lab compare` twice in fresh interpreters (fresh store, then the identical cached rerun); the import time of a
    fresh interpreter; the temporary server's start in this process; one in-process flow run broken down by step; and
    4 variants x 6 epochs on digits (2 x 2 quick) with the default --parallel against --parallel 1, metrics compared."""
    import os

    from flows.local_server import start_tied_server

    load_before = os.getloadavg()
    out: dict[str, Any] = {"setup": " ".join(QUICKSTART)}
    with tempfile.TemporaryDirectory() as tmp:
        out["cli_cold_s"] = round(_timed_cli(["compare", *QUICKSTART, "--storage", f"{tmp}/cli"]), 2)
        out["cli_cached_s"] = round(_timed_cli(["compare", *QUICKSTART, "--storage", f"{tmp}/cli"]), 2)
        out["imports_s"] = round(_import_seconds(), 2)
        start = time.perf_counter()
        start_tied_server()
        out["server_start_s"] = round(time.perf_counter() - start, 2)
        start = time.perf_counter()
        state = compare_architectures(
            **_quickstart_values(), storage=f"{tmp}/flow", run="breakdown", device="cpu", return_state=True
        )
        out["flow"] = flow_breakdown(state, time.perf_counter() - start)
        out["parallel"] = bench_parallel(QUICK_PARALLEL_SETUP if quick else PARALLEL_SETUP, f"{tmp}/parallel")
    out["load"] = {"before": [round(x, 2) for x in load_before], "after": [round(x, 2) for x in os.getloadavg()]}
    out["cpus"] = len(os.sched_getaffinity(0))
    return out


def _quickstart_values() -> dict[str, Any]:
    """The quickstart's options as the comparison flow's parameters, checked as the CLI checks them."""
    args = cli.build_parser().parse_args(["compare", *QUICKSTART])
    return cli.run_params(args).model_dump(include={name for name in vars(args) if name in RunParams.model_fields})


def bench_parallel(setup: dict[str, Any], storage: str) -> dict[str, Any]:
    """The same comparison with --parallel 1 and with the default (auto), every step refreshed: wall times and metrics."""
    times, metrics = {}, {}
    for parallel in (1, "auto"):
        start = time.perf_counter()
        state = compare_architectures(
            dataset="digits",
            **setup,
            storage=f"{storage}/{parallel}",
            run="parallel",
            device="cpu",
            parallel=parallel,
            refresh=True,
            return_state=True,
        )
        times[str(parallel)] = round(time.perf_counter() - start, 2)
        if not state.is_completed():
            raise RuntimeError(f"comparison with parallel={parallel} ended {state.name}: {state.message}")
        metrics[str(parallel)] = {r["variant"]: (r["test_acc"], r["macro_f1"]) for r in state.result()["rows"]}
    return {
        "setup": setup,
        "seconds": times,
        "speedup": round(times["1"] / times["auto"], 2),
        "identical_metrics": metrics["1"] == metrics["auto"],
        "test_acc": {v: m[0] for v, m in metrics["auto"].items()},
    }


def format_end_to_end(result: dict[str, Any]) -> str:
    """The breakdown as text: the CLI's wall times, then each phase's seconds and share of the flow."""
    flow_s = result["flow"]["flow_s"]
    lines = [
        f"README quickstart ({result['setup']}), {result['cpus']} cores, load {result['load']['before'][0]:.1f} -> {result['load']['after'][0]:.1f}",
        f"  cnn-lab compare, fresh store:        {result['cli_cold_s']:7.1f} s",
        f"  cnn-lab compare, identical rerun:    {result['cli_cached_s']:7.1f} s",
        f"  importing torch, Prefect, cnn-lab:   {result['imports_s']:7.1f} s (a fresh interpreter)",
        f"  temporary server start:              {result['server_start_s']:7.1f} s",
        f"  the flow run (in this process):      {flow_s:7.1f} s, of which",
    ]
    for phase, seconds in result["flow"]["steps_s"].items():
        lines.append(f"    {phase:<66} {seconds:6.1f} s {100 * seconds / flow_s:5.1f}%")
    lines.append(
        f"    {'Prefect (outside every step)':<66} {result['flow']['prefect_s']:6.1f} s {100 * result['flow']['prefect_s'] / flow_s:5.1f}%"
    )
    par = result["parallel"]
    lines.append(
        f"{len(par['setup']['variants'])} variants x {par['setup']['epochs']} epochs on digits: --parallel 1 {par['seconds']['1']:.1f} s, default {par['seconds']['auto']:.1f} s, {par['speedup']:.2f}x; identical metrics: {par['identical_metrics']}"
    )
    return "\n".join(lines)
