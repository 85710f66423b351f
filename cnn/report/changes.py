"""What changed since a comparison's last publication: each variant's runs now against its runs then, on the same test
images, with the paired test the verdict uses (cnn/report/verdict.py): better, worse, unchanged within noise, newly
failing, or not comparable. A drop past the noise, or a variant that learned before and does not now, is a regression."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from cnn.markdown import md_escape
from cnn.predictions import Run
from cnn.report.metrics import HEADLINE, SCORE
from cnn.report.rows import Row, is_ok, learned
from cnn.report.verdict import ALPHA, decide

BETTER, WORSE, SAME, FAILING, NEW, UNCOMPARABLE = (
    "better",
    "worse",
    "unchanged",
    "newly failing",
    "new",
    "not comparable",
)
REGRESSIONS = (WORSE, FAILING)
BEFORE, AFTER = "before", "after"  # the two sides of a variant's paired test
SAME_MODELS = "the same trained models"  # the `test` of an unchanged variant whose runs came from the cache


@dataclass(frozen=True)
class Change:
    """One variant's change since its last publication (accuracies are means over seeds; p from the paired test)."""

    variant: str
    kind: str
    before: float | None = None
    after: float | None = None
    p: float | None = None
    test: str | None = None
    previous_run: str | None = None

    @property
    def regressed(self) -> bool:
        """A drop past the noise, or a variant that learned before and does not now."""
        return self.kind in REGRESSIONS

    def to_dict(self) -> dict[str, Any]:
        """As a flow passes it on (to an event's payload)."""
        return asdict(self)


def _folders(rows: Sequence[Row]) -> set[str]:
    """Where the rows' runs stored their files: the same folders are the same trained models."""
    return {str(r.get("folder")) for r in rows if is_ok(r)}


def _mean(rows: Sequence[Row]) -> float | None:
    scores = [float(r[HEADLINE]) for r in rows if is_ok(r) and r.get(HEADLINE) is not None]
    return sum(scores) / len(scores) if scores else None


def variant_change(
    variant: str,
    before_rows: Sequence[Row],
    after_rows: Sequence[Row],
    before_runs: Iterable[Run],
    after_runs: Iterable[Run],
    previous_run: str | None = None,
    alpha: float = ALPHA,
) -> Change:
    """The change of one variant from `before_rows` (its last publication) to `after_rows`; the runs are their
    predictions on this run's test set (none when a side's were on other images or are missing)."""
    before, after = _mean(before_rows), _mean(after_rows)
    common = {"variant": variant, "before": before, "after": after, "previous_run": previous_run}
    if not before_rows or before is None:
        return Change(kind=NEW, **common)
    if _folders(before_rows) == _folders(after_rows):
        return Change(kind=SAME, test=SAME_MODELS, **common)  # an identical rerun: every step came from the cache
    was, now = any(learned(r) for r in before_rows), any(learned(r) for r in after_rows)
    if after is None or (was and not now):
        return Change(kind=FAILING, **common)
    before_runs = [Run(BEFORE, r.seed, r.test_set, r.correct) for r in before_runs]
    after_runs = [Run(AFTER, r.seed, r.test_set, r.correct) for r in after_runs]
    if not before_runs or not after_runs:
        return Change(kind=UNCOMPARABLE, **common)
    verdict = decide([*before_runs, *after_runs], alpha=alpha)
    [test] = verdict.comparisons.values()
    kind = SAME if test.p >= alpha else (BETTER if verdict.best == AFTER else WORSE)
    return Change(kind=kind, p=float(test.p), test=verdict.method, **common)


def changes_markdown(changes: Sequence[Change]) -> str:
    """The "changes since the last publication" section ('' when no variant was published before)."""
    shown = [c for c in changes if c.kind != NEW]
    if not shown:
        return ""
    lines = ["### Changes since the last publication", ""]
    for c in sorted(shown, key=lambda c: (not c.regressed, c.variant)):
        lines.append(f"- {md_escape(change_text(c))}")
    return "\n".join(lines) + "\n"


def change_text(c: Change) -> str:
    """ "cnn2_5: worse, 0.912 -> 0.871 (exact McNemar p = 0.003; last published by run 20261206-...)"."""
    scores = f"{_score(c.before)} -> {_score(c.after)}"
    test = f"{c.test} p = {c.p:.3g}" if c.p is not None else c.test
    since = f"last published by run {c.previous_run}" if c.previous_run else None
    detail = "; ".join(t for t in (test, since) if t)
    return f"{c.variant}: {c.kind}, {scores}" + (f" ({detail})" if detail else "")


def _score(value: float | None) -> str:
    return "failed" if value is None else format(value, SCORE)


def regressions(changes: Iterable[Change]) -> list[Change]:
    """The changes that are regressions."""
    return [c for c in changes if c.regressed]


def rows_by_variant(rows: Iterable[Row]) -> Mapping[str, list[Row]]:
    """Rows grouped by variant."""
    grouped: dict[str, list[Row]] = {}
    for row in rows:
        grouped.setdefault(str(row["variant"]), []).append(row)
    return grouped
