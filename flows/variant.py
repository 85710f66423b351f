"""The `train-variant` flow: one variant end to end (LR test, train, evaluate, features); the unit a retrain or a GPU pool runs."""
from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from cnn.models import builtin_variants
from cnn.params import parse_params
from cnn.pipeline import check_batch_size, variant_dir
from cnn.publishing import latest_rows
from cnn.report import make_row
from flows.failures import fail_in_one_line
from flows.parameters import VARIANT_FIELDS, run_parameters
from flows.results import with_result_storage
from flows.settings import RunSettings, build_settings
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
    check_batch_size(settings.params.batch_size, info["num_train"])
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
@fail_in_one_line
@run_parameters(VARIANT_FIELDS, notes={"variant": f"Built in: {', '.join(builtin_variants())}."})
def train_variant_flow(**values: Any) -> dict[str, Any]:
    """Train and inspect one CNN variant; with publish=True, also refresh the dataset's comparison table."""
    params = parse_params(values)
    settings = build_settings(params, variants=[params.variant])
    variant, seed, subdir, publish = params.variant, params.seed, params.subdir or None, params.publish
    if publish:
        latest_rows(settings.storage, settings.ref.name)  # the published rows this retrain will merge into: checked before training
    announce_run(settings.run)
    result = run_variant_steps(variant, settings, seed=seed, subdir=subdir)
    if publish:
        from flows.compare import republish_with

        republish_with(settings, [result["row"]])
    get_run_logger().info("%s: test accuracy %.4f, files in %s", variant, result["row"]["test_acc"], result["row"]["folder"])
    return result["row"]
