"""Tests for the CNN variant registry (cnn.models): counts, shapes, sizes, names and config errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from cnn.errors import ConfigError
from cnn.models import (
    GenericCNN,
    GenericConfig,
    count_parameters,
    create_variant,
    get_variant,
    list_variants,
    load_generic_config,
    min_input_size,
    register_generic_variant,
    register_variant,
    resolve_input_size,
    shape_trace,
    unregister_variant,
    variant_table,
)

EXAMPLE_CONFIG = Path(__file__).resolve().parents[1] / "examples" / "generic_small.json"

EXPECTED_PARAMS = {
    "lenet1": 1_586,
    "lenet5": 61_706,
    "lenet5_dropout": 61_706,
    "cnn2_3": 4_424,
    "cnn2_5": 7_090,
    "cnn2_7": 9_828,
    "generic_0": 7_090,
    "generic_1": 14_748,
    "generic_2": 11_854,
    "generic_3": 2_955_014,
    "alexnet": 57_029_322,
}
EXPECTED_MIN_SIZE = {
    "lenet1": 6,
    "lenet5": 28,
    "lenet5_dropout": 28,
    "cnn2_3": 10,
    "cnn2_5": 10,
    "cnn2_7": 10,
    "alexnet": 63,
}


def test_every_builtin_variant_is_registered():
    assert set(EXPECTED_PARAMS) <= set(list_variants())
    assert list_variants("lenet*") == ["lenet1", "lenet5", "lenet5_dropout"]


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS))
def test_parameter_count(name):
    assert count_parameters(create_variant(name, in_channels=1, num_classes=10)) == EXPECTED_PARAMS[name]


@pytest.mark.parametrize("name", list_variants())
def test_forward_and_backward(name):
    torch.manual_seed(0)
    size = resolve_input_size(name, 28)
    model = create_variant(name, 1, 10)
    out = model(torch.randn(2, 1, size, size))
    assert out.shape == (2, 10)
    out.logsumexp(dim=1).mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("name", list_variants())
def test_builds_for_rgb_32x32(name):
    size = resolve_input_size(name, 32)
    model = create_variant(name, in_channels=3, num_classes=10, input_size=size).eval()
    with torch.no_grad():
        assert model(torch.zeros(1, 3, size, size)).shape == (1, 10)


@pytest.mark.parametrize("name", list_variants())
def test_builds_for_8x8_native(name):
    size = resolve_input_size(name, 8)
    assert size >= get_variant(name).min_input_size
    model = create_variant(name, 1, 10, input_size=size).eval()
    with torch.no_grad():
        assert model(torch.zeros(1, 1, size, size)).shape == (1, 10)


@pytest.mark.parametrize("name", list_variants())
def test_min_input_size_is_the_smallest_that_builds(name):
    spec = get_variant(name)
    smallest = spec.min_input_size
    assert EXPECTED_MIN_SIZE.get(name, smallest) == smallest
    model = spec.builder(1, 10, smallest).eval()
    with torch.no_grad():
        assert model(torch.zeros(1, 1, smallest, smallest)).shape == (1, 10)
        with pytest.raises((RuntimeError, ConfigError)):
            spec.builder(1, 10, smallest - 1)(torch.zeros(1, 1, smallest - 1, smallest - 1))


@pytest.mark.parametrize("name", list_variants())
def test_last_module_is_the_classifier(name):
    with torch.device("meta"):
        model = create_variant(name, 1, num_classes=7)
    last = list(model.modules())[-1]
    assert isinstance(last, nn.Linear) and last.out_features == 7


@pytest.mark.parametrize("name", [n for n in list_variants() if n != "alexnet"])
def test_own_variants_use_out_of_place_relu(name):
    relus = [m for m in create_variant(name).modules() if isinstance(m, nn.ReLU)]
    assert relus and not any(m.inplace for m in relus)


def test_lenet5_layer_names():
    names = [n for n, _ in create_variant("lenet5").named_modules() if n]
    assert names == ["c1", "relu1", "s2", "c3", "relu3", "s4", "c5", "relu5", "flatten", "f6", "relu6", "output"]
    dropout_names = dict(create_variant("lenet5_dropout").named_modules())
    assert isinstance(dropout_names["drop5"], nn.Dropout) and dropout_names["drop6"].p == 0.5


def test_flatten_size_follows_the_input():
    assert create_variant("lenet5", 3, 10, input_size=32).f6.in_features == 120 * 2 * 2
    assert create_variant("cnn2_5", 1, 10, input_size=10).fc1.in_features == 5


def test_alexnet_has_a_fixed_input_size_and_takes_any_channels():
    assert resolve_input_size("alexnet", 28) == 100
    assert resolve_input_size("alexnet", 224) == 100
    assert resolve_input_size("alexnet", 28, override=80) == 80
    with torch.device("meta"):
        assert create_variant("alexnet", in_channels=3, num_classes=10).features[0].in_channels == 3


def test_resolve_input_size_uses_native_size_but_not_below_minimum():
    assert resolve_input_size("lenet1", 32) == 32
    assert resolve_input_size("lenet5", 8) == 28
    assert resolve_input_size("cnn2_5", 28, override=12) == 12


def test_resolve_input_size_override_too_small_names_variant_and_layer():
    with pytest.raises(ConfigError) as err:
        resolve_input_size("lenet5", 28, override=20)
    assert err.value.field == "input_size"
    assert "lenet5" in str(err.value) and "28" in str(err.value) and "'c5'" in str(err.value)


def test_create_variant_input_size_too_small():
    with pytest.raises(ConfigError, match="input_size"):
        create_variant("cnn2_3", input_size=9)


@pytest.mark.parametrize(
    ("kwargs", "field"), [({"in_channels": 0}, "in_channels"), ({"num_classes": 1}, "num_classes")]
)
def test_create_variant_rejects_bad_channels_and_classes(kwargs, field):
    with pytest.raises(ConfigError) as err:
        create_variant("lenet1", **kwargs)
    assert err.value.field == field


def test_unknown_variant_lists_valid_names():
    with pytest.raises(ConfigError) as err:
        create_variant("lenet7")
    assert err.value.field == "variant"
    assert "lenet7" in str(err.value) and "lenet5" in str(err.value) and "alexnet" in str(err.value)


def test_duplicate_registration_raises():
    with pytest.raises(ConfigError, match="already registered"):
        register_variant("lenet5")(lambda c, n, s: nn.Linear(c * s * s, n))


def test_invalid_variant_name_raises():
    with pytest.raises(ConfigError) as err:
        register_variant("My-Net")(lambda c, n, s: nn.Linear(c * s * s, n))
    assert err.value.field == "name"


def test_user_variant_registers_builds_and_unregisters():
    @register_variant(min_input_size=2, description="test-only linear model")
    def tiny_linear(in_channels, num_classes, input_size):
        return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * input_size * input_size, num_classes))

    try:
        assert "tiny_linear" in list_variants()
        assert resolve_input_size("tiny_linear", 1) == 2
        model = create_variant("tiny_linear", in_channels=2, num_classes=3, input_size=4)
        assert model(torch.zeros(5, 2, 4, 4)).shape == (5, 3)
        assert any(row["name"] == "tiny_linear" and row["params"] == 2 * 16 * 3 + 3 for row in variant_table(2, 3, 4))
    finally:
        unregister_variant("tiny_linear")
    assert "tiny_linear" not in list_variants()


def test_variant_table_rows():
    rows = {row["name"]: row for row in variant_table(in_channels=3, native_size=32)}
    assert set(rows) == set(list_variants())
    assert rows["lenet5"]["params"] == 61_706 + 6 * 2 * 25 + 120 * 3 * 84  # 3-channel c1, f6 fed by a 2x2 c5 map
    assert rows["alexnet"]["input_size"] == 100 and rows["cnn2_3"]["input_size"] == 32
    assert rows["lenet1"]["description"] == "LeNet-1 style: one conv block"


def test_generic_0_matches_cnn2_5():
    config = GenericConfig([5, 5], 3, [2, 2], [50], 0.3)
    assert count_parameters(GenericCNN(config, 1, 10, 28)) == count_parameters(create_variant("cnn2_5")) == 7_090


def test_generic_layer_names():
    model = GenericCNN(GenericConfig([4, 4], 3, [2, 0], [8, 6], dropout=0.1), 1, 10, 12)
    names = [n for n, _ in model.named_modules() if n]
    assert names == [
        "conv1",
        "relu1",
        "pool1",
        "conv2",
        "relu2",
        "flatten",
        "fc1",
        "relu_fc1",
        "dropout1",
        "fc2",
        "relu_fc2",
        "dropout2",
        "output",
    ]


def test_shape_trace_generic_1():
    trace = shape_trace(GenericConfig([8, 16, 32], 3, [2, 2, 2], [100, 50]), in_channels=1, input_size=28)
    shapes = dict(trace)
    assert [n for n, _ in trace][:3] == ["conv1", "relu1", "pool1"]
    assert shapes["conv1"] == (8, 26, 26) and shapes["pool1"] == (8, 13, 13)
    assert shapes["conv2"] == (16, 11, 11) and shapes["pool2"] == (16, 5, 5)
    assert shapes["conv3"] == (32, 3, 3) and shapes["pool3"] == (32, 1, 1)
    assert shapes["flatten"] == (32,) and shapes["fc2"] == (50,)


def test_shape_trace_matches_real_forward():
    config = GenericConfig([6, 9], [5, 3], [2, 3], [12])
    model = GenericCNN(config, 3, 4, 30).eval()
    x = torch.zeros(1, 3, 30, 30)
    for (name, shape), (module_name, module) in zip(shape_trace(config, 3, 30, 4), model.named_children()):
        x = module(x)
        assert (name, shape) == (module_name, tuple(x.shape[1:]))


def test_generic_too_small_input_names_layer():
    with pytest.raises(ConfigError) as err:
        GenericCNN(GenericConfig([8, 8, 8, 8], 3, 2), 1, 10, 28)
    assert err.value.field == "input_size"
    assert "conv4" in str(err.value) and "below 1x1" in str(err.value)


@pytest.mark.parametrize(
    "config",
    [GenericConfig([8, 8, 8, 8], 3, 2), GenericConfig([4], 5, [2], [20]), GenericConfig([3, 3], [3, 5], [3, 1])],
)
def test_generic_min_input_size_is_tight(config):
    smallest = min_input_size(config)
    model = GenericCNN(config, 1, 10, smallest)
    assert model(torch.zeros(1, 1, smallest, smallest)).shape == (1, 10)
    with pytest.raises(ConfigError, match="below 1x1"):
        GenericCNN(config, 1, 10, smallest - 1)


def test_register_generic_variant_uses_config_minimum():
    register_generic_variant("test_generic", GenericConfig([4, 4], 3, 2), description="test-only")
    try:
        assert get_variant("test_generic").min_input_size == 10
        assert resolve_input_size("test_generic", 8) == 10
        assert create_variant("test_generic", 3, 5)(torch.zeros(1, 3, 28, 28)).shape == (1, 5)
    finally:
        unregister_variant("test_generic")


GOOD_CONFIG = {"conv_channels": [4, 8], "kernel_sizes": [3, 3], "pool_sizes": 2, "fc_sizes": [16], "dropout": 0.25}


def test_load_generic_config_from_dict_text_and_file(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(GOOD_CONFIG))
    sources = [GOOD_CONFIG, json.dumps(GOOD_CONFIG), path, str(path)]
    configs = [load_generic_config(source) for source in sources]
    assert all(c == configs[0] for c in configs)
    assert configs[0].conv_channels == [4, 8] and configs[0].dropout == 0.25


def test_example_config_loads_and_builds():
    config = load_generic_config(EXAMPLE_CONFIG)
    assert GenericCNN(config, 1, 10, 28)(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_load_generic_config_defaults():
    config = load_generic_config({"conv_channels": [4]})
    assert (config.kernel_sizes, config.pool_sizes, config.fc_sizes, config.dropout) == (3, 2, [], 0.0)


def test_load_generic_config_malformed_json_gives_position():
    with pytest.raises(ConfigError) as err:
        load_generic_config('{"conv_channels": [4, 8],\n "dropout": }')
    assert err.value.field == "config" and "line 2" in str(err.value)


def test_load_generic_config_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_generic_config(tmp_path / "missing.json")


def test_load_generic_config_unknown_key_lists_allowed():
    with pytest.raises(ConfigError) as err:
        load_generic_config({"conv_chanels": [4]})
    text = str(err.value)
    assert "conv_chanels" in text
    assert all(key in text for key in ["conv_channels", "kernel_sizes", "pool_sizes", "fc_sizes", "dropout"])


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"conv_channels": [4, -8]}, "conv_channels"),
        ({"conv_channels": []}, "conv_channels"),
        ({"dropout": 1.5}, "dropout"),
        ({"kernel_sizes": [3]}, "kernel_sizes"),
        ({"pool_sizes": [2, -1]}, "pool_sizes"),
        ({"fc_sizes": [16, 0]}, "fc_sizes"),
        ({"fc_sizes": "16"}, "fc_sizes"),
    ],
)
def test_load_generic_config_bad_values_name_the_field(change, field):
    with pytest.raises(ConfigError) as err:
        load_generic_config(GOOD_CONFIG | change)
    assert err.value.field == field


def test_load_generic_config_requires_conv_channels():
    with pytest.raises(ConfigError) as err:
        load_generic_config({"fc_sizes": [4]})
    assert err.value.field == "conv_channels"


@pytest.mark.parametrize("name", ["lenet1", "lenet5", "generic_1"])
def test_forward_flops_match_torchs_counter(name: str) -> None:
    from torch.utils.flop_counter import FlopCounterMode

    from cnn.models import forward_mflops

    model = create_variant(name, 1, 10, 28).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 1, 28, 28))
    assert forward_mflops(name, 1, 10, 28) == pytest.approx(counter.get_total_flops() / 1e6, rel=1e-6)


def test_forward_flops_leave_the_rng_alone_and_grow_with_the_input() -> None:
    from cnn.models import forward_mflops

    torch.manual_seed(0)
    expected = torch.rand(1)
    torch.manual_seed(0)
    small = forward_mflops("cnn2_5", 1, 10, 28)
    assert torch.rand(1) == expected
    assert small is not None and forward_mflops("cnn2_5", 3, 10, 56) > 4 * small
