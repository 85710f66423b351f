"""K seeds' copies of a Sequential CNN run as one model: each convolution one grouped convolution over the seeds'
channels (channels_last), each linear layer one batched matmul, pooling and activations once on all seeds' maps.

Written by hand because vmap lacks this layout: its batching rules also fold the seeds into a grouped convolution,
but in NCHW (where oneDNN's grouped kernels are slow) and with a copy around every pooling layer; on CPU this layout
takes less time for the same seeds (`python -m benchmarks.seeds --vmap`, docs/seeds.md). It covers nn.Sequential
stacks (nested ones too) of the layers below, which every built-in variant but AlexNet is; cnn.ensemble checks it
against each seed's own forward on a first batch, and uses vmap for anything else.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor, nn

ELEMENTWISE = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.Identity, nn.Dropout)
POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)  # per channel, so the seeds' maps stay apart


def _leaves(module: nn.Module, prefix: str = "") -> Iterator[tuple[str, nn.Module]]:
    """(qualified name, layer) of a Sequential's layers, nested Sequentials flattened."""
    for name, child in module.named_children():
        if isinstance(child, nn.Sequential):
            yield from _leaves(child, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", child


def _supported(layer: nn.Module) -> bool:
    if isinstance(layer, nn.Conv2d):
        return layer.padding_mode == "zeros"
    if isinstance(layer, nn.Flatten):
        return layer.start_dim == 1 and layer.end_dim == -1
    if isinstance(layer, nn.MaxPool2d):
        return not layer.return_indices
    return isinstance(layer, (nn.Linear, *ELEMENTWISE, *POOLS))


class GroupedSequential:
    """The forward of K stacked copies of `model` (its layers read for their settings only: pass a meta copy)."""

    def __init__(self, model: nn.Sequential) -> None:
        self.layers = list(_leaves(model))

    @classmethod
    def of(cls, model: nn.Module) -> GroupedSequential | None:
        """The grouped forward of `model`, or None when it is not a Sequential of the supported layers."""
        if not isinstance(model, nn.Sequential) or type(model).forward is not nn.Sequential.forward:
            return None
        layers = list(_leaves(model))
        return cls(model) if layers and all(_supported(layer) for _, layer in layers) else None

    def __call__(self, params: dict[str, Tensor], x: Tensor, per_seed: bool = True) -> Tensor:
        """(K, batch, classes) logits of the K seeds whose parameters are stacked in `params`, on (K, batch, C, H, W)
        images (one batch per seed) or, with per_seed=False, on one (batch, C, H, W) batch shared by all seeds."""
        seeds = next(iter(params.values())).shape[0]
        h, state = (x.movedim(0, 1).flatten(1, 2), "folded") if per_seed else (x, "shared")
        for name, layer in self.layers:
            h, state = self._layer(name, layer, params, seeds, h, state)
        if state != "stacked":
            raise ValueError(f"the model ends in {state} image maps, not in a linear layer")
        return h

    def _layer(
        self, name: str, layer: nn.Module, params: dict[str, Tensor], seeds: int, h: Tensor, state: str
    ) -> tuple[Tensor, str]:
        """One layer on activations that are "shared" (B, ...), "folded" (B, K*C, H, W) or "stacked" (K, B, F)."""
        if isinstance(layer, nn.Conv2d):
            if state == "stacked":
                raise ValueError(f"{name}: a convolution after the flatten")
            weight, bias = params[f"{name}.weight"].flatten(0, 1), params.get(f"{name}.bias")
            groups = layer.groups * (seeds if state == "folded" else 1)
            h = h.contiguous(memory_format=torch.channels_last)
            bias = None if bias is None else bias.flatten()
            return nn.functional.conv2d(h, weight, bias, layer.stride, layer.padding, layer.dilation, groups), "folded"
        if isinstance(layer, nn.Linear):
            if state == "folded":
                raise ValueError(f"{name}: a linear layer on image maps")
            weight, bias = params[f"{name}.weight"], params.get(f"{name}.bias")
            out = torch.matmul(h, weight.mT)  # (K, B, out), h broadcast over the seeds when shared
            return (out if bias is None else out + bias.unsqueeze(1)), "stacked"
        if isinstance(layer, nn.Flatten):
            if state == "folded":  # each seed's maps flattened in (C, H, W) order, as its own model does
                return h.unflatten(1, (seeds, -1)).movedim(1, 0).flatten(2), "stacked"
            return layer(h), state
        if isinstance(layer, POOLS) and state == "stacked":
            raise ValueError(f"{name}: pooling after the flatten")
        return layer(h), state
