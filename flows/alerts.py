"""Create the regression alert of deployments/automations.yaml on the Prefect server, pointed at a saved notification
block: `python -m flows.alerts slack-webhook/cnn-lab-alerts` (any notification block type, by its slug and name)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any
from uuid import UUID

import yaml

from cnn.errors import CnnLabError, ConfigError

AUTOMATIONS = Path(__file__).resolve().parents[1] / "deployments" / "automations.yaml"
PLACEHOLDER = "BLOCK_DOCUMENT_ID"


def automation_specs(block_document_id: UUID, path: Path = AUTOMATIONS) -> list[dict[str, Any]]:
    """The automations of `path`, each notification pointed at the block `block_document_id`."""
    specs = yaml.safe_load(path.read_text())["automations"]
    for spec in specs:
        for action in spec["actions"]:
            if action.get("block_document_id") == PLACEHOLDER:
                action["block_document_id"] = str(block_document_id)
    return specs


def create_alerts(block: str, path: Path = AUTOMATIONS) -> list[UUID]:
    """Create (or replace, by name) the automations of `path` on the server PREFECT_API_URL names, notifying through
    the saved block `block` ("<block-type-slug>/<name>"); their ids."""
    from prefect.client.orchestration import get_client
    from prefect.events.schemas.automations import AutomationCore
    from prefect.exceptions import ObjectNotFound

    slug, _, name = block.partition("/")
    if not slug or not name:
        raise ConfigError(
            "block", f"{block!r} is not <block-type-slug>/<name>", allowed="e.g. slack-webhook/cnn-lab-alerts"
        )
    with get_client(sync_client=True) as client:
        try:
            document = client.read_block_document_by_name(name, slug)
        except ObjectNotFound:
            raise ConfigError(
                "block",
                f"no {slug} block named {name!r} on the Prefect server",
                allowed="a block you saved (UI: Blocks)",
            ) from None
        created = []
        for spec in automation_specs(document.id, path):
            for existing in client.read_automations_by_name(spec["name"]):
                client.delete_automation(existing.id)
            created.append(client.create_automation(AutomationCore.model_validate(spec)))
        return created


def main(argv: list[str] | None = None) -> int:
    """The command line: one line on success or error."""
    parser = argparse.ArgumentParser(prog="python -m flows.alerts", description=__doc__)
    parser.add_argument(
        "block", help="the notification block: <block-type-slug>/<name>, e.g. slack-webhook/cnn-lab-alerts"
    )
    args = parser.parse_args(argv)
    try:
        ids = create_alerts(args.block)
    except CnnLabError as err:
        print(f"cnn-lab: {err}", file=sys.stderr)
        return 2
    print(f"created {len(ids)} automation(s) notifying {args.block}: {', '.join(map(str, ids))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
