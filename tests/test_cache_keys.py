"""Cache keys cannot go stale: an edit to any module under cnn/ that can change a result (a new module included) gives
every step a new key; an edit to a module listed in cnn.codehash.NOT_RESULTS keeps every trained model."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from cnn.codehash import (
    NOT_RESULTS,
    PACKAGE_DIR,
    all_modules,
    is_excluded,
    module_file,
    result_modules,
    results_digest,
)
from cnn.models import load_variant_file, load_variant_module, unregister_variant, variant_fingerprint

STEPS = ["prepare_dataset", "lr_range_test", "train_variant", "evaluate_variant", "extract_features"]
HASHED = result_modules()
EXCLUDED = [name for name in all_modules() if is_excluded(name)]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the cnn package to edit."""
    return Path(shutil.copytree(PACKAGE_DIR, tmp_path / "cnn", ignore=shutil.ignore_patterns("__pycache__")))


def _edit(tree: Path, module: str) -> None:
    path = module_file(module, tree)
    assert path is not None, module
    path.write_text(path.read_text() + "\nEDITED = 1\n")


def _training_key(tree: Path, variant: str = "lenet1") -> str:
    """train_variant's code key as tasks.policy builds it, over the package copy at `tree`."""
    return results_digest(tree) + "-" + variant_fingerprint(variant)


def test_the_policy_keys_every_cached_step_with_the_package_digest_and_the_variant() -> None:
    import tasks.steps
    from tasks.policy import STEP_CACHE, step_code_key

    cached = sorted(t.name for t in vars(tasks.steps).values() if getattr(t, "cache_policy", None) is STEP_CACHE)
    assert cached == sorted(STEPS)
    for step in STEPS:
        context = SimpleNamespace(task=SimpleNamespace(name=step))
        assert step_code_key(context, {"variant": "lenet1"}) == _training_key(PACKAGE_DIR)
        assert step_code_key(context, {"ref": {}}) == results_digest(PACKAGE_DIR)


def test_every_module_is_hashed_or_excluded_by_name_and_every_exclusion_exists() -> None:
    assert sorted(HASHED + EXCLUDED) == all_modules()
    steps = {"cnn.pipeline", "cnn.step_inputs", "cnn.lr_policy", "cnn.trained_models", "cnn.step_figures"}
    training = {"cnn.fitting", "cnn.recipe", "cnn.train", "cnn.train_setup", "cnn.params", "cnn.checkpoints"}
    assert steps | training <= set(HASHED)
    assert all(module_file(name) for name in NOT_RESULTS), "an exclusion names no module: remove it"
    assert all(reason.strip() for reason in NOT_RESULTS.values())


@pytest.mark.parametrize("module", HASHED)
def test_editing_a_result_bearing_module_changes_the_training_key(tree: Path, module: str) -> None:
    before = _training_key(tree)
    _edit(tree, module)
    assert _training_key(tree) != before


@pytest.mark.parametrize("module", EXCLUDED)
def test_editing_an_excluded_module_keeps_the_training_key(tree: Path, module: str) -> None:
    before = _training_key(tree)
    _edit(tree, module)
    assert _training_key(tree) == before


@pytest.mark.parametrize(
    ("new_file", "hashed"),
    [("schedules.py", True), ("models/resnet.py", True), ("augment/__init__.py", True), ("report/extra.py", False)],
)
def test_a_new_module_is_hashed_unless_it_sits_in_an_excluded_package(tree: Path, new_file: str, hashed: bool) -> None:
    before = _training_key(tree)
    (tree / new_file).parent.mkdir(exist_ok=True)
    (tree / new_file).write_text("RATE = 0.1\n")
    assert (_training_key(tree) != before) is hashed


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
        plugin.write_text(plugin.read_text() + "\n# an edit\n")  # the user edits their architecture: retrain
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
