"""Shared fixtures: test-made IDX data and small dataset references."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("MPLBACKEND", "Agg")
# The suite runs servers, workers and flow-run subprocesses side by side on 2 cores; torch's default of one
# OpenMP thread per core then oversubscribes the CPU and spin-waits (tiny models ran 50x slower). One thread
# each, inherited by every subprocess, keeps the tests fast. Benchmarks (cnn-lab bench) use torch's default.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from idx_data import write_mnist_like  # noqa: E402


@pytest.fixture(scope="session")
def fashion_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data_dir holding FashionMNIST raw IDX files made by the tests (600 train, 200 test)."""
    return write_mnist_like(tmp_path_factory.mktemp("data"), "FashionMNIST")


@pytest.fixture(scope="session")
def prefect_harness():
    """One Prefect test server (temporary database) for the whole session."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On pytest-xdist's workers (one file at a time each, in this order): the files with slow tests first, so the last
    files handed out are quick ones and the workers finish together. A plain run keeps pytest's order."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    slow = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow)  # stable: each file's tests stay together and in order
