"""One variant's pipeline as plain steps over names and storage paths: the functions Prefect tasks wrap.

Each step takes small serialisable inputs (a DatasetRef, a variant name, a storage URL, a run name) and
returns a small dict; tensors and models stay inside the step or in storage. What the steps build from a run's
parameters is in cnn/step_inputs.py, the lr policy in cnn/lr_policy.py, the weights file in cnn/trained_models.py and
the figures in cnn/step_figures.py.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd
import torch

from cnn import checkpoints, fitting, recipe
from cnn.data import DatasetSplits
from cnn.evaluate import evaluate, report_to_csv
from cnn.inspect import capture_feature_maps, conv_filters, list_layers, select_probe_images
from cnn.lr_policy import base_lr_info, chosen_lr, no_range_test, range_test_sweep
from cnn.markdown import md_escape
from cnn.models import count_parameters
from cnn.params import RunParams
from cnn.predictions import PREDICTIONS, predictions_bytes
from cnn.step_figures import probe_images_png, save_confusion, save_history, save_layer_figures, save_lr_sweep
from cnn.step_inputs import DatasetRef, build_model, check_batch_size, get_dataset, train_config, variant_dir
from cnn.storage import Storage, open_storage, safe_name
from cnn.trained_models import load_trained_model, save_trained_model
from cnn.train_setup import make_loader, resolve_device

log = logging.getLogger(__name__)


def prepare_dataset(config: RunParams) -> dict[str, Any]:
    """Download/read the dataset and compute train-only normalisation; returns its info (classes, stats, fingerprint)."""
    ref = DatasetRef.of(config)
    safe_name(ref.name, "dataset")
    return get_dataset(ref).info()


def _build(
    ref: DatasetRef, variant: str, seed: int, input_size: int | None
) -> tuple[torch.nn.Module, DatasetSplits, int]:
    data = get_dataset(ref)
    model, size = build_model(variant, data, seed, input_size)
    return model, data, size


def lr_range_test(config: RunParams, variant: str, *, input_size: int | None = None) -> dict[str, Any]:
    """Leslie Smith's LR range test at the training batch size within the recipe's budget; saves lr_finder.png/json.

    The suggestion is clipped into the optimizer's trust band; when the budget allows too few steps or the curve is
    unusable (too short, no descent), the optimizer's base lr is used and the reason recorded in "rule".
    """
    ref, store = DatasetRef.of(config), open_storage(config.storage)
    folder = variant_dir(ref.name, config.run, variant)
    data = get_dataset(ref)
    n_train = int(data.train_y.numel())
    cfg = train_config(config, n_train)
    check_batch_size(cfg.batch_size, n_train)
    steps = recipe.lr_test_steps(cfg.epochs, n_train, cfg.batch_size)
    if why := no_range_test(steps, cfg.batch_size):
        out = base_lr_info(cfg.optimizer, why, cfg)
        store.write_json(f"{folder}/lr_finder.json", out)
        return out
    model, data, size = _build(ref, variant, config.seed, input_size)
    result = range_test_sweep(
        model,
        data,
        size,
        cfg,
        steps,
        lr_min=config.lr_min,
        lr_max=config.lr_max,
        rule=config.lr_rule,
    )
    lr, how = chosen_lr(result, cfg.optimizer, cfg.batch_size)
    out = {
        "lr": lr,
        "rule": how,
        "suggestions": result.suggestions,
        "flag": result.flag,
        "num_steps": result.num_steps,
        "epochs_cost": result.images_seen / max(n_train, 1),
        "budget_share": result.images_seen / max(n_train * cfg.epochs, 1),
        "batch_size": cfg.batch_size,
        "epochs": cfg.epochs,
        "plot": save_lr_sweep(store, folder, result, lr),
    }
    store.write_json(
        f"{folder}/lr_finder.json", {**result.to_dict(), **{k: v for k, v in out.items() if not k.startswith("plot")}}
    )
    return out


def train_variant(
    config: RunParams,
    variant: str,
    *,
    seed: int,
    lr: float,
    input_size: int | None = None,
    subdir: str | None = None,
    resume: bool = True,
    session: str | None = None,
    callback: Callable[[dict[str, float]], None] | None = None,
) -> dict[str, Any]:
    """Train one variant at `lr` and `seed`: `train_seeds` for one seed."""
    return train_seeds(
        config,
        variant,
        seeds=[seed],
        lr=lr,
        input_size=input_size,
        subdirs=[subdir],
        resume=resume,
        session=session,
        callback=(lambda _seed, row: callback(row)) if callback else None,
    )[0]


def train_seeds(
    config: RunParams,
    variant: str,
    *,
    seeds: Sequence[int],
    lr: float,
    input_size: int | None = None,
    subdirs: Sequence[str | None] | None = None,
    resume: bool = True,
    session: str | None = None,
    callback: Callable[[int, dict[str, float]], None] | None = None,
) -> list[dict[str, Any]]:
    """Train one variant at `lr`, once per seed (seed k's files in its subdir `subdirs[k]`), the seeds batched as one
    model where they can be (cnn.fitting.fit_seeds), each with the learn check and a checkpoint per epoch, resumable;
    saves each seed's history.csv, losses.png and model.pt. Fallbacks (another lr or optimizer after a failed attempt)
    only when the run chose the lr (config.lr is "auto"): a user's own lr is kept. `session`: see cnn.train.train."""
    ref, store = DatasetRef.of(config), open_storage(config.storage)
    base = variant_dir(ref.name, config.run, variant)
    folders = {
        seed: base + (f"/{safe_name(sub, 'subdir')}" if sub else "")
        for seed, sub in zip(seeds, subdirs or [None] * len(seeds))
    }
    _, data, size = _build(ref, variant, 0, input_size)
    n_train = int(data.train_y.numel())
    cfg = train_config(config, n_train, lr=float(lr), seed=seeds[0])
    check_batch_size(cfg.batch_size, n_train)
    if note := recipe.few_steps_note(n_train, cfg.epochs, cfg.batch_size, resolve_device(cfg.device)):
        log.warning(note)  # here, not in train_config: the range test resolves the config too
    fitted = fitting.fit_seeds(
        lambda seed: _build(ref, variant, seed, input_size)[0],
        data,
        cfg,
        seeds,
        input_size=size,
        variant=variant,
        checkpoints=lambda seed: checkpoints.in_storage(store, folders[seed], variant, resume, session),
        resume=True,
        fallback=config.lr == recipe.AUTO,
        callback=callback,
    )
    return [
        _store_trained(store, folders[seed], variant, model, fit, size, data)
        for seed, (model, fit) in zip(seeds, fitted)
    ]


def _store_trained(
    store: Storage,
    folder: str,
    variant: str,
    model: torch.nn.Module,
    fitted: fitting.FitResult,
    size: int,
    data: DatasetSplits,
) -> dict[str, Any]:
    """Save one trained seed's history.csv, losses.png and model.pt in `folder`; what the later steps need of it."""
    result = fitted.result
    history = pd.DataFrame(result.history)
    store.write_text(f"{folder}/history.csv", history.to_csv(index=False))
    save_history(store, folder, result.history)
    weights, model_id = save_trained_model(store, folder, variant, model, size)
    return {
        "variant": variant,
        "seed": fitted.config.seed,
        "params": count_parameters(model),
        "input_size": size,
        "checkpoint": store.path(f"{folder}/checkpoint.pt"),
        "weights": weights,
        "folder": store.path(folder),
        "folder_rel": folder,
        "model_id": model_id,
        "dataset_fingerprint": data.fingerprint,
        **{k: v for k, v in result.to_dict().items() if k != "extra"},
        "epochs": len(result.history),
        "config": fitted.config.to_dict(),
        "fallbacks": fitted.fallbacks,
        "learned": fitted.learned,
        "chance": recipe.chance_level(data.val_y),
    }


def evaluate_variant(
    config: RunParams,
    variant: str,
    folder: str,
    *,
    model_id: str | None = None,
    input_size: int | None = None,
    batch_size: int = 1024,
) -> dict[str, Any]:
    """Test-split accuracy, F1s, per-class report and confusion matrix of the model in `folder`; saves report CSV,
    confusion PNG, metrics.json (with the test set's identity) and each test image's predicted class (predictions.npy,
    test order: what the comparison's paired tests read)."""
    data, store = get_dataset(DatasetRef.of(config)), open_storage(config.storage)
    model, size = load_trained_model(store, folder, variant, data, input_size=input_size, model_id=model_id)
    dev = resolve_device(config.device)
    model = model.to(dev)
    loader = make_loader(data, "test", batch_size=batch_size, input_size=size, device=dev)
    res = evaluate(model, loader, data.classes)
    store.write_text(f"{folder}/classification_report.csv", report_to_csv(res.report))
    store.write_bytes(f"{folder}/{PREDICTIONS}", predictions_bytes(res.y_pred, data.num_classes))
    save_confusion(store, folder, res.confusion, data.classes)
    metrics = {
        **res.to_dict(),
        "variant": variant,
        "params": count_parameters(model),
        "confusion": res.confusion.tolist(),
        "test_set": data.test_set().to_dict(),
    }
    store.write_json(f"{folder}/metrics.json", metrics)
    return {
        **metrics,
        "report_markdown": res.report.round(3).rename(index=md_escape).to_markdown(),
    }


def extract_features(
    config: RunParams,
    variant: str,
    folder: str,
    *,
    model_id: str | None = None,
    input_size: int | None = None,
    layers: list[str] | None = None,
    probe_seed: int = 0,
) -> dict[str, Any]:
    """Hook every layer on fixed probe images (one per class); save filters/<layer>.png and feature_maps/<layer>.png."""
    ref, store = DatasetRef.of(config), open_storage(config.storage)
    data = get_dataset(ref)
    model, size = load_trained_model(store, folder, variant, data, input_size=input_size, model_id=model_id)
    px, py = select_probe_images(data.test_x, data.test_y, data.num_classes, seed=probe_seed)
    loader = make_loader(
        DatasetSplits(data.name, data.classes, px, py, px, py, px, py, data.mean, data.std),
        "test",
        batch_size=len(py),
        input_size=size,
        device=torch.device("cpu"),
    )
    images, _ = next(iter(loader))
    maps = capture_feature_maps(model, images, layers)
    written = save_layer_figures(store, folder, variant, conv_filters(model), maps)
    store.write_bytes(f"{folder}/probe_images.png", probe_images_png(ref, probe_seed))
    return {"variant": variant, "layers": list_layers(model), "probe_labels": py.tolist(), **written}


def run_variant(
    config: RunParams, variant: str, *, seed: int | None = None, input_size: int | None = None, features: bool = True
) -> dict[str, Any]:
    """All steps of one variant in a plain loop (no Prefect): LR test (when config.lr is "auto"), train, evaluate,
    extract (unless features=False); `seed` defaults to the config's."""
    lr_info: dict[str, Any] = {"lr": config.lr, "rule": "given", "flag": None}
    if config.lr == recipe.AUTO:
        lr_info = lr_range_test(config, variant, input_size=input_size)
    seed = config.seed if seed is None else seed
    trained = train_variant(config, variant, seed=seed, lr=float(lr_info["lr"]), input_size=input_size)
    metrics = evaluate_variant(
        config, variant, trained["folder_rel"], model_id=trained["model_id"], input_size=input_size
    )
    maps = (
        extract_features(config, variant, trained["folder_rel"], model_id=trained["model_id"], input_size=input_size)
        if features
        else {}
    )
    return {"lr": lr_info, "train": trained, "eval": metrics, "features": maps}
