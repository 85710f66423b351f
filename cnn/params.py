"""Every run parameter in one pydantic model: type, default, bounds and description, checked without torch or prefect.

The flows take these fields as their parameters (flows/parameters.py), the CLI builds its options from them
(flows/cli.py), and a training deployment receives them from `RunParams.model_dump()`. A new parameter is one field
here (and the code that uses it). Names that live in registries (variants, datasets) are checked when a run starts,
after plug-ins are loaded (flows/settings.py), never frozen into a type here.
"""
from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, GetCoreSchemaHandler, GetJsonSchemaHandler, ValidationError, model_validator
from pydantic_core import PydanticCustomError, core_schema

from cnn.errors import ConfigError

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("none", "onecycle", "cosine")
LR_RULES = ("min_loss_div10", "steepest")
REFRESH_STEPS = ("lr", "train", "evaluate", "features")
DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
VARIANT_NAME = re.compile(r"[a-z0-9_]+")
VARIANT_NAME_ALLOWED = "lowercase letters, digits and _"
_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
_DEPLOYMENT = re.compile(r"[^/\s]+/[^/\s]+")


def _fail(message: str, allowed: object = None) -> PydanticCustomError:
    """A validation error whose text is ours: the message and the allowed values (the field comes from its location)."""
    shown = None if allowed is None else (allowed if isinstance(allowed, str) else ", ".join(str(a) for a in allowed))
    text = message + (f" (allowed: {shown})" if shown is not None else "")
    return PydanticCustomError("cnn_lab", "{text}", {"text": text, "message": message, "allowed": shown})


def _did_you_mean(value: object, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(value).lower(), [str(c) for c in choices], n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else ""


class _Check:
    """An Annotated marker: a before-validator with a one-line message, and the JSON schema the Prefect form shows."""

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_before_validator_function(self.check, handler(source))

    def __get_pydantic_json_schema__(self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler) -> dict[str, Any]:
        return self.json_schema(handler(schema))

    def check(self, value: Any) -> Any:
        """The normalised value, or a PydanticCustomError."""
        raise NotImplementedError

    def json_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        """The form's schema for this field."""
        return schema


@dataclass(frozen=True)
class Number(_Check):
    """A finite number (an integer when `integer`) within the bounds; strings such as '1e-5' are parsed."""

    integer: bool = False
    ge: float | None = None
    gt: float | None = None
    lt: float | None = None
    le: float | None = None

    def allowed(self) -> str:
        """The range in words, e.g. 'an integer >= 1' or 'a number in [0, 1)'."""
        kind = "an integer" if self.integer else "a finite number"
        low = None if self.ge is None and self.gt is None else ("[" if self.ge is not None else "(", self.ge if self.ge is not None else self.gt)
        high = None if self.le is None and self.lt is None else ("]" if self.le is not None else ")", self.le if self.le is not None else self.lt)
        if low and high:
            return f"{kind} in {low[0]}{_num(low[1])}, {_num(high[1])}{high[0]}"
        if low:
            return f"{kind} {'>=' if low[0] == '[' else '>'} {_num(low[1])}"
        if high:
            return f"{kind} {'<=' if high[0] == ']' else '<'} {_num(high[1])}"
        return kind

    def check(self, value: Any) -> int | float:
        """Parse and range-check `value`."""
        parsed = _parse_number(value, self.integer)
        if parsed is None:
            raise _fail(f"must be {self.allowed()}, got {value!r}", self.allowed())
        low_ok = (self.ge is None or parsed >= self.ge) and (self.gt is None or parsed > self.gt)
        high_ok = (self.le is None or parsed <= self.le) and (self.lt is None or parsed < self.lt)
        if not (low_ok and high_ok):
            raise _fail(f"must be {self.allowed()}, got {value!r}", self.allowed())
        return parsed

    def json_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        """Bounds as minimum/maximum (exclusive where open)."""
        bounds = {"minimum": self.ge, "exclusiveMinimum": self.gt, "maximum": self.le, "exclusiveMaximum": self.lt}
        return {**schema, **{k: v for k, v in bounds.items() if v is not None}}


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else repr(value)


def _parse_number(value: Any, integer: bool) -> int | float | None:
    """`value` as a finite int or float, or None when it is not one (bools, NaN, infinity, '5.5' for an integer)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        text = value.strip()
        try:
            value = int(text) if re.fullmatch(r"[+-]?\d+", text) else float(text)
        except ValueError:
            return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        if integer:
            return int(value) if value.is_integer() else None
        return value
    return None


@dataclass(frozen=True)
class Count(Number):
    """An optional count: 0 (or empty) means all."""

    integer: bool = True
    ge: float | None = 0

    def check(self, value: Any) -> int | float:
        """None and '' become 0 (all)."""
        return 0 if value is None or value == "" else super().check(value)


@dataclass(frozen=True)
class Share(_Check):
    """A share in (0, 1) or a whole count >= 1 (the count's upper bound depends on the data)."""

    def check(self, value: Any) -> float | int:
        """A float below 1, or an int."""
        allowed = "a share in (0, 1) or a whole count >= 1"
        parsed = _parse_number(value, integer=False)
        if parsed is None or parsed <= 0 or (parsed >= 1 and not float(parsed).is_integer()):
            raise _fail(f"must be {allowed}, got {value!r}", allowed)
        return parsed if parsed < 1 else int(parsed)

    def json_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        """A number > 0."""
        return {**schema, "exclusiveMinimum": 0}


@dataclass(frozen=True)
class Choice(_Check):
    """One of a fixed set of names; a near miss gets a suggestion."""

    choices: tuple[str, ...]
    noun: str

    def check(self, value: Any) -> str:
        """The value, if it is one of the choices."""
        if value not in self.choices:
            raise _fail(f"unknown {self.noun} {value!r}{_did_you_mean(value, self.choices)}", self.choices)
        return value

    def json_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        """A select box."""
        return {"type": "string", "enum": list(self.choices)}


@dataclass(frozen=True)
class Device(_Check):
    """auto, cpu, cuda, cuda:N or mps (whether CUDA is there is checked when the run starts)."""

    def check(self, value: Any) -> str:
        """The device name, if it is one torch understands."""
        if not isinstance(value, str) or not _DEVICE.fullmatch(value):
            raise _fail(f"unknown device {value!r}{_did_you_mean(value, ('auto', 'cpu', 'cuda', 'mps'))}", DEVICES)
        return value

    def json_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        """A string with the pattern."""
        return {"type": "string", "pattern": f"^({_DEVICE.pattern})$"}


@dataclass(frozen=True)
class LearningRate(_Check):
    """'auto' (the LR range test) or a positive finite number."""

    def check(self, value: Any) -> float | str:
        """'auto' or a float > 0."""
        if isinstance(value, str) and value.strip().lower() == "auto":
            return "auto"
        parsed = _parse_number(value, integer=False)
        if parsed is None or parsed <= 0:
            raise _fail(f"must be 'auto' or a positive number, got {value!r}", "'auto' or a finite number > 0")
        return float(parsed)

    def json_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        """Two kinds the form switches between: a number, or the word auto (a select, not a dead const field)."""
        return {"anyOf": [{"type": "number", "exclusiveMinimum": 0, "title": "number"}, {"type": "string", "enum": ["auto"], "title": "auto"}]}


@dataclass(frozen=True)
class Text(_Check):
    """A string; `optional`: None and '' mean "not set" (stored as ''); `pattern`: what a set value must match."""

    optional: bool = False
    pattern: str | None = None
    allowed: str = "a non-empty string"

    def check(self, value: Any) -> str:
        """The string."""
        if value is None and self.optional:
            return ""
        if not isinstance(value, str) or (not value.strip() and not self.optional):
            raise _fail(f"must be {self.allowed}, got {value!r}", self.allowed)
        if value and self.pattern and not re.fullmatch(self.pattern, value):
            raise _fail(f"{value!r} is not {self.allowed}", self.allowed)
        return value

    def json_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        """A string (empty allowed when optional)."""
        return {"type": "string"} if self.optional else {"type": "string", "minLength": 1}


def _as_list(value: Any) -> Any:
    """A comma-separated string as a list of its non-empty parts; anything else unchanged."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return list(value) if isinstance(value, tuple) else value


@dataclass(frozen=True)
class VariantNames(_Check):
    """A non-empty list of variant names without duplicates (a comma-separated string is split)."""

    def check(self, value: Any) -> list[str]:
        """The names, in order."""
        names = _as_list(value)
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise _fail(f"must be a list of variant names, got {value!r}", "a list such as ['lenet1', 'cnn2_5']")
        if not names:
            raise _fail("the list is empty", "one or more variant names (see `cnn-lab variants`)")
        for name in names:
            _check_variant_name(name)
        if len(set(names)) != len(names):
            raise _fail(f"duplicates in {names}", "each variant once")
        return names

    def json_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        """An array of names."""
        return {"type": "array", "items": {"type": "string", "pattern": f"^{VARIANT_NAME.pattern}$"}, "minItems": 1, "uniqueItems": True}


def _check_variant_name(name: str) -> None:
    if not VARIANT_NAME.fullmatch(name):
        hint = f"; did you mean {name.lower()!r}?" if VARIANT_NAME.fullmatch(name.lower()) else ""
        raise _fail(f"{name!r} is not a variant name{hint}", VARIANT_NAME_ALLOWED)


@dataclass(frozen=True)
class VariantName(_Check):
    """One variant name."""

    def check(self, value: Any) -> str:
        """The name."""
        if not isinstance(value, str):
            raise _fail(f"must be a variant name, got {value!r}", VARIANT_NAME_ALLOWED)
        _check_variant_name(value)
        return value

    def json_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        """A string with the name pattern."""
        return {"type": "string", "pattern": f"^{VARIANT_NAME.pattern}$"}


@dataclass(frozen=True)
class ModuleList(_Check):
    """Importable module names or .py file paths (a comma-separated string is split)."""

    def check(self, value: Any) -> list[str]:
        """The entries, in order."""
        items = [] if value is None else _as_list(value)
        if not isinstance(items, list) or not all(isinstance(i, str) and i.strip() for i in items):
            raise _fail(f"must be a list of module names or .py paths, got {value!r}", "e.g. ['my_nets'] or ['path/to/my_nets.py']")
        return [i.strip() for i in items]

    def json_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        """An array of strings."""
        return {"type": "array", "items": {"type": "string", "minLength": 1}}


@dataclass(frozen=True)
class VariantFiles(_Check):
    """Variant name -> GenericCNN JSON file (or the JSON text itself); 'name=path' strings are split."""

    def check(self, value: Any) -> dict[str, str]:
        """The mapping."""
        if value is None:
            return {}
        items = _as_list(value) if isinstance(value, str) else value
        if isinstance(items, list):
            pairs = [str(i).split("=", 1) for i in items]
            if not all(len(p) == 2 for p in pairs):
                raise _fail(f"must be name=path entries, got {value!r}", "name=path/to/config.json")
            items = {name.strip(): path.strip() for name, path in pairs}
        if not isinstance(items, Mapping):
            raise _fail(f"must map variant names to JSON files, got {value!r}", "{'mine': 'path/to/config.json'}")
        for name, source in items.items():
            _check_variant_name(str(name))
            if not isinstance(source, str) or not source.strip():
                raise _fail(f"variant {name!r} needs a JSON file path or JSON text, got {source!r}", "name=path/to/config.json")
        return dict(items)

    def json_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        """An object of strings."""
        return {"type": "object", "additionalProperties": {"type": "string", "minLength": 1}}


@dataclass(frozen=True)
class Refresh(_Check):
    """true (every step), false (none), or step names."""

    def check(self, value: Any) -> list[str]:
        """The steps to refresh."""
        if value is True or (isinstance(value, str) and value.strip().lower() in ("true", "all")):
            return list(REFRESH_STEPS)
        if value is False or value is None or (isinstance(value, str) and value.strip().lower() in ("false", "none", "")):
            return []
        steps = _as_list(value)
        if not isinstance(steps, list):
            raise _fail(f"must be true, false or a list of steps, got {value!r}", REFRESH_STEPS)
        unknown = [s for s in steps if s not in REFRESH_STEPS]
        if unknown:
            raise _fail(f"unknown step(s) {unknown}{_did_you_mean(unknown[0], REFRESH_STEPS)}", REFRESH_STEPS)
        return steps

    def json_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        """A switch for all/none, or a multi-select of steps."""
        return {"anyOf": [{"type": "boolean", "title": "all or none"}, {"type": "array", "items": {"type": "string", "enum": list(REFRESH_STEPS)}, "title": "steps"}]}


@dataclass(frozen=True)
class Flag(_Check):
    """true or false ('true'/'false' strings too)."""

    def check(self, value: Any) -> bool:
        """The boolean."""
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        if not isinstance(value, bool):
            raise _fail(f"must be true or false, got {value!r}", "true, false")
        return value


class RunParams(BaseModel):
    """The parameters of a comparison or a one-variant training run; each flow exposes the fields it uses."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    variant: Annotated[str, VariantName()] = Field("cnn2_5", description="Architecture to train (see `cnn-lab variants`).")
    dataset: Annotated[str, Text()] = Field("fashion-mnist", description="fashion-mnist, mnist, kmnist, cifar10, digits, or another torchvision classification set by name.")
    variants: Annotated[list[str], VariantNames()] = Field(["lenet1", "lenet5", "cnn2_5", "generic_1"], description="Architectures to compare (see `cnn-lab variants`); the variants of variant_files are compared too.")
    variant_files: Annotated[dict[str, str], VariantFiles()] = Field({}, description="Your GenericCNN variants: each name mapped to a JSON config file (see examples/generic_small.json) or to the JSON text; the file must exist where the run executes.")
    variant_modules: Annotated[list[str], ModuleList()] = Field([], description="Python modules (importable names or .py file paths) whose @register_variant functions add variants; a worker imports them too.")
    epochs: Annotated[int, Number(integer=True, ge=1)] = Field(5, description="Training epochs per variant.")
    batch_size: Annotated[int, Number(integer=True, ge=1)] = Field(256, description="Images per step; the LR range test runs at this batch size.")
    lr: Annotated[float | str, LearningRate()] = Field("auto", description="auto runs Leslie Smith's LR range test per variant; a number uses that learning rate for all.")
    optimizer: Annotated[str, Choice(OPTIMIZERS, "optimizer")] = Field("sgd", description="sgd (with momentum), adam or adamw.")
    schedule: Annotated[str, Choice(SCHEDULES, "schedule")] = Field("onecycle", description="Per-step LR schedule: onecycle (peak at lr), cosine or none.")
    momentum: Annotated[float, Number(ge=0, lt=1)] = Field(0.9, description="SGD momentum, in [0, 1).")
    weight_decay: Annotated[float, Number(ge=0)] = Field(0.0, description="L2 weight decay (decoupled for adamw), >= 0.")
    seed: Annotated[int, Number(integer=True, ge=0, lt=2**32)] = Field(0, description="First seed; the split, the weights and the batch order follow it.")
    repeats: Annotated[int, Number(integer=True, ge=1)] = Field(1, description="Seeds per variant (seed, seed+1, ...); the table shows mean, std and wins.")
    data_dir: Annotated[str, Text()] = Field("./data", description="Folder with the raw files (torchvision layout) or where to download them.")
    storage: Annotated[str, Text()] = Field("./results", description="Where artifacts go: a local path or s3://bucket/prefix (endpoint from AWS_ENDPOINT_URL).")
    run: Annotated[str, Text(optional=True)] = Field("", description="Run folder name under the storage's dataset folder; empty: the flow run's start time and name.")
    val_size: Annotated[float, Share()] = Field(0.1, description="Validation share in (0, 1), or a count of images, split from the training set with the seed.")
    max_train: Annotated[int, Count()] = Field(0, description="Use only this many training images (quick runs); 0: all.")
    max_test: Annotated[int, Count()] = Field(0, description="Use only this many test images; 0: all.")
    device: Annotated[str, Device()] = Field("auto", description="auto (CUDA when present), cpu, cuda, cuda:N or mps.")
    refresh: Annotated[list[str], Refresh()] = Field([], description="Re-run cached steps: true for all, or some of lr, train, evaluate, features.")
    train_deployment: Annotated[str, Text(optional=True, pattern=_DEPLOYMENT.pattern, allowed="flow-name/deployment-name")] = Field("", description="Run each variant as a flow run of this deployment (e.g. train-variant/train-variant-gpu) on its work pool; empty: in this process.")
    publish: Annotated[bool, Flag()] = Field(False, description="After training, publish a new version of the comparison table with this variant's row replaced.")
    subdir: Annotated[str, Text(optional=True)] = Field("", description="Sub-folder under the variant's folder (repeats use seed-N); empty: none.")
    lr_min: Annotated[float, Number(gt=0)] = Field(1e-5, description="Lower bound of the LR range test.")
    lr_max: Annotated[float, Number(gt=0)] = Field(1.0, description="Upper bound of the LR range test; above lr_min.")
    # fastai's rule: on digits (6 epochs, 2 seeds, 5 variants) steepest descent left lenet5 and generic_1 at chance and
    # lenet1 at 0.46 on one seed, while min-loss/10 trained every variant to 0.84-0.97; steepest is still reported
    lr_rule: Annotated[str, Choice(LR_RULES, "rule")] = Field("min_loss_div10", description="How the LR range test picks the rate: min_loss_div10 (fastai: minimum loss / 10) or steepest (steepest descent); both are reported.")

    @model_validator(mode="after")
    def _lr_bounds(self) -> RunParams:
        if self.lr_max <= self.lr_min:
            raise _fail(f"must be greater than lr_min={self.lr_min!r}, got {self.lr_max!r}", f"a number > {self.lr_min}")
        return self

    def compared(self) -> list[str]:
        """The variants a comparison runs: `variants`, then the names from `variant_files` not already listed."""
        return [*self.variants, *(name for name in self.variant_files if name not in self.variants)]


def default_of(name: str) -> Any:
    """The default of run parameter `name` (the only place defaults are written down)."""
    return RunParams.model_fields[name].default


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
        message, allowed = f"unknown parameter{_did_you_mean(field, RunParams.model_fields)}", list(RunParams.model_fields)
    else:
        message, allowed = f"{first['msg']}, got {first.get('input')!r}", None
    error = ConfigError(field, message, allowed=allowed)
    others = sorted({str(e["loc"][0]) for e in errors[1:] if e["loc"]} - {field})
    if others:
        error.args = (f"{error}; also bad: {', '.join(others)}",)
    return error

