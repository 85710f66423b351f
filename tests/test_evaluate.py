"""Tests for cnn.evaluate: metrics agree with scikit-learn on a model with known predictions."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score
from torch import nn

from cnn.errors import ConfigError
from cnn.evaluate import EvalResult, evaluate, most_confused_pairs, normalize_rows, predict, report_to_csv

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Shirt"]
# Class 3 ("Shirt") appears neither as a label nor as a prediction: it must still get a report row and a confusion row.
Y_TRUE = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 0, 1, 2])
Y_PRED = np.array([0, 2, 0, 1, 0, 2, 2, 1, 2, 2, 1, 2])


class LookupModel(nn.Module):
    """Returns row `i` of a fixed logits table for an input holding the index `i`; records its mode when called."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.register_buffer("table", logits)
        self.dropout = nn.Dropout(0.5)
        self.modes_seen: list[tuple[bool, bool]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.modes_seen.append((self.training, self.dropout.training))
        return self.table[x.long().flatten()]


def make_logits(y_pred: np.ndarray, num_outputs: int) -> torch.Tensor:
    """Logits whose argmax is y_pred, with some spread so the loss is not trivial."""
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(len(y_pred), num_outputs, generator=gen)
    logits[torch.arange(len(y_pred)), torch.as_tensor(y_pred)] += 10.0
    return logits


def make_batches(labels: np.ndarray, batch_size: int = 5) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Batches of (index, label); the model looks the index up in its table."""
    index = torch.arange(len(labels), dtype=torch.float32).unsqueeze(1)
    y = torch.as_tensor(labels)
    return [(index[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(labels), batch_size)]


@pytest.fixture
def result() -> EvalResult:
    model = LookupModel(make_logits(Y_PRED, len(CLASSES)))
    return evaluate(model, make_batches(Y_TRUE), CLASSES)


def test_predictions_and_loss_match_the_model(result: EvalResult) -> None:
    logits = make_logits(Y_PRED, len(CLASSES))
    np.testing.assert_array_equal(result.y_true, Y_TRUE)
    np.testing.assert_array_equal(result.y_pred, Y_PRED)
    assert result.loss == pytest.approx(F.cross_entropy(logits, torch.as_tensor(Y_TRUE)).item(), rel=1e-6)


def test_scalar_metrics_equal_sklearn(result: EvalResult) -> None:
    labels = list(range(len(CLASSES)))
    assert result.accuracy == pytest.approx(accuracy_score(Y_TRUE, Y_PRED)) == pytest.approx(8 / 12)
    assert result.macro_f1 == pytest.approx(f1_score(Y_TRUE, Y_PRED, labels=labels, average="macro", zero_division=0))
    assert result.weighted_f1 == pytest.approx(
        f1_score(Y_TRUE, Y_PRED, labels=labels, average="weighted", zero_division=0)
    )


def test_report_equals_sklearn_classification_report(result: EvalResult) -> None:
    expected = classification_report(
        Y_TRUE, Y_PRED, labels=range(4), target_names=CLASSES, output_dict=True, zero_division=0
    )
    assert list(result.report.index) == [*CLASSES, "macro avg", "weighted avg"]
    assert list(result.report.columns) == ["precision", "recall", "f1-score", "support"]
    for row in result.report.index:
        for column in result.report.columns:
            assert result.report.loc[row, column] == pytest.approx(expected[row][column]), (row, column)
    assert result.report.loc["Shirt"].tolist() == [0, 0, 0, 0]


def test_confusion_equals_sklearn_and_keeps_absent_classes(result: EvalResult) -> None:
    np.testing.assert_array_equal(result.confusion, confusion_matrix(Y_TRUE, Y_PRED, labels=range(4)))
    assert result.confusion.shape == (4, 4)
    normalized = normalize_rows(result.confusion)
    np.testing.assert_allclose(normalized[:3].sum(axis=1), 1.0)
    np.testing.assert_array_equal(normalized[3], 0.0)
    assert normalized[0, 2] == pytest.approx(2 / 4)


def test_most_confused_from_evaluate(result: EvalResult) -> None:
    assert result.most_confused[0] == {"true": "T-shirt/top", "predicted": "Pullover", "count": 2}
    assert len(result.most_confused) == 3
    assert all(pair["true"] != pair["predicted"] for pair in result.most_confused)


def test_most_confused_pairs_orders_by_count_and_skips_zeros() -> None:
    names = ["a", "b", "c"]
    confusion = np.array([[50, 3, 0], [7, 40, 1], [3, 12, 9]])
    pairs = most_confused_pairs(confusion, names, k=5)
    assert [(p["true"], p["predicted"], p["count"]) for p in pairs] == [
        ("c", "b", 12),
        ("b", "a", 7),
        ("a", "b", 3),  # tie with (c, a): row-major order
        ("c", "a", 3),
        ("b", "c", 1),
    ]
    assert [p["count"] for p in most_confused_pairs(confusion, names, k=2)] == [12, 7]
    assert most_confused_pairs(np.diag([5, 5, 5]), names) == []


def test_to_dict_is_small_and_json_serialisable(result: EvalResult) -> None:
    summary = json.loads(json.dumps(result.to_dict()))
    assert summary["accuracy"] == pytest.approx(result.accuracy)
    assert summary["per_class_f1"] == pytest.approx(dict(zip(CLASSES, result.report["f1-score"][:4])))
    assert summary["most_confused"] == result.most_confused
    assert not any(isinstance(v, list) and len(v) == len(Y_TRUE) for v in summary.values())


def test_report_to_csv_parses_back_with_class_names(result: EvalResult) -> None:
    frame = pd.read_csv(io.StringIO(report_to_csv(result.report)))
    assert list(frame.columns) == ["class", "precision", "recall", "f1-score", "support"]
    assert frame["class"].tolist() == [*CLASSES, "macro avg", "weighted avg"]
    np.testing.assert_allclose(frame["f1-score"], result.report["f1-score"])


def test_label_outside_class_names_raises_config_error() -> None:
    labels = Y_TRUE.copy()
    labels[4] = 5
    model = LookupModel(make_logits(Y_PRED, 6))  # the model has 6 outputs, but only 4 class names
    with pytest.raises(ConfigError, match=r"labels: label 5 .*0\.\.3") as info:
        evaluate(model, make_batches(labels), CLASSES)
    assert info.value.field == "labels"


def test_label_outside_model_outputs_raises_config_error() -> None:
    labels = Y_TRUE.copy()
    labels[0] = 7
    with pytest.raises(ConfigError, match=r"labels: label 7 .*0\.\.3"):
        predict(LookupModel(make_logits(Y_PRED, 4)), make_batches(labels))


def test_prediction_outside_class_names_raises_config_error() -> None:
    y_pred = Y_PRED.copy()
    y_pred[0] = 4
    with pytest.raises(ConfigError, match="class_names"):
        evaluate(LookupModel(make_logits(y_pred, 5)), make_batches(Y_TRUE), CLASSES)


def test_no_batches_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="batches"):
        predict(LookupModel(make_logits(Y_PRED, 4)), [])


@pytest.mark.parametrize("training", [True, False])
def test_predict_runs_in_eval_mode_and_restores_the_previous_mode(training: bool) -> None:
    model = LookupModel(make_logits(Y_PRED, 4)).train(training)
    predict(model, make_batches(Y_TRUE))
    assert model.modes_seen and set(model.modes_seen) == {(False, False)}
    assert model.training is training and model.dropout.training is training


def test_predict_restores_train_mode_when_forward_raises() -> None:
    model = LookupModel(make_logits(Y_PRED, 4)).train()
    with pytest.raises(IndexError):
        predict(model, [(torch.tensor([[100.0]]), torch.tensor([0]))])
    assert model.training and model.dropout.training


def test_predict_with_a_real_network_matches_manual_forward() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)).eval()
    x, y = torch.randn(10, 1, 8, 8), torch.randint(0, 3, (10,))
    y_true, y_pred, loss = predict(model, [(x[:6], y[:6]), (x[6:], y[6:])])
    with torch.no_grad():
        logits = model(x)
    np.testing.assert_array_equal(y_true, y.numpy())
    np.testing.assert_array_equal(y_pred, logits.argmax(1).numpy())
    assert loss == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-5)
