"""The `compare-architectures` flow: prepare the dataset once, run every variant, publish the comparison."""
from __future__ import annotations

from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_progress_artifact
from prefect.states import Failed

from cnn.errors import StorageError
from cnn.publishing import artifact_key
from cnn.report import failed_row
from flows.dispatch import check_deployment, dispatch_variants
from flows.results import with_result_storage
from flows.settings import DEFAULT_LR_RULE, DEFAULT_OPTIMIZER, LRRule, DEFAULT_VARIANTS, OptimizerName, RefreshStep, RunSettings, ScheduleName, VariantName, build_settings, check_variants
from flows.variant import run_variant_steps
from tasks import prepare_dataset, publish_comparison
from tasks.progress import announce_run


def _error_text(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}".splitlines()[0]


def run_in_process(settings: RunSettings, variants: list[str], seeds: list[int], progress_id: str) -> list[dict[str, Any]]:
    """Each variant's steps in this process; a failing variant becomes a failed row and the rest go on."""
    logger = get_run_logger()
    rows: list[dict[str, Any]] = []
    total = len(variants) * len(seeds)
    for i, variant in enumerate(variants):
        lr_info = None
        for j, seed in enumerate(seeds):
            progress = {"artifact_id": progress_id, "done": i * len(seeds) + j, "total": total}
            subdir = f"seed-{seed}" if len(seeds) > 1 else None
            try:
                out = run_variant_steps(variant, settings, seed=seed, lr_info=lr_info, subdir=subdir, progress=progress)
            except StorageError:
                raise  # the store is every variant's: the next ones would fail the same way, after as long a wait
            except Exception as err:  # noqa: BLE001 - one failed variant must not sink the others
                logger.error("variant %s (seed %d) failed: %s", variant, seed, _error_text(err))
                rows.append(failed_row(variant, seed, _error_text(err)))
                continue
            lr_info = out["lr_info"]
            rows.append(out["row"])
    return rows


def republish_with(settings: RunSettings, fresh: list[dict[str, Any]]) -> dict[str, Any]:
    """Publish a new version of the comparison: every variant's latest rows, `fresh` replacing its variants' rows."""
    return publish_comparison(settings.ref.to_dict(), settings.storage, settings.run, fresh, 1, with_latest=True)


@flow(name="compare-architectures", flow_run_name="compare-{dataset}")
def compare_architectures(
    dataset: str = "fashion-mnist",
    variants: list[VariantName] = DEFAULT_VARIANTS,  # type: ignore[valid-type]
    epochs: int | Literal["auto"] = "auto",
    batch_size: int | Literal["auto"] = "auto",
    lr: float | Literal["auto"] = "auto",
    optimizer: OptimizerName = DEFAULT_OPTIMIZER,  # type: ignore[valid-type]
    schedule: ScheduleName = "onecycle",  # type: ignore[valid-type]
    seed: int = 0,
    repeats: int = 1,
    data_dir: str = "./data",
    storage: str = "./results",
    run: str | None = None,
    val_size: float = 0.1,
    max_train: int | None = None,
    max_test: int | None = None,
    device: str = "auto",
    refresh: bool | list[RefreshStep] = False,
    train_deployment: str | None = None,
    lr_min: float = 1e-5,
    lr_max: float = 1.0,
    lr_rule: LRRule = DEFAULT_LR_RULE,  # type: ignore[valid-type]
) -> dict[str, Any]:
    """Train, evaluate and inspect several CNN variants on one dataset and publish a ranked comparison.

    Args:
        dataset: fashion-mnist, mnist, kmnist, cifar10, digits, or another torchvision classification set by name.
        variants: Architectures to compare (see `cnn-lab variants`).
        epochs: Training epochs per variant (>= 1), or "auto": enough to see 20,000 images, 5 to 30.
        batch_size: Images per step, or "auto": the largest power of two leaving >= 50 steps per epoch (8-128 on CPU, 8-512 on CUDA); the LR range test runs at this batch size.
        lr: "auto" runs Leslie Smith's LR range test per variant; a number uses that learning rate for all.
        optimizer: adam (default), adamw or sgd (momentum 0.9).
        schedule: Per-step LR schedule: onecycle (peak at lr), cosine or none.
        seed: First seed; split, weights and batch order follow it.
        repeats: Seeds per variant (seed, seed+1, ...); the table shows mean, std and wins.
        data_dir: Folder with the raw files (torchvision layout) or where to download them.
        storage: Where artifacts go: a local path or s3://bucket/prefix (endpoint from AWS_ENDPOINT_URL).
        run: Run folder name under <storage>/<dataset>/; default: time and flow-run name.
        val_size: Validation share (0-1) or count, split from the training set with the seed.
        max_train: Use only this many training images (quick runs); all when empty.
        max_test: Use only this many test images; all when empty.
        device: auto (CUDA when present), cpu or cuda.
        refresh: Re-run cached steps: true for all, or a list of lr, train, evaluate, features.
        train_deployment: Run each variant as a flow run of this deployment (e.g. train-variant/train-variant-gpu) on its work pool; empty = in this process.
        lr_min: Lower bound of the LR range test.
        lr_max: Upper bound of the LR range test.
        lr_rule: How the LR range test picks the rate: min_loss_div10 (fastai: minimum loss / 10) or steepest (steepest descent); both are reported.
    """
    logger = get_run_logger()
    names = check_variants(variants)
    if not isinstance(repeats, int) or isinstance(repeats, bool) or repeats < 1:
        from cnn.errors import ConfigError

        raise ConfigError("repeats", f"must be a positive integer, got {repeats!r}", allowed="an int >= 1")
    settings = build_settings(dataset=dataset, epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer, schedule=schedule, seed=seed, data_dir=data_dir, storage=storage, run=run, val_size=val_size, max_train=max_train, max_test=max_test, device=device, refresh=refresh, lr_min=lr_min, lr_max=lr_max, lr_rule=lr_rule)
    if train_deployment:
        check_deployment(train_deployment)
    announce_run(settings.run)
    info = with_result_storage(prepare_dataset, settings.storage)(settings.ref.to_dict())
    logger.info("%s: %d train / %d val / %d test images, %d classes, mean %s std %s", info["name"], info["num_train"], info["num_val"], info["num_test"], len(info["classes"]), info["mean"], info["std"])
    seeds = [seed + k for k in range(repeats)]
    progress_id = str(create_progress_artifact(0.0, key=artifact_key(settings.ref.name, "progress"), description="variants x epochs done"))
    if train_deployment:
        rows = dispatch_variants(train_deployment, settings, names, seeds)
    else:
        rows = run_in_process(settings, names, seeds, progress_id)
    published = publish_comparison(settings.ref.to_dict(), settings.storage, settings.run, rows, repeats)
    failed = [r for r in rows if r["status"] != "ok"]
    result = {"run": settings.run, "rows": rows, "report": published["report"], "comparison_md": published["comparison_md"]}
    if len(failed) == len(rows):
        return Failed(message=f"every variant failed: {'; '.join(r['variant'] + ': ' + str(r['error']) for r in failed)}", data=result)
    if failed:
        logger.warning("%d of %d variant runs failed: %s", len(failed), len(rows), ", ".join(r["variant"] for r in failed))
    return result
