"""Cached task results cannot run code: a planted or foreign result file is a cache miss with a warning, never loaded."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from prefect.results import ResultRecord, ResultRecordMetadata, ResultStore
from prefect.serializers import CompressedSerializer, JSONSerializer, PickleSerializer

from flows.results import (
    RESULTS_DIR,
    CnnLabResultStorage,
    PlainJSONSerializer,
    UntrustedResult,
    check_record,
)
from prefect_helpers import read_task_result, task_runs, task_states


class Marker:
    """Unpickling this writes the marker file: proof that a stored result ran code."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (self.path, "w"))


def _record(serializer: Any, value: Any) -> bytes:
    return ResultRecord(result=value, metadata=ResultRecordMetadata(serializer=serializer, storage_key="k")).serialize()


def _planted(marker: Path) -> dict[str, bytes]:
    """Result files an attacker could write, each running code (or importing a class) if Prefect's own readers loaded it."""
    pickled = _record(PickleSerializer(), Marker(str(marker)))
    ours = json.loads(_record(PlainJSONSerializer(), {"a": 1}))
    return {
        "pickle": pickled,
        "compressed-pickle": _record(CompressedSerializer(serializer=PickleSerializer()), Marker(str(marker))),
        "prefect-json-object-hook": _record(JSONSerializer(), {"__class__": "pathlib.Path", "data": str(marker)}),
        "serializer-smuggled-at-top-level": json.dumps({**ours, "serializer": {"type": "pickle"}}).encode(),
        "extra-metadata": json.dumps({**ours, "metadata": {**ours["metadata"], "x": 1}}).encode(),
        "raw-pickle-bytes": json.loads(pickled)["result"].encode(),
        "not-json": b"\x80\x04\x95garbage",
    }


def test_own_records_round_trip_and_foreign_ones_are_refused(tmp_path: Path) -> None:
    record = _record(PlainJSONSerializer(), {"acc": 0.5, "classes": ["a", "b"], "n": None})
    assert check_record(record) == record
    block = CnnLabResultStorage(basepath=str(tmp_path / RESULTS_DIR))
    block.write_path("abc123", record)
    assert read_task_result(str(tmp_path), "abc123") == {"acc": 0.5, "classes": ["a", "b"], "n": None}
    marker = tmp_path / "marker"
    for name, content in _planted(marker).items():
        with pytest.raises(UntrustedResult):
            check_record(content)
        block.write_path(name, content)
        with pytest.raises(UntrustedResult):
            read_task_result(str(tmp_path), name)
        assert not ResultStore(result_storage=block, serializer=PlainJSONSerializer()).exists(name), name
    assert not marker.exists(), "a planted result ran code"


def test_keys_that_are_not_plain_file_names_are_refused(tmp_path: Path) -> None:
    block = CnnLabResultStorage(basepath=str(tmp_path / RESULTS_DIR))
    for key in ("../escape", "a/b", "", ".hidden"):
        with pytest.raises(UntrustedResult):
            block.write_path(key, b"{}")


def test_planted_result_is_a_cache_miss_with_a_warning_never_run(prefect_harness, tmp_path: Path, caplog) -> None:
    from prefect import flow

    from cnn.params import RunParams
    from flows.results import with_result_storage
    from tasks import prepare_dataset

    storage = str(tmp_path / "store")
    config = RunParams(
        dataset="digits", data_dir=str(tmp_path / "data"), val_size=60, max_train=300, max_test=100, storage=storage
    )

    @flow
    def prepare() -> dict[str, Any]:
        return with_result_storage(prepare_dataset, storage)(config)

    first = prepare(return_state=True)
    expected = first.result()
    results = tmp_path / "store" / RESULTS_DIR
    [key] = [p.name for p in results.iterdir() if not p.name.startswith(".")]
    marker = tmp_path / "marker"
    for name, content in _planted(marker).items():
        (results / key).write_bytes(content)
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            state = prepare(return_state=True)
        assert state.is_completed() and state.result() == expected, name
        assert task_states(state.state_details.flow_run_id) == {"prepare_dataset": ["Completed"]}, name
        assert "ignoring cached result" in caplog.text and key in caplog.text, name
        assert not marker.exists(), f"{name}: the planted result ran code"
        assert check_record((results / key).read_bytes()), f"{name}: the fresh result did not replace the planted one"
    again = prepare(return_state=True)
    assert task_states(again.state_details.flow_run_id) == {"prepare_dataset": ["Cached"]}


def test_a_failed_task_stores_its_error_as_text_and_its_state_reads_it_back(
    prefect_harness, tmp_path: Path, caplog
) -> None:
    from prefect import flow, task
    from prefect.states import get_state_exception

    from cnn.errors import DataError
    from flows.results import StoredError, with_result_storage

    storage = str(tmp_path / "store")

    @task(persist_result=True)
    def load() -> None:
        raise DataError("dataset 'FashionMNIST' could not be downloaded (URLError: offline)")

    @flow
    def run() -> None:
        with_result_storage(load, storage)()

    with caplog.at_level(logging.WARNING):
        state = run(return_state=True)
    assert state.is_failed()
    assert "Failed to write result" not in caplog.text and "serialize" not in caplog.text, caplog.text
    [stored] = [p for p in (tmp_path / "store" / RESULTS_DIR).iterdir() if not p.name.startswith(".")]
    record = json.loads(check_record(stored.read_bytes()))
    assert json.loads(record["result"]) == {
        "cnn_lab_error": {
            "type": "DataError",
            "message": "dataset 'FashionMNIST' could not be downloaded (URLError: offline)",
        }
    }
    [task_run] = task_runs(state.state_details.flow_run_id)
    error = get_state_exception(task_run.state)  # the state the API holds points at that record
    assert isinstance(error, StoredError) and error.type_name == "DataError"
    assert str(error) == "DataError: dataset 'FashionMNIST' could not be downloaded (URLError: offline)"
    planted = {"cnn_lab_error": {"type": "os.system", "message": "touch x"}}
    assert isinstance(PlainJSONSerializer().loads(json.dumps(planted).encode()), StoredError)  # a name, never looked up
