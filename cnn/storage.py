"""One artifact store addressed by a URL (local path or s3://bucket/prefix) through fsspec, with atomic writes and retries."""
from __future__ import annotations

import io
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import fsspec

from cnn.errors import ConfigError, StorageError

log = logging.getLogger(__name__)
T = TypeVar("T")

SUPPORTED_SCHEMES = ("file", "s3", "memory")
ENDPOINT_VARS = ("CNN_LAB_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_SECRET_PATTERNS = [
    re.compile(r"(?i)(aws_secret_access_key|secret|password|token|key)=([^&\s]+)"),
    re.compile(r"//[^/@\s]+:[^/@\s]+@"),
]


def redact(text: str) -> str:
    """Remove credentials that may appear in URLs or messages."""
    text = _SECRET_PATTERNS[0].sub(lambda m: f"{m.group(1)}=***", text)
    text = _SECRET_PATTERNS[1].sub("//***@", text)
    for var in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID"):
        secret = os.environ.get(var)
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def safe_name(value: str, field: str) -> str:
    """Check that a variant/run/dataset name is safe as a path segment or key (no '..', no slashes)."""
    if not isinstance(value, str) or not SAFE_NAME.match(value) or ".." in value:
        raise ConfigError(field, f"{value!r} is not a safe name", allowed="letters, digits, '.', '_', '-' (1-100 chars, starting with a letter or digit, no '..')")
    return value


def _is_transient(err: BaseException) -> bool:
    """Errors worth retrying: connection and server trouble, not missing files or denied access."""
    if isinstance(err, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
        return False
    return isinstance(err, (OSError, ConnectionError, TimeoutError)) or type(err).__module__.startswith(("botocore", "aiobotocore", "aiohttp"))


class Storage:
    """Read and write artifacts under a base URL; every write is atomic and transient errors are retried."""

    def __init__(
        self,
        url: str = "./results",
        *,
        endpoint_url: str | None = None,
        storage_options: dict[str, Any] | None = None,
        retries: int = 3,
        backoff: float = 0.5,
    ) -> None:
        scheme = url.split("://", 1)[0] if "://" in url else "file"
        if scheme not in SUPPORTED_SCHEMES:
            raise ConfigError("storage", f"unsupported scheme {scheme!r} in {redact(url)!r}", allowed=[f"{s}://" for s in SUPPORTED_SCHEMES] + ["a local path"])
        options = dict(storage_options or {})
        endpoint_url = endpoint_url or next((os.environ[v] for v in ENDPOINT_VARS if os.environ.get(v)), None)
        if scheme == "s3" and endpoint_url:
            options.setdefault("client_kwargs", {})["endpoint_url"] = endpoint_url
        self.scheme = scheme
        self.url = url.rstrip("/") if scheme != "file" else os.path.abspath(url.removeprefix("file://"))
        self.endpoint_url = endpoint_url
        self.retries = max(1, retries)
        self.backoff = backoff
        self.fs = fsspec.filesystem(scheme, **options)

    def __repr__(self) -> str:
        return f"Storage({redact(self.url)!r})"

    def path(self, *parts: str) -> str:
        """Full path/URL of `parts` under the base."""
        rel = "/".join(p.strip("/") for p in parts if p)
        return f"{self.url}/{rel}" if rel else self.url

    def _fs_path(self, full: str) -> str:
        return self.fs._strip_protocol(full)

    def _retry(self, what: str, full: str, fn: Callable[[], T]) -> T:
        """Run `fn`, retrying transient errors with exponential backoff; the final error names the URL."""
        for attempt in range(1, self.retries + 1):
            try:
                return fn()
            except Exception as err:  # noqa: BLE001 - classified below
                shown = redact(full)
                if isinstance(err, FileNotFoundError):
                    raise StorageError(f"{what} {shown}: not found") from err
                if isinstance(err, PermissionError):
                    raise StorageError(f"{what} {shown}: permission denied ({redact(str(err))})") from err
                if not _is_transient(err) or attempt == self.retries:
                    raise StorageError(f"{what} {shown} failed after {attempt} attempt(s): {type(err).__name__}: {redact(str(err))}") from err
                wait = self.backoff * 2 ** (attempt - 1)
                log.warning("%s %s failed (attempt %d/%d), retrying in %.1fs: %s", what, shown, attempt, self.retries, wait, redact(str(err)))
                time.sleep(wait)
        raise AssertionError("unreachable")

    def write_bytes(self, rel: str, data: bytes) -> str:
        """Write `data` at `rel` atomically (local: temp file + rename; object stores: one put). Returns the URL."""
        full = self.path(rel)
        target = self._fs_path(full)

        def write() -> None:
            if self.scheme == "file":
                os.makedirs(os.path.dirname(target), exist_ok=True)
                tmp = f"{target}.tmp-{uuid.uuid4().hex[:8]}"
                try:
                    with open(tmp, "wb") as fh:
                        fh.write(data)
                        fh.flush()
                        os.fsync(fh.fileno())
                    os.replace(tmp, target)
                finally:
                    if os.path.exists(tmp):
                        os.remove(tmp)
            else:
                self.fs.pipe_file(target, data)

        self._retry("write", full, write)
        return full

    def read_bytes(self, rel: str) -> bytes:
        """Read the object at `rel`."""
        full = self.path(rel)
        return self._retry("read", full, lambda: self.fs.cat_file(self._fs_path(full)))

    def exists(self, rel: str) -> bool:
        """Whether an object exists at `rel`."""
        full = self.path(rel)
        if self.scheme != "file":
            self.fs.invalidate_cache()
        return bool(self._retry("stat", full, lambda: self.fs.exists(self._fs_path(full))))

    def list(self, rel: str = "") -> list[str]:
        """Names directly under `rel` (empty when it does not exist)."""
        full = self.path(rel)
        if self.scheme != "file":
            self.fs.invalidate_cache()
        if not self.exists(rel):
            return []
        entries = self._retry("list", full, lambda: self.fs.ls(self._fs_path(full), detail=False))
        return sorted(e.rstrip("/").rsplit("/", 1)[-1] for e in entries)

    def write_text(self, rel: str, text: str) -> str:
        """Write UTF-8 text atomically."""
        return self.write_bytes(rel, text.encode("utf-8"))

    def read_text(self, rel: str) -> str:
        """Read UTF-8 text."""
        return self.read_bytes(rel).decode("utf-8")

    def write_json(self, rel: str, obj: Any) -> str:
        """Write an object as indented JSON atomically."""
        return self.write_text(rel, json.dumps(obj, indent=2, sort_keys=True, default=str))

    def read_json(self, rel: str) -> Any:
        """Read a JSON object."""
        return json.loads(self.read_text(rel))

    def check_writable(self) -> None:
        """Fail early, with the URL named, if the store cannot be written (missing bucket, read-only dir, bad credentials)."""
        probe = f".cnn-lab-write-check-{uuid.uuid4().hex[:8]}"
        self.write_bytes(probe, b"ok")
        full = self._fs_path(self.path(probe))
        try:
            self.fs.rm_file(full)
        except Exception:  # noqa: BLE001 - a leftover probe file is harmless
            log.debug("could not remove probe %s", redact(full))


def open_storage(url: str | Storage, **kwargs: Any) -> Storage:
    """A Storage for `url` (or `url` itself if it already is one)."""
    return url if isinstance(url, Storage) else Storage(url, **kwargs)


def buffer_bytes(save: Callable[[io.BytesIO], None]) -> bytes:
    """Call `save(buffer)` and return what it wrote (for torch.save, savefig, to_csv)."""
    buf = io.BytesIO()
    save(buf)
    return buf.getvalue()
