"""Annotated markers for pydantic fields: a check whose error names the bad value and the allowed values in one line,
and the JSON schema a Prefect form shows for the field (bounds, select boxes, no const or None-typed fields).

Every numeric marker has an upper bound (`Check.upper`), declared where the field is (cnn/params.py), so that a typo's
extra zeros are refused before anything loads; tests/test_params.py fails for a numeric field without one."""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic_core import PydanticCustomError, core_schema

from cnn.errors import did_you_mean


# A name that becomes a path segment or key in the store: a run, a variant, a dataset, a comparison
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
SAFE_NAME_ALLOWED = "letters, digits, '.', '_', '-' (1-100 chars, starting with a letter or digit, no '..')"


def fail(message: str, allowed: object = None) -> PydanticCustomError:
    """A validation error whose text is ours: the message and the allowed values (the field comes from its location)."""
    shown = None if allowed is None else (allowed if isinstance(allowed, str) else ", ".join(str(a) for a in allowed))
    text = message + (f" (allowed: {shown})" if shown is not None else "")
    return PydanticCustomError("cnn_lab", "{text}", {"text": text, "message": message, "allowed": shown})


class Check:
    """An Annotated marker: a before-validator with a one-line message, and the JSON schema the Prefect form shows."""

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_before_validator_function(self.check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> dict[str, Any]:
        return self.json_schema(handler(schema))

    def check(self, value: Any) -> Any:
        """The normalised value, or a PydanticCustomError."""
        raise NotImplementedError

    def json_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        """The form's schema for this field."""
        return schema

    def upper(self) -> float | None:
        """The largest value allowed, for a numeric check (None: not numeric, or unbounded)."""
        return None


@dataclass(frozen=True)
class Number(Check):
    """A finite number (an integer when `integer`) within the bounds; strings such as '1e-5' are parsed."""

    integer: bool = False
    ge: float | None = None
    gt: float | None = None
    lt: float | None = None
    le: float | None = None

    def allowed(self) -> str:
        """The range in words, e.g. 'an integer >= 1' or 'a number in [0, 1)'."""
        kind = "an integer" if self.integer else "a finite number"
        low = (
            None
            if self.ge is None and self.gt is None
            else ("[" if self.ge is not None else "(", self.ge if self.ge is not None else self.gt)
        )
        high = (
            None
            if self.le is None and self.lt is None
            else ("]" if self.le is not None else ")", self.le if self.le is not None else self.lt)
        )
        if low and high:
            return f"{kind} in {low[0]}{_num(low[1])}, {_num(high[1])}{high[0]}"
        if low:
            return f"{kind} {'>=' if low[0] == '[' else '>'} {_num(low[1])}"
        if high:
            return f"{kind} {'<=' if high[0] == ']' else '<'} {_num(high[1])}"
        return kind

    def within(self, value: int | float) -> bool:
        """Whether `value` is within the bounds."""
        low_ok = (self.ge is None or value >= self.ge) and (self.gt is None or value > self.gt)
        return low_ok and (self.le is None or value <= self.le) and (self.lt is None or value < self.lt)

    def upper(self) -> float | None:
        """The upper bound (inclusive or not)."""
        return self.le if self.le is not None else self.lt

    def check(self, value: Any) -> int | float:
        """Parse and range-check `value`."""
        parsed = parse_number(value, self.integer)
        if parsed is None or not self.within(parsed):
            raise fail(f"must be {self.allowed()}, got {value!r}", self.allowed())
        return parsed

    def json_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        """Bounds as minimum/maximum (exclusive where open)."""
        bounds = {"minimum": self.ge, "exclusiveMinimum": self.gt, "maximum": self.le, "exclusiveMaximum": self.lt}
        return {**schema, **{k: v for k, v in bounds.items() if v is not None}}


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else repr(value)


def parse_number(value: Any, integer: bool) -> int | float | None:
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
    """An optional count in [0, le]: 0 (or empty) means all."""

    integer: bool = True
    ge: float | None = 0

    def check(self, value: Any) -> int | float:
        """None and '' become 0 (all)."""
        return 0 if value is None or value == "" else super().check(value)


@dataclass(frozen=True)
class Share(Check):
    """A share in (0, 1) or a whole count in [1, max_count] (the data bound the count further when the run starts)."""

    max_count: int

    def check(self, value: Any) -> float | int:
        """A float below 1, or an int."""
        allowed = f"a share in (0, 1) or a whole count in [1, {self.max_count}]"
        parsed = parse_number(value, integer=False)
        if parsed is None or parsed <= 0 or (parsed >= 1 and not float(parsed).is_integer()) or parsed > self.max_count:
            raise fail(f"must be {allowed}, got {value!r}", allowed)
        return parsed if parsed < 1 else int(parsed)

    def json_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        """A number > 0, at most the largest count."""
        return {**schema, "exclusiveMinimum": 0, "maximum": self.max_count}

    def upper(self) -> float | None:
        """The largest count."""
        return self.max_count


@dataclass(frozen=True)
class Choice(Check):
    """One of a fixed set of names; a near miss gets a suggestion."""

    choices: tuple[str, ...]
    noun: str

    def check(self, value: Any) -> str:
        """The value, if it is one of the choices."""
        if value not in self.choices:
            raise fail(f"unknown {self.noun} {value!r}{did_you_mean(value, self.choices)}", self.choices)
        return value

    def json_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        """A select box."""
        return {"type": "string", "enum": list(self.choices)}


AUTO = "auto"


class AutoOr(Check):
    """'auto' (a rule picks the value when the run starts) or a number within the bounds of `number()`."""

    def number(self) -> Number:
        """The check of a value that is not 'auto'."""
        raise NotImplementedError

    def upper(self) -> float | None:
        """The number's upper bound."""
        return self.number().upper()

    def check(self, value: Any) -> int | float | str:
        """'auto' or the checked number."""
        if isinstance(value, str) and value.strip().lower() == AUTO:
            return AUTO
        number = self.number()
        allowed = f"'{AUTO}' or {number.allowed()}"
        parsed = parse_number(value, number.integer)
        if parsed is None or not number.within(parsed):
            raise fail(f"must be {allowed}, got {value!r}", allowed)
        return int(parsed) if number.integer else float(parsed)

    def json_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        """Two kinds the form switches between: a number with its bounds, or the word auto (a select, not a dead const
        field)."""
        number = self.number()
        shown = number.json_schema({"type": "integer" if number.integer else "number"})
        return {"anyOf": [{**shown, "title": "number"}, {"type": "string", "enum": [AUTO], "title": AUTO}]}


@dataclass(frozen=True)
class LearningRate(AutoOr):
    """'auto' (the LR range test) or a finite number in (0, le]."""

    le: float

    def number(self) -> Number:
        """A number in (0, le]."""
        return Number(gt=0, le=self.le)


@dataclass(frozen=True)
class AutoOrCount(AutoOr):
    """'auto' (a rule of the data picks the value, cnn/recipe.py) or an integer in [1, le]."""

    le: int

    def number(self) -> Number:
        """An integer in [1, le]."""
        return Number(integer=True, ge=1, le=self.le)


@dataclass(frozen=True)
class Text(Check):
    """A string; `optional`: None and '' mean "not set" (stored as ''); `pattern`: what a set value must match."""

    optional: bool = False
    pattern: str | None = None
    allowed: str = "a non-empty string"

    def check(self, value: Any) -> str:
        """The string."""
        if value is None and self.optional:
            return ""
        if not isinstance(value, str) or (not value.strip() and not self.optional):
            raise fail(f"must be {self.allowed}, got {value!r}", self.allowed)
        if value and self.pattern and not re.fullmatch(self.pattern, value):
            raise fail(f"{value!r} is not {self.allowed}", self.allowed)
        return value

    def json_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        """A string (empty allowed when optional)."""
        return {"type": "string"} if self.optional else {"type": "string", "minLength": 1}


@dataclass(frozen=True)
class NumberList(Check):
    """A comma-separated list (or a list) of 1 to `max_items` numbers, each within the bounds of `item`."""

    item: Number
    max_items: int

    def check(self, value: Any) -> list[int | float]:
        """The numbers, in order."""
        items = as_list(value)
        allowed = f"a comma-separated list of 1 to {self.max_items} values, each {self.item.allowed()}"
        if not isinstance(items, list) or not items or len(items) > self.max_items:
            count = f"{len(items)} values" if isinstance(items, list) else repr(value)
            raise fail(f"must be {allowed}, got {count}", allowed)
        numbers = []
        for item in items:
            parsed = parse_number(item, self.item.integer)
            if parsed is None or not self.item.within(parsed):
                raise fail(f"{item!r} is not {self.item.allowed()}", allowed)
            numbers.append(parsed)
        return numbers


def option_type(check: Check) -> Callable[[str], Any]:
    """An argparse `type` that checks an option's text with `check`: a bad value is argparse's one-line error."""

    def parse(text: str) -> Any:
        try:
            return check.check(text)
        except PydanticCustomError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    return parse


def as_list(value: Any) -> Any:
    """A comma-separated string as a list of its non-empty parts; anything else unchanged."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return list(value) if isinstance(value, tuple) else value
