"""The regression alert end to end on a real `prefect server start`: a comparison, then a retrain at an lr that cannot
learn; the shipped automation (deployments/automations.yaml, created by flows.alerts) notifies a webhook receiver."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from uuid import uuid4

import pytest

from prefect_server import REPO, running_server, tail

SAVE_BLOCK = """
import sys
from prefect.blocks.notifications import CustomWebhookNotificationBlock
CustomWebhookNotificationBlock(
    name="cnn-lab", url=sys.argv[1], json_data={"subject": "{{subject}}", "body": "{{body}}"}, allow_private_urls=True
).save("cnn-lab-alerts", overwrite=True)
"""


class Receiver:
    """An HTTP server on 127.0.0.1 that keeps the body of every POST."""

    def __init__(self) -> None:
        bodies: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                bodies.append(self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode())
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.bodies = bodies
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, text: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [b for b in self.bodies if text in b]
            if found:
                return found[0]
            time.sleep(0.5)
        raise AssertionError(f"no notification with {text!r} after {timeout} s (got {self.bodies})")


def _run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env={**env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_variant_that_stops_learning_notifies_through_the_shipped_automation(tmp_path: Path) -> None:
    receiver = Receiver()
    with running_server(tmp_path / "home") as (_, env):
        env = {**env, "OMP_NUM_THREADS": "1"}
        saved = _run(["-c", SAVE_BLOCK, receiver.url], env, tmp_path)
        assert saved.returncode == 0, saved.stderr[-2000:]
        alerts = _run(["-m", "flows.alerts", "custom-webhook/cnn-lab-alerts"], env, REPO)
        assert alerts.returncode == 0 and alerts.stdout.startswith("created 1 automation(s)"), alerts.stderr[-2000:]

        common = ["--dataset", "digits", "--storage", str(tmp_path / "store"), "--device", "cpu", "--quiet"]
        compare = ["compare", "--variants", "lenet1", "--epochs", "3", "--repeats", "1"]
        first = _run(["-m", "flows.cli", *compare, *common], env, tmp_path)
        assert first.returncode == 0, first.stderr[-3000:]
        retrain = _run(
            ["-m", "flows.cli", "retrain", "lenet1", "--lr", "1e-7", "--run", f"r-{uuid4().hex[:6]}", *common],
            env,
            tmp_path,
        )
        assert retrain.returncode == 0, retrain.stderr[-3000:]
        assert "Changes since the last publication:" in retrain.stdout and "lenet1: newly failing" in retrain.stdout

        body = json.loads(receiver.wait_for("lenet1", timeout=180))
        assert body["subject"] == "cnn-lab: lenet1 regressed in default on digits", tail(
            tmp_path / "home" / "server.log"
        )
        assert "newly failing" in body["body"]


def test_the_shipped_automation_is_prefects_format_with_the_block_filled_in() -> None:
    from prefect.events.schemas.automations import AutomationCore

    from flows.alerts import automation_specs
    from tasks.publish import REGRESSED

    block = uuid4()
    [spec] = automation_specs(block)
    automation = AutomationCore.model_validate(spec)
    assert automation.trigger.expect == {REGRESSED} and str(automation.actions[0].block_document_id) == str(block)


def test_an_unknown_block_is_one_line_naming_it(prefect_harness) -> None:
    from cnn.errors import ConfigError
    from flows.alerts import create_alerts

    with pytest.raises(ConfigError, match=r"^block: no custom-webhook block named 'nowhere' on the Prefect server"):
        create_alerts("custom-webhook/nowhere")
    with pytest.raises(ConfigError, match=r"^block: 'nowhere' is not <block-type-slug>/<name>"):
        create_alerts("nowhere")
