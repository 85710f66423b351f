"""The artifact store on local disk and memory://: layout, atomic writes, retries with backoff, redaction, safe names."""

from __future__ import annotations

import errno
import json
import logging
import os
import uuid

import pytest

from cnn.errors import ConfigError, StorageError
from cnn.storage import Storage, redact, safe_name
from storage_helpers import reads_during_rewrites

SECRET = "cnnlab-SECRET-5b1e0c77"


def _files(root) -> dict[str, bytes]:
    """Every file under `root` (hidden ones too) with its bytes."""
    out = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            out[os.path.relpath(path, root)] = open(path, "rb").read()
    return out


def test_roundtrip_and_layout_on_local_disk(tmp_path) -> None:
    store = Storage(str(tmp_path / "results"))
    url = store.write_json("fashion-mnist/run1/lenet1/metrics.json", {"accuracy": 0.5})
    store.write_text("fashion-mnist/run1/lenet1/history.csv", "epoch,loss\n1,0.3\n")
    store.write_bytes("fashion-mnist/run1/lenet1/filters/conv1.png", b"\x89PNG")
    assert url == str(tmp_path / "results" / "fashion-mnist" / "run1" / "lenet1" / "metrics.json")
    assert json.loads(store.read_text("fashion-mnist/run1/lenet1/metrics.json")) == {"accuracy": 0.5}
    assert store.list("fashion-mnist/run1/lenet1") == ["filters", "history.csv", "metrics.json"]
    assert store.list("fashion-mnist/nothing-here") == []
    assert store.exists("fashion-mnist/run1/lenet1/filters/conv1.png") and not store.exists("fashion-mnist/run1/x.png")
    assert Storage(f"file://{tmp_path}/results").read_text("fashion-mnist/run1/lenet1/history.csv").startswith("epoch")


def test_memory_store_uses_the_same_keys() -> None:
    store = Storage(f"memory://cnn-lab-{uuid.uuid4().hex[:6]}/prefix/")
    store.write_json("d/r/v/row.json", {"variant": "v"})
    assert store.path("d/r/v/row.json") == f"{store.url}/d/r/v/row.json" and store.url.endswith("/prefix")
    assert store.list("d/r") == ["v"] and json.loads(store.read_text("d/r/v/row.json")) == {"variant": "v"}


def test_failed_local_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path, monkeypatch) -> None:
    store = Storage(str(tmp_path))
    store.write_bytes("run/v/checkpoint.pt", b"epoch-1 checkpoint")

    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("cnn.storage.os.fsync", disk_full)  # the new bytes are half on disk when this hits
    with pytest.raises(StorageError, match=r"storage: cannot write .*run/v/checkpoint\.pt: no space left"):
        store.write_bytes("run/v/checkpoint.pt", b"epoch-2 checkpoint, much longer than the first one")
    assert _files(tmp_path) == {"run/v/checkpoint.pt": b"epoch-1 checkpoint"}


def test_failed_rename_is_retried_and_keeps_the_old_file(tmp_path, monkeypatch) -> None:
    store = Storage(str(tmp_path), retries=2, backoff=0)
    store.write_text("a/comparison.md", "old table")
    monkeypatch.setattr(
        "cnn.storage.os.replace", lambda src, dst: (_ for _ in ()).throw(OSError(errno.EIO, "I/O error"))
    )
    with pytest.raises(StorageError, match=r"a/comparison\.md: failed after 2 attempt\(s\): OSError"):
        store.write_text("a/comparison.md", "new table")
    assert _files(tmp_path) == {"a/comparison.md": b"old table"}


def test_a_reader_never_sees_a_half_written_file(tmp_path) -> None:
    store = Storage(str(tmp_path))
    size = 4 << 20
    seen = reads_during_rewrites(store, "v/model.pt", size, 40)
    assert len(seen) > 5
    assert all(n == size and first == last for n, first, last in seen), "a reader saw a partial or mixed file"


def test_transient_errors_are_retried_with_backoff(monkeypatch, caplog) -> None:
    store = Storage(f"memory://retry-{uuid.uuid4().hex[:6]}", retries=3, backoff=0.5)
    real, calls, waits = store.fs.pipe_file, [], []

    def flaky(path, data, **kw):
        calls.append(path)
        if len(calls) < 3:
            raise ConnectionError("connection reset by peer")
        return real(path, data, **kw)

    monkeypatch.setattr(store.fs, "pipe_file", flaky)
    monkeypatch.setattr("cnn.storage.time.sleep", waits.append)
    with caplog.at_level(logging.WARNING, logger="cnn.storage"):
        store.write_text("d/r/v/history.csv", "epoch\n1\n")
    assert len(calls) == 3 and waits == [0.5, 1.0]
    assert store.read_text("d/r/v/history.csv") == "epoch\n1\n"
    assert [r.getMessage().split(" failed")[0] for r in caplog.records] == [f"write {store.url}/d/r/v/history.csv"] * 2


def test_last_error_names_the_url_and_no_secret(monkeypatch, caplog) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    store = Storage(f"memory://leaky-{uuid.uuid4().hex[:6]}", retries=2, backoff=0)

    def leaky(path, data, **kw):  # a library that puts the credentials into its error text
        raise TimeoutError(f"timed out signing with {SECRET} (password={SECRET})")

    monkeypatch.setattr(store.fs, "pipe_file", leaky)
    with caplog.at_level(logging.WARNING, logger="cnn.storage"), pytest.raises(StorageError) as err:
        store.write_json("d/r/v/metrics.json", {})
    text = str(err.value)
    assert f"{store.url}/d/r/v/metrics.json" in text and "after 2 attempt(s)" in text and "TimeoutError" in text
    assert SECRET not in text and SECRET not in caplog.text and err.value.__cause__ is None
    assert len(caplog.records) == 1


def test_permanent_errors_are_not_retried(monkeypatch) -> None:
    store = Storage(f"memory://denied-{uuid.uuid4().hex[:6]}", retries=5, backoff=0)
    calls = []

    def denied(path, data, **kw):
        calls.append(path)
        raise PermissionError(errno.EACCES, "Access Denied")

    monkeypatch.setattr(store.fs, "pipe_file", denied)
    with pytest.raises(StorageError, match="permission denied"):
        store.write_bytes("x.bin", b"1")
    assert len(calls) == 1


def test_a_store_failing_for_the_give_up_time_is_given_up_on(monkeypatch) -> None:
    monkeypatch.setenv("CNN_LAB_STORAGE_GIVE_UP_S", "10")
    store = Storage(f"memory://away-{uuid.uuid4().hex[:6]}", retries=3, backoff=0)
    clock, calls = [100.0], []

    def away(path, data, **kw):
        calls.append(path)
        raise ConnectionError("connection refused")

    monkeypatch.setattr(store.fs, "pipe_file", away)
    monkeypatch.setattr("cnn.storage.time.monotonic", lambda: clock[0])
    with pytest.raises(StorageError) as first:
        store.write_bytes("x.bin", b"1")
    assert first.value.transient and len(calls) == 3  # within the time: a task may try again later
    clock[0] += 11
    with pytest.raises(StorageError) as later:
        store.write_bytes("x.bin", b"1")
    assert not later.value.transient and len(calls) == 4  # given up: one attempt, final
    assert str(later.value).endswith("; gave up after 11 s of failures (CNN_LAB_STORAGE_GIVE_UP_S=10)")
    clock[0] += 301  # a failure more than 5 minutes after the last one starts a new outage
    with pytest.raises(StorageError) as fresh:
        store.write_bytes("x.bin", b"1")
    assert fresh.value.transient and len(calls) == 7


def test_permanent_errors_are_marked_so_and_transient_ones_survive_pickling(monkeypatch) -> None:
    import pickle

    store = Storage(f"memory://full-{uuid.uuid4().hex[:6]}", retries=3, backoff=0)
    monkeypatch.setattr(
        store.fs,
        "pipe_file",
        lambda path, data, **kw: (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device")),
    )
    with pytest.raises(StorageError, match="no space left on the device") as err:
        store.write_bytes("x.bin", b"1")
    assert not err.value.transient
    copy = pickle.loads(pickle.dumps(StorageError("storage: cannot write x", transient=True)))
    assert copy.transient and str(copy) == "storage: cannot write x"


def test_home_folder_is_expanded_in_storage_paths(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert Storage("~/results").url == str(tmp_path / "results")
    assert Storage("file://~/results").path("digits") == str(tmp_path / "results" / "digits")


def test_retries_and_backoff_come_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("CNN_LAB_STORAGE_RETRIES", "5")
    monkeypatch.setenv("CNN_LAB_STORAGE_BACKOFF", "0.25")
    store = Storage("memory://env-config")
    assert (store.retries, store.backoff) == (5, 0.25)
    assert Storage("memory://env-config", retries=1).retries == 1


def test_probe_leaves_nothing_behind(tmp_path) -> None:
    (tmp_path / "earlier.txt").write_text("keep me")
    Storage(str(tmp_path)).check_writable()
    assert _files(tmp_path) == {"earlier.txt": b"keep me"}


def test_redaction_of_urls_queries_and_environment_secrets(monkeypatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    text = redact(f"https://user:pw123@host/x?token=abc&X-Amz-Credential=1 and {SECRET}")
    assert "pw123" not in text and "abc" not in text and SECRET not in text
    assert text.startswith("https://***@host/x?token=***")
    assert repr(Storage("memory://bucket/prefix")) == "Storage('memory://bucket/prefix')"


@pytest.mark.parametrize("name", ["lenet1", "cnn2_5", "20260101-120000-brave-fox", "v1.2", "A-b_c"])
def test_safe_names_pass(name) -> None:
    assert safe_name(name, "run") == name


@pytest.mark.parametrize(
    "name",
    [
        "..",
        "../escape",
        "a/../b",
        "/etc/passwd",
        "a/b",
        "a\\b",
        "",
        ".hidden",
        "-flag",
        "a b",
        "x" * 101,
        "caf\u00e9",
        "nul\x00",
        None,
    ],
)
def test_unsafe_names_are_rejected_with_the_allowed_set(name) -> None:
    with pytest.raises(ConfigError, match=r"^variant: .*not a safe name \(allowed: letters, digits"):
        safe_name(name, "variant")
