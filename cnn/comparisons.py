"""A comparison as the store keeps it: its definition (variants, settings) and each variant's rows, read back through a
schema. What the store holds is untrusted: every record's types, ranges, names and folders are checked before use, and
nothing in it names code (plug-in variants are listed by name only; the user names their plug-ins again).

    <dataset>/comparisons/<name>/comparison.json   the definition, written by each comparison run
    <dataset>/comparisons/<name>/<variant>.json    the variant's rows of its last run (a comparison or a retrain), one
                                                   atomic write each: publishers of different variants lose no rows
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from cnn.errors import ConfigError, StorageError
from cnn.params import RunParams, parse_params, recorded_fields
from cnn.report.rows import RunRow, is_ok
from cnn.checks import SAFE_NAME
from cnn.storage import Storage, safe_name

COMPARISONS = "comparisons"  # <dataset>/comparisons/: a reserved run name (cnn.storage.RESERVED_NAMES)
DEFINITION = "comparison.json"
SCHEMA_VERSION = 1


def _safe(value: str, what: str) -> str:
    if not isinstance(value, str) or not SAFE_NAME.match(value) or ".." in value:
        raise ValueError(f"{what} {value!r} is not a safe name")
    return value


class Definition(BaseModel):
    """A comparison's definition: the variants it compares and the settings they are trained with."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = SCHEMA_VERSION
    name: str
    dataset: str
    run: str  # the run folder of the comparison run that wrote it
    published_at: str
    variants: list[str] = Field(min_length=1, max_length=1000)
    settings: dict[str, Any]  # values of recorded_fields(), checked as run parameters
    plugin_variants: list[str] = []  # variants a plug-in defines: a retrain needs the user to name the plug-in again

    @field_validator("name", "dataset", "run")
    @classmethod
    def _names(cls, value: str, info: ValidationInfo) -> str:
        return _safe(value, str(info.field_name))

    @field_validator("variants", "plugin_variants")
    @classmethod
    def _variant_names(cls, value: list[str]) -> list[str]:
        return [_safe(v, "variant") for v in value]

    @field_validator("settings")
    @classmethod
    def _settings(cls, value: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(value) - set(recorded_fields()))
        if unknown:
            raise ValueError(f"unknown settings {unknown}")
        try:
            parse_params(value)
        except ConfigError as err:
            raise ValueError(str(err)) from None
        return value


class VariantRows(BaseModel):
    """One variant's rows in a comparison, from its last run; every row is a checked RunRow whose folder is in the store."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = SCHEMA_VERSION
    comparison: str
    variant: str
    run: str
    published_at: str
    rows: list[dict[str, Any]] = Field(min_length=1, max_length=10_000)

    @field_validator("comparison", "variant", "run")
    @classmethod
    def _names(cls, value: str, info: ValidationInfo) -> str:
        return _safe(value, str(info.field_name))

    @field_validator("rows")
    @classmethod
    def _rows(cls, value: list[dict[str, Any]], info: ValidationInfo) -> list[dict[str, Any]]:
        root = (info.context or {}).get("root")
        rows = [RunRow.from_dict(row).to_dict() for row in value]
        for row in rows:
            if row["folder"] is not None and root is not None:
                check_folder(row["folder"], root)
        return rows

    @model_validator(mode="after")
    def _one_variant(self) -> VariantRows:
        others = sorted({r["variant"] for r in self.rows} - {self.variant})
        if others:
            raise ValueError(f"rows of other variants {others}")
        return self


def check_folder(folder: str, root: str) -> str:
    """`folder` if it lies inside the store at `root` (every part a safe name, no '..'); else ValueError."""
    base = root.rstrip("/") + "/"
    if not folder.startswith(base):
        raise ValueError(f"folder {folder!r} is outside the store {root!r}")
    for part in folder[len(base) :].split("/"):
        _safe(part, "folder part")
    return folder


def comparison_dir(dataset: str, name: str) -> str:
    """<dataset>/comparisons/<name>: where a comparison's records live."""
    return f"{safe_name(dataset, 'dataset')}/{COMPARISONS}/{safe_name(name, 'comparison')}"


def now() -> str:
    """The publication time, ISO 8601 in UTC."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def _read(store: Storage, rel: str, model: type[BaseModel], wrap: str | None = None) -> Any:
    """The record at `rel` checked against `model` (as its field `wrap`, when given); a StorageError naming the file
    and the first problem otherwise."""
    url = store.path(rel)
    try:
        data = json.loads(store.read_bytes(rel).decode("utf-8"))
    except UnicodeDecodeError:
        raise StorageError(f"storage: {url} is not UTF-8 text; move it aside (or restore it) and rerun") from None
    except json.JSONDecodeError as err:
        raise StorageError(
            f"storage: {url} is not valid JSON ({err.msg} at line {err.lineno} column {err.colno}; truncated?); move it aside (or restore it) and rerun"
        ) from None
    except RecursionError:
        raise StorageError(f"storage: {url} is nested too deeply to be a record; move it aside and rerun") from None
    try:
        return model.model_validate({wrap: data} if wrap else data, context={"root": store.url})
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "the record"
        raise StorageError(
            f"storage: {url} is not a cnn-lab {model.__name__} record ({where}: {first['msg']}); move it aside and rerun"
        ) from None


def read_definition(store: Storage, dataset: str, name: str) -> Definition | None:
    """The comparison's checked definition, or None when the store has none."""
    rel = f"{comparison_dir(dataset, name)}/{DEFINITION}"
    if not store.exists(rel):
        return None
    definition: Definition = _read(store, rel, Definition)
    if (definition.name, definition.dataset) != (name, dataset):
        raise StorageError(
            f"storage: {store.path(rel)} is not a cnn-lab Definition record (name: it defines {definition.name!r} on {definition.dataset!r}, not {name!r} on {dataset!r}); move it aside and rerun"
        )
    return definition


def read_variant_rows(store: Storage, dataset: str, name: str, variant: str) -> VariantRows | None:
    """The variant's checked rows in the comparison, or None when it has none (it never finished there)."""
    rel = f"{comparison_dir(dataset, name)}/{safe_name(variant, 'variant')}.json"
    if not store.exists(rel):
        return None
    record: VariantRows = _read(store, rel, VariantRows)
    if (record.variant, record.comparison) != (variant, name):
        raise StorageError(
            f"storage: {store.path(rel)} is not a cnn-lab VariantRows record (variant: it holds {record.variant!r} of comparison {record.comparison!r}, not {variant!r} of {name!r}); move it aside and rerun"
        )
    return record


def read_rows(store: Storage, definition: Definition) -> dict[str, VariantRows]:
    """Every variant's checked rows in the comparison (variants that never finished there are left out)."""
    found = {v: read_variant_rows(store, definition.dataset, definition.name, v) for v in definition.variants}
    return {v: record for v, record in found.items() if record is not None}


@dataclass(frozen=True)
class Comparison:
    """A comparison as read from the store: its definition and the rows each of its variants last published."""

    definition: Definition
    rows: dict[str, VariantRows]

    def table_rows(self, fresh: Sequence[Mapping[str, Any]] = ()) -> list[dict[str, Any]]:
        """Every row of the comparison's variants, in its variants' order, `fresh` rows replacing their variants'."""
        replaced = {str(r["variant"]) for r in fresh}
        kept = [r for v in self.definition.variants if v not in replaced and v in self.rows for r in self.rows[v].rows]
        return [*kept, *(dict(r) for r in fresh)]


def read_comparison(store: Storage, dataset: str, name: str) -> Comparison | None:
    """The comparison's checked definition and rows, or None when the store has none."""
    definition = read_definition(store, dataset, name)
    return None if definition is None else Comparison(definition, read_rows(store, definition))


class _StoredRow(BaseModel):
    """A row.json as a training run stores it: a RunRow whose folder is in the store."""

    row: dict[str, Any]

    @field_validator("row")
    @classmethod
    def _row(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        row = RunRow.from_dict(value).to_dict()
        if row["folder"] is not None:
            check_folder(row["folder"], (info.context or {})["root"])
        return row


def read_row(store: Storage, rel: str) -> dict[str, Any]:
    """The checked row at `rel` (a StorageError naming the file when it is not one)."""
    return _read(store, rel, _StoredRow, wrap="row").row


def list_comparisons(store: Storage, dataset: str) -> list[str]:
    """Names of the comparisons the store has for `dataset`."""
    return [n for n in store.list(f"{safe_name(dataset, 'dataset')}/{COMPARISONS}") if SAFE_NAME.match(n)]


def record_definition(store: Storage, config: RunParams, plugin_variants: Sequence[str] = ()) -> Definition:
    """Write the comparison's definition from the run's config (its variants and recorded settings)."""
    definition = Definition(
        name=config.comparison,
        dataset=config.dataset,
        run=config.run,
        published_at=now(),
        variants=list(config.variants),
        settings=config.model_dump(include=set(recorded_fields())),
        plugin_variants=[v for v in plugin_variants if v in config.variants],
    )
    store.write_json(f"{comparison_dir(config.dataset, config.comparison)}/{DEFINITION}", definition.model_dump())
    return definition


def record_rows(store: Storage, config: RunParams, rows: Sequence[Mapping[str, Any]]) -> list[VariantRows]:
    """Write each variant's rows of this run, for the variants with a finished row (a variant whose every seed failed
    keeps its earlier rows); returns the records written."""
    by_variant: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_variant.setdefault(str(row["variant"]), []).append(RunRow.from_dict(row).to_dict())
    written = []
    for variant, group in by_variant.items():
        if not any(is_ok(r) for r in group):
            continue
        record = VariantRows(
            comparison=config.comparison, variant=variant, run=config.run, published_at=now(), rows=group
        )
        store.write_json(f"{comparison_dir(config.dataset, config.comparison)}/{variant}.json", record.model_dump())
        written.append(record)
    return written
