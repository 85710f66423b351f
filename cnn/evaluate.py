"""Evaluate a classifier: predictions, loss and scikit-learn metrics (report, confusion, most-confused pairs)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score
from torch import Tensor, nn

from cnn.errors import ConfigError, TrainingDiverged


@dataclass
class EvalResult:
    """Metrics of one evaluation; `report` rows are the class names then "macro avg" and "weighted avg"."""

    accuracy: float
    macro_f1: float
    weighted_f1: float
    loss: float
    report: pd.DataFrame
    confusion: np.ndarray
    class_names: list[str]
    most_confused: list[dict]
    y_true: np.ndarray
    y_pred: np.ndarray

    def to_dict(self) -> dict:
        """Small JSON-serialisable summary: scalar metrics, most-confused pairs and per-class F1 (no arrays)."""
        per_class = self.report["f1-score"].iloc[: len(self.class_names)]
        return {
            "accuracy": float(self.accuracy),
            "macro_f1": float(self.macro_f1),
            "weighted_f1": float(self.weighted_f1),
            "loss": float(self.loss),
            "num_samples": int(len(self.y_true)),
            "most_confused": [dict(pair) for pair in self.most_confused],
            "per_class_f1": {str(name): float(f1) for name, f1 in per_class.items()},
        }


def normalize_rows(confusion: np.ndarray) -> np.ndarray:
    """Divide each row by its sum; all-zero rows stay 0."""
    counts = np.asarray(confusion, dtype=float)
    totals = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Put every submodule in eval mode, then restore each one's own train/eval flag."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


def _model_device(model: nn.Module) -> torch.device:
    """Device of the model's first parameter or buffer; CPU for a model with neither."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


@torch.no_grad()
def predict(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]]) -> tuple[np.ndarray, np.ndarray, float]:
    """Return (y_true, y_pred, mean cross-entropy) over `batches`, in eval mode; the previous mode is restored.

    Results stay on the model's device until one host copy at the end; labels outside the logits raise ConfigError.
    """
    device = _model_device(model)
    trues: list[Tensor] = []
    preds: list[Tensor] = []
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    non_finite = torch.zeros((), dtype=torch.int64, device=device)  # images whose logits hold NaN or inf
    num_classes = 0
    with _eval_mode(model):
        for images, labels in batches:
            logits = model(images.to(device, non_blocking=True)).float()
            labels = labels.to(device, non_blocking=True).long()
            num_classes = logits.shape[1]
            non_finite += (~torch.isfinite(logits)).any(dim=1).sum()
            # Clamp so a bad label cannot trip a device-side assert; it is reported after the single host copy.
            losses = F.cross_entropy(logits, labels.clamp(0, num_classes - 1), reduction="none")
            loss_sum += losses.sum(dtype=torch.float64)
            trues.append(labels)
            preds.append(logits.argmax(dim=1))
    if not trues or sum(len(t) for t in trues) == 0:
        raise ConfigError("batches", "got no samples to evaluate")
    y_true_t, y_pred_t = torch.cat(trues), torch.cat(preds)
    packed = torch.cat([y_true_t.double(), y_pred_t.double(), loss_sum.reshape(1), non_finite.reshape(1)]).cpu().numpy()
    n = len(y_true_t)
    if packed[-1]:
        raise TrainingDiverged(
            f"the model outputs NaN or inf for {int(packed[-1])} of {n} test images, so its predictions mean nothing; retrain it at a lower lr, or fix the variant's forward"
        )
    y_true, y_pred = packed[:n].astype(np.int64), packed[n : 2 * n].astype(np.int64)
    _check_labels(y_true, num_classes, "labels", "label {bad} is out of range of the model's {n} outputs")
    return y_true, y_pred, float(packed[-2] / n)


def _check_labels(values: np.ndarray, n: int, field: str, template: str) -> None:
    """Raise ConfigError(field) naming the first value outside 0..n-1."""
    bad = values[(values < 0) | (values >= n)]
    if bad.size:
        raise ConfigError(field, template.format(bad=int(np.unique(bad)[0]), n=n), allowed=f"0..{n - 1}")


def evaluate(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], class_names: Sequence[str]) -> EvalResult:
    """Run `model` over `batches` and compute accuracy, F1s, the per-class report and the confusion matrix."""
    names = [str(name) for name in class_names]
    if not names:
        raise ConfigError("class_names", "must name at least one class")
    y_true, y_pred, loss = predict(model, batches)
    n = len(names)
    _check_labels(y_true, n, "labels", "label {bad} is out of range of the {n} class names")
    _check_labels(y_pred, n, "class_names", "model predicted class {bad} but only {n} class names were given")
    labels = list(range(n))
    report = classification_report(y_true, y_pred, labels=labels, target_names=names, output_dict=True, zero_division=0)
    rows = [*names, "macro avg", "weighted avg"]
    frame = pd.DataFrame.from_dict({row: report[row] for row in rows}, orient="index")
    frame = frame[["precision", "recall", "f1-score", "support"]].astype({"support": int})
    confusion = confusion_matrix(y_true, y_pred, labels=labels)
    return EvalResult(
        accuracy=float(accuracy_score(y_true, y_pred)),
        macro_f1=float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        weighted_f1=float(f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0)),
        loss=loss,
        report=frame,
        confusion=confusion,
        class_names=names,
        most_confused=most_confused_pairs(confusion, names),
        y_true=y_true,
        y_pred=y_pred,
    )


def most_confused_pairs(confusion: np.ndarray, class_names: Sequence[str], k: int = 5) -> list[dict]:
    """Top-k off-diagonal cells with count > 0 as {"true", "predicted", "count"}, largest first (ties row-major)."""
    counts = np.asarray(confusion)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1] or counts.shape[0] != len(class_names):
        raise ConfigError("confusion", f"expected shape ({len(class_names)}, {len(class_names)}), got {counts.shape}")
    off = counts.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(-off, axis=None, kind="stable")[:k]
    pairs = []
    for flat in order:
        true, pred = np.unravel_index(flat, off.shape)
        if off[true, pred] > 0:
            pairs.append(
                {"true": str(class_names[true]), "predicted": str(class_names[pred]), "count": int(off[true, pred])}
            )
    return pairs


def report_to_csv(report: pd.DataFrame) -> str:
    """CSV text of a classification report, the row names in a leading "class" column."""
    return report.rename_axis("class").reset_index().to_csv(index=False)
