"""The `train-variant` flow: one variant end to end (LR test, train, evaluate, features); the unit a retrain or a GPU pool runs."""
from __future__ import annotations

from typing import Any, Literal

from prefect import flow, get_run_logger

from cnn.pipeline import variant_dir
from cnn.publishing import latest_rows
from cnn.report import make_row
from flows.results import with_result_storage
from flows.settings import DEFAULT_LR_RULE, DEFAULT_OPTIMIZER, LRRule, OptimizerName, RefreshStep, RunSettings, ScheduleName, VariantName, build_settings
from tasks import evaluate_variant, extract_features, lr_range_test, prepare_dataset, publish_variant, train_variant
from tasks.progress import announce_run


def _task(t: Any, step: str, settings: RunSettings) -> Any:
    """The task with its results in the run's store, forced to run afresh when the user asked to refresh `step`."""
    t = with_result_storage(t, settings.storage)
    return t.with_options(refresh_cache=True) if step in settings.refresh else t


def run_variant_steps(variant: str, settings: RunSettings, *, seed: int, lr_info: dict[str, Any] | None = None, subdir: str | None = None, progress: dict[str, Any] | None = None) -> dict[str, Any]:
    """LR test (when lr is auto and no lr_info is given) -> train -> evaluate -> features -> publish; returns the row."""
    ref = settings.ref.to_dict()
    info = _task(prepare_dataset, "dataset", settings)(ref)
    device = settings.config["device"]
    if lr_info is None:
        if settings.lr == "auto":
            lr_info = _task(lr_range_test, "lr", settings)(ref, variant, settings.storage, settings.run, settings.lr_settings, device=device, fingerprint=info["fingerprint"])
        else:
            lr_info = {"lr": float(settings.lr), "rule": "given", "flag": None}
    config = {**settings.config, "lr": float(lr_info["lr"]), "seed": seed}
    config.pop("device")
    trained = _task(train_variant, "train", settings)(ref, variant, settings.storage, settings.run, config, device=device, subdir=subdir, fingerprint=info["fingerprint"], progress=progress, resume="train" not in settings.refresh, fallback=settings.lr == "auto")
    evaluated = _task(evaluate_variant, "evaluate", settings)(ref, variant, settings.storage, trained["folder_rel"], trained["model_id"], device=device)
    features = _task(extract_features, "features", settings)(ref, variant, settings.storage, trained["folder_rel"], trained["model_id"])
    row = make_row(variant, seed, lr_info, trained, evaluated, trained["folder"])
    row_rel = variant_dir(settings.ref.name, settings.run, variant) + (f"/{subdir}" if subdir else "") + "/row.json"
    publish_variant(settings.ref.name, settings.storage, row_rel, row, lr_info, trained, evaluated, features)
    return {"row": row, "lr_info": lr_info}


@flow(name="train-variant", flow_run_name="{variant}-on-{dataset}")
def train_variant_flow(
    variant: VariantName = "cnn2_5",  # type: ignore[valid-type]
    dataset: str = "fashion-mnist",
    epochs: int | Literal["auto"] = "auto",
    batch_size: int | Literal["auto"] = "auto",
    lr: float | Literal["auto"] = "auto",
    optimizer: OptimizerName = DEFAULT_OPTIMIZER,  # type: ignore[valid-type]
    schedule: ScheduleName = "onecycle",  # type: ignore[valid-type]
    seed: int = 0,
    data_dir: str = "./data",
    storage: str = "./results",
    run: str | None = None,
    val_size: float = 0.1,
    max_train: int | None = None,
    max_test: int | None = None,
    device: str = "auto",
    refresh: bool | list[RefreshStep] = False,
    publish: bool = False,
    subdir: str | None = None,
    lr_min: float = 1e-5,
    lr_max: float = 1.0,
    lr_rule: LRRule = DEFAULT_LR_RULE,  # type: ignore[valid-type]
) -> dict[str, Any]:
    """Train and inspect one CNN variant; with publish=True, also refresh the dataset's comparison table.

    Args:
        variant: Architecture to train (see `cnn-lab variants`).
        dataset: fashion-mnist, mnist, kmnist, cifar10, digits, or another torchvision classification set by name.
        epochs: Training epochs (>= 1), or "auto": enough to see 20,000 images, 5 to 30.
        batch_size: Images per step, or "auto": the largest power of two leaving >= 50 steps per epoch (8-128 on CPU, 8-512 on CUDA); the LR range test runs at this batch size.
        lr: "auto" runs Leslie Smith's LR range test; a number uses that learning rate.
        optimizer: adam (default), adamw or sgd (momentum 0.9).
        schedule: Per-step LR schedule: onecycle (peak at lr), cosine or none.
        seed: Seed of the split, the weights and the batch order (same seed, same metrics on CPU).
        data_dir: Folder with the raw files (torchvision layout) or where to download them.
        storage: Where artifacts go: a local path or s3://bucket/prefix (endpoint from AWS_ENDPOINT_URL).
        run: Run folder name under <storage>/<dataset>/; default: time and flow-run name.
        val_size: Validation share (0-1) or count, split from the training set with the seed.
        max_train: Use only this many training images (quick runs); all when empty.
        max_test: Use only this many test images; all when empty.
        device: auto (CUDA when present), cpu or cuda.
        refresh: Re-run cached steps: true for all, or a list of lr, train, evaluate, features.
        publish: After training, publish a new version of the comparison table with this variant's row replaced.
        subdir: Sub-folder under the variant's folder (used by repeats: seed-<n>).
        lr_min: Lower bound of the LR range test.
        lr_max: Upper bound of the LR range test.
        lr_rule: How the LR range test picks the rate: min_loss_div10 (fastai: minimum loss / 10) or steepest (steepest descent); both are reported.
    """
    settings = build_settings(dataset=dataset, epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer, schedule=schedule, seed=seed, data_dir=data_dir, storage=storage, run=run, val_size=val_size, max_train=max_train, max_test=max_test, device=device, refresh=refresh, lr_min=lr_min, lr_max=lr_max, lr_rule=lr_rule)
    if publish:
        latest_rows(settings.storage, settings.ref.name)  # the published rows this retrain will merge into: checked before training
    announce_run(settings.run)
    result = run_variant_steps(variant, settings, seed=seed, subdir=subdir)
    if publish:
        from flows.compare import republish_with

        republish_with(settings, [result["row"]])
    get_run_logger().info("%s: test accuracy %.4f, files in %s", variant, result["row"]["test_acc"], result["row"]["folder"])
    return result["row"]
