"""A new version of the published comparison with fresh rows merged into every variant's latest ones (a retrain)."""

from __future__ import annotations

from typing import Any

from flows.settings import RunSettings
from tasks import publish_comparison


def republish_with(settings: RunSettings, fresh: list[dict[str, Any]]) -> dict[str, Any]:
    """Publish a new version of the comparison: every variant's latest rows, `fresh` replacing its variants' rows.

    Only the plug-ins the user named for this run are loaded (flows.settings did that): a published variant from
    another plug-in keeps its row and loses its galleries, since nothing read from the store names code to load."""
    return publish_comparison(settings.ref.to_dict(), settings.storage, settings.run, fresh, 1, with_latest=True)
