"""Nothing read from the store runs code: the planted-plugin attack of a shared store, locally and on S3 (moto on
127.0.0.1), through the real `cnn-lab` command."""

from __future__ import annotations

from prefect_server import running_server

import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cnn.storage import Storage
from storage_helpers import BUCKET, s3_in_environment

ROOT = Path(__file__).parents[1]
ZEN = "Beautiful is better than ugly"  # what `import this` prints


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """One Prefect server for the CLI runs here, as a team's shared server (a temporary one each would cost seconds);
    its PREFECT_* settings."""
    with running_server(tmp_path_factory.mktemp("prefect-home")) as (_, env):
        yield {k: v for k, v in env.items() if k.startswith("PREFECT_")}


def _cnn_lab(server: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """`cnn-lab ARGS` in `cwd` against the module's Prefect server, with this process's environment (S3 included)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(server, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def _plant(store: Storage, code_file: Path) -> None:
    """The attack: a .py file, and files naming it (and an importable module) as plug-ins: the published-rows file of
    the issue (where earlier versions kept a variant's rows), and a variant record in the comparison's folder."""
    code_file.write_text('open("PWNED", "w").write("x")\n')
    planted = {
        "run": "x",
        "repeats": 1,
        "rows": [{"variant": "evil", "status": "failed", "seed": 0}],
        "plugins": {"variant_modules": [str(code_file), "this"], "variant_files": {}},
    }
    store.write_json("digits/latest/evil.json", planted)
    store.write_json("digits/comparisons/default/evil.json", {**planted, "variant": "evil", "comparison": "default"})


def _attack(server: dict[str, str], work: Path, storage: str) -> None:
    quick = ["--dataset", "digits", "--storage", storage, "--epochs", "1", "--batch-size", "32"]
    first = _cnn_lab(server, work, "compare", "--variants", "lenet1", "--run", "a", "--repeats", "1", *quick)
    assert first.returncode == 0, first.stderr[-3000:]
    store = Storage(storage)
    _plant(store, work / "x.py")

    retrain = _cnn_lab(server, work, "retrain", "lenet1", *quick)
    assert retrain.returncode == 0, retrain.stderr[-3000:]
    evil = _cnn_lab(server, work, "retrain", "evil", *quick)
    assert evil.returncode == 2 and evil.stderr.startswith("cnn-lab: variant: unknown variant 'evil'"), evil.stderr
    definition = json.loads(store.read_text("digits/comparisons/default/comparison.json"))
    store.write_json("digits/comparisons/default/comparison.json", {**definition, "variants": ["lenet1", "evil"]})
    listed = _cnn_lab(server, work, "retrain", "lenet1", *quick)  # now the table reads evil's planted record
    assert listed.returncode == 2, listed.stderr[-3000:]
    assert re.match(r"cnn-lab: storage: \S+/evil\.json is not a cnn-lab VariantRows record", listed.stderr)
    for out in (evil, listed):
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr

    assert not (work / "PWNED").exists(), "a planted plug-in ran"
    for out in (retrain, evil, listed):
        assert ZEN not in out.stdout + out.stderr, "a planted module was imported"
    published = json.loads(store.read_text("digits/comparisons/default/lenet1.json"))
    assert "plugins" not in published, "the retrain copied the planted reference"


@pytest.mark.slow
def test_a_planted_plugin_in_a_local_store_runs_no_code(prefect_server: dict[str, str], tmp_path: Path) -> None:
    _attack(prefect_server, tmp_path, str(tmp_path / "st"))


@pytest.mark.slow
def test_a_planted_plugin_in_an_s3_store_runs_no_code(prefect_server: dict[str, str], tmp_path: Path) -> None:
    with s3_in_environment():
        _attack(prefect_server, tmp_path, f"s3://{BUCKET}/shared")


# --- reads of the store that check what they find -------------------------------------------------------------------


def _prepare_flow(config):
    """A flow running the dataset step as the comparison does (flows.variant_steps.step_task: results checked)."""
    from prefect import flow

    from flows.variant_steps import step_task
    from tasks import prepare_dataset

    @flow
    def prepare() -> dict:
        return step_task(prepare_dataset, config)(config)

    return prepare


class Collected(logging.Handler):
    """The messages of Prefect's run loggers (which need not propagate to pytest's caplog)."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record) -> None:
        self.messages.append(record.getMessage())

    def __enter__(self) -> Collected:
        for name in ("prefect.task_runs", "prefect.flow_runs", "cnn_lab.results"):
            logging.getLogger(name).addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        for name in ("prefect.task_runs", "prefect.flow_runs", "cnn_lab.results"):
            logging.getLogger(name).removeHandler(self)


def test_a_fifo_an_oversized_or_a_wrongly_typed_record_is_a_miss_then_replaced(prefect_harness, tmp_path: Path) -> None:
    import threading

    from cnn.params import RunParams
    from cnn.storage import MAX_READ_BYTES
    from flows.results import RESULTS_DIR, check_record

    config = RunParams(dataset="digits", val_size=60, max_train=300, max_test=100, storage=str(tmp_path / "store"))
    prepare = _prepare_flow(config)
    expected = prepare()
    results = tmp_path / "store" / RESULTS_DIR
    [key] = [p.name for p in results.iterdir() if not p.name.startswith(".")]
    good = (results / key).read_bytes()
    record = json.loads(good)
    wrong = json.dumps({**record, "result": json.dumps({**json.loads(record["result"]), "num_train": "many"})}).encode()
    for name, plant in {
        "fifo": lambda p: (p.unlink(), os.mkfifo(p)),
        "oversized": lambda p: p.write_bytes(b" " * (MAX_READ_BYTES + 1)),
        "wrong-type": lambda p: p.write_bytes(wrong),
    }.items():
        plant(results / key)
        done = threading.Event()
        with Collected() as logs:
            runner = threading.Thread(target=lambda done=done: (prepare(), done.set()), daemon=True)
            runner.start()
            runner.join(120)
        assert done.is_set(), f"{name}: the run blocked on the planted file"
        text = "\n".join(logs.messages)
        assert re.search(r"ignoring cached result|its cached result is not one", text), (name, text)
        replaced = (results / key).read_bytes()
        assert check_record(replaced) and json.loads(replaced)["result"] == record["result"], name
        assert prepare() == expected, name


def test_a_symlinked_run_folder_sends_nothing_outside_the_store(tmp_path: Path) -> None:
    from cnn.errors import StorageError

    outside, store = tmp_path / "outside", Storage(str(tmp_path / "store"))
    outside.mkdir()
    (tmp_path / "store" / "digits").mkdir(parents=True)
    (tmp_path / "store" / "digits" / "run").symlink_to(outside)
    with pytest.raises(StorageError, match=r"a symbolic link there points outside the store"):
        store.write_text("digits/run/lenet1/row.json", "{}")
    assert not list(outside.iterdir())
    (outside / "secret.json").write_text("{}")
    with pytest.raises(StorageError, match=r"a symbolic link there points outside the store"):
        store.read_bytes("digits/run/secret.json")


def test_a_row_whose_folder_leads_outside_the_store_is_refused(tmp_path: Path) -> None:
    from cnn.comparisons import read_row
    from cnn.errors import StorageError

    store = Storage(str(tmp_path))
    row = {"variant": "lenet1", "seed": 0, "status": "ok", "folder": "/etc"}
    store.write_json("digits/r/lenet1/row.json", row)
    with pytest.raises(
        StorageError,
        match=r"row\.json is not a cnn-lab _StoredRow record \(row: Value error, folder '/etc' is outside the store",
    ):
        read_row(store, "digits/r/lenet1/row.json")
    store.write_json("digits/r/lenet1/row.json", {**row, "folder": store.path("digits/../../etc")})
    with pytest.raises(StorageError, match=r"is not a safe name"):
        read_row(store, "digits/r/lenet1/row.json")
