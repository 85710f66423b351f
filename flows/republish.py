"""A new version of the published comparison with fresh rows merged into every variant's latest ones (a retrain)."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger

from cnn.errors import ConfigError
from cnn.models import load_variants
from flows.settings import RunSettings
from tasks import publish_comparison
from tasks.store import read_latest_rows


def republish_with(settings: RunSettings, fresh: list[dict[str, Any]]) -> dict[str, Any]:
    """Publish a new version of the comparison: every variant's latest rows, `fresh` replacing its variants' rows
    (the plug-ins of the published variants are loaded first, so they can be rebuilt for the galleries)."""
    previous = read_latest_rows(settings.storage, settings.ref.name)
    earlier = previous.get("plugins") or {}
    files = {
        name: text
        for name, text in earlier.get("variant_files", {}).items()
        if name not in settings.plugins["variant_files"]
    }
    try:
        load_variants(earlier.get("variant_modules", []), files)
    except ConfigError as err:
        get_run_logger().warning(
            "the last comparison's plug-ins did not load (%s); their variants get no galleries", err
        )
    plugins = {
        "variant_modules": list(
            dict.fromkeys([*earlier.get("variant_modules", []), *settings.plugins["variant_modules"]])
        ),
        "variant_files": {**files, **settings.plugins["variant_files"]},
    }
    return publish_comparison(
        settings.ref.to_dict(), settings.storage, settings.run, fresh, 1, with_latest=True, plugins=plugins
    )
