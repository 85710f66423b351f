"""--task-runner on a Dask cluster (prefect-dask): a local cluster of 2 worker processes started here trains the
variants, and every artifact and task result lands in S3-compatible storage (moto on 127.0.0.1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage_helpers import BUCKET, s3_in_environment

pytestmark = pytest.mark.slow
distributed = pytest.importorskip("distributed")
pytest.importorskip("prefect_dask")

VARIANTS = ["lenet1", "generic_2"]


@pytest.fixture(scope="module")
def s3_and_cluster():
    """moto's S3 with the bucket, then 2 Dask worker processes that inherit its endpoint and credentials."""
    with (
        s3_in_environment() as server,
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None
        ) as cluster,
    ):
        yield server, cluster


def test_comparison_runs_on_the_cluster_with_artifacts_in_s3(
    s3_and_cluster, prefect_harness, fashion_dir: Path
) -> None:
    from flows.compare import compare_architectures

    server, cluster = s3_and_cluster
    url = f"s3://{BUCKET}/dask"
    with distributed.Client(cluster.scheduler_address) as client, distributed.get_task_stream(client) as stream:
        state = compare_architectures(
            dataset="fashion-mnist",
            variants=VARIANTS,
            epochs=1,
            batch_size=64,
            lr=0.003,
            data_dir=str(fashion_dir),
            storage=url,
            run="on-dask",
            repeats=1,
            max_train=400,
            val_size=80,
            device="cpu",
            task_runner=cluster.scheduler_address,
            return_state=True,
        )
    assert state.is_completed(), state.message
    rows = {r["variant"]: r for r in state.result()["rows"]}
    assert set(rows) == set(VARIANTS) and all(r["status"] == "ok" for r in rows.values())
    assert {t["worker"] for t in stream.data} == set(
        cluster.scheduler_info["workers"]
    )  # both workers trained a variant

    keys = set(server.objects())
    for variant in VARIANTS:
        folder = f"dask/fashion-mnist/on-dask/{variant}"
        assert {
            f"{folder}/{name}" for name in ("row.json", "model.pt", "metrics.json", "history.csv", "losses.png")
        } <= keys
        assert rows[variant]["folder"] == f"s3://{BUCKET}/{folder}"
    assert "dask/fashion-mnist/on-dask/comparison.md" in keys
    assert any(k.startswith("dask/_prefect-results/") for k in keys), "task results are not in the store"
