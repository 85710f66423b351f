"""What a run prints: the temporary server's telemetry off unless the user set it, each epoch once (a bar on a
terminal, a line elsewhere, nothing with --quiet; the run's log keeps its record), and a cnn-lab error inside a flow
as one line, without a traceback in any log."""

from __future__ import annotations

from prefect_homes import migrated_home

import io
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console
from rich.theme import Theme

from cnn.errors import CnnLabError, DataError

ROOT = Path(__file__).resolve().parents[1]
ROW = {"epoch": 2, "epochs": 4, "train_loss": 0.4321, "val_acc": 0.875, "images_per_sec": 2512.0}


@pytest.mark.parametrize(
    ("setting", "profile", "server_gets"),
    [(None, None, "false"), ("true", None, "true"), ("false", None, "false"), (None, "true", None)],
)
def test_the_temporary_server_gets_telemetry_off_unless_the_user_set_it(
    setting: str | None, profile: str | None, server_gets: str | None, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(tmp_path),
        PYTHONPATH=str(ROOT),
        **({"PREFECT_SERVER_ANALYTICS_ENABLED": setting} if setting else {}),
    )
    if profile:  # set in a profile: the server reads it there itself, so cnn-lab leaves it out of the environment
        (tmp_path / "profiles.toml").write_text(
            f'active = "mine"\n[profiles.mine]\nPREFECT_SERVER_ANALYTICS_ENABLED = "{profile}"\n'
        )
    code = "from flows.local_server import server_environment\nprint(server_environment().get('PREFECT_SERVER_ANALYTICS_ENABLED'))"
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.stdout.split()[-1:] == [str(server_gets).lower() if server_gets else "None"], done.stderr


def _in_a_terminal(code: str, env: dict[str, str], cwd: Path) -> str:
    """What `python -c code` prints with its stdout and stderr on a pseudo-terminal (as in an interactive shell)."""
    import pty

    main, side = pty.openpty()
    with subprocess.Popen(
        [sys.executable, "-c", code], env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=side, stderr=side
    ) as proc:
        os.close(side)
        chunks = []
        while True:
            try:
                chunk = os.read(main, 4096)
            except OSError:  # the terminal closed: the process is gone
                break
            if not chunk:
                break
            chunks.append(chunk)
        proc.wait(120)
    os.close(main)
    return b"".join(chunks).decode(errors="replace")


def test_prefect_prints_no_usage_data_notice_beside_the_temporary_server(tmp_path: Path) -> None:
    from prefect._internal.analytics.ci_detection import CI_ENV_VARS

    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_") and k not in CI_ENV_VARS}
    env.pop("DO_NOT_TRACK", None)
    env.update(PYTHONPATH=str(ROOT))
    notice = "Prefect collects anonymous usage data"
    plain = _in_a_terminal("import prefect", {**env, "PREFECT_HOME": str(tmp_path / "a")}, tmp_path)
    assert notice in plain, plain  # a first run in a terminal: the notice (so the check below can fail)
    code = "from flows.local_server import quiet_telemetry_notice\nquiet_telemetry_notice()\nimport prefect"
    ours = _in_a_terminal(code, {**env, "PREFECT_HOME": str(tmp_path / "b")}, tmp_path)
    assert notice not in ours, ours
    kept = {**env, "PREFECT_HOME": str(tmp_path / "c"), "PREFECT_SERVER_ANALYTICS_ENABLED": "true"}
    assert notice in _in_a_terminal(code, kept, tmp_path)  # telemetry the user turned on: Prefect's notice stays


def _display(quiet: bool, terminal: bool) -> tuple[object, io.StringIO]:
    from flows.terminal_progress import EpochDisplay

    out = io.StringIO()
    console = Console(
        file=out,
        force_terminal=terminal,
        color_system=None,
        width=120,
        theme=Theme({"log.info_level": "cyan"}, inherit=False),
    )  # as Prefect's
    return EpochDisplay(quiet, console), out


def test_off_a_terminal_each_epoch_is_one_plain_line_and_quiet_shows_none() -> None:
    display, out = _display(quiet=False, terminal=False)
    with display:
        display("lenet1", ROW, 0.5)
    assert out.getvalue() == "[ 50.0%] lenet1           epoch 2/4: loss 0.4321 val_acc 0.8750 (2512 img/s)\n"
    display, out = _display(quiet=True, terminal=True)
    with display:
        display("lenet1", ROW, 0.5)
    assert out.getvalue() == ""


def test_on_a_terminal_each_variant_gets_a_bar_with_epoch_loss_accuracy_speed_and_eta() -> None:
    display, out = _display(quiet=False, terminal=True)
    with display:
        display("lenet1", ROW, 0.5)
        display("cnn2_5", {**ROW, "epoch": 1}, 0.6)
        display.console.print(
            "12:00:01 | INFO | Task run 'evaluate_variant' - Finished in state Completed()"
        )  # a log line meanwhile
    text = out.getvalue()
    assert (
        "lenet1" in text
        and "2/4 epochs" in text
        and "loss 0.4321" in text
        and "val_acc 0.8750" in text
        and "2512 img/s" in text
        and "ETA" in text
    )
    assert "cnn2_5" in text and "1/4 epochs" in text and "Finished in state Completed()" in text


def test_the_epoch_record_stays_out_of_the_terminal_while_the_display_runs() -> None:
    from flows.terminal_progress import EpochDisplay
    from tasks.progress import EPOCH_RECORD

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logging.getLogger().addHandler(handler)
    log = logging.getLogger("test.epochs")
    try:
        with EpochDisplay(quiet=True, console=Console(file=io.StringIO())):
            log.warning("lenet1 epoch 1/4", extra={EPOCH_RECORD: True})
            log.warning("other news")
        log.warning("lenet1 epoch 2/4", extra={EPOCH_RECORD: True})  # without the display (a worker): logged as before
    finally:
        logging.getLogger().removeHandler(handler)
    assert stream.getvalue().splitlines() == ["other news", "lenet1 epoch 2/4"]


def test_a_cnn_lab_error_in_a_flow_ends_it_failed_in_one_line_without_traceback(
    prefect_harness, caplog: pytest.LogCaptureFixture
) -> None:
    from prefect import flow, task

    from flows.failures import fail_in_one_line, flow_output

    @task
    def load() -> None:
        raise DataError("dataset 'FashionMNIST' could not be downloaded (URLError: offline). Ways out: ...")

    @task
    def buggy() -> None:
        raise ZeroDivisionError("a bug")

    @flow
    @fail_in_one_line
    def ours() -> None:
        load()

    @flow
    @fail_in_one_line
    def unexpected() -> None:
        buggy()

    with caplog.at_level(logging.INFO):
        state = ours(return_state=True)
    assert (
        state.is_failed()
        and state.message
        == "DataError: dataset 'FashionMNIST' could not be downloaded (URLError: offline). Ways out: ..."
    )
    with pytest.raises(CnnLabError) as raised:  # what the CLI prints, as `cnn-lab: <line>`
        flow_output(state)
    assert str(raised.value) == "dataset 'FashionMNIST' could not be downloaded (URLError: offline). Ways out: ..."
    assert not [r for r in caplog.records if r.exc_info or r.exc_text], "a traceback in the log"
    with pytest.raises(DataError) as ended:
        state.result()  # what a worker's engine does with the final state: it raises the error the run ended with ...
    with caplog.at_level(logging.INFO):
        logging.getLogger("prefect.flow_runs").error("Engine execution exited", exc_info=ended.value)
    assert "Engine execution exited" not in caplog.text  # ... and its log of that is dropped (the Failed line said it)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        state = unexpected(return_state=True)
    assert state.is_failed() and "ZeroDivisionError" in state.message
    assert [r for r in caplog.records if r.exc_info], "an unexpected error keeps its traceback"


def test_a_flow_that_returns_failed_hands_the_engine_an_error_and_the_cli_its_data(prefect_harness) -> None:
    from prefect import flow
    from prefect.states import Failed

    from flows.failures import RunFailed, fail_in_one_line, flow_output

    @flow
    @fail_in_one_line
    def none_worked() -> None:
        return Failed(message="every variant failed: lenet1: boom", data={"rows": [{"variant": "lenet1"}]})

    state = none_worked(return_state=True)
    assert state.is_failed() and state.message == "every variant failed: lenet1: boom"
    assert flow_output(state) == {"rows": [{"variant": "lenet1"}]}  # the CLI still prints the table
    with pytest.raises(
        RunFailed, match="^every variant failed: lenet1: boom$"
    ):  # not "Unexpected result for failed state"
        state.result()


@pytest.mark.slow
def test_quickstart_with_a_batch_larger_than_the_data_ends_in_one_line_before_any_training(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(tmp_path / "home"), PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1"
    )  # a fresh Prefect database, telemetry as the user left it
    cmd = [
        sys.executable,
        "-m",
        "flows.cli",
        "compare",
        "--dataset",
        "digits",
        "--variants",
        "lenet1,cnn2_5",
        "--batch-size",
        "5000",
        "--storage",
        str(tmp_path / "store"),
    ]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert "cnn-lab: batch_size: 5000 is larger than the 1293 training images (allowed: 1..1293, or auto)" in lines
    assert "Traceback" not in done.stderr and "telemetry" not in done.stderr and "database is locked" not in done.stderr
    assert "View at" not in done.stderr, "a link to the temporary server, which has no UI and is gone now"
    assert not [line for line in lines if "lr_range_test" in line or "train_variant" in line], (
        "a step ran after the data step"
    )
    assert not list((tmp_path / "store").rglob("checkpoint.pt"))


def _online() -> bool:
    import socket

    try:
        socket.create_connection(("ossci-datasets.s3.amazonaws.com", 443), timeout=3).close()
    except OSError:
        return False
    return True


@pytest.mark.slow
def test_a_flow_run_outside_the_cli_logs_a_missing_dataset_in_one_line_without_traceback(tmp_path: Path) -> None:
    """As a worker runs a flow (no CLI): offline, the default dataset cannot be downloaded."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(migrated_home(tmp_path / "home")),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PYTHONPATH=str(ROOT),
        OMP_NUM_THREADS="1",
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180",
    )
    if _online():
        pytest.skip("the dataset could be downloaded here")
    code = (
        "from flows.variant import train_variant_flow\n"
        f"state = train_variant_flow(variant='lenet1', data_dir={str(tmp_path / 'no-data')!r}, storage={str(tmp_path / 'store')!r}, return_state=True)\n"
        "print('STATE', state.type.value, state.message)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    output = done.stdout + done.stderr
    assert "STATE FAILED DataError: dataset 'FashionMNIST' could not be downloaded" in output, output[-3000:]
    assert "or use dataset='digits', which ships with scikit-learn and needs no network." in output
    assert "Traceback" not in output, output[-3000:]
