"""The per-run row: one typed definition of what a (variant, seed) run reports, built from the steps' outputs.

Rows travel and are stored as plain dicts (`RunRow.to_dict()`: task results, row.json, <dataset>/latest/<variant>.json);
`RunRow.from_dict` reads any of them back, rows written by earlier versions included.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cnn import recipe
from cnn.report.metrics import METRICS

Row = Mapping[str, Any]


@dataclass
class RunRow:
    """One (variant, seed) run; a failed run keeps its error and folder, every number None."""

    variant: str
    seed: int
    status: str = "ok"  # "ok" or "failed"
    error: str | None = None
    learned: bool | None = None  # test accuracy clearly above chance (None: not known, counts as learned)
    params: int | None = None
    lr: float | None = None
    lr_rule: str | None = None
    lr_flag: str | None = None
    optimizer: str | None = None
    schedule: str | None = None
    batch_size: int | None = None
    epochs: int | None = None
    best_val_acc: float | None = None
    test_acc: float | None = None
    macro_f1: float | None = None
    train_seconds: float | None = None
    images_per_sec: float | None = None
    per_class_f1: dict[str, float] = field(default_factory=dict)
    confusion: list[list[int]] = field(default_factory=list)
    most_confused: list[dict[str, Any]] = field(default_factory=list)
    folder: str | None = None
    test_set: dict[str, Any] | None = None  # cnn.predictions.TestSet: which test images; only equal ones are paired

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
    return RunRow(variant=variant, seed=seed, status="failed", error=str(error), folder=folder).to_dict()


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
