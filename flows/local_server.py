"""The CLI's temporary Prefect server, tied to the CLI: a Ctrl-C reaches only the CLI, and the server never outlives it.

Prefect starts its temporary server (when PREFECT_API_URL is unset) in the terminal's process group, so a Ctrl-C killed
it before the flow run could be marked as ended, and a killed CLI left it running. This one runs in its own session
(the terminal's SIGINT does not reach it) and reads a pipe from the CLI: when the CLI is gone, even after SIGKILL, the
pipe closes and the server shuts down. Prefect's own clients use it, because it is registered as Prefect's instance.
"""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

from prefect.server.api.server import SubprocessASGIServer

STOP_WAIT_S = 1.5  # then SIGKILL: the SQLite database survives that, and the CLI exits within seconds of a Ctrl-C
STARTUP_TIMEOUT_S = 120  # Prefect's default of 20 s is too short where training shares a few busy cores with the server
# Runs uvicorn as Prefect does, plus a thread that stops the server once stdin (the CLI's pipe) reaches end of file
WATCHDOG = r"""
import os, signal, sys, threading, time

def watch():
    try:
        sys.stdin.buffer.read()
    except Exception:
        pass
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(10)
    os._exit(1)

threading.Thread(target=watch, daemon=True).start()
sys.argv = ["uvicorn", *sys.argv[1:]]
from uvicorn.main import main
main()
"""


class TiedServer(SubprocessASGIServer):
    """Prefect's temporary server in its own session, shutting down when the process that started it is gone."""

    def _run_uvicorn_command(self) -> subprocess.Popen[Any]:
        import prefect

        env = server_environment()
        args = ["--app-dir", str(prefect.__module_path__.parent), "--factory", "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "error", "--lifespan", "on"]
        return subprocess.Popen([sys.executable, "-c", WATCHDOG, *args], env=env, stdin=subprocess.PIPE, start_new_session=True)

    def stop(self) -> None:
        """Send the logs still queued for it, then stop the server: a SIGTERM, then SIGKILL after STOP_WAIT_S (its clean
        shutdown can take 5 s on busy cores). Without the flush, logging's own exit handler waits 5 s for a server that is gone."""
        from prefect.logging.handlers import APILogWorker

        process = self.server_process
        if process is not None and process.poll() is None:
            with contextlib.suppress(Exception):  # nothing to send, or the worker is gone: stop all the same
                APILogWorker.drain_all(timeout=5)
            process.terminate()
            try:
                process.wait(STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                process.kill()
        super().stop()


def server_environment() -> dict[str, str]:
    """The temporary server's environment: this process's, the current Prefect settings that are set, no UI."""
    from prefect.settings import get_current_settings

    return {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1", **get_current_settings().to_environment_variables(exclude_unset=True)}


@contextlib.contextmanager
def quiet_server_settings() -> Iterator[None]:
    """Prefect settings for a run on the temporary server: its telemetry off, unless the user set
    PREFECT_SERVER_ANALYTICS_ENABLED (environment, profile or prefect.toml: a set value wins over a default).

    Offline, the telemetry heartbeat logged `Failed to send telemetry` on every run; on a fresh database its read-then-write
    (a deferred SQLite transaction) raced the flow run's first writes and logged a `database is locked` traceback."""
    from prefect.settings import PREFECT_SERVER_ANALYTICS_ENABLED, temporary_settings

    with temporary_settings(set_defaults={PREFECT_SERVER_ANALYTICS_ENABLED: False}):
        yield


def start_tied_server() -> SubprocessASGIServer | None:
    """Start the tied temporary server unless PREFECT_API_URL names a server (Prefect stops it at exit); returns it."""
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS

    if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        return None
    server = TiedServer()  # becomes the instance every Prefect client of this process asks for
    server.start(timeout=max(int(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value()), STARTUP_TIMEOUT_S))
    return server
