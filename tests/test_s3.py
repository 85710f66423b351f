"""S3 through s3fs against moto's ThreadedMotoServer on 127.0.0.1 (the MinIO code path): keys, single puts, outages, and a
full comparison with storage=s3://... that a second worker process reads back."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cnn.errors import StorageError
from cnn.storage import Storage
from storage_helpers import BUCKET, KEY_ID, SECRET, S3Server, reads_during_rewrites, s3_in_environment

VARIANTS = ["lenet1", "generic_2"]
LAYOUT = (
    "losses.png",
    "confusion_matrix.png",
    "classification_report.csv",
    "lr_finder.json",
    "metrics.json",
    "history.csv",
    "checkpoint.pt",
    "model.pt",
    "row.json",
)


@pytest.fixture(scope="module")
def s3():
    """A started server with bucket BUCKET, its endpoint and fake credentials in the environment."""
    with s3_in_environment() as server:
        yield server


def test_keys_follow_the_layout_under_the_prefix(s3) -> None:
    store = Storage(f"s3://{BUCKET}/keys/")
    store.write_json("fashion-mnist/run1/lenet1/metrics.json", {"accuracy": 0.5})
    store.write_bytes("fashion-mnist/run1/lenet1/filters/conv1.png", b"\x89PNG")
    assert {k: v for k, v in s3.objects().items() if k.startswith("keys/")} == {
        "keys/fashion-mnist/run1/lenet1/metrics.json": b'{\n  "accuracy": 0.5\n}',
        "keys/fashion-mnist/run1/lenet1/filters/conv1.png": b"\x89PNG",
    }
    assert store.list("fashion-mnist/run1/lenet1") == ["filters", "metrics.json"]
    assert json.loads(store.read_text("fashion-mnist/run1/lenet1/metrics.json")) == {"accuracy": 0.5} and store.exists(
        "fashion-mnist/run1"
    )


def test_a_write_is_one_put_and_readers_see_whole_objects(s3, monkeypatch) -> None:
    store = Storage(f"s3://{BUCKET}/atomic")
    size = 2 << 20
    calls: list[str] = []
    real = store.fs._call_s3

    async def spy(method, *args, **kwargs):
        calls.append(method)
        return await real(method, *args, **kwargs)

    monkeypatch.setattr(store.fs, "_call_s3", spy)
    seen = reads_during_rewrites(store, "v/model.pt", size, 12)
    assert calls.count("put_object") == 13 and not [c for c in calls if "multipart" in c.lower()]
    assert seen and all(n == size and first == last for n, first, last in seen)


def test_outage_is_retried_then_names_the_url_and_nothing_is_lost(s3, monkeypatch, caplog) -> None:
    server = S3Server().start()
    server.client().create_bucket(Bucket="outage")
    monkeypatch.setenv("CNN_LAB_S3_ENDPOINT_URL", server.endpoint)
    store = Storage("s3://outage/run", retries=2, backoff=0.05)
    store.write_text("d/r/v/history.csv", "epoch\n1\n")
    server.stop()
    try:
        with pytest.raises(StorageError) as err:
            store.write_text("d/r/v/history.csv", "epoch\n1\n2\n")
    finally:
        server.start()
    text = str(err.value)
    assert text.startswith("storage: cannot write s3://outage/run/d/r/v/history.csv: failed after 2 attempt(s)")
    assert server.endpoint in text and "CNN_LAB_S3_ENDPOINT_URL" in text
    assert SECRET not in text + caplog.text and KEY_ID not in text
    assert "retrying" in caplog.text
    assert store.read_text("d/r/v/history.csv") == "epoch\n1\n"  # the server is back: the old object is intact
    server.stop()


# --- a full comparison on S3, read back by a second worker ---------------------------------------------------------

SECOND_WORKER = r"""
import hashlib, json, sys
import torch
from cnn.evaluate import evaluate
from cnn.step_inputs import DatasetRef, get_dataset
from cnn.trained_models import load_trained_model
from cnn.storage import Storage
from cnn.train_setup import make_loader

url, ref, folders = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
store = Storage(url)
data = get_dataset(DatasetRef(**ref))
out = {"variants": {}, "task_results": {}}
for variant, folder in folders.items():
    model, size = load_trained_model(store, folder, variant, data)
    res = evaluate(model, make_loader(data, "test", batch_size=256, input_size=size, device=torch.device("cpu")), data.classes)
    out["variants"][variant] = {
        "row_acc": json.loads(store.read_text(f"{folder}/row.json"))["test_acc"],
        "metrics_acc": json.loads(store.read_text(f"{folder}/metrics.json"))["accuracy"],
        "recomputed_acc": res.accuracy,
        "model_id": hashlib.blake2b(store.read_bytes(f"{folder}/model.pt"), digest_size=12).hexdigest(),
    }
from prefect_helpers import read_task_result
for key in store.list("_prefect-results"):
    value = read_task_result(url, key)
    for trained in value if isinstance(value, list) else []:  # the training step's result: one dict per seed
        if isinstance(trained, dict) and "model_id" in trained and "epochs" in trained:
            out["task_results"][trained["variant"]] = trained["model_id"]
print(json.dumps(out))
"""


async def _prefect_texts(flow_run_id) -> list[str]:
    """Everything Prefect holds about the run: parameters, logs, artifacts, block documents."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    async with get_client() as client:
        run = await client.read_flow_run(flow_run_id)
        logs = await client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
        artifacts = await client.read_artifacts()
        blocks = await client.read_block_documents(include_secrets=True)
    return [
        json.dumps(run.parameters),
        *(log.message for log in logs),
        *(str(a.data) for a in artifacts),
        *(json.dumps(b.data, default=str) for b in blocks),
    ]


@pytest.mark.slow
def test_comparison_on_s3_is_read_back_by_a_second_worker(s3, prefect_harness, fashion_dir: Path) -> None:
    from flows.compare import compare_architectures

    url = f"s3://{BUCKET}/results"
    ref = {
        "name": "fashion-mnist",
        "data_dir": str(fashion_dir),
        "val_size": 80,
        "seed": 0,
        "max_train": 400,
        "max_test": None,
    }
    state = compare_architectures(
        dataset="fashion-mnist",
        variants=VARIANTS,
        epochs=1,
        batch_size=64,
        data_dir=str(fashion_dir),
        storage=url,
        run="s3-e2e",
        repeats=1,
        max_train=400,
        val_size=80,
        device="cpu",
        return_state=True,
    )
    assert state.is_completed(), state.message
    rows = {r["variant"]: r for r in state.result()["rows"]}
    assert all(r["status"] == "ok" for r in rows.values())

    objects = s3.objects()
    keys = set(objects)
    for variant in VARIANTS:
        folder = f"results/fashion-mnist/s3-e2e/{variant}"
        assert {f"{folder}/{name}" for name in LAYOUT} <= keys
        assert any(k.startswith(f"{folder}/filters/") and k.endswith(".png") for k in keys)
        assert any(k.startswith(f"{folder}/feature_maps/") and k.endswith(".png") for k in keys)
    assert {"results/fashion-mnist/s3-e2e/comparison.md", "results/fashion-mnist/s3-e2e/comparison.csv"} <= keys
    assert any(k.startswith("results/_prefect-results/") for k in keys), "task results are not in the store"
    assert not [k for k in keys if ".tmp-" in k or "write-check" in k]

    for text in [
        *(v.decode("latin-1") for v in objects.values()),
        *asyncio.run(_prefect_texts(state.state_details.flow_run_id)),
    ]:
        assert SECRET not in text

    folders = {v: f"fashion-mnist/s3-e2e/{v}" for v in VARIANTS}
    worker = subprocess.run(
        [sys.executable, "-c", SECOND_WORKER, url, json.dumps(ref), json.dumps(folders)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), str(Path(__file__).parent)])},
        timeout=120,
    )
    assert worker.returncode == 0, worker.stderr[-3000:]
    seen = json.loads(worker.stdout.strip().splitlines()[-1])
    for variant in VARIANTS:
        got = seen["variants"][variant]
        assert got["row_acc"] == got["metrics_acc"] == rows[variant]["test_acc"]
        assert got["recomputed_acc"] == pytest.approx(rows[variant]["test_acc"], abs=1e-9)
        assert (
            got["model_id"]
            == hashlib.blake2b(objects[f"results/{folders[variant]}/model.pt"], digest_size=12).hexdigest()
        )
    assert seen["task_results"] == {v: seen["variants"][v]["model_id"] for v in VARIANTS}


# --- a secret in the endpoint, and a failing S3 run: no output holds a secret ---------------------------------------

ENDPOINT_SECRET = "endpoint-pw-0b7d2c51"  # not the AWS secret: redaction by the variables' values must not hide it


def _leaks(texts: list[str], files_under: Path) -> list[str]:
    """Where a secret shows up: in the texts, or in any file under `files_under`."""
    found = [text[:200] for text in texts if ENDPOINT_SECRET in text or SECRET in text]
    for path in files_under.rglob("*"):
        if path.is_file() and (ENDPOINT_SECRET.encode() in path.read_bytes() or SECRET.encode() in path.read_bytes()):
            found.append(str(path))
    return found


def _cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "CNN_LAB_S3", "AWS_ENDPOINT"))}
    return {**env, "PYTHONPATH": str(Path(__file__).parents[1]), "PREFECT_HOME": str(tmp_path / "prefect"), **extra}


@pytest.mark.parametrize("case", ["credentials-in-the-endpoint", "endpoint-down"])
def test_a_failing_s3_comparison_prints_and_writes_no_secret(s3, tmp_path: Path, case: str) -> None:
    from storage_helpers import free_port

    if case == "credentials-in-the-endpoint":
        extra = {"AWS_ENDPOINT_URL": f"http://{KEY_ID}:{ENDPOINT_SECRET}@127.0.0.1:{s3.port}"}
        line = r"^cnn-lab: AWS_ENDPOINT_URL: credentials in the endpoint are not accepted .*'http://\*\*\*@127\.0\.0\.1:\d+'"
    else:  # the AWS secret in the environment, the endpoint gone: the storage error's hint names the endpoint
        extra = {"CNN_LAB_S3_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}", "CNN_LAB_STORAGE_RETRIES": "1"}
        line = r"^cnn-lab: storage: cannot write to s3://cnn-lab/leak: failed after 1 attempt\(s\): .*; is the endpoint http://127\.0\.0\.1:\d+ \(CNN_LAB_S3_ENDPOINT_URL\) reachable\?$"
    argv = ["compare", "--dataset", "digits", "--variants", "lenet1", "--epochs", "1", "--storage", "s3://cnn-lab/leak"]
    done = subprocess.run(
        [sys.executable, "-m", "flows.cli", *argv, "--device", "cpu"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=_cli_env(tmp_path, **extra),
        timeout=120,
    )
    assert done.returncode == 2 and re.match(line, done.stderr) and done.stderr.count("\n") == 1, done.stderr
    objects = [v.decode("latin-1") for v in s3.objects().values()]
    assert _leaks([done.stdout, done.stderr, *objects], tmp_path) == []


@pytest.mark.slow
def test_a_deployment_run_with_a_secret_in_the_endpoint_fails_without_printing_it(
    s3, prefect_harness, tmp_path: Path, monkeypatch
) -> None:
    from flows.compare import compare_architectures

    monkeypatch.delenv("CNN_LAB_S3_ENDPOINT_URL")
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://{KEY_ID}:{ENDPOINT_SECRET}@127.0.0.1:{s3.port}")
    monkeypatch.chdir(tmp_path)
    state = compare_architectures(  # as a worker runs a deployment: no CLI checks before the flow
        dataset="digits", variants=["lenet1"], epochs=1, storage=f"s3://{BUCKET}/leak", device="cpu", return_state=True
    )
    assert state.is_failed()
    assert state.message.startswith("ConfigError: AWS_ENDPOINT_URL: credentials in the endpoint are not accepted")
    texts = [state.message, *asyncio.run(_prefect_texts(state.state_details.flow_run_id))]
    assert _leaks([*texts, *(v.decode("latin-1") for v in s3.objects().values())], tmp_path) == []
