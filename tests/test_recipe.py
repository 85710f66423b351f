"""The default recipe: batch and epoch rules, the LR test budget, the learn check, fallbacks and honest reports."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from cnn import fitting, recipe, report
from cnn.data.splits import DatasetSplits
from cnn.lr_find import LRFindResult
from cnn.params import RunParams
from cnn.lr_policy import chosen_lr
from cnn.step_inputs import train_config
from cnn.train import TrainResult
from cnn.train_setup import TrainConfig


@pytest.mark.parametrize(
    ("n_train", "device", "batch"),
    [
        (100, "cpu", 8),
        (486, "cpu", 8),
        (1_293, "cpu", 16),
        (4_860, "cpu", 16),
        (20_000, "cpu", 64),
        (54_000, "cpu", 128),
        (54_000, "cuda", 256),
        (54_000, "cuda:1", 256),
        (3_000_000, "cpu", 128),
        (3_000_000, "cuda", 512),
    ],
)
def test_batch_rule_follows_the_training_set(n_train: int, device: str, batch: int) -> None:
    assert recipe.auto_batch_size(n_train, device) == batch
    if n_train >= recipe.MIN_STEPS_PER_EPOCH * recipe.AUTO_BATCH_BOUNDS["cpu"][0]:
        assert n_train // batch >= recipe.MIN_STEPS_PER_EPOCH  # never fewer steps per epoch than stated ...
        assert n_train * recipe.auto_epochs(n_train) // batch >= recipe.MIN_TOTAL_STEPS  # ... nor in the whole run
    assert recipe.auto_batch_size(4_860, device, epochs=20) == 64  # more epochs: the per-epoch floor binds again


@pytest.mark.parametrize(("n_train", "epochs"), [(486, 30), (1_293, 16), (4_860, 5), (54_000, 5)])
def test_epoch_rule_sees_enough_images(n_train: int, epochs: int) -> None:
    assert recipe.auto_epochs(n_train) == epochs


def test_explicit_values_are_always_kept() -> None:
    cfg = train_config(RunParams(epochs=2, batch_size=300, device="cpu"), n_train=1_293)
    assert (cfg.epochs, cfg.batch_size) == (2, 300)
    auto = train_config(RunParams(device="cpu"), n_train=1_293)
    assert (auto.epochs, auto.batch_size, auto.optimizer, auto.schedule) == (16, 16, "adam", "onecycle")


@pytest.mark.parametrize(
    ("epochs", "n_train", "batch"), [(16, 1_293, 16), (30, 486, 8), (5, 54_000, 128), (1, 54_000, 128)]
)
def test_lr_test_budget_is_a_tenth_of_training_and_at_most_an_epoch(epochs: int, n_train: int, batch: int) -> None:
    steps = recipe.lr_test_steps(epochs, n_train, batch)
    assert steps * batch <= 0.1 * epochs * n_train and steps * batch <= n_train
    assert steps >= recipe.MIN_LR_TEST_STEPS


def test_too_small_a_budget_runs_no_range_test() -> None:
    assert recipe.lr_test_steps(epochs=2, n_train=1_293, batch_size=32) == 0


def _sweep(lrs: list[float], losses: list[float], rule: str, suggestion: float, flag: str | None) -> LRFindResult:
    suggestions = {"steepest": suggestion, "min_loss_div10": suggestion}
    return LRFindResult(lrs, losses, losses, suggestion, rule, suggestions, flag, False, len(lrs), 32 * len(lrs))


def test_a_flat_curve_falls_back_to_the_optimizers_base_lr() -> None:
    lrs = [10 ** (-6 + 6 * i / 49) for i in range(50)]
    flat = _sweep(lrs, [2.3] * 50, "fallback", 1e-3, "no_descent")
    assert chosen_lr(flat, "adam", 64) == (3e-3, "base lr: no descent curve")
    assert chosen_lr(flat, "sgd", 64)[0] == 0.01


def test_a_suggestion_above_the_trust_band_is_capped_and_one_below_gives_the_base_lr() -> None:
    lrs = [10 ** (-6 + 6 * i / 49) for i in range(50)]
    falling = [2.3 - 0.04 * i for i in range(50)]
    lr, how = chosen_lr(_sweep(lrs, falling, "min_loss_div10", 0.2, None), "adam", 64)
    assert lr == recipe.LR_TRUST["adam"][1] and how == "min_loss_div10, clipped from 0.2"
    assert chosen_lr(_sweep(lrs, falling, "min_loss_div10", 0.003, None), "adam", 64) == (0.003, "min_loss_div10")
    assert (
        chosen_lr(_sweep(lrs, falling, "min_loss_div10", 1e-7, "disagree"), "adam", 64)[1] == "base lr: disagree curve"
    )
    assert chosen_lr(_sweep(lrs, falling, "min_loss_div10", 1.5e-5, None), "adam", 64) == (
        3e-3,
        "base lr: min_loss_div10 1.5e-05 below the trust band",
    )


def test_large_batches_scale_the_base_lr_and_band_linearly_above_batch_128() -> None:
    assert recipe.base_lr("adam", 32) == recipe.base_lr("adam", 128) == 3e-3  # the measured regime is unchanged
    assert recipe.base_lr("adam", 512) == pytest.approx(1.2e-2) and recipe.base_lr("sgd", 512) == pytest.approx(0.04)
    assert recipe.trust_band("adam", 2048) == pytest.approx((4.8e-3, 4.8e-2))
    lrs = [1e-5 * 1.2**i for i in range(80)]
    falling = [2.3 - 0.01 * i for i in range(80)]
    assert chosen_lr(_sweep(lrs, falling, "min_loss_div10", 0.2, None), "adam", 1024)[0] == pytest.approx(3e-3 * 8)
    # above batch 128 a low suggestion no longer lowers the lr: generic_1 at batch 512 lost 6.4 points at 0.0019
    lr, rule = chosen_lr(_sweep(lrs, falling, "min_loss_div10", 0.0019, None), "adam", 512)
    assert (
        lr == pytest.approx(0.012)
        and rule == "base lr: linear scaling above batch 128 (min_loss_div10 suggested 0.0019)"
    )
    assert chosen_lr(_sweep(lrs, falling, "min_loss_div10", 0.0019, None), "adam", 128)[0] == 0.0019  # unchanged
    assert fitting.attempts("adam", 1e-4, 1024)[1].lr == pytest.approx(3e-3 * 8)
    # a failure at the linearly scaled lr retries at the square-root rule's, not a tenth
    assert fitting.attempts("adam", 3e-3 * 8, 1024)[1].lr == pytest.approx(3e-3 * 8**0.5)


def test_fallback_plan_goes_up_to_the_base_lr_or_down_tenfold_then_switches_optimizer() -> None:
    low = fitting.attempts("adam", 1e-4, 64)
    assert [(a.optimizer, a.lr) for a in low] == [("adam", 1e-4), ("adam", 3e-3), ("sgd", 0.01)]
    high = fitting.attempts("sgd", 0.3, 64)
    assert [(a.optimizer, a.lr) for a in high] == [("sgd", 0.3), ("sgd", pytest.approx(0.03)), ("adam", 3e-3)]
    assert len({a.checkpoint for a in high}) == 3


def test_first_epoch_check_flags_a_loss_that_rose_only() -> None:
    assert fitting.first_epoch_failure({"val_loss": 9.0, "val_acc": 0.1}, 2.3, 0.1, 300) == "loss rose"
    assert (
        fitting.first_epoch_failure({"val_loss": 2.3, "val_acc": 0.1}, 2.3, 0.1, 300) is None
    )  # flat under warm-up is fine
    assert fitting.first_epoch_failure({"val_loss": float("nan"), "val_acc": 0.1}, 2.3, 0.1, 300) == "loss rose"


@pytest.mark.parametrize(
    ("acc", "chance", "n", "ok"),
    [
        (0.117, 0.1, 360, False),
        (0.2, 0.1, 360, True),
        (0.55, 0.5, 10_000, False),
        (0.56, 0.5, 10_000, True),
        (math.nan, 0.1, 100, False),
    ],
)
def test_clearly_above_chance(acc: float, chance: float, n: int, ok: bool) -> None:
    assert recipe.learned(acc, chance, n) is ok


class Blind(nn.Module):
    """Ignores its input: it can learn the class prior and nothing else, so it never beats chance."""

    def __init__(self, num_classes: int = 4) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bias.expand(x.shape[0], -1)


def _splits(n: int = 200, classes: int = 4, seed: int = 0) -> DatasetSplits:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    x = (torch.rand(n, 1, 8, 8, generator=g) * 255).to(torch.uint8)
    return DatasetSplits("toy", [str(c) for c in range(classes)], x, y, x[:80], y[:80], x[:80], y[:80], (0.5,), (0.25,))


def test_a_model_that_cannot_learn_tries_every_fallback_and_says_so() -> None:
    config = TrainConfig(epochs=2, batch_size=32, lr=1e-3, optimizer="adam", device="cpu")
    _, fitted = fitting.fit(Blind, _splits(), config, input_size=8, variant="blind")
    assert not fitted.learned
    assert fitted.fallbacks == ["did not learn at adam 0.001", "did not learn at adam 0.003"]
    assert fitted.config.optimizer == "sgd"


def test_when_no_attempt_learns_the_best_finished_one_is_kept() -> None:
    """generic_3 on 486 images: Adam 3e-3 and 3e-4 ended at 0.28 and 0.35 validation accuracy, SGD 0.01 at 0.07."""

    def kept(optimizer: str, lr: float, val_acc: float) -> fitting.Kept:
        result = TrainResult([{"epoch": 1, "val_acc": val_acc}], 1, val_acc, 1.0, 1.0)
        return fitting.Kept(nn.Linear(1, 1), result, TrainConfig(lr=lr, optimizer=optimizer))

    tries = [kept("adam", 3e-3, 0.28), kept("adam", 3e-4, 0.35), kept("sgd", 0.01, 0.07)]
    model, fitted = fitting.best_attempt(
        tries, ["did not learn at adam 0.003", "did not learn at adam 0.0003"], "did not learn"
    )
    assert model is tries[1].model and (fitted.config.optimizer, fitted.config.lr) == ("adam", 3e-4)
    assert not fitted.learned
    assert fitted.fallbacks[-2:] == ["did not learn at sgd 0.01", "kept adam 0.0003 (best validation accuracy)"]
    tie = [kept("adam", 3e-3, 0.2), kept("sgd", 0.01, 0.2)]
    assert fitting.best_attempt(tie, ["x"], "did not learn")[1].fallbacks == ["x"]  # a tie keeps the last, as before


def test_a_diverging_lr_falls_back_and_learns() -> None:
    torch.manual_seed(0)
    x = torch.zeros(400, 1, 4, 4, dtype=torch.uint8)
    y = torch.arange(400) % 2
    x[y == 1] = 255
    data = DatasetSplits("bits", ["0", "1"], x, y, x[:100], y[:100], x[:100], y[:100], (0.5,), (0.5,))

    def build() -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))

    config = TrainConfig(epochs=3, batch_size=20, lr=1e30, optimizer="sgd", schedule="none", device="cpu")
    _, fitted = fitting.fit(build, data, config, input_size=4, variant="bits")
    assert fitted.fallbacks and fitted.fallbacks[0].startswith(("diverged at sgd 1e+30", "loss rose at sgd 1e+30"))
    assert fitted.learned and fitted.result.best_val_acc == 1.0


def _row(variant: str, acc: float, learned: bool = True, **extra: object) -> dict:
    confusion = [[500, 0], [0, 500]] if learned else [[500, 0], [500, 0]]
    row = report.make_row(
        variant,
        0,
        {"lr": 1e-3, "rule": "min_loss_div10"},
        {
            "epochs": extra.pop("epochs", 4),
            "fallbacks": extra.pop("fallbacks", []),
            "best_val_acc": acc,
            "seconds": 1.0,
            "images_per_sec": 100.0,
            "params": 10,
            "config": {"lr": 1e-3, "optimizer": "adam", "batch_size": 16, "schedule": "onecycle", **extra},
        },
        {"accuracy": acc, "macro_f1": acc, "confusion": confusion, "per_class_f1": {}},
        "f",
    )
    return row


def test_a_variant_trained_after_a_fallback_is_named_in_the_summary() -> None:
    rows = [_row("steady", 0.90), _row("alexnet", 0.95, fallbacks=["collapsed at adam 0.003"])]
    assert rows[1]["lr_rule"] == "min_loss_div10; fallback: collapsed at adam 0.003"
    text = report.summary_sentences(report.aggregate_repeats(rows), [])
    assert "after a failed attempt: alexnet (collapsed at adam 0.003)." in text
    assert "steady (" not in text


def test_a_variant_that_did_not_learn_is_flagged_and_never_named_best() -> None:
    rows = [_row("good", 0.70), _row("idle", 0.50, learned=False)]
    assert [r["learned"] for r in rows] == [True, False]
    rows[1]["test_acc"] = 0.95  # even with the higher number it must not win
    summaries = report.aggregate_repeats(rows)
    md = report.comparison_markdown(summaries, "toy", 1)
    assert report.best_variant(rows) == "good" and "good has the highest test accuracy" in md
    assert (
        "0.950 ✗" in md
        and "Did not learn (✗: test accuracy not clearly above chance" in md
        and "idle is the most" not in md
    )
    assert report.count_wins(rows) == {"good": 1}


def test_when_nothing_learned_the_summary_names_no_winner() -> None:
    summaries = report.aggregate_repeats([_row("a", 0.5, learned=False), _row("b", 0.5, learned=False)])
    text = report.summary_sentences(summaries, [])
    assert text.startswith("No variant learned") and "most accurate" not in text
    assert report.best_variant(summaries) is None


def test_rows_trained_with_different_settings_are_called_out() -> None:
    rows = [_row("a", 0.7), _row("b", 0.7, batch_size=256), _row("c", 0.7)]
    assert report.settings_differences(rows) == "batch size b 256, others 16"
    assert "Rows were trained with different settings: batch size b 256, others 16." in report.comparison_markdown(
        report.aggregate_repeats(rows), "toy", 1
    )


def test_a_retrain_keeps_the_comparisons_settings_unless_given(tmp_path) -> None:
    from cnn.comparisons import read_comparison, record_definition
    from cnn.storage import Storage
    from flows.parameters import RETRAIN_OVERRIDES
    from flows.retrain import overridden, retrain_params

    store = Storage(str(tmp_path))
    compared = RunParams(
        dataset="digits",
        variants=["a", "b"],
        epochs=4,
        batch_size=32,
        optimizer="sgd",
        repeats=2,
        storage=str(tmp_path),
        run="r",
    )
    record_definition(store, compared)
    comparison = read_comparison(store, "digits", "default")
    given = {
        **dict.fromkeys(RETRAIN_OVERRIDES),
        "variant": "a",
        "dataset": "digits",
        "storage": str(tmp_path),
        "epochs": 2,
    }
    params = retrain_params(given, comparison)
    assert (params.epochs, params.batch_size, params.optimizer, params.repeats) == (2, 32, "sgd", 2)  # typed: 2 wins
    assert params.refresh == ["lr", "train", "evaluate", "features"] and params.variants == ["a"]
    assert overridden({k: given[k] for k in RETRAIN_OVERRIDES}, comparison) == {"epochs": (4, 2)}


def test_a_batch_that_leaves_too_few_steps_is_named_with_the_rules_batch() -> None:
    note = recipe.few_steps_note(54_000, 5, 1024)
    assert "265 optimizer steps" in note and "batch size auto (128)" in note
    assert recipe.few_steps_note(54_000, 5, 128) is None  # the rule's own batch leaves 2,110 steps
    assert recipe.few_steps_note(100, 5, 8) is None  # too few images for any batch: nothing better to suggest


@pytest.mark.slow
@pytest.mark.timeout(900)  # AlexNet's 57 M parameters on 2 CPU cores: about a minute per attempt when the box is quiet
@pytest.mark.parametrize("variant", ["generic_3", "alexnet"])
def test_the_hardest_variants_learn_a_short_run_under_the_default_recipe(variant: str, tmp_path) -> None:
    """The two variants that stayed at chance under the old defaults (SGD, batch 256) learn with only --epochs given."""
    from idx_data import write_mnist_like

    from cnn.pipeline import run_variant

    root = write_mnist_like(tmp_path / "data", "FashionMNIST", n_train=400, n_test=200)
    config = RunParams(
        dataset="fashion-mnist",
        data_dir=str(root),
        val_size=100,
        epochs=2,
        device="cpu",
        storage=str(tmp_path / "store"),
        run="short",
    )
    out = run_variant(config, variant, features=False)
    config = out["train"]["config"]
    assert (config["optimizer"], config["batch_size"], config["schedule"]) == ("adam", 8, "onecycle")  # the rules'
    assert out["train"]["learned"], out["train"]["fallbacks"]
    assert out["eval"]["accuracy"] > 0.25  # ten balanced classes: chance is 0.1, "learned" starts near 0.16


def test_an_accuracy_that_collapses_to_chance_after_learning_abandons_the_attempt() -> None:
    rows = [{"val_loss": 1.0, "val_acc": a} for a in (0.61, 0.72, 0.07)]  # AlexNet on digits at Adam 3e-3
    assert fitting.epoch_failure(rows[:2], 2.3, 0.1, 144) is None
    assert fitting.epoch_failure(rows, 2.3, 0.1, 144) == "collapsed"
    noisy = [{"val_loss": 2.2, "val_acc": a} for a in (0.22, 0.12)]  # barely learned, then back: noise, not a collapse
    assert fitting.epoch_failure(noisy, 2.3, 0.1, 144) is None
    assert fitting.epoch_failure([{"val_loss": 9.0, "val_acc": 0.1}], 2.3, 0.1, 144) == "loss rose"
