"""The CLI under signals: Ctrl-C (SIGINT to the terminal's process group) ends it within 5 s with one line and the flow
run Crashed, and the rerun completes; the temporary Prefect server never outlives the CLI, SIGKILL included."""

from __future__ import annotations

from prefect_homes import migrated_home

import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from prefect_server import _alive, descendants

ROOT = Path(__file__).parents[1]
EPOCHS = 40  # training must outlast the signal: an epoch of lenet1 on digits takes 0.15 s on a quiet machine


@pytest.fixture(scope="module")
def prefect_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One Prefect home for the CLI runs here: the database is created once (its migrations take seconds)."""
    return migrated_home(tmp_path_factory.mktemp("prefect-home"))


def _cli(home: Path, store: Path, *args: str) -> subprocess.Popen:
    """`cnn-lab compare` on digits in a new session (as a terminal runs it), with no PREFECT_API_URL (its temporary server)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1"
    )
    cmd = [
        sys.executable,
        "-m",
        "flows.cli",
        "compare",
        "--dataset",
        "digits",
        "--variants",
        "lenet1",
        "--epochs",
        str(EPOCHS),
        "--batch-size",
        "32",
        "--lr",
        "0.05",
        "--device",
        "cpu",
        "--repeats",
        "1",
        "--storage",
        str(store),
        *args,
    ]
    return subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=_terminal_signals,
    )


def _terminal_signals() -> None:
    """SIGINT as a terminal leaves it for the command: neither ignored nor blocked. Both are inherited, and after the
    rest of the suite the CLI's training went on through the SIGINT (Python never raised KeyboardInterrupt)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


class Lines:
    """The process's stderr lines as they arrive, read by a thread."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=lambda: self.lines.extend(proc.stderr), daemon=True)
        self._thread.start()

    def wait_for(self, text: str, proc: subprocess.Popen, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            assert proc.poll() is None, "".join(self.lines)[-3000:]
            assert time.monotonic() < deadline, f"no {text!r} after {timeout} s"
            time.sleep(0.05)

    def text(self) -> str:
        self._thread.join(30)
        return "".join(self.lines)


def _server_pid(cli: subprocess.Popen) -> int:
    [pid] = [p for p in descendants(cli.pid) if "create_app" in Path(f"/proc/{p}/cmdline").read_text(errors="replace")]
    return pid


def _gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not _alive(pid)


def _last_flow_run_state(home: Path) -> str:
    with sqlite3.connect(home / "prefect.db") as db:
        return db.execute("select state_type from flow_run order by created desc limit 1").fetchone()[0]


@pytest.mark.slow
def test_ctrl_c_ends_the_cli_within_5_s_with_one_line_and_the_rerun_resumes(
    prefect_home: Path, tmp_path: Path, prefect_harness, monkeypatch
) -> None:
    cli = _cli(prefect_home, tmp_path / "store")
    err = Lines(cli)
    err.wait_for("epoch 2/", cli)
    server = _server_pid(cli)
    os.killpg(cli.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole foreground process group
    sent = time.monotonic()
    cli.wait(30)
    took = time.monotonic() - sent
    text = err.text()
    assert cli.returncode == 130 and took < 5, (cli.returncode, took, text[-3000:])
    [line] = [line for line in text.splitlines() if line.startswith("cnn-lab:")]
    assert re.fullmatch(r"cnn-lab: interrupted; rerun the same command with --run (\S+) to resume", line), line
    assert "Traceback" not in text and "ConnectError" not in text
    assert (prefect_home / "temporary-server.log").is_file()  # the server's own lines go there, not to the terminal
    assert _gone(server, 5), "the temporary server outlived the CLI"
    assert _last_flow_run_state(prefect_home) == "CRASHED"
    run = line.split("--run ")[1].split()[0]
    checkpoint = tmp_path / "store" / "digits" / run / "lenet1" / "checkpoint.pt"
    assert checkpoint.is_file()

    # the rerun, in this process (a second temporary server would only cost time): finished steps cached, training resumed
    from cnn import pipeline
    from flows.compare import compare_architectures

    resumed: list[int] = []
    real = pipeline.train_seeds

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        resumed.extend(seed["resumed_from"] for seed in out)
        return out

    monkeypatch.setattr(pipeline, "train_seeds", spy)
    state = compare_architectures(
        dataset="digits",
        variants=["lenet1"],
        epochs=EPOCHS,
        batch_size=32,
        lr=0.05,
        device="cpu",
        storage=str(tmp_path / "store"),
        run=run,
        repeats=1,
        return_state=True,
    )
    assert state.is_completed(), state.message
    assert resumed and resumed[0] >= 1
    assert len((checkpoint.parent / "history.csv").read_text().splitlines()) == 1 + EPOCHS


@pytest.mark.slow
def test_sigkill_of_the_cli_takes_the_temporary_server_down(prefect_home: Path, tmp_path: Path) -> None:
    cli = _cli(prefect_home, tmp_path / "store", "--run", "r1")
    err = Lines(cli)
    err.wait_for("Beginning flow run", cli)
    server = _server_pid(cli)
    os.kill(cli.pid, signal.SIGKILL)
    cli.wait(10)
    assert _gone(server, 15), "the temporary server outlived a killed CLI"


@pytest.mark.parametrize(
    ("argv", "run", "line"),
    [
        (["compare", "--run", "r1"], "r1", "interrupted; rerun the same command to resume"),
        (
            ["compare"],
            "20250101-000000-compare-digits",
            "interrupted; rerun the same command with --run 20250101-000000-compare-digits to resume",
        ),
        (["retrain", "lenet1"], "r2", "interrupted; nothing was published: rerun the same command to retrain afresh"),
    ],
)
def test_the_interrupted_line_says_how_to_go_on(argv: list[str], run: str, line: str) -> None:
    from flows.cli import _interrupted_line, build_parser

    assert _interrupted_line(build_parser().parse_args(argv), run) == line


def test_the_terminal_shows_cnn_lab_errors_and_interrupts_without_a_traceback() -> None:
    import logging

    from cnn.errors import StorageError
    from flows.failures import _NoTraceback

    def record(err: BaseException) -> logging.LogRecord:
        try:
            raise err
        except BaseException:  # noqa: BLE001 - a record of any error
            return logging.LogRecord(
                "prefect.task_runs", logging.ERROR, __file__, 1, "Task run failed", None, sys.exc_info()
            )

    ours, interrupt, bug = (
        record(StorageError("storage: cannot write x", transient=True)),
        record(KeyboardInterrupt()),
        record(ZeroDivisionError("bug")),
    )
    assert all(_NoTraceback().filter(r) for r in (ours, interrupt, bug))
    assert ours.exc_info is None and interrupt.exc_info is None
    assert bug.exc_info is not None  # a bug keeps its traceback


# --- with workers: --parallel 2 (a process pool) and --task-runner dask ---------------------------------------------

PARALLEL = ("--variants", "lenet1,cnn2_5", "--parallel", "2", "--run", "r")
STOPPED_WITHIN_S = 5  # the promise: one line and the exit within 5 s of the signal (a deadline, not a timing)


def _worker_pids(cli: subprocess.Popen, timeout: float = 240) -> list[int]:
    """The CLI's worker processes (spawned interpreters), once at least one runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        workers = [p for p in descendants(cli.pid) if "spawn_main" in _cmdline(p)]
        if workers:
            return workers
        assert cli.poll() is None, "the CLI ended before any worker started"
        time.sleep(0.1)
    raise AssertionError(f"no worker process after {timeout} s")


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text(errors="replace")
    except OSError:
        return ""


def _left_running(pids: list[int], timeout: float) -> list[int]:
    """The processes of `pids` still running once `timeout` has passed (or none, as soon as all have ended)."""
    deadline = time.monotonic() + timeout
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return [p for p in pids if _alive(p)]


def _stop_and_check(cli: subprocess.Popen, err: Lines, sig: signal.Signals, group: bool) -> str:
    """Send `sig` (to the process group, as a terminal sends Ctrl-C, or to the CLI alone, as a scheduler sends
    SIGTERM); check one line, the exit code, no traceback from any process and nothing left running; the line."""
    _worker_pids(cli)
    everything = descendants(cli.pid)
    (os.killpg if group else os.kill)(cli.pid, sig)
    try:
        cli.wait(STOPPED_WITHIN_S)
    except subprocess.TimeoutExpired:
        cli.kill()
        raise AssertionError(f"still running {STOPPED_WITHIN_S} s after {sig.name}:\n{err.text()[-3000:]}") from None
    text = err.text()
    assert cli.returncode == 128 + sig, (cli.returncode, text[-3000:])
    lines = [line for line in text.splitlines() if line.startswith("cnn-lab:")]
    assert len(lines) == 1, text[-3000:]
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text[-5000:]
    assert _left_running(everything, 10) == [], "workers, the resource tracker or the server outlived the CLI"
    return lines[0]


@pytest.mark.slow
def test_ctrl_c_with_parallel_workers_leaves_no_process_and_no_traceback_and_the_rerun_resumes(
    prefect_home: Path, tmp_path: Path
) -> None:
    cli = _cli(prefect_home, tmp_path / "store", *PARALLEL)
    err = Lines(cli)
    err.wait_for("epoch 2/", cli)
    line = _stop_and_check(cli, err, signal.SIGINT, group=True)
    assert line == "cnn-lab: interrupted; rerun the same command to resume"

    rerun = _cli(prefect_home, tmp_path / "store", *PARALLEL, "--quiet")
    out, text = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, text[-3000:]
    for variant in ("lenet1", "cnn2_5"):
        history = tmp_path / "store" / "digits" / "r" / variant / "history.csv"
        assert len(history.read_text().splitlines()) == 1 + EPOCHS, variant


@pytest.mark.slow
def test_ctrl_c_with_the_dask_runner_leaves_no_process_and_no_traceback(prefect_home: Path, tmp_path: Path) -> None:
    pytest.importorskip("prefect_dask")
    cli = _cli(prefect_home, tmp_path / "store", *PARALLEL, "--task-runner", "dask")
    err = Lines(cli)
    err.wait_for("epoch 2/", cli)
    line = _stop_and_check(cli, err, signal.SIGINT, group=True)
    assert line == "cnn-lab: interrupted; rerun the same command to resume"


@pytest.mark.slow
def test_sigterm_to_the_cli_stops_it_as_ctrl_c_does_with_exit_code_143(prefect_home: Path, tmp_path: Path) -> None:
    cli = _cli(prefect_home, tmp_path / "store", *PARALLEL)
    err = Lines(cli)
    err.wait_for("epoch 2/", cli)
    line = _stop_and_check(cli, err, signal.SIGTERM, group=False)
    assert line == "cnn-lab: terminated; rerun the same command to resume"
    assert _last_flow_run_state(prefect_home) == "CRASHED"


@pytest.mark.slow
def test_sigkill_of_the_cli_leaves_no_worker(prefect_home: Path, tmp_path: Path) -> None:
    cli = _cli(prefect_home, tmp_path / "store", *PARALLEL)
    err = Lines(cli)
    err.wait_for("epoch 1/", cli)
    _worker_pids(cli)
    everything = descendants(cli.pid)
    os.kill(cli.pid, signal.SIGKILL)  # as the out-of-memory killer does: no clean-up runs in the CLI
    cli.wait(10)
    assert _left_running(everything, 15) == [], "a worker (or the server) outlived a killed CLI"


# --- signals while the command starts, and the workers' own defences (no Prefect, no training) ----------------------

EARLY_STOP = r"""
import os, signal, sys, time
import flows.cli as cli
real = cli.build_parser

def build_parser():
    os.kill(os.getpid(), getattr(signal, sys.argv[1]))  # arrives while main() imports what it needs
    time.sleep(5)
    return real()

cli.build_parser = build_parser
raise SystemExit(cli.main(["compare", "--dataset", "digits"]))
"""


@pytest.mark.parametrize(("sig", "code", "line"), [("SIGINT", 130, "interrupted"), ("SIGTERM", 143, "terminated")])
def test_a_signal_while_the_command_starts_is_one_line_and_its_exit_code(sig: str, code: int, line: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", EARLY_STOP, sig],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=60,
    )
    assert (done.returncode, done.stderr) == (code, f"cnn-lab: {line}\n")


SLEEPER = "import sys, time; print('ready', flush=True); time.sleep(60)"
WORKER = (
    "import os, sys, time; from flows.worker_lifecycle import init_worker; init_worker(int(sys.argv[1])); "
    "print(os.getpid(), flush=True); time.sleep(60)"
)
# A parent that starts a worker tied to it and is then killed; it prints the worker's pid first
PARENT = (
    "import os, subprocess, sys; "
    "w = subprocess.Popen([sys.executable, '-c', sys.argv[1], str(os.getpid())], stdout=subprocess.PIPE, text=True); "
    "print(w.stdout.readline().strip(), flush=True); os.kill(os.getpid(), 9)"
)


def test_a_process_started_with_the_stop_signals_blocked_ignores_them_from_its_start() -> None:
    from flows.worker_lifecycle import stop_signals_blocked

    with stop_signals_blocked():
        child = subprocess.Popen([sys.executable, "-c", SLEEPER], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        os.kill(child.pid, signal.SIGINT)
        os.kill(child.pid, signal.SIGTERM)
        with pytest.raises(subprocess.TimeoutExpired):
            child.wait(1)  # still running: the signals wait, blocked, and a pool worker's initializer drops them
    finally:
        child.kill()
        child.wait(10)
    assert child.returncode == -signal.SIGKILL


def test_a_worker_ends_when_its_parent_is_killed() -> None:
    parent = subprocess.run(
        [sys.executable, "-c", PARENT, WORKER],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=60,
    )
    worker = int(parent.stdout.split()[0])
    assert parent.returncode == -signal.SIGKILL
    assert _left_running([worker], 10) == [], "the worker outlived its killed parent"


def test_a_stop_interrupts_a_variant_on_a_thread_of_this_process() -> None:
    import multiprocessing
    import threading

    from flows.worker_lifecycle import stop_workers, variant_thread

    ended: list[str] = []

    def train() -> None:
        try:
            with variant_thread():
                while True:
                    time.sleep(0.01)  # a training loop between two steps
        except KeyboardInterrupt:
            ended.append("interrupted")

    thread = threading.Thread(target=train, daemon=True)
    thread.start()
    time.sleep(0.2)
    stop_workers(spared=multiprocessing.active_children())
    thread.join(10)
    assert ended == ["interrupted"]
