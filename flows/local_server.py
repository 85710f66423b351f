"""The CLI's temporary Prefect server, tied to the CLI: a Ctrl-C reaches only the CLI, and the server never outlives it.

Prefect starts its temporary server (when PREFECT_API_URL is unset) in the terminal's process group, so a Ctrl-C kills
it before the flow run can be marked as ended, and a killed CLI leaves it running. This one runs in its own session
(the terminal's SIGINT does not reach it) and reads a pipe from the CLI: when the CLI is gone, even after SIGKILL, the
pipe closes and the server shuts down. Prefect's own clients use it through PREFECT_API_URL.

It is started the way Prefect starts its own temporary server (prefect.server.api.server.SubprocessASGIServer: uvicorn
on `create_app`, with that class's environment), not through `prefect server start`: that command has no way to tie
the server to another process's life or keep it out of the terminal's session, imports Prefect's whole CLI before the
server (seconds at every CLI start), and runs the scheduler and UI services a one-command server does not need.
tests/test_interrupts.py checks the Ctrl-C and SIGKILL behaviour this is for.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import socket
import subprocess
import sys
import re
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from cnn.errors import ConfigError
from cnn.redaction import has_credentials, redact

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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


ANALYTICS = "PREFECT_SERVER_ANALYTICS_ENABLED"


def user_set_analytics() -> bool:
    """Whether the user set the server's telemetry: in the environment, or in the profiles file, ./prefect.toml or
    ./pyproject.toml (read as text, so that Prefect is not imported before the server launches)."""
    if ANALYTICS in os.environ:
        return True
    home = Path(os.environ.get("PREFECT_HOME", "~/.prefect")).expanduser()
    files = [
        Path(os.environ.get("PREFECT_PROFILES_PATH", home / "profiles.toml")),
        Path("prefect.toml"),
        Path("pyproject.toml"),
    ]
    return any(f.is_file() and "analytics_enabled" in f.read_text(errors="ignore").lower() for f in files)


def quiet_telemetry_notice() -> None:
    """Unless the user set telemetry: DO_NOT_TRACK=1 for this process and those it starts, before Prefect is imported.

    On import in a terminal, Prefect prints a first-run notice that it collects usage data (prefect._internal.analytics.
    notice); the temporary server has analytics off (server_environment), so it would send nothing and the notice
    would be wrong. DO_NOT_TRACK is the client-side switch that notice names."""
    if not user_set_analytics():
        os.environ.setdefault("DO_NOT_TRACK", "1")


def server_environment() -> dict[str, str]:
    """The temporary server's environment: this process's, no UI, and telemetry off unless the user set it.

    Telemetry is off because, offline, its heartbeat logs `Failed to send telemetry` on every run, and on a fresh
    database its read-then-write (a deferred SQLite transaction) can race the flow run's first writes and log a
    `database is locked` traceback."""
    env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
    if not user_set_analytics():
        env[ANALYTICS] = "false"
    return env


def server_log_path() -> Path:
    """Where the temporary server writes its output: beside its database, in Prefect's home."""
    return Path(os.environ.get("PREFECT_HOME", "~/.prefect")).expanduser() / "temporary-server.log"


class TiedServer:
    """Prefect's temporary server in its own session, shutting down when the process that started it is gone.

    It is launched as soon as the CLI's parameters are checked and runs its start-up (importing Prefect's server,
    migrating the database) while the CLI imports torch and checks the run; the CLI waits for it only before the flow
    starts. Prefect's clients reach it through PREFECT_API_URL, so this process never imports Prefect's server code."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.process: subprocess.Popen[Any] | None = None

    @property
    def api_url(self) -> str:
        """The server's API address."""
        return f"http://127.0.0.1:{self.port}/api"

    def launch(self) -> None:
        """Start the server process (not waiting for it); it stops at this process's exit."""
        import importlib.util

        spec = importlib.util.find_spec("prefect")  # its folder, without importing Prefect (seconds) first
        app_dir = os.path.dirname(list(spec.submodule_search_locations or [])[0]) if spec else "."
        env = server_environment()
        args = [
            "--app-dir",
            app_dir,
            "--factory",
            "prefect.server.api.server:create_app",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--log-level",
            "error",
            "--lifespan",
            "on",
        ]
        log = server_log_path()
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(
            log, "ab"
        ) as out:  # the server's own lines (a shutdown mid-query logs a traceback) stay off the terminal
            self.process = subprocess.Popen(
                [sys.executable, "-c", WATCHDOG, *args],
                env=env,
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )
        atexit.register(self.stop)

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT_S) -> None:
        """Block until the API answers its health check (RuntimeError if the process ends or `timeout` passes)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(
                    f"the temporary Prefect server on port {self.port} exited during start-up (its output: "
                    f"{server_log_path()})"
                )
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the temporary Prefect server did not start within {timeout:.0f} s")
            time.sleep(0.1)

    def stop(self) -> None:
        """Send the logs still queued for it, then stop the server: a SIGTERM, then SIGKILL after STOP_WAIT_S (a clean
        shutdown is slow on busy cores, and a stop must end the CLI within flows.interrupts.STOP_DEADLINE_S; the stop
        times: docs/faults.md). Without the flush, Prefect's own exit handler waits its 5 s timeout for a server that is
        gone."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        if "prefect.logging.handlers" in sys.modules:
            from prefect.logging.handlers import APILogWorker

            with contextlib.suppress(Exception):  # nothing to send, or the worker is gone: stop all the same
                APILogWorker.drain_all(timeout=5)
        process.terminate()
        try:
            process.wait(STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            process.kill()


API_URL = re.compile(r"https?://[^/\s?#@]+(/[^\s?#@]*)?")  # scheme, host[:port], optional path
API_URL_ALLOWED = (
    "the API URL of a running Prefect server (e.g. http://127.0.0.1:4200/api), or unset for a temporary one"
)
HEALTH_TIMEOUT_S = 5.0


def check_prefect_environment() -> None:
    """Before Prefect loads: PREFECT_HOME is a folder (or can be made one), and PREFECT_API_URL, when set, is an http(s)
    URL without credentials whose server answers (ConfigError naming the variable otherwise)."""
    check_prefect_home(Path(os.environ.get("PREFECT_HOME", "~/.prefect")).expanduser())
    if os.environ.get("PREFECT_API_URL"):
        check_api_url(os.environ["PREFECT_API_URL"], "PREFECT_API_URL")


def check_prefect_home(home: Path) -> None:
    """Prefect keeps its settings and the temporary server's database in `home`: a folder, or one it can create."""
    allowed = "a folder Prefect can write (its settings and database go there), or unset for ~/.prefect"
    existing = next(p for p in (home, *home.parents) if p.exists())
    if not existing.is_dir():
        where = "is a file" if existing == home else f"is below {existing}, which is a file"
        raise ConfigError("PREFECT_HOME", f"{home} {where}, not a folder", allowed=allowed)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError("PREFECT_HOME", f"{existing} is not writable by this user", allowed=allowed)


def check_api_url(url: str, source: str) -> None:
    """`url` (from `source`) is a Prefect API URL without credentials whose /health answers within HEALTH_TIMEOUT_S:
    200, or 401/403 from a server that wants the API key (Prefect sends it; this check does not)."""
    if has_credentials(url):
        raise ConfigError(
            source,
            f"credentials in the URL are not accepted (Prefect prints it in its logs): {redact(url)!r}",
            allowed="the URL without them; PREFECT_API_KEY or PREFECT_API_AUTH_STRING carry credentials",
        )
    if not API_URL.fullmatch(url.strip()):
        raise ConfigError(source, f"{redact(url)!r} is not an http(s) URL", allowed=API_URL_ALLOWED)
    try:
        with urllib.request.urlopen(f"{url.strip().rstrip('/')}/health", timeout=HEALTH_TIMEOUT_S):
            return
    except urllib.error.HTTPError as err:
        if err.code in (401, 403):
            return
        raise ConfigError(
            source,
            f"{redact(url)} answers, but not as a Prefect API (HTTP {err.code} for /health)",
            allowed=API_URL_ALLOWED,
        ) from None
    except (OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        raise ConfigError(
            source, f"no Prefect server answers at {redact(url)} ({redact(str(reason))})", allowed=API_URL_ALLOWED
        ) from None


_LAUNCHED: list[TiedServer] = []


def launch_tied_server() -> TiedServer | None:
    """Launch the tied temporary server, without importing Prefect and without waiting for it, unless PREFECT_API_URL
    is in the environment or one is launched already (`start_tied_server` stops it if a profile names a server)."""
    if _LAUNCHED:
        return _LAUNCHED[0]
    if os.environ.get("PREFECT_API_URL"):
        return None
    quiet_telemetry_notice()
    server = TiedServer()
    server.launch()
    _LAUNCHED.append(server)
    return server


def start_tied_server() -> TiedServer | None:
    """The tied temporary server (launched now unless it was), once it answers, with this process's Prefect settings
    (and the processes it starts) pointed at it and no UI link printed; None when Prefect's settings name a server
    (which stays, so Prefect prints its runs' links)."""
    from prefect.context import refresh_global_settings_context
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_SERVER_EPHEMERAL_ENABLED,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
    )

    server = launch_tied_server()
    if server is None:
        return None
    if os.environ.get("PREFECT_API_URL") != server.api_url and (
        PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value()
    ):
        server.stop()  # a profile names a server (or forbids a temporary one): use that
        if PREFECT_API_URL.value():
            check_api_url(str(PREFECT_API_URL.value()), "PREFECT_API_URL (profile)")
        return None
    server.wait_ready(max(int(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value()), STARTUP_TIMEOUT_S))
    os.environ["PREFECT_API_URL"] = server.api_url
    os.environ["PREFECT_UI_URL"] = ""  # no UI and gone with the CLI: Prefect prints no `View at <link>` for its runs
    refresh_global_settings_context()
    return server
