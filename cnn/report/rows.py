"""The per-run row: one typed definition of what a (variant, seed) run reports, built from the steps' outputs.

Rows travel and are stored as plain dicts (`RunRow.to_dict()`: task results, row.json, <dataset>/latest/<variant>.json);
`RunRow.from_dict` reads any of them back, rows written by earlier versions included.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import field
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import ConfigDict, Field, StrictBool, StrictInt
from pydantic.dataclasses import dataclass

from cnn import recipe
from cnn.catalog import VARIANT_NAME
from cnn.params import OPTIMIZERS, SCHEDULES
from cnn.report.metrics import METRICS

Row = Mapping[str, Any]

# Value types of a row, checked whenever a row is built or read back (rows in the store are untrusted data)
Score = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
Amount = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Count = Annotated[StrictInt, Field(ge=0)]
MAX_TEXT = 4000  # characters of any text in a row (an error's first line, how the lr was chosen, a path)
Text = Annotated[str, Field(max_length=MAX_TEXT)]


@dataclass(config=ConfigDict(strict=False, arbitrary_types_allowed=False))
class RunRow:
    """One (variant, seed) run; a failed run keeps its error and folder, every number None. Its fields are typed and
    bounded: building or reading a row with a wrong type or an impossible value raises pydantic's ValidationError."""

    variant: Annotated[str, Field(pattern=f"^{VARIANT_NAME.pattern}$", max_length=100)]
    seed: Annotated[StrictInt, Field(ge=0, lt=2**32)]
    status: Literal["ok", "failed"] = "ok"
    error: Text | None = None
    learned: StrictBool | None = None  # test accuracy clearly above chance (None: not known, counts as learned)
    params: Count | None = None
    lr: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    lr_rule: Text | None = None
    lr_flag: Text | None = None
    optimizer: Literal[OPTIMIZERS] | None = None  # type: ignore[valid-type]
    schedule: Literal[SCHEDULES] | None = None  # type: ignore[valid-type]
    batch_size: Annotated[StrictInt, Field(ge=1)] | None = None
    epochs: Annotated[StrictInt, Field(ge=1)] | None = None
    best_val_acc: Score | None = None
    test_acc: Score | None = None
    macro_f1: Score | None = None
    train_seconds: Amount | None = None
    images_per_sec: Amount | None = None
    per_class_f1: dict[Text, Score] = field(default_factory=dict)
    confusion: list[list[Count]] = field(default_factory=list)
    most_confused: list[dict[Text, Text | Count]] = field(default_factory=list)
    folder: Text | None = None
    # which test images (cnn.testset.TestSet as a dict): only runs on equal test sets are ever paired
    test_set: dict[Text, Text | Count | None] | None = None

    @classmethod
    def from_dict(cls, data: Row) -> RunRow:
        """A row read back from JSON: keys it does not know are dropped, missing ones take their defaults."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def to_dict(self) -> dict[str, Any]:
        """The row as stored and sent between steps (the same keys earlier versions wrote)."""
        return dataclasses.asdict(self)


def as_rows(rows: Iterable[Row]) -> list[dict[str, Any]]:
    """Rows of any version as complete dicts (every RunRow key present)."""
    return [RunRow.from_dict(r).to_dict() for r in rows]


def make_row(
    variant: str,
    seed: int,
    lr_info: Row | None,
    train_info: Row | None,
    eval_info: Row | None,
    folder: str | None = None,
    *,
    error: str | BaseException | None = None,
) -> dict[str, Any]:
    """One run's row from what find_lr/train_variant/evaluate_variant returned; `error` (or a missing step) makes it failed."""
    train_info, eval_info, lr_info = train_info or {}, eval_info or {}, lr_info or {}
    folder = folder or train_info.get("folder")
    if error is not None or not train_info or not eval_info:
        text = str(error) if error is not None else "missing train or evaluation results"
        if isinstance(error, BaseException):
            text = f"{type(error).__name__}: {error}"
        return failed_row(variant, seed, text, folder)
    config = train_info.get("config", {})
    steps = {"train": train_info, "eval": eval_info}
    lr = config.get("lr", lr_info.get("lr"))
    return RunRow(
        variant=variant,
        seed=seed,
        learned=test_learned(eval_info),
        params=int(train_info.get("params", eval_info.get("params", 0))),
        lr=None if lr is None else float(lr),
        lr_rule="; ".join(n for n in (lr_info.get("rule", "given"), _fallback_note(train_info)) if n),
        lr_flag=lr_info.get("flag"),
        optimizer=config.get("optimizer"),
        schedule=config.get("schedule"),
        batch_size=config.get("batch_size"),
        epochs=int(train_info["epochs"]),
        per_class_f1={str(k): float(v) for k, v in eval_info.get("per_class_f1", {}).items()},
        confusion=[list(map(int, r)) for r in eval_info.get("confusion", [])],
        most_confused=[dict(p) for p in eval_info.get("most_confused", [])],
        folder=folder,
        test_set=dict(eval_info["test_set"]) if isinstance(eval_info.get("test_set"), Mapping) else None,
        **{m.field: float(steps[m.step][m.key]) for m in METRICS},
    ).to_dict()


def failed_row(variant: str, seed: int, error: str, folder: str | None = None) -> dict[str, Any]:
    """A row for a run that raised: status failed, the error text, None for every number."""
    return RunRow(variant=variant, seed=seed, status="failed", error=str(error)[:MAX_TEXT], folder=folder).to_dict()


FALLBACK_NOTE = "fallback: "  # starts the part of a row's LR rule that says why earlier attempts were abandoned


def _fallback_note(train_info: Row) -> str | None:
    """ "fallback: no descent at adam 0.003" when training abandoned attempts, else None."""
    fallbacks = train_info.get("fallbacks") or []
    return f"{FALLBACK_NOTE}{'; '.join(fallbacks)}" if fallbacks else None


def test_learned(eval_info: Row) -> bool:
    """Whether the test accuracy is clearly above chance (the majority class's share of the test split)."""
    confusion = np.asarray(eval_info.get("confusion") or [[0]], dtype=float)
    n = int(confusion.sum())
    chance = float(confusion.sum(axis=1).max() / n) if n else 0.0
    return recipe.learned(float(eval_info.get("accuracy", 0.0)), chance, n)


def learned(row: Row) -> bool:
    """A finished row whose model learned (rows written before this flag existed count as learned)."""
    return row.get("status", "ok") == "ok" and row.get("learned") is not False


def is_ok(row: Row) -> bool:
    """A finished row (rows written before `status` existed count as finished)."""
    return row.get("status", "ok") == "ok"
