"""Small two-conv CNNs (cnn2_3, cnn2_5, cnn2_7) and the flatten-size helper the hand-written variants share."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from cnn.models.registry import register_variant


def flat_features(features: nn.Module, in_channels: int, input_size: int) -> int:
    """Length of the flattened output of `features` for one (in_channels, input_size, input_size) image."""
    with torch.no_grad():
        return features(torch.zeros(1, in_channels, input_size, input_size)).flatten(1).shape[1]


def two_conv_cnn(width: int, in_channels: int, num_classes: int, input_size: int) -> nn.Sequential:
    """Two 3x3 conv blocks of `width` channels with 2x2 max pooling, then a 50-unit hidden layer with dropout 0.3."""
    features = OrderedDict(
        conv1=nn.Conv2d(in_channels, width, kernel_size=3),
        relu1=nn.ReLU(),
        pool1=nn.MaxPool2d(2),
        conv2=nn.Conv2d(width, width, kernel_size=3),
        relu2=nn.ReLU(),
        pool2=nn.MaxPool2d(2),
        flatten=nn.Flatten(),
    )
    flat = flat_features(nn.Sequential(features), in_channels, input_size)
    head = OrderedDict(
        fc1=nn.Linear(flat, 50),
        relu3=nn.ReLU(),
        dropout=nn.Dropout(0.3),
        fc2=nn.Linear(50, num_classes),
    )
    return nn.Sequential(features | head)


@register_variant(min_input_size=10, description="Two conv blocks, 3 channels each, 50-unit hidden layer")
def cnn2_3(in_channels: int, num_classes: int, input_size: int) -> nn.Sequential:
    """Two-conv CNN with 3 feature maps per block."""
    return two_conv_cnn(3, in_channels, num_classes, input_size)


@register_variant(min_input_size=10, description="Two conv blocks, 5 channels each, 50-unit hidden layer")
def cnn2_5(in_channels: int, num_classes: int, input_size: int) -> nn.Sequential:
    """Two-conv CNN with 5 feature maps per block."""
    return two_conv_cnn(5, in_channels, num_classes, input_size)


@register_variant(min_input_size=10, description="Two conv blocks, 7 channels each, 50-unit hidden layer")
def cnn2_7(in_channels: int, num_classes: int, input_size: int) -> nn.Sequential:
    """Two-conv CNN with 7 feature maps per block."""
    return two_conv_cnn(7, in_channels, num_classes, input_size)
