"""One variant's pipeline as plain steps over names and storage paths: the functions Prefect tasks wrap.

Each step takes small serialisable inputs (a DatasetRef, a variant name, a storage URL, a run name) and
returns a small dict; tensors and models stay inside the step or in storage.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch

from cnn import plots
from cnn.data import DatasetSplits, load_dataset
from cnn.errors import CheckpointError, ConfigError
from cnn.evaluate import evaluate, report_to_csv
from cnn.inspect import capture_feature_maps, conv_filters, list_layers, select_probe_images
from cnn import checkpoints, fitting, lr_find, recipe
from cnn.markdown import md_escape
from cnn.models import check_outputs, count_parameters, create_variant, resolve_input_size, upsampled_side
from cnn.params import RunParams, default_of
from cnn.predictions import PREDICTIONS, predictions_bytes
from cnn.storage import Storage, buffer_bytes, open_storage, safe_name
from cnn.checkpoints import load_checkpoint
from cnn.train import (
    Precision,
    TrainConfig,
    build_optimizer,
    load_weights,
    make_loader,
    resolve_device,
    seed_everything,
)

log = logging.getLogger(__name__)

FULL_DPI = 110
DEFAULT_LR_RULE = default_of("lr_rule")  # why this rule: see cnn/params.py


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

    @classmethod
    def of(cls, config: RunParams) -> DatasetRef:
        """The dataset and splits a run's config names (the split follows its first seed)."""
        return cls(
            name=config.dataset.lower(),
            data_dir=config.data_dir,
            val_size=config.val_size,
            seed=config.seed,
            max_train=config.max_train or None,
            max_test=config.max_test or None,
        )


@functools.lru_cache(maxsize=4)
def get_dataset(ref: DatasetRef) -> DatasetSplits:
    """Load (once per process) the splits that `ref` describes."""
    return load_dataset(
        ref.name,
        ref.data_dir,
        val_size=ref.val_size,
        seed=ref.seed,
        download=ref.download,
        max_train=ref.max_train,
        max_test=ref.max_test,
    )


def prepare_dataset(config: RunParams) -> dict[str, Any]:
    """Download/read the dataset and compute train-only normalisation; returns its info (classes, stats, fingerprint)."""
    ref = DatasetRef.of(config)
    safe_name(ref.name, "dataset")
    return get_dataset(ref).info()


def variant_dir(dataset: str, run: str, variant: str) -> str:
    """Storage folder of one variant's artifacts: <dataset>/<run>/<variant>."""
    return f"{safe_name(dataset, 'dataset')}/{safe_name(run, 'run')}/{safe_name(variant, 'variant')}"


def _build(
    ref: DatasetRef, variant: str, seed: int, input_size: int | None
) -> tuple[torch.nn.Module, DatasetSplits, int]:
    data = get_dataset(ref)
    model, size = build_model(variant, data, seed, input_size)
    return model, data, size


def build_model(
    variant: str, data: DatasetSplits, seed: int, input_size: int | None = None
) -> tuple[torch.nn.Module, int]:
    """The seeded initial model of `variant` for `data` and its input size (small images are upsized to the
    architecture's design side); the flows, the benchmarks and the reference loop all build through it."""
    size = resolve_input_size(variant, upsampled_side(data.image_size), input_size)
    seed_everything(seed)
    model = create_variant(variant, data.channels, data.num_classes, size)
    return check_outputs(model, variant, data.channels, data.num_classes, size), size


def _save_png(storage: Storage, rel: str, fig: Any, dpi: int = FULL_DPI) -> str:
    return storage.write_bytes(rel, plots.figure_to_png(fig, dpi=dpi))


@functools.lru_cache(maxsize=4)
def _probe_images_png(ref: DatasetRef, probe_seed: int) -> bytes:
    """The probe images' grid as PNG, drawn once per process: every variant of a run shows the same images."""
    data = get_dataset(ref)
    px, py = select_probe_images(data.test_x, data.test_y, data.num_classes, seed=probe_seed)
    return plots.figure_to_png(
        plots.plot_sample_grid(px, [data.classes[int(i)] for i in py], title="probe images"), dpi=FULL_DPI
    )


def resolved_sizes(epochs: int | str, batch_size: int | str, n_train: int, device: str) -> dict[str, int]:
    """Epochs and batch size, "auto" resolved by the recipe's rules for `n_train` images on `device`."""
    resolved_epochs = recipe.resolve_epochs(epochs, n_train)
    batch = recipe.resolve_batch_size(batch_size, n_train, resolve_device(device), resolved_epochs)
    return {"epochs": resolved_epochs, "batch_size": batch}


def train_config(config: RunParams, n_train: int, **values: Any) -> TrainConfig:
    """The trainer's config for this run: its parameters with epochs and batch size resolved for `n_train` images,
    and `values` (the chosen lr, the seed) on top."""
    sizes = resolved_sizes(config.epochs, config.batch_size, n_train, config.device)
    return TrainConfig.from_run(config, **{**sizes, **values})


# Test images per class below which a run is refused: at 10 per class (100 for ten classes) one accuracy's 95% interval
# is already about +-10 points wide, and the per-class report counts single images (cnn/report/verdict.py's Wilson)
MIN_TEST_PER_CLASS = 10


def check_splits(config: RunParams, info: Mapping[str, Any]) -> None:
    """The run's batch size fits the training split and its test split can measure an accuracy; the flows check this
    right after the data step, before any LR test or training."""
    check_batch_size(config.batch_size, int(info["num_train"]))
    needed, n_test = MIN_TEST_PER_CLASS * len(info["classes"]), int(info["num_test"])
    if n_test < needed:
        field = "max_test" if config.max_test else "dataset"
        raise ConfigError(
            field,
            f"{n_test} test images cannot measure {len(info['classes'])} classes' accuracy (its 95% interval would span more than 20 points)",
            allowed=f"at least {needed} test images ({MIN_TEST_PER_CLASS} per class): max_test 0 (all) or >= {needed}",
        )


def check_batch_size(batch_size: int | str, n_train: int) -> None:
    """A batch size ("auto" always fits) no larger than the training split; the flows check it right after the data step."""
    if batch_size != recipe.AUTO and int(batch_size) > n_train:
        raise ConfigError(
            "batch_size", f"{batch_size} is larger than the {n_train} training images", allowed=f"1..{n_train}, or auto"
        )


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
    if why := _no_range_test(steps, cfg.batch_size):
        out = _base_lr_info(cfg.optimizer, why, cfg)
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
        "plot": _save_png(
            store, f"{folder}/lr_finder.png", plots.plot_lr_sweep(result.lrs, result.losses, lr, result.suggestions)
        ),
    }
    store.write_json(
        f"{folder}/lr_finder.json", {**result.to_dict(), **{k: v for k, v in out.items() if not k.startswith("plot")}}
    )
    return out


def _no_range_test(steps: int, batch_size: int) -> str | None:
    """Why no range test runs ("base lr: ..."), or None: its budget allows too few steps for a curve, or the batch is
    above the linear rule's start, where `chosen_lr` takes the base lr whatever the curve says."""
    if steps == 0:
        return f"base lr: range test budget below {recipe.MIN_LR_TEST_STEPS} steps"
    if recipe.lr_scale(batch_size) > 1:
        return f"base lr: linear scaling above batch {recipe.LR_SCALE_FROM_BATCH} (no range test)"
    return None


def range_test_sweep(
    model: torch.nn.Module,
    data: DatasetSplits,
    size: int,
    cfg: TrainConfig,
    steps: int,
    *,
    lr_min: float = default_of("lr_min"),
    lr_max: float = default_of("lr_max"),
    rule: str = DEFAULT_LR_RULE,
) -> lr_find.LRFindResult:
    """The sweep itself, on resident batches with the trainer's precision (the flows' step and the benchmarks share it)."""
    dev = resolve_device(cfg.device)
    precision = Precision(dev, None, None)
    model = model.to(dev)
    if precision.channels_last:
        model = model.to(memory_format=torch.channels_last)
    loader = make_loader(
        data,
        "train",
        batch_size=cfg.batch_size,
        input_size=size,
        device=dev,
        shuffle=True,
        seed=cfg.seed,
        channels_last=precision.channels_last,
    )
    opt = build_optimizer(cfg.optimizer, model.parameters(), lr_min, cfg.momentum, cfg.weight_decay)

    def step_fn(m: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with precision.autocast():
            return torch.nn.functional.cross_entropy(m(x).float(), y)

    return lr_find.lr_range_test(
        model,
        opt,
        loader,
        start_lr=lr_min,
        end_lr=lr_max,
        num_steps=steps,
        rule=rule,
        fallback_lr=recipe.base_lr(cfg.optimizer, cfg.batch_size),
        step_fn=step_fn,
    )


def chosen_lr(result: lr_find.LRFindResult, optimizer: str, batch_size: int) -> tuple[float, str]:
    """The suggestion, capped at the top of the optimizer's trust band; the base lr for an unusable curve, a batch above
    the linear rule's start, or a suggestion below the band (on 486 images cnn2_5 reached 0.48 at the band's floor
    against 0.57 at the base lr); and how."""
    base = recipe.base_lr(optimizer, batch_size)
    if result.rule == "fallback" or result.flag in recipe.UNTRUSTED_CURVES:
        return base, f"base lr: {str(result.flag).replace('_', ' ')} curve"
    if recipe.lr_scale(batch_size) > 1:  # the linear rule beats a short large-batch curve (recipe.LR_SCALE_FROM_BATCH)
        linear = f"linear scaling above batch {recipe.LR_SCALE_FROM_BATCH}"
        return base, f"base lr: {linear} ({result.rule} suggested {result.suggestion:.2g})"
    if result.suggestion < recipe.trust_band(optimizer, batch_size)[0]:  # a minimum at the sweep's start: no real fall
        return base, f"base lr: {result.rule} {result.suggestion:.2g} below the trust band"
    clipped = recipe.clip_lr(result.suggestion, optimizer, batch_size)
    if clipped != result.suggestion:
        return clipped, f"{result.rule}, clipped from {result.suggestion:.2g}"
    return clipped, result.rule


def _base_lr_info(optimizer: str, why: str, cfg: TrainConfig) -> dict[str, Any]:
    """lr_info when no range test ran."""
    return {
        "lr": recipe.base_lr(optimizer, cfg.batch_size),
        "rule": why,
        "suggestions": {},
        "flag": None,
        "num_steps": 0,
        "epochs_cost": 0.0,
        "budget_share": 0.0,
        "batch_size": cfg.batch_size,
        "epochs": cfg.epochs,
    }


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
    _save_png(store, f"{folder}/losses.png", plots.plot_history(result.history))
    torch_weights = f"{folder}/model.pt"
    weights = buffer_bytes(
        lambda b: torch.save({"variant": variant, "model": model.state_dict(), "input_size": size}, b)
    )
    store.write_bytes(torch_weights, weights)
    return {
        "variant": variant,
        "seed": fitted.config.seed,
        "params": count_parameters(model),
        "input_size": size,
        "checkpoint": store.path(f"{folder}/checkpoint.pt"),
        "weights": store.path(torch_weights),
        "folder": store.path(folder),
        "folder_rel": folder,
        "model_id": hashlib.blake2b(weights, digest_size=12).hexdigest(),
        "dataset_fingerprint": data.fingerprint,
        **{k: v for k, v in result.to_dict().items() if k != "extra"},
        "epochs": len(result.history),
        "config": fitted.config.to_dict(),
        "fallbacks": fitted.fallbacks,
        "learned": fitted.learned,
        "chance": recipe.chance_level(data.val_y),
    }


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
    rel = f"{folder.strip('/')}/model.pt"
    if model_id is not None:
        found = hashlib.blake2b(checkpoints.read_weights(store, rel), digest_size=12).hexdigest()
        if found != model_id:
            raise CheckpointError(
                f"{store.path(rel)} holds weights {found}, not the trained model {model_id}; retrain the variant"
            )
    ckpt = load_checkpoint(store, rel, variant)
    model, size = build_model(variant, data, 0, input_size if input_size is not None else ckpt.get("input_size"))
    load_weights(model, ckpt, store.path(rel))
    return model.eval(), size


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
    _save_png(store, f"{folder}/confusion_matrix.png", plots.plot_confusion_matrix(res.confusion, data.classes))
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
    written: dict[str, list[str]] = {"filters": [], "feature_maps": []}
    for name, weight in conv_filters(model).items():
        written["filters"].append(
            _save_png(store, f"{folder}/filters/{name}.png", plots.plot_filters(weight, title=f"{variant} {name}"))
        )
    for name, fmap in maps.items():
        if fmap.ndim >= 2:
            written["feature_maps"].append(
                _save_png(
                    store, f"{folder}/feature_maps/{name}.png", plots.plot_feature_maps(fmap, title=f"{variant} {name}")
                )
            )
    store.write_bytes(f"{folder}/probe_images.png", _probe_images_png(ref, probe_seed))
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
