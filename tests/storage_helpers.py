"""Shared checks on the artifact store for the local and S3 tests."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

from cnn.storage import Storage

KEY_ID = "cnnlabtestkeyid"
SECRET = "cnnlab-SECRET-9c2e41f7a0"
BUCKET = "cnn-lab"


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


def free_port() -> int:
    """A TCP port nothing listens on (yet)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class S3Server:
    """moto's ThreadedMotoServer on 127.0.0.1; `stop` closes the socket (clients get 'connection refused'), `start` reuses the port and the data."""

    def __init__(self) -> None:
        self.port = 0
        self._server = None

    def start(self) -> S3Server:
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._server.start()
        self.port = self._server.get_host_and_port()[1]
        return self

    def stop(self) -> None:
        self._server.stop()
        self._server._server.server_close()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=KEY_ID,
            aws_secret_access_key=SECRET,
        )

    def objects(self, bucket: str = BUCKET) -> dict[str, bytes]:
        """Every object in `bucket` with its bytes."""
        client = self.client()
        keys = [
            o["Key"]
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for o in page.get("Contents", [])
        ]
        return {k: client.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}


def s3_env(endpoint: str) -> dict[str, str]:
    """Fake credentials and the endpoint, as a worker gets them from its environment."""
    return {
        "AWS_ACCESS_KEY_ID": KEY_ID,
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
        "CNN_LAB_S3_ENDPOINT_URL": endpoint,
        "AWS_EC2_METADATA_DISABLED": "true",
    }


@contextlib.contextmanager
def s3_in_environment() -> Iterator[S3Server]:
    """A started server with bucket BUCKET, its endpoint and fake credentials in the environment (processes started
    inside the block inherit them)."""
    import pytest

    server = S3Server().start()
    try:
        with pytest.MonkeyPatch.context() as mp:
            for var in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
                mp.delenv(var, raising=False)
            for var, value in s3_env(server.endpoint).items():
                mp.setenv(var, value)
            server.client().create_bucket(Bucket=BUCKET)
            yield server
    finally:
        server.stop()
