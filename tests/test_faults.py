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

from cnn.storage import Storage
from prefect_helpers import task_states
from test_s3 import KEY_ID, SECRET, S3Server, s3_env

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parents[1]
EPOCHS = 3
# One worker: train cnn2_5 on digits (offline) with a checkpoint per epoch, then evaluate; `pause` stretches each epoch
WORKER = r"""
import json, sys, time
from cnn.pipeline import DatasetRef, evaluate_variant, train_variant
url, run, pause = sys.argv[1], sys.argv[2], float(sys.argv[3])
ref = DatasetRef(name="digits", val_size=0.15, seed=0)
config = {"epochs": %d, "batch_size": 64, "lr": 0.05, "device": "cpu", "seed": 3, "schedule": "onecycle"}
out = train_variant(ref, "cnn2_5", url, run, config, callback=lambda row: time.sleep(pause))
metrics = evaluate_variant(ref, "cnn2_5", url, out["folder_rel"], model_id=out["model_id"], device="cpu")
keys = ("epoch", "lr", "train_loss", "train_acc", "val_loss", "val_acc")
print(json.dumps({"resumed_from": out["resumed_from"], "model_id": out["model_id"], "history": [{k: r[k] for k in keys} for r in out["history"]], "test_acc": metrics["accuracy"], "macro_f1": metrics["macro_f1"]}))
""" % EPOCHS


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "2", **(extra or {})}


def _worker(url: str, run: str, pause: float = 0.0, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WORKER, url, run, str(pause)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(env))


def _finish(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def _checkpoint_epoch(store: Storage, rel: str) -> int:
    """Epoch of the checkpoint in the store (0 if none); a reader always sees a whole file, so this never fails on a partial write."""
    if not store.exists(rel):
        return 0
    from cnn.train import load_checkpoint

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
    assert (resumed["test_acc"], resumed["macro_f1"], resumed["model_id"]) == (uninterrupted["test_acc"], uninterrupted["macro_f1"], uninterrupted["model_id"])
    assert _checkpoint_epoch(store, ckpt) == EPOCHS


# --- the store goes away mid-run ----------------------------------------------------------------------------------

VARIANTS = ["lenet1", "generic_2"]


def test_store_outage_mid_run_fails_clearly_and_a_rerun_completes_without_redoing(prefect_harness, fashion_dir, monkeypatch) -> None:
    import tasks
    from cnn import pipeline
    from flows.compare import compare_architectures

    server = S3Server().start()
    server.client().create_bucket(Bucket="outage")
    for var, value in {**s3_env(server.endpoint), "CNN_LAB_STORAGE_RETRIES": "2", "CNN_LAB_STORAGE_BACKOFF": "0.05"}.items():
        monkeypatch.setenv(var, value)
    for task in (tasks.prepare_dataset, tasks.train_variant, tasks.evaluate_variant, tasks.extract_features, tasks.publish_variant, tasks.publish_comparison):
        monkeypatch.setattr(task, "retry_delay_seconds", [0.1] * len(task.retry_delay_seconds))

    real, trained, attempts = pipeline.train_variant, {}, []

    def train_with_outage(ref, variant, storage, run, config, **kw):
        """The store goes down while the second variant trains, after its epoch-1 checkpoint is written."""
        attempts.append(variant)
        if variant == VARIANTS[1] and len(attempts) == 2:
            report = kw["callback"]

            def stop_after_epoch_2(row):
                report(row)
                if row["epoch"] == 2:
                    server.stop()

            kw["callback"] = stop_after_epoch_2
        trained[variant] = real(ref, variant, storage, run, config, **kw)
        return trained[variant]

    monkeypatch.setattr(pipeline, "train_variant", train_with_outage)
    url = "s3://outage/results"
    kwargs = {"dataset": "fashion-mnist", "variants": VARIANTS, "epochs": 3, "batch_size": 64, "lr": 0.05, "data_dir": str(fashion_dir), "storage": url, "run": "outage", "max_train": 300, "val_size": 60, "device": "cpu"}
    first = compare_architectures(**kwargs, return_state=True)

    assert first.is_failed()
    assert re.search(rf"StorageError: storage: cannot (read|write|stat) {url}/fashion-mnist/outage/\S+: failed after 2 attempt\(s\)", first.message), first.message
    assert "reachable?" in first.message
    assert SECRET not in first.message and KEY_ID not in first.message
    assert attempts == [VARIANTS[0], VARIANTS[1], VARIANTS[1], VARIANTS[1], VARIANTS[1]], "train was not retried 3 times"
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
