"""One variant's pipeline as plain steps over names and storage paths: the functions Prefect tasks wrap.

Each step takes small serialisable inputs (a DatasetRef, a variant name, a storage URL, a run name) and
returns a small dict; tensors and models stay inside the step or in storage.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch

from cnn import plots
from cnn.data import DatasetSplits, load_dataset
from cnn.errors import CheckpointError, ConfigError
from cnn.evaluate import evaluate, report_to_csv
from cnn.inspect import capture_feature_maps, conv_filters, list_layers, select_probe_images
from cnn import lr_find
from cnn.models import count_parameters, create_variant, get_variant, resolve_input_size
from cnn.params import default_of
from cnn.storage import Storage, buffer_bytes, open_storage, safe_name
from cnn.train import Precision, TrainConfig, build_optimizer, load_checkpoint, load_weights, make_loader, resolve_device, seed_everything, train

log = logging.getLogger(__name__)

SMALL_DPI = 45  # data-URI images in Prefect artifacts stay a few tens of KB
FULL_DPI = 110
MIN_LR_STEPS = 100
SMALL_SET_IMAGES = 10_000  # below this, cycling the sweep past one epoch costs seconds; above, the sweep stays within one epoch
DEFAULT_LR_RULE = default_of("lr_rule")  # why this rule: see cnn/params.py
FALLBACK_LR = 0.01  # used (and reported as rule "fallback") when the sweep is too short or the loss never fell
DESIGN_SIDE = 28  # images smaller than this (digits: 8x8) are upsampled to the side the seed architectures were designed for


@dataclass(frozen=True)
class DatasetRef:
    """Everything needed to rebuild the same DatasetSplits in any process (hashable, cache-key friendly)."""

    name: str = "fashion-mnist"
    data_dir: str = "./data"
    val_size: float | int = 0.1
    seed: int = 0
    max_train: int | None = None
    max_test: int | None = None
    download: bool = True

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the fields."""
        return dataclasses.asdict(self)


def as_ref(ref: DatasetRef | Mapping[str, Any]) -> DatasetRef:
    """Accept a DatasetRef or its dict (as it comes back from a Prefect result)."""
    if isinstance(ref, DatasetRef):
        return ref
    names = {f.name for f in dataclasses.fields(DatasetRef)}
    unknown = sorted(set(ref) - names)
    if unknown:
        raise ConfigError("dataset", f"unknown key(s) {unknown}", allowed=sorted(names))
    return DatasetRef(**ref)


@functools.lru_cache(maxsize=4)
def get_dataset(ref: DatasetRef) -> DatasetSplits:
    """Load (once per process) the splits that `ref` describes."""
    return load_dataset(ref.name, ref.data_dir, val_size=ref.val_size, seed=ref.seed, download=ref.download, max_train=ref.max_train, max_test=ref.max_test)


def prepare_dataset(ref: DatasetRef | Mapping[str, Any]) -> dict[str, Any]:
    """Download/read the dataset and compute train-only normalisation; returns its info (classes, stats, fingerprint)."""
    ref = as_ref(ref)
    safe_name(ref.name, "dataset")
    return get_dataset(ref).info()


def variant_dir(dataset: str, run: str, variant: str) -> str:
    """Storage folder of one variant's artifacts: <dataset>/<run>/<variant>."""
    return f"{safe_name(dataset, 'dataset')}/{safe_name(run, 'run')}/{safe_name(variant, 'variant')}"


def _build(ref: DatasetRef, variant: str, seed: int, input_size: int | None) -> tuple[torch.nn.Module, DatasetSplits, int]:
    data = get_dataset(ref)
    size = resolve_input_size(variant, max(data.image_size, DESIGN_SIDE), input_size)
    seed_everything(seed)
    model = create_variant(variant, data.channels, data.num_classes, size)
    return model, data, size


def _save_png(storage: Storage, rel: str, fig: Any, dpi: int = FULL_DPI) -> str:
    return storage.write_bytes(rel, plots.figure_to_png(fig, dpi=dpi))


def range_test_steps(num_steps: int, epoch_steps: int, n_images: int) -> int:
    """Steps of an LR sweep: at most one epoch, except that small sets (digits) cycle up to MIN_LR_STEPS for a usable curve."""
    cap = max(epoch_steps, MIN_LR_STEPS) if n_images < SMALL_SET_IMAGES else epoch_steps
    return max(2, min(num_steps, cap))


def lr_range_test(ref: DatasetRef | Mapping[str, Any], variant: str, storage: str | Storage, run: str, *, batch_size: int = default_of("batch_size"), optimizer: str = default_of("optimizer"), momentum: float = default_of("momentum"), weight_decay: float = default_of("weight_decay"), seed: int = default_of("seed"), lr_min: float = default_of("lr_min"), lr_max: float = default_of("lr_max"), num_steps: int = 100, rule: str = DEFAULT_LR_RULE, device: str = default_of("device"), input_size: int | None = None) -> dict[str, Any]:
    """Leslie Smith's LR range test at the training batch size (at most one epoch of steps); saves lr_finder.png/json."""
    ref, store = as_ref(ref), open_storage(storage)
    folder = variant_dir(ref.name, run, variant)
    model, data, size = _build(ref, variant, seed, input_size)
    dev = resolve_device(device)
    precision = Precision(dev, None, None)
    model = model.to(dev)
    loader = make_loader(data, "train", batch_size=batch_size, input_size=size, device=dev, shuffle=True, seed=seed, channels_last=precision.channels_last)
    steps = range_test_steps(num_steps, len(loader), loader.num_images)
    opt = build_optimizer(optimizer, model.parameters(), lr_min, momentum, weight_decay)

    def step_fn(m: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with precision.autocast():
            return torch.nn.functional.cross_entropy(m(x).float(), y)

    result = lr_find.lr_range_test(model, opt, loader, start_lr=lr_min, end_lr=lr_max, num_steps=steps, rule=rule, fallback_lr=FALLBACK_LR, step_fn=step_fn)
    fig = plots.plot_lr_sweep(result.lrs, result.losses, result.suggestion, result.suggestions)
    png_small = plots.figure_to_png(plots.plot_lr_sweep(result.lrs, result.losses, result.suggestion, result.suggestions), dpi=SMALL_DPI)
    out = {
        "lr": result.suggestion,
        "rule": result.rule,
        "suggestions": result.suggestions,
        "flag": result.flag,
        "num_steps": result.num_steps,
        "epochs_cost": result.images_seen / max(data.train_y.numel(), 1),
        "plot": _save_png(store, f"{folder}/lr_finder.png", fig),
        "plot_small": plots.png_data_uri(png_small),
    }
    store.write_json(f"{folder}/lr_finder.json", {**result.to_dict(), "epochs_cost": out["epochs_cost"]})
    return out


def train_variant(ref: DatasetRef | Mapping[str, Any], variant: str, storage: str | Storage, run: str, config: TrainConfig | Mapping[str, Any], *, input_size: int | None = None, subdir: str | None = None, resume: bool = True, callback: Callable[[dict[str, float]], None] | None = None) -> dict[str, Any]:
    """Train one variant with a checkpoint per epoch (resuming from it); saves history.csv and losses.png."""
    ref, store = as_ref(ref), open_storage(storage)
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    cfg.validate()
    folder = variant_dir(ref.name, run, variant) + (f"/{safe_name(subdir, 'subdir')}" if subdir else "")
    model, data, size = _build(ref, variant, cfg.seed, input_size)
    if cfg.batch_size > data.train_y.numel():
        raise ConfigError("batch_size", f"{cfg.batch_size} is larger than the {data.train_y.numel()} training images", allowed=f"1..{data.train_y.numel()}")
    result = train(model, data, cfg, input_size=size, variant=variant, storage=store, checkpoint=f"{folder}/checkpoint.pt", resume=resume, callback=callback)
    history = pd.DataFrame(result.history)
    store.write_text(f"{folder}/history.csv", history.to_csv(index=False))
    _save_png(store, f"{folder}/losses.png", plots.plot_history(result.history))
    torch_weights = f"{folder}/model.pt"
    weights = buffer_bytes(lambda b: torch.save({"variant": variant, "model": model.state_dict(), "input_size": size}, b))
    store.write_bytes(torch_weights, weights)
    return {
        "variant": variant,
        "params": count_parameters(model),
        "input_size": size,
        "checkpoint": store.path(f"{folder}/checkpoint.pt"),
        "weights": store.path(torch_weights),
        "folder": store.path(folder),
        "folder_rel": folder,
        "model_id": hashlib.blake2b(weights, digest_size=12).hexdigest(),
        "dataset_fingerprint": data.fingerprint,
        "losses_small": plots.png_data_uri(plots.figure_to_png(plots.plot_history(result.history), dpi=SMALL_DPI)),
        **{k: v for k, v in result.to_dict().items() if k != "extra"},
        "epochs": len(result.history),
        "config": cfg.to_dict(),
    }


def _trained_model(ref: DatasetRef, variant: str, store: Storage, folder: str, input_size: int | None, model_id: str | None) -> tuple[torch.nn.Module, DatasetSplits, int]:
    """Rebuild a variant and load the final weights that train_variant stored in `folder` (checked against model_id)."""
    model, data, size = _build(ref, variant, 0, input_size)
    rel = f"{folder}/model.pt"
    if model_id is not None:
        found = hashlib.blake2b(store.read_bytes(rel), digest_size=12).hexdigest()
        if found != model_id:
            raise CheckpointError(f"{store.path(rel)} holds weights {found}, not the trained model {model_id}; retrain the variant")
    load_weights(model, load_checkpoint(store, rel, variant), store.path(rel))
    return model, data, size


def evaluate_variant(ref: DatasetRef | Mapping[str, Any], variant: str, storage: str | Storage, folder: str, *, model_id: str | None = None, input_size: int | None = None, device: str = "auto", batch_size: int = 1024) -> dict[str, Any]:
    """Test-split accuracy, F1s, per-class report and confusion matrix of the model in `folder`; saves report CSV, confusion PNG, metrics.json."""
    ref, store = as_ref(ref), open_storage(storage)
    model, data, size = _trained_model(ref, variant, store, folder, input_size, model_id)
    dev = resolve_device(device)
    model = model.to(dev)
    loader = make_loader(data, "test", batch_size=batch_size, input_size=size, device=dev)
    res = evaluate(model, loader, data.classes)
    store.write_text(f"{folder}/classification_report.csv", report_to_csv(res.report))
    _save_png(store, f"{folder}/confusion_matrix.png", plots.plot_confusion_matrix(res.confusion, data.classes))
    metrics = {**res.to_dict(), "variant": variant, "params": count_parameters(model), "confusion": res.confusion.tolist()}
    store.write_json(f"{folder}/metrics.json", metrics)
    return {
        **metrics,
        "report_markdown": res.report.round(3).to_markdown(),
        "confusion_small": plots.png_data_uri(plots.figure_to_png(plots.plot_confusion_matrix(res.confusion, data.classes), dpi=SMALL_DPI)),
    }


def extract_features(ref: DatasetRef | Mapping[str, Any], variant: str, storage: str | Storage, folder: str, *, model_id: str | None = None, input_size: int | None = None, layers: list[str] | None = None, probe_seed: int = 0) -> dict[str, Any]:
    """Hook every layer on fixed probe images (one per class); save filters/<layer>.png and feature_maps/<layer>.png."""
    ref, store = as_ref(ref), open_storage(storage)
    model, data, size = _trained_model(ref, variant, store, folder, input_size, model_id)
    px, py = select_probe_images(data.test_x, data.test_y, data.num_classes, seed=probe_seed)
    loader = make_loader(DatasetSplits(data.name, data.classes, px, py, px, py, px, py, data.mean, data.std), "test", batch_size=len(py), input_size=size, device=torch.device("cpu"))
    images, _ = next(iter(loader))
    maps = capture_feature_maps(model, images, layers)
    written: dict[str, list[str]] = {"filters": [], "feature_maps": []}
    for name, weight in conv_filters(model).items():
        written["filters"].append(_save_png(store, f"{folder}/filters/{name}.png", plots.plot_filters(weight, title=f"{variant} {name}")))
    for name, fmap in maps.items():
        if fmap.ndim >= 2:
            written["feature_maps"].append(_save_png(store, f"{folder}/feature_maps/{name}.png", plots.plot_feature_maps(fmap, title=f"{variant} {name}")))
    _save_png(store, f"{folder}/probe_images.png", plots.plot_sample_grid(px, [data.classes[int(i)] for i in py], title="probe images"))
    return {"variant": variant, "layers": list_layers(model), "probe_labels": py.tolist(), **written}


def run_variant(ref: DatasetRef | Mapping[str, Any], variant: str, storage: str | Storage, run: str, config: TrainConfig | Mapping[str, Any], *, lr: float | str = "auto", input_size: int | None = None, lr_kwargs: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """All steps of one variant in a plain loop (no Prefect): LR test, train, evaluate, extract."""
    cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    lr_info: dict[str, Any] = {"lr": lr, "rule": "given"}
    if lr == "auto":
        lr_info = lr_range_test(ref, variant, storage, run, batch_size=cfg.batch_size, optimizer=cfg.optimizer, momentum=cfg.momentum, weight_decay=cfg.weight_decay, seed=cfg.seed, device=cfg.device, input_size=input_size, **dict(lr_kwargs or {}))
    cfg = dataclasses.replace(cfg, lr=float(lr_info["lr"]))
    trained = train_variant(ref, variant, storage, run, cfg, input_size=input_size)
    metrics = evaluate_variant(ref, variant, storage, trained["folder_rel"], model_id=trained["model_id"], input_size=input_size, device=cfg.device)
    features = extract_features(ref, variant, storage, trained["folder_rel"], model_id=trained["model_id"], input_size=input_size)
    return {"lr": lr_info, "train": trained, "eval": metrics, "features": features}


def describe_variant(name: str, channels: int = 1, num_classes: int = 10, native_size: int = 28) -> dict[str, Any]:
    """Parameter count and input size of a variant for a dataset shape."""
    spec = get_variant(name)
    size = resolve_input_size(name, native_size)
    return {"name": name, "params": count_parameters(create_variant(name, channels, num_classes, size)), "input_size": size, "description": spec.description}
