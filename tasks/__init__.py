"""Thin Prefect tasks over cnn/ steps: names, configs and storage paths in; small dicts out."""

from tasks.publish import publish_comparison, publish_variant
from tasks.steps import evaluate_variant, extract_features, lr_range_test, prepare_dataset, train_variant

__all__ = [
    "evaluate_variant",
    "extract_features",
    "lr_range_test",
    "prepare_dataset",
    "publish_comparison",
    "publish_variant",
    "train_variant",
]
