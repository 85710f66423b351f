"""Tests for cnn.inspect: hook-based feature maps agree with torchvision's FX feature extractor."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torchvision.models import alexnet
from torchvision.models.feature_extraction import create_feature_extractor

from cnn.errors import ConfigError
from cnn.inspect import capture_feature_maps, conv_filters, list_layers, select_probe_images


def small_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 3),
    )


def without_inplace(model: nn.Module) -> nn.Module:
    """A copy with every in-place ReLU made out-of-place, so FX node outputs are not overwritten."""
    clone = copy.deepcopy(model)
    for module in clone.modules():
        if isinstance(module, nn.ReLU):
            module.inplace = False
    return clone


def assert_hooks_removed(model: nn.Module) -> None:
    assert all(not m._forward_hooks for m in model.modules())


def test_list_layers_gives_leaves_and_filters_by_kind() -> None:
    model = small_net()
    assert list_layers(model) == ["0", "1", "2", "3", "4"]
    assert list_layers(model, kinds=(nn.Conv2d,)) == ["0"]
    assert list_layers(model, kinds=(nn.Conv2d, nn.Linear)) == ["0", "4"]
    nested = nn.Sequential(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU()), nn.Flatten())
    assert list_layers(nested) == ["0.0", "0.1", "1"]


def test_small_net_matches_create_feature_extractor_and_keeps_pre_relu_conv_output() -> None:
    model = small_net().eval()
    x = torch.randn(2, 1, 8, 8)
    maps = capture_feature_maps(model, x, ["0", "2"])
    assert list(maps) == ["0", "2"]
    with torch.no_grad():
        conv = model[0](x)
        reference = create_feature_extractor(without_inplace(model), return_nodes=["0", "2"])(x)
        fx_inplace = create_feature_extractor(model, return_nodes=["0", "2"])(x)
    # The captured conv output is the value before the in-place ReLU (it has negative entries).
    torch.testing.assert_close(maps["0"], conv)
    assert (maps["0"] < 0).any()
    torch.testing.assert_close(maps["0"], reference["0"])
    torch.testing.assert_close(maps["2"], reference["2"])
    # Finding: on the in-place model, FX returns the conv node's tensor *after* the ReLU overwrote it.
    torch.testing.assert_close(fx_inplace["0"], conv.relu())
    torch.testing.assert_close(maps["2"], fx_inplace["2"])
    assert_hooks_removed(model)


@pytest.fixture(scope="module")
def alexnet_1ch() -> nn.Module:
    torch.manual_seed(0)
    model = alexnet(num_classes=10)
    model.features[0] = nn.Conv2d(1, 64, kernel_size=11, stride=4, padding=2)
    return model


def test_alexnet_matches_create_feature_extractor(alexnet_1ch: nn.Module) -> None:
    layers = ["features.0", "features.2", "classifier.6"]
    x = torch.randn(1, 1, 100, 100)
    alexnet_1ch.train()  # capture runs in eval mode (dropout off) and restores train mode
    maps = capture_feature_maps(alexnet_1ch, x, layers)
    assert alexnet_1ch.training
    assert list(maps) == layers
    assert maps["features.0"].shape == (1, 64, 24, 24)
    assert maps["features.2"].shape == (1, 64, 11, 11)
    assert maps["classifier.6"].shape == (1, 10)
    reference_model = without_inplace(alexnet_1ch).eval()
    with torch.no_grad():
        reference = create_feature_extractor(reference_model, return_nodes=layers)(x)
        fx_inplace = create_feature_extractor(copy.deepcopy(alexnet_1ch).eval(), return_nodes=layers)(x)
    for name in layers:
        torch.testing.assert_close(maps[name], reference[name])
    # Same finding as the small net: FX's "features.0" on the in-place model is the post-ReLU tensor.
    torch.testing.assert_close(fx_inplace["features.0"], maps["features.0"].relu())
    assert (maps["features.0"] < 0).any()
    assert_hooks_removed(alexnet_1ch)


def test_default_layers_are_every_leaf_in_order() -> None:
    model = small_net()
    maps = capture_feature_maps(model, torch.randn(3, 1, 8, 8))
    assert list(maps) == list_layers(model)
    assert maps["3"].shape == (3, 64) and maps["4"].shape == (3, 3)
    assert all(t.device.type == "cpu" and not t.requires_grad for t in maps.values())


def test_unknown_layer_lists_the_known_names_and_registers_nothing() -> None:
    model = small_net()
    with pytest.raises(ConfigError, match=r"layers: unknown layer 'conv9'.*allowed: 0, 1, 2, 3, 4") as info:
        capture_feature_maps(model, torch.randn(1, 1, 8, 8), ["0", "conv9"])
    assert info.value.allowed == ["0", "1", "2", "3", "4"]
    assert_hooks_removed(model)


def test_hooks_removed_and_mode_restored_when_forward_raises() -> None:
    model = small_net().train()
    model[2].eval()  # a mixed-mode model keeps each module's own flag
    with pytest.raises(RuntimeError):
        capture_feature_maps(model, torch.randn(1, 1, 5, 5), ["0", "4"])  # wrong size for the Linear
    assert_hooks_removed(model)
    assert model.training and model[0].training and not model[2].training


def test_conv_filters_returns_detached_copies_by_name(alexnet_1ch: nn.Module) -> None:
    filters = conv_filters(alexnet_1ch)
    assert list(filters) == ["features.0", "features.3", "features.6", "features.8", "features.10"]
    assert filters["features.0"].shape == (64, 1, 11, 11)
    assert filters["features.3"].shape == (192, 64, 5, 5)
    weight = filters["features.0"]
    assert not weight.requires_grad
    torch.testing.assert_close(weight, alexnet_1ch.features[0].weight.detach())
    weight.zero_()
    assert alexnet_1ch.features[0].weight.abs().sum() > 0


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_select_probe_images_one_per_present_class_stable_by_seed(dtype: torch.dtype) -> None:
    y = torch.tensor([2, 0, 2, 1, 0, 2, 4, 0])
    x = torch.arange(len(y)).to(dtype).view(-1, 1, 1, 1).expand(-1, 1, 2, 2).clone()
    images, labels = select_probe_images(x, y, num_classes=5, seed=0)
    assert labels.tolist() == [0, 1, 2, 4]  # class 3 is absent and skipped
    assert images.dtype == dtype and images.shape == (4, 1, 2, 2)
    assert images[:, 0, 0, 0].tolist() == [1, 3, 0, 6]
    _, again = select_probe_images(x, y, num_classes=5, seed=0)
    assert again.tolist() == labels.tolist()
    images, labels = select_probe_images(x, y, num_classes=5, seed=1)
    assert images[:, 0, 0, 0].tolist() == [4, 3, 2, 6]  # position 1 % count in each class
    images, _ = select_probe_images(x, y, num_classes=5, seed=4)
    assert images[:, 0, 0, 0].tolist() == [4, 3, 2, 6]  # 4 % 3 == 1, 4 % 1 == 0


def test_select_probe_images_rejects_mismatched_lengths() -> None:
    with pytest.raises(ConfigError, match="y"):
        select_probe_images(torch.zeros(3, 1, 2, 2), torch.zeros(2, dtype=torch.long), num_classes=2)
