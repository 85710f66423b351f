"""Bring your own architecture: an installed package's entry point, a module or .py file with @register_variant, and a
GenericCNN JSON file, each registered when a run starts and trained through `cnn-lab compare` end to end."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import cnn.models.registry as registry
from cnn.errors import ConfigError
from cnn.models import (
    ENTRY_POINT_GROUP,
    builtin_variants,
    check_variant_names,
    get_variant,
    list_variants,
    load_variant_file,
    load_variant_module,
    load_variants,
    unregister_variant,
    variant_table,
)

NET = '''
from torch import nn

def build(in_channels, num_classes, input_size):
    """A one-conv net from an installed package."""
    return nn.Sequential(nn.Conv2d(in_channels, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, num_classes))

build.min_input_size = 3

def broken(in_channels, num_classes, input_size):
    raise RuntimeError("never built")
'''
MODULE = """
from torch import nn
from cnn.models import register_variant

@register_variant("{name}", min_input_size=3, description="a user's module variant")
def net(in_channels, num_classes, input_size):
    return nn.Sequential(nn.Conv2d(in_channels, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, num_classes))
"""
CONFIG = {"conv_channels": [4], "kernel_sizes": 3, "pool_sizes": [2], "fc_sizes": [16]}


def _forget(*names: str) -> None:
    for name in names:
        if name in registry._REGISTRY:
            unregister_variant(name)
        registry._BROKEN.pop(name, None)


@pytest.fixture
def installed_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A package `lab_plugin_nets` installed on sys.path with a dist-info declaring two cnn_lab.variants entry points."""
    site = tmp_path / "site"
    (site / "lab_plugin_nets.py").parent.mkdir(parents=True)
    (site / "lab_plugin_nets.py").write_text(NET)
    dist = site / "lab_plugin_nets-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: lab-plugin-nets\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\nep_net = lab_plugin_nets:build\nep_missing = lab_plugin_nets:no_such_builder\n"
    )
    monkeypatch.syspath_prepend(str(site))
    yield site
    _forget("ep_net", "ep_missing")
    sys.modules.pop("lab_plugin_nets", None)


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "outside" / "mine.json"
    path.parent.mkdir()
    path.write_text(json.dumps(CONFIG))
    yield path
    _forget("mine")


def test_entry_point_variant_is_listed_with_its_origin_and_builds(installed_plugin: Path) -> None:
    assert "ep_net" in load_variants()
    spec = get_variant("ep_net")
    assert spec.min_input_size == 3 and spec.description == "A one-conv net from an installed package."
    row = next(r for r in variant_table() if r["name"] == "ep_net")
    assert row["origin"] == "entry point ep_net = lab_plugin_nets:build" and row["params"] == 4 * 9 + 4 + 4 * 10 + 10
    assert "ep_net" not in builtin_variants() and "lenet1" in builtin_variants()


def test_a_broken_entry_point_is_named_when_asked_for_and_the_others_still_load(installed_plugin: Path) -> None:
    load_variants()
    assert "ep_net" in list_variants() and "ep_missing" not in list_variants()
    with pytest.raises(
        ConfigError,
        match=r"^variants: variant 'ep_missing' from entry point ep_missing = lab_plugin_nets:no_such_builder failed to load: AttributeError",
    ):
        check_variant_names(["ep_net", "ep_missing"])


def test_module_by_name_and_by_file_path_register_their_variants(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "lab_named_nets.py").write_text(MODULE.format(name="named_net"))
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "my_nets.py").write_text(MODULE.format(name="file_net"))
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert load_variant_module("lab_named_nets") == ["named_net"]
        assert load_variant_module(str(tmp_path / "elsewhere" / "my_nets.py")) == ["file_net"]
        assert load_variant_module(str(tmp_path / "elsewhere" / "my_nets.py")) == []  # once per process
        assert get_variant("file_net").origin.startswith("cnn_lab_plugin_my_nets_")
    finally:
        _forget("named_net", "file_net")
        sys.modules.pop("lab_named_nets", None)


def test_json_file_variant_registers_and_a_new_config_replaces_it(config_file: Path) -> None:
    load_variant_file("mine", str(config_file))
    first = get_variant("mine")
    assert first.origin == f"file {config_file}" and dict(first.config)["fc_sizes"] == [16]
    config_file.write_text(json.dumps({**CONFIG, "fc_sizes": [32]}))
    load_variant_file("mine", str(config_file))
    assert dict(get_variant("mine").config)["fc_sizes"] == [32]


def test_unknown_name_suggests_the_closest() -> None:
    with pytest.raises(
        ConfigError, match=r"^variants: unknown variant 'cnn2_6'; did you mean 'cnn2_\d'\? \(allowed: alexnet"
    ):
        check_variant_names(["lenet1", "cnn2_6"])


# ---------------------------------------------------------------- through `cnn-lab compare`, end to end (small data)

ARGS = [
    "--repeats",
    "1",
    "--dataset",
    "digits",
    "--epochs",
    "1",
    "--batch-size",
    "64",
    "--lr",
    "0.05",
    "--max-train",
    "300",
    "--val-size",
    "60",
    "--device",
    "cpu",
    "--quiet",
]


@pytest.mark.slow
def test_entry_point_module_and_json_variants_go_through_cnn_lab_compare(
    prefect_harness, installed_plugin: Path, config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from flows.cli import main

    module = tmp_path / "user" / "user_nets.py"
    module.parent.mkdir()
    module.write_text(MODULE.format(name="user_net"))
    try:
        assert main(["variants", "--variant-module", str(module), "--variant", f"mine={config_file}"]) == 0
        listed = capsys.readouterr().out
        assert "user_net" in listed and "ep_net" in listed and f"[file {config_file}]" in listed
        argv = [
            "compare",
            "--variants",
            "ep_net,user_net",
            "--variant-module",
            str(module),
            "--variant",
            f"mine={config_file}",
            "--storage",
            str(tmp_path / "results"),
            "--run",
            "byo",
            *ARGS,
        ]
        rc = main(argv)
        out, err = capsys.readouterr()
        assert rc == 0, err
        for name in ("ep_net", "user_net", "mine"):
            assert any(line.split()[:1] == [name] for line in out.splitlines()), out  # a row of the terminal table
            assert (tmp_path / "results" / "digits" / "byo" / name / "row.json").is_file()
    finally:
        _forget("user_net")
