"""tasks.progress: one log line per epoch, the progress artifact moved at most every few seconds and always at the end."""

from __future__ import annotations

import logging
from uuid import uuid4

import pytest

from tasks import progress as progress_mod


def test_progress_artifact_is_throttled_but_reaches_the_end(monkeypatch: pytest.MonkeyPatch) -> None:
    updates: list[float] = []
    clock = iter(
        [100.0, 100.5, 101.0, 103.0, 103.1]
    )  # epochs 1-5: only epoch 1, epoch 4 (2 s later) and the last update
    monkeypatch.setattr(progress_mod, "get_run_logger", lambda: logging.getLogger("test"))
    monkeypatch.setattr(progress_mod, "update_progress_artifact", lambda _id, value: updates.append(value))
    monkeypatch.setattr(progress_mod.time, "monotonic", lambda: next(clock))
    report = progress_mod.epoch_reporter("lenet1", 5, {"artifact_id": str(uuid4()), "done": 0, "total": 2})
    row = {"train_loss": 1.0, "train_acc": 0.5, "val_loss": 1.0, "val_acc": 0.5, "lr": 0.01, "images_per_sec": 1000.0}
    for epoch in range(1, 6):
        report(0, {**row, "epoch": epoch})
    assert updates == pytest.approx([10.0, 40.0, 50.0])  # one variant of two: its last epoch is 50% of the comparison
