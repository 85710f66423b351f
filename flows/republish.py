"""A new version of the published comparison with fresh rows merged into every variant's latest ones (a retrain)."""

from __future__ import annotations

from typing import Any

from cnn.params import RunParams
from tasks import publish_comparison


def republish_with(config: RunParams, fresh: list[dict[str, Any]]) -> dict[str, Any]:
    """Publish a new version of the comparison: every variant's latest rows, `fresh` replacing its variants' rows.

    Only the plug-ins the user named for this run are loaded (flows.settings did that): a published variant from
    another plug-in keeps its row and loses its galleries, since nothing read from the store names code to load."""
    return publish_comparison(config, fresh, 1, with_latest=True)
