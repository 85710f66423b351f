"""Errors that cnn-lab raises for bad input: each names the field and, where known, the allowed values."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from cnn.redaction import redact


def did_you_mean(value: object, choices: Iterable[object], *, cutoff: float = 0.5, quote: bool = True) -> str:
    """'; did you mean 'x'?' for the choice closest to `value` (compared in lowercase, difflib's ratio >= `cutoff`),
    or ''; `quote=False` leaves the choice bare (a command-line option)."""
    close = difflib.get_close_matches(str(value).lower(), [str(c) for c in choices], n=1, cutoff=cutoff)
    if not close:
        return ""
    return f"; did you mean {close[0]!r}?" if quote else f"; did you mean {close[0]}?"


class CnnLabError(Exception):
    """Base class of every error cnn-lab raises on purpose. Its text goes through cnn.redaction.redact, so that no line
    cnn-lab prints, logs or records as a flow run's message carries a credential, whatever URL the message names."""

    def __init__(self, *args: object) -> None:
        super().__init__(*(redact(arg) if isinstance(arg, str) else arg for arg in args))


class ConfigError(CnnLabError, ValueError):
    """A user-supplied value is invalid; the message names the field and the allowed values."""

    def __init__(self, field: str, message: str, allowed: Iterable[object] | str | None = None):
        self.field = field
        self.message = redact(message)
        self.allowed = allowed
        text = f"{field}: {message}"
        if allowed is not None:
            shown = allowed if isinstance(allowed, str) else ", ".join(str(a) for a in allowed)
            text += f" (allowed: {shown})"
        super().__init__(text)


class DataError(CnnLabError):
    """A dataset could not be found, downloaded or parsed."""


class TrainingDiverged(CnnLabError, FloatingPointError):
    """The loss became NaN or infinite during training."""


class CheckpointError(CnnLabError):
    """A checkpoint is unreadable or belongs to another variant."""


class StorageError(CnnLabError):
    """The artifact store could not be read or written; `transient` says whether trying again later may help."""

    def __init__(self, message: str, *, transient: bool = False):
        self.transient = transient
        super().__init__(message)

    def __reduce__(self) -> tuple:
        return (type(self), (str(self),), {"transient": self.transient})


class UntrustedFile(StorageError):
    """A file in the store that is not what cnn-lab writes there: not a regular file, too large, or behind a link that
    leads outside the store."""


def no_gpu_error() -> ConfigError:
    """The error for a CUDA device where there is none (torch's check and the CLI's driver check say the same)."""
    return ConfigError("device", "CUDA was requested but no GPU is available", allowed=["auto", "cpu"])


def no_mps_error() -> ConfigError:
    """The error for an MPS device where there is none (torch's check and the CLI's platform check say the same)."""
    return ConfigError(
        "device", "MPS (Apple's GPU) was requested but is not available on this machine", allowed=["auto", "cpu"]
    )


def no_dask_error(spec: str) -> ConfigError:
    """The error for a Dask task runner where prefect-dask is not installed."""
    return ConfigError(
        "task_runner", f"{spec!r} needs prefect-dask, which is not installed", allowed="pip install 'cnn-lab[dask]'"
    )
