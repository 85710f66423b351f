"""LeNet-style variants: lenet1, lenet5 and lenet5_dropout."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from cnn.models.basic import flat_features
from cnn.models.registry import register_variant


@register_variant(min_input_size=6, description="LeNet-1 style: one conv block")
def lenet1(in_channels: int, num_classes: int, input_size: int) -> nn.Sequential:
    """One 5x5 conv with a single feature map, 2x2 max pooling, a 10-unit hidden layer."""
    features = OrderedDict(
        conv1=nn.Conv2d(in_channels, 1, kernel_size=5),
        relu1=nn.ReLU(),
        maxp1=nn.MaxPool2d(2),
        flatten=nn.Flatten(),
    )
    flat = flat_features(nn.Sequential(features), in_channels, input_size)
    head = OrderedDict(fc1=nn.Linear(flat, 10), relu2=nn.ReLU(), fc2=nn.Linear(10, num_classes))
    return nn.Sequential(features | head)


def lenet5_layers(in_channels: int, num_classes: int, input_size: int, dropout: float = 0.0) -> nn.Sequential:
    """LeNet-5 (c1, s2, c3, s4, c5, f6, output) with max pooling; dropout > 0 adds drop5 and drop6."""
    features = OrderedDict(
        c1=nn.Conv2d(in_channels, 6, kernel_size=5, padding=2),
        relu1=nn.ReLU(),
        s2=nn.MaxPool2d(2),
        c3=nn.Conv2d(6, 16, kernel_size=5),
        relu3=nn.ReLU(),
        s4=nn.MaxPool2d(2),
        c5=nn.Conv2d(16, 120, kernel_size=5),
        relu5=nn.ReLU(),
        flatten=nn.Flatten(),
    )
    flat = flat_features(nn.Sequential(features), in_channels, input_size)
    head: OrderedDict[str, nn.Module] = OrderedDict()
    if dropout > 0:
        head["drop5"] = nn.Dropout(dropout)
    head["f6"] = nn.Linear(flat, 84)
    head["relu6"] = nn.ReLU()
    if dropout > 0:
        head["drop6"] = nn.Dropout(dropout)
    head["output"] = nn.Linear(84, num_classes)
    return nn.Sequential(features | head)


@register_variant(min_input_size=28, description="LeNet-5 style: three convs, two max pools, 84-unit hidden layer")
def lenet5(in_channels: int, num_classes: int, input_size: int) -> nn.Sequential:
    """Classic LeNet-5 layout with ReLU and max pooling."""
    return lenet5_layers(in_channels, num_classes, input_size)


@register_variant(min_input_size=28, description="LeNet-5 with dropout 0.5 before f6 and before the output layer")
def lenet5_dropout(in_channels: int, num_classes: int, input_size: int) -> nn.Sequential:
    """LeNet-5 with dropout (p=0.5) ahead of both fully connected layers."""
    return lenet5_layers(in_channels, num_classes, input_size, dropout=0.5)
