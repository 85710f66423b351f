"""Start and stop a real `prefect server start` and `prefect worker start` on 127.0.0.1 for end-to-end tests."""

from __future__ import annotations

from prefect_homes import migrated_home

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_env(home: Path, port: int, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for the server and every client: its own PREFECT_HOME (SQLite there), its API on `port`, no telemetry."""
    api = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        {
            "PREFECT_HOME": str(home),
            "PREFECT_API_URL": api,
            "PREFECT_UI_API_URL": api,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_CLI_PROMPT": "false",
            "MPLBACKEND": "Agg",
            **(extra or {}),
        }
    )
    return env


def tail(path: Path, chars: int = 4000) -> str:
    """The end of a log file (for assertion messages)."""
    return path.read_text(errors="replace")[-chars:] if path.exists() else f"({path} not written)"


@dataclass
class Background:
    """A process started in its own process group, with its output in a log file."""

    proc: subprocess.Popen
    log: Path
    name: str = field(default="")

    def stop(self, timeout: float = 15) -> None:
        """SIGTERM the process group and every descendant (flow runs get their own sessions), SIGKILL what lingers."""
        children = descendants(self.proc.pid)
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
        _signal_all(children, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(_alive(pid) for pid in children):
            time.sleep(0.2)
        _signal_all([pid for pid in children if _alive(pid)], signal.SIGKILL)


def descendants(pid: int) -> list[int]:
    """Ids of every process below `pid` (from /proc; empty where there is none)."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    stat = Path(f"/proc/{pid}/stat")
    with contextlib.suppress(OSError, IndexError):
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return False


def _signal_all(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def start(args: list[str], env: Mapping[str, str], log: Path, cwd: Path = REPO) -> Background:
    """Start `python -m <args>` with this interpreter (the same virtualenv) in a new process group."""
    handle = log.open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", *args],
        cwd=cwd,
        env=dict(env),
        stdout=handle,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    handle.close()
    return Background(proc, log, args[-1])


def wait_healthy(api_url: str, server: Background, timeout: float = 120) -> None:
    """Poll <api>/health until it answers true; fail early with the server log if the process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"prefect server exited with {server.proc.returncode}:\n{tail(server.log)}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"{api_url}/health", timeout=2) as response:
                if response.read().strip() == b"true":
                    return
        time.sleep(0.5)
    raise TimeoutError(f"prefect server not healthy after {timeout:.0f} s:\n{tail(server.log)}")


def prefect(args: list[str], env: Mapping[str, str], cwd: Path = REPO, timeout: float = 120) -> str:
    """Run `prefect <args>` with this interpreter; return stdout+stderr, raise with them on a non-zero exit."""
    done = subprocess.run(
        [sys.executable, "-m", "prefect", *args],
        cwd=cwd,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    output = done.stdout + done.stderr
    if done.returncode != 0:
        raise RuntimeError(f"prefect {' '.join(args)} exited with {done.returncode}:\n{output[-6000:]}")
    return output


@contextlib.contextmanager
def running_server(
    home: Path, extra_env: Mapping[str, str] | None = None, timeout: float = 120
) -> Iterator[tuple[str, dict[str, str]]]:
    """A `prefect server start` on a free port with its database under `home`; yields (api_url, client env); always stopped."""
    migrated_home(home)
    port = free_port()
    env = server_env(home, port, extra_env)
    server = start(["prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)], env, home / "server.log")
    try:
        wait_healthy(env["PREFECT_API_URL"], server, timeout)
        yield env["PREFECT_API_URL"], env
    finally:
        server.stop()


@contextlib.contextmanager
def running_worker(pool: str, env: Mapping[str, str], log: Path) -> Iterator[Background]:
    """A `prefect worker start --pool <pool>` (flow runs in its subprocesses); always stopped with its flow-run children."""
    worker = start(["prefect", "worker", "start", "--pool", pool], env, log)
    try:
        yield worker
    finally:
        worker.stop()
