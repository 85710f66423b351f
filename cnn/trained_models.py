"""A trained model's weights file (<folder>/model.pt): written once by the training step, identified by a digest of its
bytes, and rebuilt from it by the later steps and the galleries (one format, one reader)."""

from __future__ import annotations

import hashlib

import torch

from cnn.checkpoints import load_checkpoint, read_weights
from cnn.data import DatasetSplits
from cnn.errors import CheckpointError
from cnn.step_inputs import build_model
from cnn.storage import Storage, buffer_bytes
from cnn.train import load_weights

WEIGHTS_FILE = "model.pt"


def weights_id(weights: bytes) -> str:
    """A trained model's id: a digest of its weights file's bytes (what the later steps check they load)."""
    return hashlib.blake2b(weights, digest_size=12).hexdigest()


def save_trained_model(store: Storage, folder: str, variant: str, model: torch.nn.Module, size: int) -> tuple[str, str]:
    """Write <folder>/model.pt: the variant's name, its weights and its input size; returns its URL and model id."""
    weights = buffer_bytes(
        lambda b: torch.save({"variant": variant, "model": model.state_dict(), "input_size": size}, b)
    )
    return store.write_bytes(f"{folder}/{WEIGHTS_FILE}", weights), weights_id(weights)


def load_trained_model(
    store: Storage,
    folder: str,
    variant: str,
    data: DatasetSplits,
    *,
    input_size: int | None = None,
    model_id: str | None = None,
) -> tuple[torch.nn.Module, int]:
    """Rebuild `variant` for `data` and load the final weights that train_variant stored in <folder>/model.pt (checked
    against `model_id` when given), at `input_size` or else the size it was trained at; returns (model in eval mode,
    input size). The later steps and the galleries all rebuild a trained model through it."""
    rel = f"{folder.strip('/')}/{WEIGHTS_FILE}"
    if model_id is not None:
        found = weights_id(read_weights(store, rel))
        if found != model_id:
            raise CheckpointError(
                f"{store.path(rel)} holds weights {found}, not the trained model {model_id}; retrain the variant"
            )
    ckpt = load_checkpoint(store, rel, variant)
    model, size = build_model(variant, data, 0, input_size if input_size is not None else ckpt.get("input_size"))
    load_weights(model, ckpt, store.path(rel))
    return model.eval(), size
