"""Name-keyed registry of CNN variants: register, list, look up, size-check and build them."""

from __future__ import annotations

import fnmatch
import importlib.metadata
import math
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from cnn.catalog import ENTRY_POINT_GROUP, VARIANT_NAME, VARIANT_NAME_ALLOWED, unknown_variant
from cnn.errors import ConfigError
from cnn.storage import safe_name

log = logging.getLogger(__name__)

Builder = Callable[[int, int, int], nn.Module]

BUILTIN_PREFIX = "cnn.models."
# Images smaller than this (digits: 8x8) are upsampled to the side the student architectures were designed for
DESIGN_SIDE = 28


@dataclass(frozen=True)
class VariantSpec:
    """One registered variant: its builder (in_channels, num_classes, input_size), input-size needs and where it came from.

    `origin` is the builder's module, "file <path>" or "entry point <value>"; `config` is the architecture's config
    for variants built from one (GenericCNN), so that a changed config is a changed variant.
    """

    name: str
    builder: Builder
    input_size: int | None
    min_input_size: int
    description: str
    origin: str = ""
    config: Mapping[str, Any] | None = None

    @property
    def builtin(self) -> bool:
        """Shipped with cnn-lab (registered by a cnn.models module)."""
        return self.origin.startswith(BUILTIN_PREFIX)


_REGISTRY: dict[str, VariantSpec] = {}
_BROKEN: dict[str, str] = {}  # entry-point variants that failed to load: name -> why
_entry_points_loaded = False


def register_variant(
    name: str | None = None,
    *,
    input_size: int | None = None,
    min_input_size: int = 1,
    description: str = "",
    origin: str | None = None,
    config: Mapping[str, Any] | None = None,
) -> Callable[[Builder], Builder]:
    """Decorator registering a builder under `name` (default: the function's name); returns the builder unchanged."""

    def decorator(builder: Builder) -> Builder:
        key = name if name is not None else builder.__name__
        _check_new_name(key)
        _check_size("min_input_size", min_input_size)
        if input_size is not None:
            _check_size("input_size", input_size)
            if input_size < min_input_size:
                message = f"variant '{key}': fixed size {input_size} is below its minimum {min_input_size}"
                raise ConfigError("input_size", message)
        where = origin if origin is not None else getattr(builder, "__module__", "")
        _REGISTRY[key] = VariantSpec(key, builder, input_size, min_input_size, description, where, config)
        return builder

    return decorator


def unregister_variant(name: str) -> None:
    """Remove a variant from the registry (for tests and user plug-ins)."""
    get_variant(name)
    del _REGISTRY[name]


def list_variants(pattern: str = "*") -> list[str]:
    """Sorted names of registered variants (entry points of installed packages included) matching `pattern`."""
    if not _entry_points_loaded:
        load_entry_point_variants()
    return sorted(fnmatch.filter(_REGISTRY, pattern))


def get_variant(name: str) -> VariantSpec:
    """The spec registered as `name`; an unknown name raises ConfigError suggesting the closest and listing the valid ones."""
    if not _entry_points_loaded:
        load_entry_point_variants()
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        pass
    if name in _BROKEN:
        raise ConfigError("variant", _BROKEN[name], allowed=list_variants())
    raise unknown_variant(name, list_variants())


def load_entry_point_variants() -> list[str]:
    """Register the builders that installed packages declare in the `cnn_lab.variants` entry-point group; new names.

    The entry point's name is the variant name; its object is a builder (in_channels, num_classes, input_size) ->
    nn.Module whose first docstring line is the description (optional attributes: input_size, min_input_size).
    A plug-in that fails to load is remembered and named when its variant is asked for; the others still load.
    """
    global _entry_points_loaded
    _entry_points_loaded = True
    added = []
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in _REGISTRY and _REGISTRY[ep.name].origin.startswith("entry point"):
            continue
        where = f"entry point {ep.name} = {ep.value}"
        try:
            builder = ep.load()
            if ep.name in _REGISTRY and _REGISTRY[ep.name].builder is builder:
                continue  # the module registered it with @register_variant when it was imported
            if not callable(builder):
                raise TypeError(f"{ep.value} is a {type(builder).__name__}, not a builder function")
            doc = (getattr(builder, "__doc__", None) or "").strip().splitlines()
            register_variant(
                ep.name,
                input_size=getattr(builder, "input_size", None),
                min_input_size=getattr(builder, "min_input_size", 1),
                description=doc[0] if doc else "",
                origin=where,
            )(builder)
        except (Exception, SystemExit) as err:  # noqa: BLE001 - one broken plug-in must not hide (or end) the others
            _BROKEN[ep.name] = f"variant {ep.name!r} from {where} failed to load: {type(err).__name__}: {err}"
            log.warning(_BROKEN[ep.name])
            continue
        _BROKEN.pop(ep.name, None)
        added.append(ep.name)
    return added


def resolve_input_size(name: str, native_size: int, override: int | None = None) -> int:
    """Input side to build `name` at: the override if big enough, else the variant's fixed size or the native one."""
    spec = get_variant(name)
    _check_size("native_size", native_size)
    if override is None:
        return spec.input_size if spec.input_size is not None else max(native_size, spec.min_input_size)
    _check_size("input_size", override)
    if override < spec.min_input_size:
        layer = _first_shrinking_layer(spec, override)
        where = f": layer '{layer}' would shrink the feature map below 1x1" if layer else ""
        raise ConfigError(
            "input_size",
            f"{override} is too small for variant '{name}', which needs at least {spec.min_input_size}{where}",
        )
    return override


def upsampled_side(image_size: int) -> int:
    """The side images of `image_size` are fed at before a variant's own size rules: at least DESIGN_SIDE."""
    return max(image_size, DESIGN_SIDE)


def create_variant(name: str, in_channels: int = 1, num_classes: int = 10, input_size: int | None = None) -> nn.Module:
    """Build variant `name` for images with `in_channels` channels, `num_classes` classes and side `input_size`."""
    spec = get_variant(name)
    _check_int("in_channels", in_channels, minimum=1)
    _check_int("num_classes", num_classes, minimum=2)
    size = resolve_input_size(name, DESIGN_SIDE, override=input_size)
    return spec.builder(in_channels, num_classes, size)


def check_outputs(model: nn.Module, name: str, in_channels: int, num_classes: int, input_size: int) -> nn.Module:
    """`model` if two images of this shape give (2, num_classes) logits; a ConfigError naming the variant otherwise
    (without this check, 13 logits for 10 classes would train and evaluate without a word). Runs on CPU in eval mode,
    mode restored."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(2, in_channels, input_size, input_size))
    finally:
        model.train(was_training)
    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    if shape != (2, num_classes):
        raise ConfigError(
            "variant",
            f"{name!r} outputs {shape} for a batch of 2 images of {in_channels}x{input_size}x{input_size} and {num_classes} classes",
            allowed="a model returning (batch, classes) logits",
        )
    return model


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters in `model`."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def forward_mflops(name: str, in_channels: int, num_classes: int, input_size: int) -> float | None:
    """Forward MFLOPs of one image through variant `name` at `input_size`: two per multiply-add of its convolutions and
    linear layers (what dominates a CNN's cost; torch's FlopCounterMode counts the same but takes seconds to set up on
    first use), from forward hooks on a CPU build; the global RNG is left as it was. None where the builder or the
    forward fails (a plug-in may need more than one image or a GPU)."""
    flops = 0

    def count(module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
        nonlocal flops
        if isinstance(module, nn.Conv2d):
            flops += 2 * output.numel() * module.in_channels // module.groups * math.prod(module.kernel_size)
        elif isinstance(module, nn.Linear):
            flops += 2 * output.numel() * module.in_features

    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            model = create_variant(name, in_channels, num_classes, input_size).eval()
            for module in model.modules():
                if isinstance(module, (nn.Conv2d, nn.Linear)):
                    module.register_forward_hook(count)
            model(torch.zeros(1, in_channels, input_size, input_size))
    except Exception:  # noqa: BLE001 - an estimate only: the caller assumes a typical cost
        return None
    return flops / 1e6


def variant_table(in_channels: int = 1, num_classes: int = 10, native_size: int = DESIGN_SIDE) -> list[dict]:
    """One row {name, params, input_size, description, origin} per variant, built on the meta device (no memory used)."""
    rows = []
    for name in list_variants():
        spec = get_variant(name)
        size = resolve_input_size(name, native_size)
        with torch.device("meta"):
            model = create_variant(name, in_channels, num_classes, size)
        params = count_parameters(model)
        rows.append(
            {
                "name": name,
                "params": params,
                "input_size": size,
                "description": spec.description,
                "origin": "built-in" if spec.builtin else spec.origin,
            }
        )
    return rows


def _first_shrinking_layer(spec: VariantSpec, size: int) -> str | None:
    """Name of the first layer whose output would be under 1x1 for a `size` input, or None if it cannot tell."""
    try:
        with torch.device("meta"):
            model = spec.builder(1, 2, spec.min_input_size)
            x = torch.zeros(1, 1, size, size)
        for layer_name, module in model.named_modules():
            if isinstance(module, (nn.Flatten, nn.Linear)):
                return None
            if next(module.children(), None) is not None:
                continue
            try:
                x = module(x)
            except RuntimeError:
                return layer_name
            if x.dim() == 4 and min(x.shape[-2:]) < 1:
                return layer_name
    except Exception:  # noqa: BLE001 - a plug-in builder may not run on the meta device; the message just loses the layer name
        return None
    return None


def _check_new_name(name: str) -> None:
    if not isinstance(name, str) or not VARIANT_NAME.fullmatch(name):
        raise ConfigError("name", f"{name!r} is not a valid variant name", allowed=VARIANT_NAME_ALLOWED)
    if name in _REGISTRY:
        raise ConfigError("name", f"variant {name!r} is already registered")
    safe_name(name, "variant")  # refuses names the store's run folder uses itself (report)


def _check_int(field: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(field, f"must be an integer >= {minimum}, got {value!r}")


def _check_size(field: str, value: object) -> None:
    _check_int(field, value, minimum=1)
