"""Prefect's overhead: the comparison flow's wall time against the same cnn/ steps called in a plain loop."""
from __future__ import annotations

import tempfile
import time
from typing import Any

from prefect import flow

from cnn.pipeline import DatasetRef, get_dataset, run_variant
from cnn.publishing import build_comparison
from cnn.report import make_row
from cnn.train import TrainConfig
from flows.compare import compare_architectures

FULL = {"variants": ["lenet1", "cnn2_5", "generic_1", "lenet5"], "epochs": 6, "batch_size": 32}
QUICK = {"variants": ["lenet1", "generic_2"], "epochs": 1, "batch_size": 64}


@flow(name="cnn-lab-warm-up")
def _warm_up() -> None:
    """A no-op flow: starts Prefect's embedded server (or connects to PREFECT_API_URL) before anything is timed."""


def _plain_loop(setup: dict[str, Any], storage: str) -> float:
    start = time.perf_counter()
    ref = DatasetRef("digits")
    config = TrainConfig(epochs=setup["epochs"], batch_size=setup["batch_size"], device="cpu")
    rows = []
    for variant in setup["variants"]:
        out = run_variant(ref, variant, storage, "plain", config, lr="auto")
        rows.append(make_row(variant, 0, out["lr"], out["train"], out["eval"], out["train"]["folder"]))
    build_comparison(ref, storage, "plain", rows)
    return time.perf_counter() - start


def _flow_run(setup: dict[str, Any], storage: str) -> float:
    start = time.perf_counter()
    state = compare_architectures(dataset="digits", variants=setup["variants"], epochs=setup["epochs"], batch_size=setup["batch_size"], storage=storage, run="flow", device="cpu", refresh=True, return_state=True)
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
