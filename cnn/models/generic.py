"""GenericCNN: a CNN described by a small config (conv widths, kernels, pools, hidden fc sizes, dropout)."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from cnn.errors import ConfigError, did_you_mean
from cnn.models.registry import register_variant

logger = logging.getLogger(__name__)

Shape = tuple[int, ...]
MAX_CONFIG_BYTES = 1_000_000
MAX_PARAMETERS = 200_000_000  # 0.8 GB of float32 weights (about 3 GB to train with SGD momentum); AlexNet has 57M


@dataclass(frozen=True)
class GenericConfig:
    """Architecture of a GenericCNN; channels and classes come from the dataset, not from here."""

    conv_channels: list[int]
    kernel_sizes: list[int] | int = 3
    pool_sizes: list[int] | int = 2
    fc_sizes: list[int] = field(default_factory=list)
    dropout: float = 0.0

    def __post_init__(self) -> None:
        blocks = _int_list("conv_channels", self.conv_channels, minimum=1)
        if not blocks:
            raise ConfigError("conv_channels", "needs at least one conv layer")
        object.__setattr__(self, "conv_channels", blocks)
        object.__setattr__(self, "kernel_sizes", _per_block("kernel_sizes", self.kernel_sizes, len(blocks), minimum=1))
        object.__setattr__(self, "pool_sizes", _per_block("pool_sizes", self.pool_sizes, len(blocks), minimum=0))
        object.__setattr__(self, "fc_sizes", _int_list("fc_sizes", self.fc_sizes, minimum=1))
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise ConfigError("dropout", f"must be a number in [0, 1), got {self.dropout!r}")
        object.__setattr__(self, "dropout", float(self.dropout))

    def __hash__(self) -> int:
        return hash(tuple(tuple(v) if isinstance(v, list) else v for v in dataclasses.astuple(self)))

    def blocks(self) -> list[tuple[int, int, int]]:
        """(channels, kernel, pool) for each conv block."""
        return list(zip(self.conv_channels, self._kernels(), self._pools()))

    def _kernels(self) -> list[int]:
        return _expand(self.kernel_sizes, len(self.conv_channels))

    def _pools(self) -> list[int]:
        return _expand(self.pool_sizes, len(self.conv_channels))


CONFIG_KEYS = tuple(f.name for f in dataclasses.fields(GenericConfig))


def shape_trace(
    config: GenericConfig, in_channels: int, input_size: int, num_classes: int | None = None
) -> list[tuple[str, Shape]]:
    """Each layer's name and per-image output shape, worked out before building; raises if a map falls below 1x1."""
    _check_positive("in_channels", in_channels)
    _check_positive("input_size", input_size)
    trace: list[tuple[str, Shape]] = []
    channels, side = in_channels, input_size
    for i, (width, kernel, pool) in enumerate(config.blocks(), start=1):
        side = _shrink(f"conv{i}", side, side - kernel + 1, config, input_size)
        channels = width
        trace += [(f"conv{i}", (channels, side, side)), (f"relu{i}", (channels, side, side))]
        if pool > 1:
            side = _shrink(f"pool{i}", side, side // pool, config, input_size)
            trace.append((f"pool{i}", (channels, side, side)))
    features = channels * side * side
    trace.append(("flatten", (features,)))
    for i, width in enumerate(config.fc_sizes, start=1):
        trace += [(f"fc{i}", (width,)), (f"relu_fc{i}", (width,))]
        if config.dropout > 0:
            trace.append((f"dropout{i}", (width,)))
    if num_classes is not None:
        trace.append(("output", (num_classes,)))
    return trace


def min_input_size(config: GenericConfig) -> int:
    """Smallest square input side for which every feature map of `config` stays at least 1x1."""
    side = 1
    for _, kernel, pool in reversed(config.blocks()):
        if pool > 1:
            side *= pool
        side += kernel - 1
    return side


class GenericCNN(nn.Sequential):
    """Sequential CNN built from a GenericConfig, with flat layer names conv1, relu1, pool1, ..., fc1, ..., output."""

    def __init__(self, config: GenericConfig, in_channels: int, num_classes: int, input_size: int):
        trace = shape_trace(config, in_channels, input_size, num_classes)
        check_size(config, in_channels, num_classes, trace)
        logger.debug("GenericCNN shapes for %dx%d input: %s", input_size, input_size, trace)
        super().__init__(OrderedDict(_layers(config, in_channels, num_classes, trace)))
        self.config = config


def count_generic_parameters(
    config: GenericConfig, in_channels: int, num_classes: int, trace: list[tuple[str, Shape]]
) -> int:
    """Weights and biases the GenericCNN of `trace` will have, counted without building it."""
    total, channels = 0, in_channels
    for width, kernel, _ in config.blocks():
        total += channels * width * kernel * kernel + width
        channels = width
    features = dict(trace)["flatten"][0]
    for width in [*config.fc_sizes, num_classes]:
        total += features * width + width
        features = width
    return total


def check_size(config: GenericConfig, in_channels: int, num_classes: int, trace: list[tuple[str, Shape]]) -> None:
    """Refuse, before allocating anything, a config whose weights alone would take gigabytes."""
    count = count_generic_parameters(config, in_channels, num_classes, trace)
    if count > MAX_PARAMETERS:
        raise ConfigError(
            "config",
            f"this GenericCNN would have {count:,} parameters ({count * 4 / 1e9:,.1f} GB of float32 weights, several times that to train); shrink conv_channels or fc_sizes",
            allowed=f"at most {MAX_PARAMETERS:,} parameters",
        )


def _layers(config: GenericConfig, in_channels: int, num_classes: int, trace: list[tuple[str, Shape]]):
    """Yield (name, module) pairs matching `trace`."""
    channels = in_channels
    for i, (width, kernel, pool) in enumerate(config.blocks(), start=1):
        yield f"conv{i}", nn.Conv2d(channels, width, kernel_size=kernel)
        yield f"relu{i}", nn.ReLU()
        if pool > 1:
            yield f"pool{i}", nn.MaxPool2d(pool)
        channels = width
    yield "flatten", nn.Flatten()
    features = dict(trace)["flatten"][0]
    for i, width in enumerate(config.fc_sizes, start=1):
        yield f"fc{i}", nn.Linear(features, width)
        yield f"relu_fc{i}", nn.ReLU()
        if config.dropout > 0:
            yield f"dropout{i}", nn.Dropout(config.dropout)
        features = width
    yield "output", nn.Linear(features, num_classes)


def load_generic_config(path_or_json: str | Path | dict) -> GenericConfig:
    """GenericConfig from a dict, a JSON object string or a JSON file path; bad input raises ConfigError."""
    if isinstance(path_or_json, dict):
        data = path_or_json
    elif isinstance(path_or_json, str) and path_or_json.lstrip().startswith("{"):
        data = _parse_json(path_or_json, "JSON text")
    elif isinstance(path_or_json, (str, Path)):
        path = Path(path_or_json).expanduser()
        if not path.is_file():
            raise ConfigError("config", f"no such file: {path}")
        data = _parse_json(_read_text(path), str(path))
    else:
        raise ConfigError("config", f"expected a dict, JSON text or a file path, got {type(path_or_json).__name__}")
    if not isinstance(data, dict):
        raise ConfigError("config", f"must be a JSON object, got {type(data).__name__}")
    for key in data:
        if key not in CONFIG_KEYS:
            hint = did_you_mean(key, CONFIG_KEYS, cutoff=0.6)
            raise ConfigError(str(key), f"unknown key {key!r} in generic config{hint}", allowed=CONFIG_KEYS)
    if "conv_channels" not in data:
        raise ConfigError("conv_channels", "is required")
    return GenericConfig(**data)


def register_generic_variant(
    name: str, config: GenericConfig, *, description: str = "", origin: str | None = None
) -> None:
    """Register `config` as variant `name`, built as a GenericCNN with the dataset's channels and classes."""
    if not isinstance(config, GenericConfig):
        raise ConfigError("config", f"expected a GenericConfig, got {type(config).__name__}")

    def build(in_channels: int, num_classes: int, input_size: int) -> GenericCNN:
        return GenericCNN(config, in_channels, num_classes, input_size)

    register_variant(
        name,
        min_input_size=min_input_size(config),
        description=description,
        origin=origin,
        config=dataclasses.asdict(config),
    )(build)


def _read_text(path: Path) -> str:
    """A config file's text; one that is not UTF-8 (or larger than any config) raises ConfigError naming it."""
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ConfigError(
            "config",
            f"{path} is {path.stat().st_size:,} bytes, not a GenericCNN config",
            allowed=f"a JSON file of at most {MAX_CONFIG_BYTES:,} bytes",
        )
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(
            "config",
            f"{path} is not UTF-8 text (byte 0x{raw[err.start]:02x} at offset {err.start})",
            allowed="a UTF-8 JSON file",
        ) from None


def _parse_json(text: str, source: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        raise ConfigError("config", f"malformed JSON in {source} at {where}: {exc.msg}") from None
    except RecursionError:  # json's reader recurses once per level of nesting
        raise ConfigError(
            "config",
            f"{source} nests lists or objects too deeply to read",
            allowed="a GenericCNN config: an object of numbers and lists of numbers",
        ) from None


def _shrink(layer: str, before: int, after: int, config: GenericConfig, input_size: int) -> int:
    if after < 1:
        raise ConfigError(
            "input_size",
            f"{input_size}x{input_size} is too small: layer '{layer}' would shrink the {before}x{before} feature map "
            f"below 1x1 (to {max(after, 0)}x{max(after, 0)}); this config needs at least {min_input_size(config)}",
        )
    return after


def _expand(value: list[int] | int, blocks: int) -> list[int]:
    return value if isinstance(value, list) else [value] * blocks


def _check_positive(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(name, f"must be a positive integer, got {value!r}")


def _int_list(name: str, value: object, minimum: int) -> list[int]:
    if not isinstance(value, (list, tuple)):
        raise ConfigError(name, f"must be a list of integers, got {value!r}")
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int) or item < minimum:
            raise ConfigError(name, f"every entry must be an integer >= {minimum}, got {item!r}")
    return list(value)


def _per_block(name: str, value: object, blocks: int, minimum: int) -> list[int] | int:
    if isinstance(value, int) and not isinstance(value, bool):
        if value < minimum:
            raise ConfigError(name, f"must be an integer >= {minimum}, got {value!r}")
        return value
    values = _int_list(name, value, minimum)
    if len(values) != blocks:
        raise ConfigError(name, f"has {len(values)} entries but conv_channels has {blocks}")
    return values


# Built-in GenericCNN variants.
register_generic_variant(
    "generic_0",
    GenericConfig([5, 5], 3, [2, 2], [50], 0.3),
    description="GenericCNN rebuild of cnn2_5 (two 3x3 convs of 5, fc 50, dropout 0.3)",
)
register_generic_variant(
    "generic_1",
    GenericConfig([8, 16, 32], 3, [2, 2, 2], [100, 50]),
    description="GenericCNN: three 3x3 convs (8, 16, 32), fc 100 and 50",
)
register_generic_variant(
    "generic_2",
    GenericConfig([4], 5, [2], [20]),
    description="GenericCNN: one 5x5 conv of 4, fc 20",
)
register_generic_variant(
    "generic_3",
    GenericConfig([5, 5], 3, [2, 2], [int(1024 + i * (25 - 1024) / 8) for i in range(9)]),
    description="GenericCNN: two 3x3 convs of 5, nine fc layers tapering 1024 to 25",
)
