"""One artifact store addressed by a URL (local path or s3://bucket/prefix) through fsspec, with atomic writes and retries.

One module: every read and write goes through the same checks (paths inside the store, regular files, size limits),
retry rule and error line, and splitting them would let a second way to touch the store appear."""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import re
import stat
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import fsspec

from cnn.checks import SAFE_NAME, SAFE_NAME_ALLOWED, Number, parse_number
from cnn.errors import ConfigError, StorageError, UntrustedFile
from cnn.redaction import has_credentials, redact

__all__ = ["Storage", "open_storage", "redact", "safe_name"]  # redact: cnn.redaction's, the one every message uses

log = logging.getLogger(__name__)
T = TypeVar("T")

SUPPORTED_SCHEMES = ("file", "s3", "memory")
ENDPOINT_VARS = ("CNN_LAB_S3_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
RETRIES_VAR = "CNN_LAB_STORAGE_RETRIES"
BACKOFF_VAR = "CNN_LAB_STORAGE_BACKOFF"
GIVE_UP_VAR = "CNN_LAB_STORAGE_GIVE_UP_S"
GIVE_UP_S = (
    60.0  # a store failing for this long (since its first failed operation) is given up on: no more retries anywhere
)
MAX_WAIT_S = 60.0  # the longest wait between two attempts (the backoff doubles after each)
# The environment's numbers: default and check (bounds far above any real setting, so that a typo is refused)
ENV_NUMBERS: dict[str, tuple[float, Number]] = {
    RETRIES_VAR: (3, Number(integer=True, ge=1, le=100)),  # attempts per store operation
    BACKOFF_VAR: (0.5, Number(ge=0, le=MAX_WAIT_S)),  # seconds before the first retry
    GIVE_UP_VAR: (GIVE_UP_S, Number(ge=0, le=86_400)),  # seconds of failures: at most a day
}
OUTAGE_GAP_S = 300.0  # failures further apart than this (with no success between) count as separate outages
# The largest file a read takes by default: far above any record, table or plot cnn-lab writes, far below a planted
# file that would exhaust memory; checkpoints and weights are read with their own limit (cnn/checkpoints.py)
MAX_READ_BYTES = 64 * 2**20
S3_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
ENDPOINT = re.compile(r"https?://[^/\s?#@]+(/[^\s?#@]*)?")  # scheme, host[:port], optional path
# botocore's own retries are off: this module retries (with the URL in the log line), so attempts stay countable
S3_CONFIG = {"connect_timeout": 5, "read_timeout": 60, "retries": {"total_max_attempts": 1, "mode": "standard"}}
SCHEMES_ALLOWED = "a local path, file://path, s3://bucket/prefix or memory://path"
CREDENTIALS_HINT = "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (+ AWS_SESSION_TOKEN), or AWS_PROFILE"
_PERMANENT_ERRNOS = {
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied: the folder is not writable by this user",
    errno.EPERM: "operation not permitted: the folder is read-only or immutable",
    errno.ENOTDIR: "a file is in the way: part of the path is a file, not a folder",
    errno.EEXIST: "a file is in the way: part of the path is a file, not a folder",
    errno.EISDIR: "a folder is in the way: the path is a folder, not a file",
    errno.ENOSPC: "no space left on the device",
    errno.ENAMETOOLONG: "a file name is too long",
}
# Names the store's layout uses itself, per level: a run, variant or subdir named like one of them would collide with those files
RESERVED_NAMES: dict[str, tuple[str, tuple[str, ...]]] = {
    "run": (
        "<dataset>/comparisons/ (each comparison's records), and <dataset>/latest/ in stores of earlier versions",
        ("comparisons", "latest", "latest.json"),
    ),
    "variant": (
        "<dataset>/<run>/report/ and the comparison files",
        ("report", "report.md", "comparison.md", "comparison.csv"),
    ),
    "subdir": (
        "the variant folder's own files",
        (
            "checkpoint.pt",
            "model.pt",
            "row.json",
            "metrics.json",
            "predictions.npy",
            "history.csv",
            "losses.png",
            "confusion_matrix.png",
            "classification_report.csv",
            "lr_finder.png",
            "lr_finder.json",
            "probe_images.png",
            "filters",
            "feature_maps",
        ),
    ),
}
_OUTAGES: dict[
    tuple[str, str | None, str], tuple[float, float]
] = {}  # store -> (first, last) failure time of the current outage


def safe_name(value: str, field: str) -> str:
    """Check that a variant/run/dataset name is safe as a path segment or key (no '..', no slashes)."""
    if not isinstance(value, str) or not SAFE_NAME.match(value) or ".." in value:
        raise ConfigError(
            field,
            f"{value!r} is not a safe name",
            allowed=SAFE_NAME_ALLOWED,
        )
    where, reserved = RESERVED_NAMES.get(field, ("", ()))
    if value.lower() in reserved:
        raise ConfigError(
            field,
            f"{value!r} is reserved: the store keeps {where} there",
            allowed=f"any safe name except {', '.join(reserved)}",
        )
    return value


def env_number(var: str) -> float:
    """The number in environment variable `var` of ENV_NUMBERS (its default when unset); a bad value names the variable
    and the allowed range."""
    default, check = ENV_NUMBERS[var]
    raw = os.environ.get(var, "").strip()
    if not raw:
        return default
    parsed = parse_number(raw, check.integer)
    if parsed is None or not check.within(parsed):
        raise ConfigError(var, f"must be {check.allowed()}, got {raw!r}", allowed=check.allowed())
    return parsed


def check_url(url: str) -> tuple[str, str]:
    """Split a storage URL into (scheme, base), rejecting empty URLs, unknown schemes, inline credentials and bad bucket names."""
    if not isinstance(url, str) or not url.strip():
        raise ConfigError("storage", f"must be a non-empty path or URL, got {url!r}", allowed=SCHEMES_ALLOWED)
    scheme, rest = url.split("://", 1) if "://" in url else ("file", url)
    if scheme not in SUPPORTED_SCHEMES:
        raise ConfigError(
            "storage",
            f"unsupported scheme {scheme!r} in {redact(url)!r}",
            allowed=[f"{s}://" for s in SUPPORTED_SCHEMES] + ["a local path"],
        )
    if scheme == "file":
        return scheme, os.path.abspath(os.path.expanduser(rest))
    authority = rest.split("/", 1)[0]
    if "@" in authority:
        raise ConfigError(
            "storage",
            f"credentials in the URL are not accepted (they would show up in logs and flow parameters): {redact(url)!r}",
            allowed=f"{scheme}://bucket/prefix with credentials from {CREDENTIALS_HINT}",
        )
    if scheme == "s3":
        if not S3_BUCKET.match(authority) or ".." in authority:
            raise ConfigError(
                "storage",
                f"{authority!r} is not a valid S3 bucket name in {url!r}",
                allowed="s3://bucket/prefix, bucket: 3-63 lowercase letters, digits, '.' and '-'",
            )
        if ".." in rest.split("/"):
            raise ConfigError("storage", f"'..' is not allowed in {url!r}", allowed="s3://bucket/prefix without '..'")
    return scheme, f"{scheme}://{rest.rstrip('/')}"


def _endpoint(endpoint_url: str | None) -> tuple[str | None, str]:
    """The S3 endpoint URL (given, or the first set of ENDPOINT_VARS) and the field it came from: an http(s) URL without
    credentials (they would show up in every message naming the endpoint), a query or a fragment."""
    field = "endpoint_url"
    given = {field: endpoint_url} if endpoint_url is not None else {v: os.environ.get(v, "") for v in ENDPOINT_VARS}
    for name, url in given.items():  # every endpoint variable, also those that another one overrides
        if url and has_credentials(url):
            raise ConfigError(
                name,
                f"credentials in the endpoint are not accepted (they would show up in logs and messages): {redact(url)!r}",
                allowed=f"http(s)://host:port, with credentials from {CREDENTIALS_HINT}",
            )
    if endpoint_url is None:
        field = next((v for v in ENDPOINT_VARS if os.environ.get(v)), field)
        endpoint_url = os.environ.get(field) or None
    if endpoint_url is None:
        return None, field
    if not ENDPOINT.fullmatch(endpoint_url):
        raise ConfigError(
            field, f"{redact(endpoint_url)!r} is not an http(s) URL", allowed="http://host:port or https://host"
        )
    return endpoint_url, field


def _errno_of(err: BaseException) -> int | None:
    return getattr(err, "errno", None) if isinstance(err, OSError) else None


class Storage:
    """Read and write artifacts under a base URL; every write is atomic and transient errors are retried."""

    def __init__(
        self,
        url: str = "./results",
        *,
        endpoint_url: str | None = None,
        storage_options: dict[str, Any] | None = None,
        retries: int | None = None,
        backoff: float | None = None,
    ) -> None:
        scheme, base = check_url(url)
        options = dict(storage_options or {})
        endpoint_url, self.endpoint_field = _endpoint(endpoint_url) if scheme == "s3" else (None, "")
        if scheme == "s3":
            if endpoint_url:
                options["client_kwargs"] = {**options.get("client_kwargs", {}), "endpoint_url": endpoint_url}
            options["config_kwargs"] = {**S3_CONFIG, **options.get("config_kwargs", {})}
        self.scheme = scheme
        self.url = base
        self.bucket = base.split("://", 1)[1].split("/", 1)[0] if scheme == "s3" else None
        self.endpoint_url = endpoint_url
        self.retries = int(retries if retries is not None else env_number(RETRIES_VAR))
        self.backoff = float(backoff if backoff is not None else env_number(BACKOFF_VAR))
        self.give_up_s = env_number(GIVE_UP_VAR)
        if self.retries < 1:
            raise ConfigError("retries", f"must be >= 1, got {retries!r}", allowed="an int >= 1")
        self.fs = fsspec.filesystem(scheme, **options)
        if scheme == "s3":
            self.fs.retries = 1  # s3fs's inner retry loop; ours does the backoff

    def __repr__(self) -> str:
        return f"Storage({redact(self.url)!r})"

    def path(self, *parts: str) -> str:
        """Full path/URL of `parts` under the base."""
        rel = "/".join(p.strip("/") for p in parts if p)
        return f"{self.url}/{rel}" if rel else self.url

    def _fs_path(self, full: str) -> str:
        return self.fs._strip_protocol(full)

    def _permanent(self, err: BaseException, what: str) -> str | None:
        """Why `err` will not go away by retrying (a hint for the user), or None for a transient error."""
        kind = type(err).__name__
        if kind in ("NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError"):
            return f"no usable credentials for {self.bucket!r}: set {CREDENTIALS_HINT}"
        if isinstance(err, FileNotFoundError):
            if what.startswith("write") and self.scheme == "s3":
                return f"bucket {self.bucket!r} does not exist at {redact(self.endpoint_url or 'AWS S3')}: create it, or point storage at an existing bucket"
            if what.startswith("write"):
                return "a parent folder cannot be created there: pick a writable folder"
            return "not found"
        if isinstance(err, PermissionError):
            if self.scheme == "s3":
                return f"access denied ({redact(str(err))}): check the credentials ({CREDENTIALS_HINT}) and the bucket policy"
            return _PERMANENT_ERRNOS.get(_errno_of(err) or errno.EACCES, "permission denied") + f" ({redact(str(err))})"
        if _errno_of(err) in _PERMANENT_ERRNOS:
            return _PERMANENT_ERRNOS[_errno_of(err)] + f" ({redact(str(err))})"
        if kind == "ParamValidationError" or isinstance(err, (ValueError, TypeError, NotImplementedError)):
            return f"invalid request: {redact(str(err)).splitlines()[0]}"
        transient = isinstance(err, (OSError, ConnectionError, TimeoutError)) or type(err).__module__.startswith(
            ("botocore", "aiobotocore", "aiohttp")
        )
        return None if transient else f"{kind}: {redact(str(err))}"

    def _outage_key(self) -> tuple[str, str | None, str]:
        """What fails together: an S3 bucket at its endpoint, or the store's base folder."""
        return (self.scheme, self.endpoint_url, self.bucket or self.url)

    def _outage(self) -> float:
        """Seconds this store has been failing (0 at the first failure); an outage ends at the first success, or after
        OUTAGE_GAP_S (or give_up_s, if longer) without a failure."""
        key, now = self._outage_key(), time.monotonic()
        first, last = _OUTAGES.get(key, (now, now))
        if now - last > max(self.give_up_s, OUTAGE_GAP_S):
            first = now
        _OUTAGES[key] = (first, now)
        return now - first

    def _retry(self, what: str, full: str, fn: Callable[[], T]) -> T:
        """Run `fn`, retrying transient errors with exponential backoff; the final error names the URL (never credentials).

        A store that has kept failing for give_up_s (CNN_LAB_STORAGE_GIVE_UP_S) is given up on: the error is then marked
        permanent, so no task retries it either."""
        shown = redact(full)
        for attempt in range(1, self.retries + 1):
            try:
                result = fn()
            except StorageError:
                raise  # already says what is wrong with the file (its type, size, or where a link leads)
            except Exception as err:  # noqa: BLE001 - classified below
                hint = self._permanent(err, what)
                if hint is not None:
                    raise StorageError(f"storage: cannot {what} {shown}: {hint}") from None
                failing = self._outage()
                if attempt == self.retries or failing >= self.give_up_s:
                    where = (
                        f"; is the endpoint {redact(self.endpoint_url)} ({self.endpoint_field}) reachable?"
                        if self.endpoint_url
                        else ""
                    )
                    gave_up = (
                        f"; gave up after {failing:.0f} s of failures ({GIVE_UP_VAR}={self.give_up_s:g})"
                        if failing >= self.give_up_s
                        else ""
                    )
                    raise StorageError(
                        f"storage: cannot {what} {shown}: failed after {attempt} attempt(s): {type(err).__name__}: {redact(str(err)).splitlines()[0] if str(err) else ''}{where}{gave_up}",
                        transient=not gave_up,
                    ) from None
                wait = min(self.backoff * 2 ** (attempt - 1), MAX_WAIT_S)
                log.warning(
                    "%s %s failed (attempt %d/%d), retrying in %.1fs: %s",
                    what,
                    shown,
                    attempt,
                    self.retries,
                    wait,
                    redact(str(err)),
                )
                time.sleep(wait)
            else:
                _OUTAGES.pop(self._outage_key(), None)
                return result
        raise AssertionError("unreachable")

    def _write_local(self, target: str, data: bytes) -> None:
        """Write to a hidden temp file in the same folder, fsync, then rename over the target (atomic on POSIX); a
        folder that a symlink sends outside the store is refused."""
        folder, name = os.path.split(target)
        folder = self._inside(folder, "write")  # before any folder is made: a link must not lead the write elsewhere
        os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(folder, f".{name}.tmp-{uuid.uuid4().hex[:8]}")
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)

    def _put(self, full: str, data: bytes) -> None:
        """One atomic write, no retries (local: temp file + rename; object stores: one PUT, the object appears whole or not at all)."""
        target = self._fs_path(full)
        if self.scheme == "file":
            self._write_local(target, data)
        else:
            self.fs.pipe_file(target, data)

    def write_bytes(self, rel: str, data: bytes) -> str:
        """Write `data` at `rel` atomically, retrying transient errors. Returns the URL."""
        full = self.path(rel)
        self._retry("write", full, lambda: self._put(full, data))
        return full

    def read_bytes(self, rel: str, max_bytes: int = MAX_READ_BYTES) -> bytes:
        """Read the object at `rel`: a regular file inside the store (a symlink is followed only when it stays inside,
        a FIFO or device is refused) of at most `max_bytes` (StorageError naming the file otherwise)."""
        full = self.path(rel)
        return self._retry("read", full, lambda: self._read_checked(full, max_bytes))

    def _read_checked(self, full: str, max_bytes: int) -> bytes:
        """One read of `full`, after its type and size pass (what the store holds is untrusted)."""
        target = self._fs_path(full)
        if self.scheme == "file":
            target = self._inside(target, "read")
            info = os.stat(target)
            if not stat.S_ISREG(info.st_mode):
                raise UntrustedFile(f"storage: {redact(full)} is not a regular file; move it aside and rerun")
            size = info.st_size
        else:
            size = int(self.fs.info(target).get("size") or 0)
        if size > max_bytes:
            raise UntrustedFile(
                f"storage: {redact(full)} is {size:,} bytes, over the {max_bytes:,} bytes such a file can be; move it aside and rerun"
            )
        return self.fs.cat_file(target)

    def _inside(self, target: str, what: str) -> str:
        """`target` with symlinks resolved, if that stays inside the store's base folder; else a StorageError (a link in
        the store must not send reads or writes elsewhere)."""
        base, real = os.path.realpath(self._fs_path(self.url)), os.path.realpath(target)
        if real != base and not real.startswith(base + os.sep):
            raise UntrustedFile(
                f"storage: cannot {what} {redact(target)}: a symbolic link there points outside the store ({redact(real)}); remove the link and rerun"
            )
        return real

    def exists(self, rel: str) -> bool:
        """Whether an object exists at `rel`."""
        full = self.path(rel)
        if self.scheme != "file":
            self.fs.invalidate_cache()
        return bool(self._retry("stat", full, lambda: self.fs.exists(self._fs_path(full))))

    def size(self, rel: str) -> int:
        """Size in bytes of the object at `rel` (checked before reading an untrusted file that should be small)."""
        full = self.path(rel)
        return int(self._retry("stat", full, lambda: self.fs.size(self._fs_path(full))))

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

    def check_writable(self) -> None:
        """Fail early, with the URL named, if the store cannot be written (missing bucket, read-only dir, bad credentials)."""
        probe = self.path(f".cnn-lab-write-check-{uuid.uuid4().hex[:8]}")
        self._retry("write to", self.url, lambda: self._put(probe, b"ok"))
        try:
            self.fs.rm_file(self._fs_path(probe))  # the only delete in cnn-lab: the probe this call just wrote
        except Exception:  # noqa: BLE001 - a leftover probe file is harmless
            log.debug("could not remove probe %s", redact(probe))


def open_storage(url: str | Storage, **kwargs: Any) -> Storage:
    """A Storage for `url` (or `url` itself if it already is one)."""
    return url if isinstance(url, Storage) else Storage(url, **kwargs)


def buffer_bytes(save: Callable[[io.BytesIO], None]) -> bytes:
    """Call `save(buffer)` and return what it wrote (for torch.save, savefig, to_csv)."""
    buf = io.BytesIO()
    save(buf)
    return buf.getvalue()
