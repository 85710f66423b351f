"""Checkpoint I/O: where a training state is saved and found again. The trainer only returns states; this module
(and the pipeline that calls it) stores them, tagged with the session that wrote them."""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from cnn.errors import CheckpointError
from cnn.storage import Storage, buffer_bytes


@dataclass(frozen=True)
class CheckpointIO:
    """How the caller stores checkpoints by name (the trainer never touches storage): load, save, and a name's URL."""

    load: Callable[[str], Mapping[str, Any] | None] = lambda name: None
    save: Callable[[str, Mapping[str, Any]], None] = lambda name, state: None
    where: Callable[[str], str] = lambda name: name


def save_checkpoint(storage: Storage, rel: str, payload: Mapping[str, Any]) -> str:
    """Write one checkpoint dict atomically; returns its URL."""
    return storage.write_bytes(rel, buffer_bytes(lambda buf: torch.save(dict(payload), buf)))


# A checkpoint holds the weights and the optimizer's state: AlexNet's (57 M parameters, Adam's two moments) is under 1 GB,
# the largest GenericCNN's (cnn.models.generic.MAX_PARAMETERS) under 3 GB; a file over this bound is refused unread
MAX_CHECKPOINT_BYTES = 8 * 2**30


def read_weights(storage: Storage, rel: str) -> bytes:
    """The bytes of a checkpoint or weights file (a regular file inside the store, of a checkpoint's size at most)."""
    return storage.read_bytes(rel, max_bytes=MAX_CHECKPOINT_BYTES)


def load_checkpoint(storage: Storage, rel: str, variant: str | None = None) -> dict[str, Any]:
    """Read a checkpoint with weights_only=True; a corrupt file or another variant's raises CheckpointError."""
    raw = read_weights(storage, rel)
    try:
        ckpt = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means the same to the user
        raise CheckpointError(
            f"checkpoint {storage.path(rel)} is corrupt or unreadable ({type(err).__name__}: {str(err).split('. ')[0][:160]}); move it aside or use another run name to train afresh"
        ) from err
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise CheckpointError(f"checkpoint {storage.path(rel)} is not a cnn-lab checkpoint (no 'model' entry)")
    if variant is not None and ckpt.get("variant") not in (None, variant):
        raise CheckpointError(
            f"checkpoint {storage.path(rel)} belongs to variant {ckpt.get('variant')!r}, not {variant!r}; each variant resumes only from its own folder's checkpoint"
        )
    return ckpt


def checkpoint_to_resume(
    storage: Storage | None, checkpoint: str | None, variant: str, resume: bool, session: str | None
) -> dict[str, Any] | None:
    """The checkpoint to continue from: any (resume=True), only one tagged with `session` (resume=False), or None."""
    if storage is None or not checkpoint or not (resume or session) or not storage.exists(checkpoint):
        return None
    if resume:
        return load_checkpoint(storage, checkpoint, variant or None)
    try:
        ckpt = load_checkpoint(storage, checkpoint, variant or None)
    except CheckpointError:
        return None  # training afresh anyway: an unreadable older checkpoint is simply not used
    return ckpt if ckpt.get("session") == session else None


def in_storage(store: Storage, folder: str, variant: str, resume: bool, session: str | None) -> CheckpointIO:
    """Named checkpoints in `folder` of `store`, tagged with `session` (see `checkpoint_to_resume` for which resume)."""

    def load(name: str) -> dict[str, Any] | None:
        return checkpoint_to_resume(store, f"{folder}/{name}", variant, resume, session)

    def save(name: str, state: Mapping[str, Any]) -> None:
        save_checkpoint(store, f"{folder}/{name}", {**state, "session": session} if session else state)

    return CheckpointIO(load, save, lambda name: store.path(f"{folder}/{name}"))
