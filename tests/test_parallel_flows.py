"""Variants at once: worker processes on this machine give the sequential run's metrics, and a variant that fails in
its worker leaves the others' rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from prefect_helpers import task_states

pytestmark = pytest.mark.slow

VARIANTS = ["lenet1", "generic_2"]
BROKEN = """
from torch import nn
from cnn.models import register_variant


class Broken(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.fc = nn.Linear(1, num_classes)

    def forward(self, x):
        raise RuntimeError("broken on purpose")


@register_variant("broken_net", min_input_size=3, description="fails on its first batch")
def net(in_channels, num_classes, input_size):
    return Broken(num_classes)
"""


def _kwargs(fashion_dir: Path, storage: Path, **extra):
    return {
        "dataset": "fashion-mnist",
        "epochs": 1,
        "batch_size": 64,
        "lr": 0.003,
        "data_dir": str(fashion_dir),
        "storage": str(storage),
        "max_train": 400,
        "val_size": 80,
        "device": "cpu",
        "repeats": 1,
        **extra,
    }


def test_parallel_run_gives_the_sequential_metrics(prefect_harness, fashion_dir, tmp_path) -> None:
    from flows.compare import compare_architectures

    one = compare_architectures(
        **_kwargs(fashion_dir, tmp_path / "one", variants=VARIANTS, parallel=1, run="one"), return_state=True
    )
    two = compare_architectures(
        **_kwargs(fashion_dir, tmp_path / "two", variants=VARIANTS, parallel=2, run="two"), return_state=True
    )
    assert one.is_completed() and two.is_completed(), (one.message, two.message)
    metrics = [
        {r["variant"]: (r["test_acc"], r["macro_f1"], r["best_val_acc"]) for r in s.result()["rows"]}
        for s in (one, two)
    ]
    assert metrics[0] == metrics[1] and set(metrics[0]) == set(VARIANTS)
    assert [r["variant"] for r in two.result()["rows"]] == VARIANTS  # rows keep the order asked for
    states = task_states(two.state_details.flow_run_id)
    assert states["variant_steps"] == ["Completed", "Completed"]  # one variant_steps task run per variant
    assert states["train_variant"] == ["Completed", "Completed"]
    assert "variant_steps" not in task_states(one.state_details.flow_run_id)  # sequential: steps straight in the flow
    for variant in VARIANTS:
        assert (tmp_path / "two" / "fashion-mnist" / "two" / variant / "row.json").is_file()


def test_a_variant_failing_in_its_worker_leaves_the_others(prefect_harness, fashion_dir, tmp_path) -> None:
    from cnn.models import list_variants, unregister_variant
    from flows.compare import compare_architectures

    module = tmp_path / "broken_nets.py"
    module.write_text(BROKEN)
    try:
        state = compare_architectures(
            **_kwargs(
                fashion_dir,
                tmp_path / "results",
                variants=["broken_net", *VARIANTS],
                variant_modules=[str(module)],
                parallel=2,
                run="broken",
            ),
            return_state=True,
        )
    finally:  # the flow registered it in this process: later tests (in this worker) list the built-in variants only
        if "broken_net" in list_variants():
            unregister_variant("broken_net")
    assert state.is_completed(), state.message
    rows = {r["variant"]: r for r in state.result()["rows"]}
    assert rows["broken_net"]["status"] == "failed" and "broken on purpose" in rows["broken_net"]["error"]
    assert rows["lenet1"]["status"] == rows["generic_2"]["status"] == "ok"
    assert "failed: RuntimeError" in (tmp_path / "results" / "fashion-mnist" / "broken" / "comparison.md").read_text()
