"""Nothing read from the store runs code: the planted-plugin attack of a shared store, locally and on S3 (moto on
127.0.0.1), through the real `cnn-lab` command."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cnn.storage import Storage
from storage_helpers import BUCKET, s3_in_environment

ROOT = Path(__file__).parents[1]
ZEN = "Beautiful is better than ugly"  # what `import this` prints


@pytest.fixture(scope="module")
def prefect_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One Prefect home for the CLI runs here (the temporary server's database is migrated once)."""
    return tmp_path_factory.mktemp("prefect-home")


def _cnn_lab(home: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """`cnn-lab ARGS` in `cwd` with its temporary Prefect server, as a user runs it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", PYTHONPATH=str(ROOT))
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


def _attack(home: Path, work: Path, storage: str) -> None:
    quick = ["--dataset", "digits", "--storage", storage, "--epochs", "1", "--batch-size", "32"]
    first = _cnn_lab(home, work, "compare", "--variants", "lenet1", "--run", "a", *quick)
    assert first.returncode == 0, first.stderr[-3000:]
    store = Storage(storage)
    _plant(store, work / "x.py")

    retrain = _cnn_lab(home, work, "retrain", "lenet1", *quick)
    assert retrain.returncode == 0, retrain.stderr[-3000:]
    evil = _cnn_lab(home, work, "retrain", "evil", *quick)
    assert evil.returncode == 2 and evil.stderr.startswith("cnn-lab: variant: unknown variant 'evil'"), evil.stderr
    definition = store.read_json("digits/comparisons/default/comparison.json")
    store.write_json("digits/comparisons/default/comparison.json", {**definition, "variants": ["lenet1", "evil"]})
    listed = _cnn_lab(home, work, "retrain", "lenet1", *quick)  # now the table reads evil's planted record
    assert listed.returncode == 2, listed.stderr[-3000:]
    assert re.match(r"cnn-lab: storage: \S+/evil\.json is not a cnn-lab VariantRows record", listed.stderr)
    for out in (evil, listed):
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr

    assert not (work / "PWNED").exists(), "a planted plug-in ran"
    for out in (retrain, evil, listed):
        assert ZEN not in out.stdout + out.stderr, "a planted module was imported"
    published = store.read_json("digits/comparisons/default/lenet1.json")
    assert "plugins" not in published, "the retrain copied the planted reference"


@pytest.mark.slow
def test_a_planted_plugin_in_a_local_store_runs_no_code(prefect_home: Path, tmp_path: Path) -> None:
    _attack(prefect_home, tmp_path, str(tmp_path / "st"))


@pytest.mark.slow
def test_a_planted_plugin_in_an_s3_store_runs_no_code(prefect_home: Path, tmp_path: Path) -> None:
    with s3_in_environment():
        _attack(prefect_home, tmp_path, f"s3://{BUCKET}/shared")
