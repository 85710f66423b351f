"""S3 credentials from a saved prefect-aws block (the `storage_block` parameter), for workers without AWS variables: a
comparison on moto's S3 whose credentials come only from the block, and the secret nowhere in what the run leaves."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from prefect_server import REPO, running_server
from storage_helpers import BUCKET, KEY_ID, SECRET, S3Server

BLOCK = "aws-credentials/cnn-lab-store"
NO_AWS = {  # a worker without AWS variables, files or an instance role
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/credentials",
    "AWS_CONFIG_FILE": "/nonexistent/config",
}


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    compare = ["compare", "--dataset", "digits", "--variants", "lenet1", "--repeats", "1"]
    command = [sys.executable, "-m", "flows.cli", *compare, *args]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)


def _server_texts(api: str) -> list[str]:
    """Everything the Prefect server holds about the runs: parameters, logs, artifacts, and every block but the one
    that holds the credentials by design."""
    from prefect.client.orchestration import SyncPrefectClient

    with SyncPrefectClient(api) as client:
        runs = client.read_flow_runs()
        logs = client.read_logs()
        artifacts = client.read_artifacts()
        blocks = client.read_block_documents(include_secrets=True)
    return [
        *(json.dumps(run.parameters) for run in runs),
        *(log.message for log in logs),
        *(f"{a.description} {a.data}" for a in artifacts),
        *(json.dumps(b.data, default=str) for b in blocks if b.block_type.slug != "aws-credentials"),
    ]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_comparison_gets_its_s3_credentials_from_a_saved_block_and_shows_them_nowhere(tmp_path: Path) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect_aws import AwsCredentials

    s3 = S3Server().start()
    try:
        s3.client().create_bucket(Bucket=BUCKET)
        with running_server(tmp_path / "home") as (api, server_env):
            with temporary_settings(updates={PREFECT_API_URL: api}):
                AwsCredentials(
                    aws_access_key_id=KEY_ID,
                    aws_secret_access_key=SECRET,
                    region_name="us-east-1",
                    aws_client_parameters={"endpoint_url": s3.endpoint},
                ).save(BLOCK.split("/")[1])
            env: dict[str, Any] = {
                k: v for k, v in server_env.items() if not k.startswith(("AWS_", "CNN_LAB_S3")) and k != "DO_NOT_TRACK"
            }
            env.update(NO_AWS, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
            storage = f"s3://{BUCKET}/results"
            common = ("--epochs", "1", "--batch-size", "32", "--max-train", "200", "--lr", "0.05", "--storage", storage)
            without = _cli(env, *common)
            assert without.returncode == 2 and "no usable credentials" in without.stderr, without.stderr[-3000:]
            done = _cli(env, *common, "--storage-block", BLOCK, "--run", "from-block")
            assert done.returncode == 0, done.stderr[-3000:]
            assert "report: digits/from-block/report.md" in done.stdout
            objects = s3.objects()
            assert "results/digits/from-block/lenet1/row.json" in objects
            texts = [done.stdout, done.stderr, *_server_texts(api), *(v.decode("latin-1") for v in objects.values())]
    finally:
        s3.stop()
    assert any(BLOCK in text for text in texts)  # the parameter names the block ...
    for secret in (SECRET, KEY_ID):  # ... and nothing holds what is in it
        assert not [text[:200] for text in texts if secret in text], secret
