"""Cache keys follow what a step depends on: editing plots, reports or benchmarks keeps every cached step; editing
the model, data or training code (or a plug-in variant's file) gives new keys."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from cnn.codehash import PACKAGE_DIR, code_digest, dependencies
from cnn.models import load_variant_file, load_variant_module, unregister_variant, variant_fingerprint

STEPS = ["prepare_dataset", "lr_range_test", "train_variant", "evaluate_variant", "extract_features"]
KEEP = [
    "plots.py",
    *(
        f"report/{m}.py"
        for m in ("__init__", "rows", "metrics", "summaries", "analysis", "sentences", "tables", "figures", "files")
    ),
    "publishing.py",
    "gallery.py",
    "storage.py",
    "params.py",
]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the cnn package to edit."""
    return Path(shutil.copytree(PACKAGE_DIR, tmp_path / "cnn", ignore=shutil.ignore_patterns("__pycache__")))


def _key(step: str, base: Path) -> str:
    from tasks.policy import STEP_CODE, STEP_GLUE

    return code_digest(STEP_CODE[step], base, files=STEP_GLUE)


def _edit(path: Path) -> None:
    path.write_text(path.read_text() + "\n# an edit\n")


def test_every_cached_task_declares_its_code() -> None:
    import tasks.steps
    from tasks.policy import STEP_CACHE, STEP_CODE

    cached = sorted(t.name for t in vars(tasks.steps).values() if getattr(t, "cache_policy", None) is STEP_CACHE)
    assert cached == sorted(STEPS) == sorted(STEP_CODE)


def test_editing_presentation_code_keeps_every_key(tree: Path) -> None:
    before = {step: _key(step, tree) for step in STEPS}
    for module in KEEP:
        _edit(tree / module)
        assert {step: _key(step, tree) for step in STEPS} == before, module


@pytest.mark.parametrize(
    ("module", "changed"),
    [
        ("train.py", {"lr_range_test", "train_variant", "evaluate_variant", "extract_features"}),
        ("models/registry.py", {"lr_range_test", "train_variant", "evaluate_variant", "extract_features"}),
        ("data/batches.py", set(STEPS)),
        ("data/sources.py", set(STEPS)),
        ("pipeline.py", set(STEPS)),
        ("lr_find.py", {"lr_range_test"}),
        ("evaluate.py", {"evaluate_variant"}),
        ("inspect.py", {"extract_features"}),
    ],
)
def test_editing_model_data_or_training_code_changes_the_keys_of_the_steps_using_it(
    tree: Path, module: str, changed: set[str]
) -> None:
    before = {step: _key(step, tree) for step in STEPS}
    _edit(tree / module)
    assert {step for step in STEPS if _key(step, tree) != before[step]} == changed


def test_the_training_key_covers_model_data_and_training_code_only() -> None:
    from tasks.policy import STEP_CODE

    deps = dependencies(STEP_CODE["train_variant"])
    assert {"cnn.train", "cnn.models.registry", "cnn.data.batches", "cnn.data.sources"} <= set(deps)
    assert not {"cnn.plots", "cnn.report", "cnn.publishing", "benchmarks.speed", "cnn.evaluate"} & set(deps)


def test_key_includes_the_variant_and_follows_its_own_file(tmp_path: Path) -> None:
    from tasks.policy import step_code_key

    plugin = tmp_path / "cache_key_nets.py"
    plugin.write_text(
        "from torch import nn\nfrom cnn.models import register_variant\n\n@register_variant('cache_key_net')\ndef net(c, n, s):\n    return nn.Sequential(nn.Flatten(), nn.Linear(c * s * s, n))\n"
    )
    load_variant_module(str(plugin))
    context = SimpleNamespace(task=SimpleNamespace(name="train_variant"))
    try:
        key = step_code_key(context, {"variant": "cache_key_net"})
        assert key != step_code_key(context, {"variant": "lenet1"})
        assert step_code_key(SimpleNamespace(task=SimpleNamespace(name="prepare_dataset")), {"ref": {}}) != key
        _edit(plugin)  # the user edits their architecture: cached training no longer applies
        assert step_code_key(context, {"variant": "cache_key_net"}) != key
    finally:
        unregister_variant("cache_key_net")


def test_a_changed_json_config_is_a_changed_variant() -> None:
    load_variant_file("cache_key_json", '{"conv_channels": [4], "fc_sizes": [16]}')
    first = variant_fingerprint("cache_key_json")
    load_variant_file("cache_key_json", '{"conv_channels": [4], "fc_sizes": [32]}')
    try:
        assert variant_fingerprint("cache_key_json") != first
    finally:
        unregister_variant("cache_key_json")
