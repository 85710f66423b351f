"""Results that cannot be right are failures, never green rows: a model whose outputs are NaN, one with the wrong
number of outputs, and a test split too small to measure an accuracy."""

from __future__ import annotations

from pathlib import Path

import pytest

from cnn.errors import ConfigError, TrainingDiverged
from cnn.models import load_variant_module, unregister_variant
from cnn.params import RunParams
from cnn.pipeline import run_variant
from cnn.step_inputs import MIN_TEST_PER_CLASS, check_splits

BROKEN_NETS = """
from torch import nn
from cnn.models import register_variant


class NaNNet(nn.Module):
    def __init__(self, c, n, s):
        super().__init__()
        self.fc = nn.Linear(c * s * s, n)

    def forward(self, x):
        return self.fc(x.flatten(1)) * float("nan")


@register_variant("nan_net")
def nan_net(c, n, s):
    return NaNNet(c, n, s)


@register_variant("wide_net")
def wide_net(c, n, s):
    return nn.Sequential(nn.Flatten(), nn.Linear(c * s * s, n + 3))
"""


@pytest.fixture
def broken_nets(tmp_path: Path):
    """The plug-in module of the two broken variants, registered for the test."""
    module = tmp_path / "broken_nets_for_results.py"
    module.write_text(BROKEN_NETS)
    load_variant_module(str(module))
    yield str(module)
    for name in ("nan_net", "wide_net"):
        unregister_variant(name)


def _config(tmp_path: Path, **values) -> RunParams:
    return RunParams(
        dataset="digits", epochs=1, batch_size=32, device="cpu", storage=str(tmp_path / "st"), run="r", **values
    )


def test_a_model_whose_outputs_are_nan_fails_its_evaluation(broken_nets, tmp_path: Path) -> None:
    # the run chose the lr, so training's fallbacks end with an attempt kept; its evaluation finds the NaN outputs
    with pytest.raises(TrainingDiverged, match=r"^the model outputs NaN or inf for 360 of 360 test images"):
        run_variant(_config(tmp_path), "nan_net", features=False)


def test_a_model_with_the_wrong_number_of_outputs_is_refused_when_built(broken_nets, tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"^variant: 'wide_net' outputs \(2, 13\) for a batch of 2 images of 1x28x28 and 10 classes"
    ):
        run_variant(_config(tmp_path, lr=0.01), "wide_net", features=False)


def test_a_test_split_too_small_to_measure_is_refused_naming_max_test() -> None:
    info = {"num_train": 1000, "num_test": 1, "classes": [str(c) for c in range(10)]}
    with pytest.raises(
        ConfigError,
        match=r"^max_test: 1 test images cannot measure 10 classes' accuracy .*\(allowed: at least 100 test images",
    ):
        check_splits(RunParams(max_test=1), info)
    check_splits(RunParams(max_test=100), {**info, "num_test": MIN_TEST_PER_CLASS * 10})  # enough: no error
    with pytest.raises(ConfigError, match=r"^dataset: 50 test images"):
        check_splits(RunParams(), {**info, "num_test": 50})  # a dataset that small itself names the dataset


@pytest.mark.slow
def test_a_nan_output_plugin_gives_a_failed_row_beside_a_green_one(
    prefect_harness, broken_nets, tmp_path: Path
) -> None:
    from flows.compare import compare_architectures

    state = compare_architectures(
        dataset="digits",
        variants=["lenet1", "nan_net"],
        variant_modules=[broken_nets],
        epochs=1,
        batch_size=32,
        device="cpu",
        storage=str(tmp_path / "st"),
        run="r",
        parallel=1,
        return_state=True,
    )
    assert state.is_completed(), state.message
    rows = {r["variant"]: r for r in state.result()["rows"]}
    assert rows["lenet1"]["status"] == "ok"
    assert rows["nan_net"]["status"] == "failed" and "outputs NaN or inf" in rows["nan_net"]["error"]
