"""Every run parameter in one pydantic model: type, default, bounds and description, checked without torch or prefect.

The flows take these fields as their parameters (flows/parameters.py), the CLI builds its options from them
(flows/cli.py), and a training deployment receives them from `RunParams.model_dump()`. A new parameter is one field
here (and the code that uses it). Names that live in registries (variants, datasets) are checked when a run starts,
after plug-ins are loaded (flows/settings.py), never frozen into a type here. It stays one module: the fields, their
checks and the steps each one affects are one list, read in one place.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cnn.checks import (
    SAFE_NAME,
    SAFE_NAME_ALLOWED,
    AutoOrCount,
    Check,
    Choice,
    Count,
    LearningRate,
    Number,
    NumberList,
    Share,
    Text,
    as_list,
    fail,
    option_type,
)
from cnn.catalog import VARIANT_NAME, VARIANT_NAME_ALLOWED
from cnn.errors import ConfigError, did_you_mean
from cnn.recipe_rules import (
    AUTO_BATCH_BOUNDS,
    AUTO_EPOCH_BOUNDS,
    EPOCH_IMAGES,
    LR_SCALE_FROM_BATCH,
    MIN_STEPS_PER_EPOCH,
    MIN_TOTAL_STEPS,
)
from cnn.redaction import redact

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("none", "onecycle", "cosine")
LR_RULES = ("min_loss_div10", "steepest")
REFRESH_STEPS = ("lr", "train", "evaluate", "features")
STEPS = ("dataset", *REFRESH_STEPS)  # a variant's cached steps, in order
DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
_DEPLOYMENT = re.compile(r"[^/\s]+/[^/\s]+")
# dask, or a scheduler's address: host (a name, an IPv4 address or a bracketed IPv6 one) and port, nothing else
_TASK_RUNNER = re.compile(
    r"dask|(?P<scheme>dask|tcp|tls)://(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?):(?P<port>\d{1,5})"
)
TASK_RUNNER_ALLOWED = "dask (a local Dask cluster), or dask://host:port (or tcp://, tls://) of a running Dask scheduler"
MAX_IMAGES = 100_000_000  # images in a split or a share of one: 80x ImageNet's 1.28 million training images
LR_MAX = 1_000.0  # a learning rate (or LR range test bound): 100x the largest any optimizer here trains at (10)
_STORAGE_BLOCK = re.compile(r"(aws-credentials|s3-bucket)/[^/\s]+")


@dataclass(frozen=True)
class Affects:
    """Marks a run parameter whose value can change the cached result of `steps` (names in STEPS). A field without it
    never changes a result (where the run goes, how fast, what is shown, which variants) and is in no cache key."""

    steps: tuple[str, ...]

    def __init__(self, *steps: str) -> None:
        unknown = set(steps) - set(STEPS)
        if unknown:
            raise ValueError(f"unknown steps {sorted(unknown)}; known: {STEPS}")
        object.__setattr__(self, "steps", steps)


EVERY_STEP = Affects(*STEPS)  # the dataset's splits: every step reads them
LR_AND_TRAIN = Affects("lr", "train")  # the LR range test trains too, at the run's batch, epochs budget and optimizer


@dataclass(frozen=True)
class Device(Check):
    """auto, cpu, cuda, cuda:N or mps (whether CUDA is there is checked when the run starts)."""

    def check(self, value: Any) -> str:
        """The device name, if it is one torch understands."""
        if not isinstance(value, str) or not _DEVICE.fullmatch(value):
            raise fail(f"unknown device {value!r}{did_you_mean(value, ('auto', 'cpu', 'cuda', 'mps'))}", DEVICES)
        return value

    def json_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        """A string with the pattern."""
        return {"type": "string", "pattern": f"^({_DEVICE.pattern})$"}


@dataclass(frozen=True)
class TaskRunner(Check):
    """Empty (this machine), dask, or a Dask scheduler's address with a port in [1, 65535]."""

    def check(self, value: Any) -> str:
        """The spec."""
        if value is None or value == "":
            return ""
        if value == "dask" or (isinstance(value, str) and scheduler_address(value) is not None):
            return value
        shown = redact(value) if isinstance(value, str) else value
        raise fail(f"{shown!r} is neither dask nor a scheduler's host:port", TASK_RUNNER_ALLOWED)

    def json_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        """A string: empty, dask or an address."""
        return {"type": "string", "pattern": f"^(|{_TASK_RUNNER.pattern})$"}


def scheduler_address(spec: str) -> tuple[str, int] | None:
    """(host, port) of a Dask scheduler address spec, or None when `spec` is not one (or its port is out of range)."""
    match = _TASK_RUNNER.fullmatch(spec.strip())
    if match is None or match.group("port") is None or not 1 <= int(match.group("port")) <= 65_535:
        return None
    return match.group("host").strip("[]"), int(match.group("port"))


@dataclass(frozen=True)
class VariantNames(Check):
    """A non-empty list of variant names without duplicates (a comma-separated string is split)."""

    def check(self, value: Any) -> list[str]:
        """The names, in order."""
        names = as_list(value)
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise fail(f"must be a list of variant names, got {value!r}", "a list such as ['lenet1', 'cnn2_5']")
        if not names:
            raise fail("the list is empty", "one or more variant names (see `cnn-lab variants`)")
        for name in names:
            _check_variant_name(name)
        if len(set(names)) != len(names):
            raise fail(f"duplicates in {names}", "each variant once")
        return names

    def json_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        """An array of names."""
        return {
            "type": "array",
            "items": {"type": "string", "pattern": f"^{VARIANT_NAME.pattern}$"},
            "minItems": 1,
            "uniqueItems": True,
        }


def _check_variant_name(name: str) -> None:
    if not VARIANT_NAME.fullmatch(name):
        hint = f"; did you mean {name.lower()!r}?" if VARIANT_NAME.fullmatch(name.lower()) else ""
        raise fail(f"{name!r} is not a variant name{hint}", VARIANT_NAME_ALLOWED)


@dataclass(frozen=True)
class VariantName(Check):
    """One variant name."""

    def check(self, value: Any) -> str:
        """The name."""
        if not isinstance(value, str):
            raise fail(f"must be a variant name, got {value!r}", VARIANT_NAME_ALLOWED)
        _check_variant_name(value)
        return value

    def json_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        """A string with the name pattern."""
        return {"type": "string", "pattern": f"^{VARIANT_NAME.pattern}$"}


@dataclass(frozen=True)
class ModuleList(Check):
    """Importable module names or .py file paths (a comma-separated string is split)."""

    def check(self, value: Any) -> list[str]:
        """The entries, in order."""
        items = [] if value is None else as_list(value)
        if not isinstance(items, list) or not all(isinstance(i, str) and i.strip() for i in items):
            raise fail(
                f"must be a list of module names or .py paths, got {value!r}",
                "e.g. ['my_nets'] or ['path/to/my_nets.py']",
            )
        return [i.strip() for i in items]

    def json_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        """An array of strings."""
        return {"type": "array", "items": {"type": "string", "minLength": 1}}


@dataclass(frozen=True)
class VariantFiles(Check):
    """Variant name -> GenericCNN JSON file (or the JSON text itself); 'name=path' strings are split."""

    def check(self, value: Any) -> dict[str, str]:
        """The mapping."""
        if value is None:
            return {}
        items = as_list(value) if isinstance(value, str) else value
        if isinstance(items, list):
            pairs = [str(i).split("=", 1) for i in items]
            if not all(len(p) == 2 for p in pairs):
                raise fail(f"must be name=path entries, got {value!r}", "name=path/to/config.json")
            items = {name.strip(): path.strip() for name, path in pairs}
        if not isinstance(items, Mapping):
            raise fail(f"must map variant names to JSON files, got {value!r}", "{'mine': 'path/to/config.json'}")
        for name, source in items.items():
            _check_variant_name(str(name))
            if not isinstance(source, str) or not source.strip():
                raise fail(
                    f"variant {name!r} needs a JSON file path or JSON text, got {source!r}", "name=path/to/config.json"
                )
        return dict(items)

    def json_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        """An object of strings."""
        return {"type": "object", "additionalProperties": {"type": "string", "minLength": 1}}


@dataclass(frozen=True)
class Refresh(Check):
    """true (every step), false (none), or step names."""

    def check(self, value: Any) -> list[str]:
        """The steps to refresh."""
        if value is True or (isinstance(value, str) and value.strip().lower() in ("true", "all")):
            return list(REFRESH_STEPS)
        if (
            value is False
            or value is None
            or (isinstance(value, str) and value.strip().lower() in ("false", "none", ""))
        ):
            return []
        steps = as_list(value)
        if not isinstance(steps, list):
            raise fail(f"must be true, false or a list of steps, got {value!r}", REFRESH_STEPS)
        unknown = [s for s in steps if s not in REFRESH_STEPS]
        if unknown:
            raise fail(f"unknown step(s) {unknown}{did_you_mean(unknown[0], REFRESH_STEPS)}", REFRESH_STEPS)
        return steps

    def json_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        """A switch for all/none, or a multi-select of steps."""
        return {
            "anyOf": [
                {"type": "boolean", "title": "all or none"},
                {"type": "array", "items": {"type": "string", "enum": list(REFRESH_STEPS)}, "title": "steps"},
            ]
        }


class RunParams(BaseModel):
    """The parameters of a comparison or a one-variant training run; each flow exposes the fields it uses."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    variant: Annotated[str, VariantName()] = Field(
        "cnn2_5", description="Architecture to train (see `cnn-lab variants`)."
    )
    dataset: Annotated[str, Text(), EVERY_STEP] = Field(
        "fashion-mnist",
        description="fashion-mnist, mnist, kmnist, cifar10, digits, or another torchvision classification set by name.",
    )
    comparison: Annotated[str, Text(pattern=SAFE_NAME.pattern, allowed=SAFE_NAME_ALLOWED)] = Field(
        "default",
        description="The comparison's name: a comparison run records it (its variants, settings and rows, in the store's comparisons folder of the dataset); a retrain retrains one of its variants with its settings and publishes its table again.",
    )
    variants: Annotated[list[str], VariantNames()] = Field(
        ["lenet1", "lenet5", "cnn2_5", "generic_1"],
        description="Architectures to compare (see `cnn-lab variants`); the variants of variant_files are compared too.",
    )
    variant_files: Annotated[dict[str, str], VariantFiles()] = Field(
        {},
        description="Your GenericCNN variants: each name mapped to a JSON config file (see examples/generic_small.json) or to the JSON text; the file must exist where the run executes.",
    )
    variant_modules: Annotated[list[str], ModuleList()] = Field(
        [],
        description="Python modules (importable names or .py file paths) whose @register_variant functions add variants; a worker imports them too.",
    )
    # bounds: far above any real run, low enough that a typo (a few extra zeros) is refused before anything allocates
    epochs: Annotated[int | str, AutoOrCount(le=10_000), LR_AND_TRAIN] = Field(  # 10,000 epochs: weeks on any set here
        "auto",
        description=f"Training epochs per variant, or auto: enough to see {EPOCH_IMAGES:,} training images, "
        f"{AUTO_EPOCH_BOUNDS[0]} to {AUTO_EPOCH_BOUNDS[1]}.",
    )
    batch_size: Annotated[int | str, AutoOrCount(le=65_536), LR_AND_TRAIN] = Field(  # 32x the largest batch benchmarked
        "auto",
        description=f"Images per step, or auto: the largest power of two leaving at least {MIN_STEPS_PER_EPOCH} steps per "
        f"epoch and {MIN_TOTAL_STEPS:,} in the run ({'-'.join(map(str, AUTO_BATCH_BOUNDS['cpu']))} on CPU, "
        f"{'-'.join(map(str, AUTO_BATCH_BOUNDS['cuda']))} on CUDA); the LR range test runs at this batch size, and "
        f"above {LR_SCALE_FROM_BATCH} the base lr grows with it.",
    )
    lr: Annotated[float | str, LearningRate(le=LR_MAX), Affects("train")] = Field(
        "auto",
        description="auto runs Leslie Smith's LR range test per variant; a number uses that learning rate for all.",
    )
    optimizer: Annotated[str, Choice(OPTIMIZERS, "optimizer"), LR_AND_TRAIN] = Field(
        "adam", description="adam (the default recipe), adamw, or sgd (with momentum)."
    )
    schedule: Annotated[str, Choice(SCHEDULES, "schedule"), Affects("train")] = Field(
        "onecycle", description="Per-step LR schedule: onecycle (peak at lr), cosine or none."
    )
    momentum: Annotated[float, Number(ge=0, lt=1), LR_AND_TRAIN] = Field(0.9, description="SGD momentum, in [0, 1).")
    weight_decay: Annotated[float, Number(ge=0, le=10), LR_AND_TRAIN] = Field(  # 100x the strongest in common use (0.1)
        0.0, description="L2 weight decay (decoupled for adamw), in [0, 10]."
    )
    seed: Annotated[int, Number(integer=True, ge=0, lt=2**32), EVERY_STEP] = Field(  # numpy's seed range
        0, description="First seed; the split, the weights and the batch order follow it."
    )
    # auto by default: one seed leaves the seeds' noise out of the verdict (its false-alarm rate: docs/verdict.md); the
    # first 3 seeds train as one batched model (what that costs against one seed: docs/seeds.md)
    repeats: Annotated[int | str, AutoOrCount(le=1_000)] = Field(  # 1,000 seeds of every variant
        "auto",
        description="Seeds per variant (seed, seed+1, ...); the table shows mean, std, intervals and wins. auto: 3 seeds each, then twice as many for the variants still tied for best, until one beats the others or max_seeds is reached; 1: a quick look whose verdict covers the test images' noise only.",
    )
    max_seeds: Annotated[int, Number(integer=True, ge=1, le=1_000)] = Field(  # as many as repeats allows
        6, description="With repeats auto: the most seeds a variant gets (the budget)."
    )
    data_dir: Annotated[str, Text(), EVERY_STEP] = Field(
        "./data", description="Folder with the raw files (torchvision layout) or where to download them."
    )
    storage: Annotated[str, Text()] = Field(
        "./results",
        description="Where artifacts go: a local path or s3://bucket/prefix (endpoint from AWS_ENDPOINT_URL).",
    )
    storage_block: Annotated[
        str, Text(optional=True, pattern=_STORAGE_BLOCK.pattern, allowed="aws-credentials/NAME or s3-bucket/NAME")
    ] = Field(
        "",
        description="A saved prefect-aws block holding the s3:// store's credentials (and endpoint), aws-credentials/NAME or s3-bucket/NAME, for workers without AWS variables; empty: from the environment (pip install 'cnn-lab[aws]').",
    )
    run: Annotated[str, Text(optional=True)] = Field(
        "", description="Run folder name under the storage's dataset folder; empty: the flow run's start time and name."
    )
    val_size: Annotated[float, Share(max_count=MAX_IMAGES), EVERY_STEP] = Field(
        0.1, description="Validation share in (0, 1), or a count of images, split from the training set with the seed."
    )
    max_train: Annotated[int, Count(le=MAX_IMAGES), EVERY_STEP] = Field(
        0, description="Use only this many training images (quick runs); 0: all."
    )
    max_test: Annotated[int, Count(le=MAX_IMAGES), EVERY_STEP] = Field(
        0, description="Use only this many test images; 0: all."
    )
    device: Annotated[str, Device()] = Field("auto", description="auto (CUDA when present), cpu, cuda, cuda:N or mps.")
    refresh: Annotated[list[str], Refresh()] = Field(
        [], description="Re-run cached steps: true for all, or some of lr, train, evaluate, features."
    )
    parallel: Annotated[int | str, AutoOrCount(le=256)] = Field(  # 256 workers: the most cores of one machine today
        "auto",
        description="Variants trained at once, each in its own process with the CPU cores split between them (on one GPU: sharing it); 1: one after another in this process; auto: by cores, memory and the comparison's size (cnn/parallel.py).",
    )
    task_runner: Annotated[str, TaskRunner()] = Field(
        "",
        description="Where the variants run: empty for this machine (see parallel); dask for a local Dask cluster of parallel worker processes; dask://host:8786 for an existing Dask cluster (pip install 'cnn-lab[dask]').",
    )
    train_deployment: Annotated[
        str, Text(optional=True, pattern=_DEPLOYMENT.pattern, allowed="flow-name/deployment-name")
    ] = Field(
        "",
        description="Run each variant as a flow run of this deployment (e.g. train-variant/train-variant-gpu) on its work pool; empty: in this process.",
    )
    subdir: Annotated[str, Text(optional=True)] = Field(
        "", description="Sub-folder under the variant's folder (repeats use seed-N); empty: none."
    )
    repeat: Annotated[int, Number(integer=True, ge=0, le=1_000)] = Field(  # as many as repeats allows
        0,
        description="Which of a comparison's seeds a one-variant run trains: seed + repeat (the split of the data always follows seed).",
    )
    lr_min: Annotated[float, Number(gt=0, le=LR_MAX), Affects("lr")] = Field(
        1e-5, description="Lower bound of the LR range test."
    )
    lr_max: Annotated[float, Number(gt=0, le=LR_MAX), Affects("lr")] = Field(
        1.0, description="Upper bound of the LR range test; above lr_min."
    )
    # fastai's rule by default: steepest descent's suggestion can leave a variant at chance where min-loss/10 trains it
    # (docs/recipe.md, "Where the constants come from"); steepest is still reported
    lr_rule: Annotated[str, Choice(LR_RULES, "rule"), Affects("lr")] = Field(
        "min_loss_div10",
        description="How the LR range test picks the rate: min_loss_div10 (fastai: minimum loss / 10) or steepest (steepest descent); both are reported.",
    )

    @model_validator(mode="after")
    def _lr_bounds(self) -> RunParams:
        if self.lr_max <= self.lr_min:
            raise fail(
                f"must be greater than lr_min={self.lr_min!r}, got {self.lr_max!r}",
                f"a number in ({self.lr_min}, {LR_MAX:g}]",
            )
        return self

    def result_fields(self, step: str) -> dict[str, Any]:
        """The fields whose values can change `step`'s result, by name (what its cache key hashes)."""
        return {name: getattr(self, name) for name in fields_affecting(step)}

    def compared(self) -> list[str]:
        """The variants a comparison runs: `variants`, then the names from `variant_files` not already listed."""
        return [*self.variants, *(name for name in self.variant_files if name not in self.variants)]


def fields_affecting(step: str) -> list[str]:
    """Names of the run parameters marked as changing `step`'s result (see Affects)."""
    if step not in STEPS:
        raise ValueError(f"unknown step {step!r}; known: {STEPS}")
    return [
        name
        for name, info in RunParams.model_fields.items()
        if any(isinstance(m, Affects) and step in m.steps for m in info.metadata)
    ]


def recorded_fields() -> list[str]:
    """The run parameters a comparison records and a retrain inherits (cnn/comparisons.py): every one that can change a
    result (Affects), and the seeds' settings, less the dataset (the comparison's own address)."""
    changing = {name for step in STEPS for name in fields_affecting(step)}
    seeds = ("repeats", "max_seeds")  # a retrain republishes the table with the comparison's seeds and verdict
    return [name for name in RunParams.model_fields if (name in changing or name in seeds) and name != "dataset"]


def check_of(name: str) -> Check:
    """The check of run parameter `name`: its type, bounds and the words of its errors (the form's schema too)."""
    return next(m for m in RunParams.model_fields[name].metadata if isinstance(m, Check))


def seed_list() -> NumberList:
    """A list of seeds as the benchmarks take it: each a valid `seed`, at most as many as `repeats` allows."""
    seed = check_of("seed")
    assert isinstance(seed, Number)
    return NumberList(seed, max_items=int(check_of("repeats").upper() or 1))


def count_option(name: str, low: int = 1) -> Callable[[str], int]:
    """An argparse type for a benchmark's count that means what run parameter `name` means: an integer from `low` to
    that parameter's upper bound."""
    return option_type(Number(integer=True, ge=low, le=check_of(name).upper()))


def default_of(name: str) -> Any:
    """The default of run parameter `name` (the only place defaults are written down); a copy, so callers may change it."""
    return copy.deepcopy(RunParams.model_fields[name].default)


def parse_params(values: Mapping[str, Any]) -> RunParams:
    """RunParams from `values`; the first bad one raises ConfigError naming the field, the value and what is allowed."""
    try:
        return RunParams.model_validate(dict(values))
    except ValidationError as err:
        raise config_error(err) from None


def config_error(err: ValidationError) -> ConfigError:
    """The first error of `err` as a one-line ConfigError (others counted at the end)."""
    errors = err.errors()
    first = errors[0]
    field = str(first["loc"][0]) if first["loc"] else "lr_max"  # the one cross-field check
    ctx = first.get("ctx") or {}
    if first["type"] == "cnn_lab":
        message, allowed = ctx["message"], ctx["allowed"]
    elif first["type"] == "extra_forbidden":
        message, allowed = (
            f"unknown parameter{did_you_mean(field, RunParams.model_fields)}",
            list(RunParams.model_fields),
        )
    else:
        message, allowed = f"{first['msg']}, got {first.get('input')!r}", None
    error = ConfigError(field, message, allowed=allowed)
    others = sorted({str(e["loc"][0]) for e in errors[1:] if e["loc"]} - {field})
    if others:
        error.args = (f"{error}; also bad: {', '.join(others)}",)
    return error
