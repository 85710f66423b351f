"""Shared checks on the artifact store for the local and S3 tests."""
from __future__ import annotations

import threading

from cnn.storage import Storage


def reads_during_rewrites(store: Storage, rel: str, size: int, rewrites: int) -> list[tuple[int, bytes, bytes]]:
    """Rewrite `rel` alternately with all-'a' and all-'b' payloads while reading it; (length, first, last byte) per read."""
    store.write_bytes(rel, b"a" * size)
    done = threading.Event()

    def writer() -> None:
        for i in range(rewrites):
            store.write_bytes(rel, (b"b" if i % 2 == 0 else b"a") * size)
        done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    seen = []
    while not done.is_set():
        data = store.read_bytes(rel)
        seen.append((len(data), data[:1], data[-1:]))
    thread.join()
    return seen
