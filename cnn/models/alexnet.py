"""AlexNet from torchvision, adapted to any number of input channels; it is built for 100x100 inputs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from cnn.models.registry import register_variant

if TYPE_CHECKING:
    from torchvision.models import AlexNet


@register_variant(
    input_size=100,
    min_input_size=63,
    description="torchvision AlexNet (no pretrained weights), images resized to 100x100",
)
def alexnet(in_channels: int, num_classes: int, input_size: int) -> AlexNet:
    """torchvision AlexNet with its first conv taking `in_channels`; adaptive pooling makes `input_size` free."""
    from torchvision.models import alexnet as tv_alexnet  # imported when built: torchvision takes seconds to import

    model = tv_alexnet(weights=None, num_classes=num_classes)
    model.features[0] = nn.Conv2d(in_channels, 64, kernel_size=11, stride=4, padding=2)
    return model
