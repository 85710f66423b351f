"""Faults: a training worker killed after an epoch resumes from its checkpoint in the store and ends like an uninterrupted run;
the S3 store going away mid-run fails the run clearly, and a rerun once it is back completes without redoing finished variants."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cnn.checkpoints import load_checkpoint  # here, not in the polling loop: importing torch there let epochs pass
from cnn.storage import Storage
from prefect_helpers import task_states
from storage_helpers import KEY_ID, SECRET, S3Server, s3_env

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parents[1]
EPOCHS = 3
# One worker: train cnn2_5 on digits (offline) with a checkpoint per epoch, then evaluate; `pause` stretches each epoch
WORKER = (
    r"""
import json, sys, time
from cnn.params import RunParams
from cnn.pipeline import evaluate_variant, train_variant
url, run, pause = sys.argv[1], sys.argv[2], float(sys.argv[3])
config = RunParams(dataset="digits", val_size=0.15, seed=0, epochs=%d, batch_size=64, lr=0.05, device="cpu", schedule="onecycle", storage=url, run=run)
out = train_variant(config, "cnn2_5", seed=3, lr=0.05, callback=lambda row: time.sleep(pause))
metrics = evaluate_variant(config, "cnn2_5", out["folder_rel"], model_id=out["model_id"])
keys = ("epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc")
print(json.dumps({"resumed_from": out["resumed_from"], "model_id": out["model_id"], "history": [{k: r[k] for k in keys} for r in out["history"]], "test_acc": metrics["accuracy"], "macro_f1": metrics["macro_f1"]}))
"""
    % EPOCHS
)


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **(extra or {})}


def _worker(url: str, run: str, pause: float = 0.0, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, url, run, str(pause)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(env),
    )


def _finish(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def _checkpoint_epoch(store: Storage, rel: str) -> int:
    """Epoch of the checkpoint in the store (0 if none); a reader always sees a whole file, so this never fails on a partial write."""
    if not store.exists(rel):
        return 0
    return int(load_checkpoint(store, rel, "cnn2_5")["epoch"])


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    """The reference: the same worker, never killed."""
    return _finish(_worker(str(tmp_path_factory.mktemp("reference")), "ref"))


@pytest.fixture(params=["local", "s3"])
def store_env(request, tmp_path):
    """(storage URL, worker environment) for a local folder or a bucket on a moto server."""
    if request.param == "local":
        yield str(tmp_path / "results"), {}
        return
    server = S3Server().start()
    server.client().create_bucket(Bucket="faults")
    env = s3_env(server.endpoint)
    with pytest.MonkeyPatch.context() as mp:
        for var, value in env.items():
            mp.setenv(var, value)
        yield "s3://faults/results", env
    server.stop()


def test_killed_worker_resumes_from_its_checkpoint_and_matches_an_uninterrupted_run(store_env, uninterrupted) -> None:
    url, env = store_env
    store, ckpt = Storage(url), "digits/killed/cnn2_5/checkpoint.pt"
    proc = _worker(url, "killed", pause=1.0, env=env)
    deadline = time.monotonic() + 120
    while _checkpoint_epoch(store, ckpt) < 1:
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint after 120 s"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    killed_at = _checkpoint_epoch(store, ckpt)
    assert 1 <= killed_at < EPOCHS and not store.exists("digits/killed/cnn2_5/model.pt")

    resumed = _finish(_worker(url, "killed", env=env))
    assert resumed["resumed_from"] == killed_at
    assert uninterrupted["resumed_from"] == 0
    assert resumed["history"] == uninterrupted["history"]
    assert (resumed["test_acc"], resumed["macro_f1"], resumed["model_id"]) == (
        uninterrupted["test_acc"],
        uninterrupted["macro_f1"],
        uninterrupted["model_id"],
    )
    assert _checkpoint_epoch(store, ckpt) == EPOCHS


# --- the store goes away mid-run ----------------------------------------------------------------------------------

VARIANTS = ["lenet1", "generic_2"]


def test_store_outage_mid_run_fails_clearly_and_a_rerun_completes_without_redoing(
    prefect_harness, fashion_dir, monkeypatch
) -> None:
    import tasks
    from cnn import pipeline
    from flows.compare import compare_architectures

    server = S3Server().start()
    server.client().create_bucket(Bucket="outage")
    for var, value in {
        **s3_env(server.endpoint),
        "CNN_LAB_STORAGE_RETRIES": "2",
        "CNN_LAB_STORAGE_BACKOFF": "0.05",
    }.items():
        monkeypatch.setenv(var, value)
    for task in (
        tasks.prepare_dataset,
        tasks.train_variant,
        tasks.evaluate_variant,
        tasks.extract_features,
        tasks.publish_variant,
        tasks.publish_comparison,
    ):
        monkeypatch.setattr(task, "retry_delay_seconds", [0.1] * len(task.retry_delay_seconds))

    real, trained, attempts = pipeline.train_seeds, {}, []

    def train_with_outage(config, variant, **kw):
        """The store goes down while the second variant trains, after its epoch-1 checkpoint is written."""
        attempts.append(variant)
        if variant == VARIANTS[1] and len(attempts) == 2:
            report = kw["callback"]

            def stop_after_epoch_2(seed, row):
                report(seed, row)
                if row["epoch"] == 2:
                    server.stop()

            kw["callback"] = stop_after_epoch_2
        [trained[variant]] = real(config, variant, **kw)
        return [trained[variant]]

    monkeypatch.setattr(pipeline, "train_seeds", train_with_outage)
    url = "s3://outage/results"
    kwargs = {
        "dataset": "fashion-mnist",
        "variants": VARIANTS,
        "epochs": 3,
        "batch_size": 64,
        "lr": 0.05,
        "data_dir": str(fashion_dir),
        "storage": url,
        "run": "outage",
        "repeats": 1,  # train_with_outage trains one seed a call
        "max_train": 300,
        "val_size": 60,
        "device": "cpu",
    }
    first = compare_architectures(**kwargs, return_state=True)

    assert first.is_failed()
    assert re.search(
        rf"StorageError: storage: cannot (read|write|stat) {url}/fashion-mnist/outage/\S+: failed after 2 attempt\(s\)",
        first.message,
    ), first.message
    assert "reachable?" in first.message
    assert SECRET not in first.message and KEY_ID not in first.message
    assert attempts == [VARIANTS[0], VARIANTS[1], VARIANTS[1], VARIANTS[1], VARIANTS[1]], (
        "train was not retried 3 times"
    )
    states = task_states(first.state_details.flow_run_id)
    assert states["train_variant"] == ["Completed", "Failed"]

    server.start()  # same port, same data
    done = {k: v for k, v in server.objects("outage").items() if f"/{VARIANTS[0]}/" in k}
    assert f"results/fashion-mnist/outage/{VARIANTS[1]}/checkpoint.pt" in server.objects("outage")
    attempts.clear()
    second = compare_architectures(**kwargs, return_state=True)

    assert second.is_completed(), second.message
    assert attempts == [VARIANTS[1]], "the finished variant was trained again"
    assert trained[VARIANTS[1]]["resumed_from"] == 1
    states = task_states(second.state_details.flow_run_id)
    assert states["prepare_dataset"] == ["Cached"] * 3
    for step in ("train_variant", "evaluate_variant", "extract_features"):
        assert states[step] == ["Cached", "Completed"], (step, states[step])
    after = server.objects("outage")
    assert {k: after[k] for k in done} == done, "files of the finished variant changed"
    assert all(r["status"] == "ok" for r in second.result()["rows"])
    assert "results/fashion-mnist/outage/comparison.md" in after
    server.stop()


# --- retries only where they help ----------------------------------------------------------------------------------

DIGITS = {"dataset": "digits", "epochs": 3, "batch_size": 64, "lr": 0.05, "device": "cpu", "val_size": 0.15}


def _fast_retries(monkeypatch, delay: float = 0.0, delays: list[float] | None = None) -> None:
    """Every step's retries after `delay` seconds (or after `delays`, one per retry)."""
    import tasks

    for task in (
        tasks.prepare_dataset,
        tasks.train_variant,
        tasks.evaluate_variant,
        tasks.extract_features,
        tasks.publish_variant,
        tasks.publish_comparison,
    ):
        monkeypatch.setattr(task, "retry_delay_seconds", delays or [delay] * len(task.retry_delay_seconds))


def _spy_train(monkeypatch) -> list:
    """Each call of the training step: ("raised", error) or ("ok", its result)."""
    from cnn import pipeline

    calls, real = [], pipeline.train_seeds

    def spy(*args, **kwargs):
        try:
            out = real(*args, **kwargs)
        except Exception as err:
            calls.append(("raised", err))
            raise
        calls.append(("ok", out[0]))
        return out

    monkeypatch.setattr(pipeline, "train_seeds", spy)
    return calls


@pytest.mark.parametrize("fault", ["no-space", "name-clash"])
def test_permanent_store_errors_fail_at_once_without_retries(prefect_harness, tmp_path, monkeypatch, fault) -> None:
    import errno

    from flows.compare import compare_architectures

    _fast_retries(monkeypatch)
    calls = _spy_train(monkeypatch)
    store = tmp_path / "store"
    if fault == "no-space":
        real_put = Storage._put

        def full_disk(self, full, data):
            if full.endswith("checkpoint.pt") and "epoch2" in written:
                raise OSError(errno.ENOSPC, "No space left on device", full)
            written.append("epoch2" if full.endswith("checkpoint.pt") else full)
            return real_put(self, full, data)

        written: list[str] = []
        monkeypatch.setattr(Storage, "_put", full_disk)
        expected = "no space left on the device"
    else:
        (store / "digits" / "clash").mkdir(parents=True)
        (store / "digits" / "clash" / "lenet1").write_text("a file where the variant's folder goes")
        expected = "a file is in the way"
    state = compare_architectures(
        **DIGITS, variants=["lenet1", "cnn2_5"], storage=str(store), run="clash", return_state=True
    )

    assert state.is_failed() and expected in state.message and "\n" not in state.message, state.message
    assert [kind for kind, _ in calls] == ["raised"], "a permanent error was retried (or the comparison went on)"
    assert task_states(state.state_details.flow_run_id)["train_variant"] == ["Failed"]


def test_a_store_that_stays_away_is_given_up_on_within_the_set_time(prefect_harness, monkeypatch, caplog) -> None:
    import logging

    from flows.compare import compare_architectures

    server = S3Server().start()
    server.client().create_bucket(Bucket="gone")
    for var, value in {
        **s3_env(server.endpoint),
        "CNN_LAB_STORAGE_RETRIES": "2",
        "CNN_LAB_STORAGE_BACKOFF": "0.05",
        "CNN_LAB_STORAGE_GIVE_UP_S": "2",
    }.items():
        monkeypatch.setenv(var, value)
    # the second attempt comes at once (well within the 2 s), the third 2.5 s later (past them), so three attempts
    # whatever the load: with 0.6 s between attempts and 1 s to give up, a busy machine gave up after two
    _fast_retries(monkeypatch, delays=[0.0, 2.5, 0.0])
    calls = _spy_train(monkeypatch)
    from tasks.progress import LISTENERS

    went_away: list[float] = []

    def stop_after_epoch_1(variant, row, done):
        if row["epoch"] == 1 and not went_away:
            server.stop()
            went_away.append(time.monotonic())

    monkeypatch.setattr("tasks.progress.LISTENERS", [*LISTENERS, stop_after_epoch_1])
    with caplog.at_level(logging.WARNING):
        state = compare_architectures(
            **DIGITS, variants=["lenet1", "cnn2_5"], storage="s3://gone/results", run="gone", return_state=True
        )
    failed_after = time.monotonic() - went_away[0]

    assert state.is_failed()
    assert re.search(
        r"StorageError: storage: cannot \w+ s3://gone/results/\S+: failed after \d attempt\(s\): .*reachable\?; gave up after \d s of failures \(CNN_LAB_STORAGE_GIVE_UP_S=2\)$",
        state.message,
    ), state.message
    assert [kind for kind, _ in calls] == ["raised"] * 3, "not given up after the set time: 4 attempts"
    assert failed_after < 10, failed_after
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) < 40, "hundreds of log lines"
    assert SECRET not in state.message and SECRET not in caplog.text


def test_a_retried_training_step_resumes_its_own_checkpoint_even_when_refreshing(
    prefect_harness, tmp_path, monkeypatch
) -> None:
    from cnn.errors import StorageError
    from flows.variant import train_variant_flow
    from tasks.progress import LISTENERS

    kwargs = {**DIGITS, "variant": "lenet1", "storage": str(tmp_path / "store"), "run": "again"}
    kwargs.pop("dataset")
    first = train_variant_flow(dataset="digits", **kwargs, return_state=True)  # leaves a finished checkpoint (epoch 3)
    assert first.is_completed(), first.message
    _fast_retries(monkeypatch)
    calls = _spy_train(monkeypatch)
    seen: list[int] = []

    def store_blip_at_epoch_2(variant, row, done):
        seen.append(int(row["epoch"]))
        if seen == [1, 2]:
            raise StorageError(
                "storage: cannot write .../history.csv: failed after 3 attempt(s): ConnectionResetError", transient=True
            )

    monkeypatch.setattr("tasks.progress.LISTENERS", [*LISTENERS, store_blip_at_epoch_2])
    state = train_variant_flow(dataset="digits", refresh=True, **kwargs, return_state=True)

    assert state.is_completed(), state.message
    assert seen == [1, 2, 2, 3], "the refresh resumed the earlier run's checkpoint, or the retry started over"
    assert [kind for kind, _ in calls] == ["raised", "ok"] and calls[1][1]["resumed_from"] == 1
    assert (
        state.result()["test_acc"] == first.result()["test_acc"]
    )  # resumed to the same metrics as a run without the blip
