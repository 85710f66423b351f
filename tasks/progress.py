"""Per-epoch progress: one run-logger record per epoch (the run's log), the Prefect progress artifact, and listeners
(the CLI's terminal display, which hides these records from the terminal: each epoch shows once)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any
from uuid import UUID

from prefect import get_run_logger
from prefect.artifacts import update_progress_artifact

# The CLI appends its display here; each gets (variant, epoch row with "epochs" added, fraction of the comparison done)
LISTENERS: list[Callable[[str, dict[str, Any], float], None]] = []
# ... and a recorder here; each gets the run folder name once a flow has settled it (the CLI names it when interrupted)
RUN_LISTENERS: list[Callable[[str], None]] = []
# Each progress update is an API call (docs/architecture.md, "The command"): at most one per this many seconds, plus the
# last epoch
PROGRESS_MIN_INTERVAL_S = 2.0
EPOCH_RECORD = "cnn_lab_epoch"  # set on each epoch's log record, so a terminal display can leave it to the run's log


def epoch_reporter(
    variant: str, epochs: int, progress: dict[str, Any] | None, seeds: Sequence[int] = (0,)
) -> Callable[[int, dict[str, Any]], None]:
    """A training callback (seed, epoch row) that logs the epoch and moves the comparison's progress artifact; `seeds`
    are the seeds training together (each counts one run of `progress`, from its "done")."""
    logger = get_run_logger()
    progress = progress or {}
    last_update = [0.0]
    fractions = dict.fromkeys(seeds, 0.0)  # each seed's share of its epochs done

    def report(seed: int, row: dict[str, Any]) -> None:
        name = f"{variant} s{seed}" if len(fractions) > 1 else variant
        logger.info(
            "%s epoch %d/%d: loss %.4f acc %.4f val_loss %.4f val_acc %.4f lr %.3g %.0f img/s",
            name,
            row["epoch"],
            epochs,
            row["train_loss"],
            row["train_acc"],
            row["val_loss"],
            row["val_acc"],
            row["lr"],
            row["images_per_sec"],
            extra={EPOCH_RECORD: True},
        )
        fractions[seed] = row["epoch"] / epochs
        done = (progress.get("done", 0) + sum(fractions.values())) / max(progress.get("total", 1), 1)
        now = time.monotonic()
        last = all(f >= 1 for f in fractions.values())
        if progress.get("artifact_id") and (last or now - last_update[0] >= PROGRESS_MIN_INTERVAL_S):
            update_progress_artifact(UUID(str(progress["artifact_id"])), 100.0 * min(done, 1.0))
            last_update[0] = now
        for listener in LISTENERS:
            listener(name, {**row, "epochs": epochs}, done)

    return report


def mark_done(progress: dict[str, Any] | None, runs: int = 1) -> None:
    """Move the progress artifact past `runs` (variant, seed) runs from its "done": their steps are done, trained or
    cached."""
    progress = progress or {}
    if progress.get("artifact_id"):
        done = (progress.get("done", 0) + runs) / max(progress.get("total", 1), 1)
        update_progress_artifact(UUID(str(progress["artifact_id"])), 100.0 * min(done, 1.0))


def announce_run(run: str) -> None:
    """Tell the run listeners which run folder this flow writes to."""
    for listener in RUN_LISTENERS:
        listener(run)
