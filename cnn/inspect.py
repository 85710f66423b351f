"""Look inside a CNN: list layers, capture feature maps with forward hooks, read conv filters, pick probe images."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from cnn.errors import ConfigError


def list_layers(model: nn.Module, kinds: tuple[type, ...] | None = None) -> list[str]:
    """Names of the leaf modules (no children) from `named_modules()`, optionally only those of `kinds`."""
    return [
        name
        for name, module in model.named_modules()
        if name and next(module.children(), None) is None and (kinds is None or isinstance(module, kinds))
    ]


def capture_feature_maps(model: nn.Module, images: Tensor, layers: Sequence[str] | None = None) -> dict[str, Tensor]:
    """Run `images` through `model` (eval, no grad) and return each named module's output as a CPU tensor.

    `layers` defaults to every leaf layer; any named module is accepted. Hooks are removed and modes restored after.
    """
    known = dict(model.named_modules())
    names = list(dict.fromkeys(layers if layers is not None else list_layers(model)))
    for name in names:
        if not name or name not in known:
            raise ConfigError("layers", f"unknown layer {name!r}", allowed=list_layers(model))
    captured: dict[str, Tensor] = {}

    def hook_for(name: str):
        def hook(module: nn.Module, inputs: object, output: object) -> None:
            if not isinstance(output, Tensor):
                raise ConfigError("layers", f"layer {name!r} returned {type(output).__name__}, not a tensor")
            # clone: an in-place op later in forward (e.g. ReLU(inplace=True)) would otherwise overwrite this output.
            captured[name] = output.detach().clone()

        return hook

    modes = [(m, m.training) for m in model.modules()]
    handles = []
    try:
        handles = [known[name].register_forward_hook(hook_for(name)) for name in names]
        model.eval()
        device = next((t.device for t in (*model.parameters(), *model.buffers())), images.device)
        with torch.no_grad():
            model(images.to(device))
    finally:
        for handle in handles:
            handle.remove()
        for module, training in modes:
            module.training = training
    missing = [name for name in names if name not in captured]
    if missing:
        raise ConfigError("layers", f"layers never ran in forward: {', '.join(missing)}")
    return {name: captured[name].cpu() for name in names}


def conv_filters(model: nn.Module) -> dict[str, Tensor]:
    """Every nn.Conv2d weight (out, in, kh, kw) as a detached CPU copy, keyed by layer name."""
    return {
        name: module.weight.detach().cpu().clone()
        for name, module in model.named_modules()
        if isinstance(module, nn.Conv2d)
    }


def select_probe_images(x: Tensor, y: Tensor, num_classes: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """One image per class present in `y`: for class c, index number `seed % count_c` among c's sorted indices."""
    if len(x) != len(y):
        raise ConfigError("y", f"got {len(y)} labels for {len(x)} images")
    if num_classes < 1:
        raise ConfigError("num_classes", f"must be at least 1, got {num_classes}")
    labels = torch.as_tensor(y).reshape(-1).cpu()
    picks = []
    for c in range(num_classes):
        indices = torch.nonzero(labels == c).flatten()  # ascending
        if len(indices):
            picks.append(int(indices[seed % len(indices)]))
    chosen = torch.tensor(picks, dtype=torch.long)
    return x[chosen.to(x.device)], y[chosen.to(y.device)]
