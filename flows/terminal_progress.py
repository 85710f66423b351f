"""The CLI's epoch display: a rich progress bar per variant (epoch, loss, validation accuracy, img/s, ETA) on a
terminal, one plain line per epoch elsewhere, nothing with --quiet. Prefect's per-epoch log records stay in the run's
log and out of the terminal, so each epoch shows once."""

from __future__ import annotations

import logging
from typing import Any

from rich.console import Console
from rich.default_styles import DEFAULT_STYLES
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn
from rich.theme import Theme

from tasks.progress import EPOCH_RECORD


# rich's styles for bars; Prefect's console has a theme of its own log styles only (inherit=False)
BAR_STYLES = Theme({name: style for name, style in DEFAULT_STYLES.items() if name.startswith(("bar.", "progress."))})


class _NoEpochRecords(logging.Filter):
    """Leaves the per-epoch log records to the run's log (the display shows the epochs)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, EPOCH_RECORD, False)


def prefect_console() -> Console | None:
    """The rich console Prefect's terminal log handler prints with (the display shares it, so log lines print above
    the bars), or None when logging has no such handler."""
    for handler in logging.getLogger().handlers:
        console = getattr(handler, "console", None)
        if isinstance(console, Console):
            return console
    return None


def plain_line(variant: str, row: dict[str, Any], done: float) -> str:
    """One epoch as one line: '[ 50.0%] lenet1 epoch 2/4: loss 0.4321 val_acc 0.8750 (2512 img/s)'."""
    return f"[{100 * done:5.1f}%] {variant:<16} epoch {int(row['epoch'])}/{int(row['epochs'])}: loss {row['train_loss']:.4f} val_acc {row['val_acc']:.4f} ({row['images_per_sec']:.0f} img/s)"


class EpochDisplay:
    """A listener for tasks.progress.LISTENERS; a context manager that starts and stops the bars."""

    def __init__(self, quiet: bool = False, console: Console | None = None):
        self.quiet = quiet
        self.console = console or prefect_console() or Console(stderr=True)
        self.bars: Progress | None = None
        self.tasks: dict[str, TaskID] = {}
        self.shown: dict[str, int] = {}  # each variant's last epoch shown
        self._filter = _NoEpochRecords()

    def __enter__(self) -> EpochDisplay:
        for (
            handler
        ) in logging.getLogger().handlers:  # the terminal's handlers (the run's log handlers are on prefect.*)
            handler.addFilter(self._filter)
        if not self.quiet and self.console.is_terminal:
            self.console.push_theme(BAR_STYLES)
            self.bars = Progress(
                TextColumn("{task.description:<16}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("epochs"),
                TextColumn("loss {task.fields[loss]}  val_acc {task.fields[acc]}  {task.fields[speed]} img/s"),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=self.console,
            )
            self.bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bars is not None:
            self.bars.stop()
            self.console.pop_theme()
        for handler in logging.getLogger().handlers:
            handler.removeFilter(self._filter)

    def __call__(self, variant: str, row: dict[str, Any], done: float) -> None:
        """Show one finished epoch."""
        if self.quiet:
            return
        if self.bars is None:
            print(plain_line(variant, row, done), file=self.console.file, flush=True)
            return
        fields = {
            "loss": f"{row['train_loss']:.4f}",
            "acc": f"{row['val_acc']:.4f}",
            "speed": f"{row['images_per_sec']:.0f}",
        }
        epoch = int(row["epoch"])
        if variant not in self.tasks:
            self.tasks[variant] = self.bars.add_task(variant, total=int(row["epochs"]), **fields)
        elif epoch <= self.shown[variant]:  # the next seed (repeats) starts over
            self.bars.reset(self.tasks[variant])
        self.shown[variant] = epoch
        self.bars.update(self.tasks[variant], completed=epoch, total=int(row["epochs"]), **fields)
