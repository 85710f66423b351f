"""Tests for the LR range test: lr sequence, state restoration, suggestion rules, divergence, torch-lr-finder parity."""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from cnn.errors import ConfigError
from cnn.lr_find import (
    LRFindResult,
    exp_lrs,
    lr_range_test,
    suggest_lr,
    suggest_min_loss_div10,
    suggest_steepest,
)


def make_blobs(n: int = 2000, dim: int = 20, classes: int = 10, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Return a learnable synthetic 10-class problem: Gaussian blobs around random centres."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=g) * 2
    y = torch.randint(0, classes, (n,), generator=g)
    return centres[y] + torch.randn(n, dim, generator=g), y


def make_mlp(seed: int = 0) -> nn.Module:
    """Return a small MLP with BatchNorm and Dropout, so buffers, modes and RNG all matter."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(20, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 10))


def tiny_setup() -> tuple[nn.Module, torch.optim.Optimizer, list[tuple[torch.Tensor, torch.Tensor]]]:
    """Return a linear model, its SGD optimizer and a single two-sample batch, for scripted-loss sweeps."""
    model = nn.Linear(3, 2)
    return model, torch.optim.SGD(model.parameters(), lr=0.1), [(torch.randn(2, 3), torch.zeros(2, dtype=torch.long))]


def scripted_step(values: list[float]):
    """Return a step_fn whose i-th loss is values[i] (still differentiable through the model)."""
    calls = {"n": 0}

    def step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        value = values[calls["n"]]
        calls["n"] += 1
        return model(x).sum() * 0 + value

    return step


@pytest.fixture
def blobs_batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    x, y = make_blobs()
    return list(DataLoader(TensorDataset(x, y), batch_size=64, shuffle=False))


def trained_state(model: nn.Module) -> torch.optim.Optimizer:
    """Return an SGD optimizer (two param groups, momentum) after one real step, so it has state."""
    first, last = model[0], model[4]
    rest = list(model[1].parameters()) + list(last.parameters())
    opt = torch.optim.SGD([{"params": first.parameters(), "lr": 0.05}, {"params": rest, "lr": 0.01}], momentum=0.9)
    x, y = make_blobs(n=64)
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    return opt


def snapshot(model: nn.Module, opt: torch.optim.Optimizer) -> dict:
    return {
        "model": copy.deepcopy(model.state_dict()),
        "opt": copy.deepcopy(opt.state_dict()),
        "modes": [m.training for m in model.modules()],
        "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "rng": torch.get_rng_state(),
    }


def assert_restored(model: nn.Module, opt: torch.optim.Optimizer, before: dict) -> None:
    after = model.state_dict()
    assert after.keys() == before["model"].keys()
    for key, value in before["model"].items():
        assert torch.equal(after[key], value), key
    opt_after = opt.state_dict()
    assert [g["lr"] for g in opt_after["param_groups"]] == [g["lr"] for g in before["opt"]["param_groups"]]
    assert [g["lr"] for g in opt.param_groups] == [0.05, 0.01]
    assert opt_after["state"].keys() == before["opt"]["state"].keys()
    for idx, state in before["opt"]["state"].items():
        assert torch.equal(opt_after["state"][idx]["momentum_buffer"], state["momentum_buffer"])
    assert [m.training for m in model.modules()] == before["modes"]
    for p, g in zip(model.parameters(), before["grads"]):
        assert (p.grad is None and g is None) or torch.equal(p.grad, g)
    assert torch.equal(torch.get_rng_state(), before["rng"])


# --- lr sequence --------------------------------------------------------------------------------------------


def test_lr_sequence_is_exponential_and_applied_to_every_group():
    model = nn.Linear(3, 2)
    opt = torch.optim.SGD([{"params": [model.weight]}, {"params": [model.bias]}], lr=0.5)
    seen: list[list[float]] = []
    values = [5.0 - 0.1 * i for i in range(7)]
    inner = scripted_step(values)

    def step(m, x, y):
        seen.append([g["lr"] for g in opt.param_groups])
        return inner(m, x, y)

    sizes = [4, 4, 2]
    batches = [(torch.randn(n, 3), torch.zeros(n, dtype=torch.long)) for n in sizes]
    result = lr_range_test(model, opt, batches, start_lr=1e-4, end_lr=1e2, num_steps=7, step_fn=step)

    expected = [1e-4, 1e-3, 1e-2, 1e-1, 1.0, 1e1, 1e2]
    assert result.lrs == pytest.approx(expected, rel=1e-12)
    assert exp_lrs(1e-4, 1e2, 7) == pytest.approx(expected, rel=1e-12)
    assert [lrs[0] for lrs in seen] == pytest.approx(expected, rel=1e-12)
    assert all(lrs[0] == lrs[1] for lrs in seen)
    assert result.num_steps == 7
    assert result.images_seen == 4 + 4 + 2 + 4 + 4 + 2 + 4  # batches cycled
    assert result.raw_losses == pytest.approx(values)
    assert [g["lr"] for g in opt.param_groups] == [0.5, 0.5]


def test_smoothed_loss_is_bias_corrected_ema():
    values = [4.0, 2.0, 3.0, 1.0]
    result = lr_range_test(
        *tiny_setup(),
        start_lr=1e-3,
        end_lr=1e-2,
        num_steps=4,
        smooth_f=0.5,
        diverge_th=100,
        step_fn=scripted_step(values),
    )
    beta, avg, expected = 0.5, 0.0, []
    for i, v in enumerate(values):
        avg = beta * avg + (1 - beta) * v
        expected.append(avg / (1 - beta ** (i + 1)))
    assert result.losses == pytest.approx(expected)
    assert result.losses[0] == values[0]
    assert result.rule == "fallback" and result.flag == "too_short"


# --- state restoration ----------------------------------------------------------------------------------------


def test_state_restored_after_sweep(blobs_batches):
    model = make_mlp()
    opt = trained_state(model)
    model.eval()
    model[3].train()  # a mixed-mode model: only Dropout in train mode
    before = snapshot(model, opt)
    changed = {}

    def step(m, x, y):
        changed["params"] = not torch.equal(m[0].weight, before["model"]["0.weight"])
        changed["train"] = m.training
        return nn.functional.cross_entropy(m(x), y)

    result = lr_range_test(model, opt, blobs_batches, start_lr=1e-4, end_lr=1.0, num_steps=30, step_fn=step)
    assert result.num_steps == 30
    assert changed == {"params": True, "train": True}  # the sweep really trained, in train mode
    assert_restored(model, opt, before)


def test_state_restored_when_step_raises_mid_sweep(blobs_batches):
    model = make_mlp()
    opt = trained_state(model)
    model.eval()
    before = snapshot(model, opt)
    calls = {"n": 0}

    def step(m, x, y):
        calls["n"] += 1
        if calls["n"] == 5:
            raise RuntimeError("boom on step 5")
        return nn.functional.cross_entropy(m(x), y)

    with pytest.raises(RuntimeError, match="boom on step 5"):
        lr_range_test(model, opt, blobs_batches, start_lr=1e-2, end_lr=10.0, num_steps=20, step_fn=step)
    assert calls["n"] == 5
    assert model.training is False
    assert_restored(model, opt, before)


def test_range_test_does_not_change_later_training(blobs_batches):
    def train_once(run_lr_test: bool) -> torch.Tensor:
        model = make_mlp(seed=1)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        if run_lr_test:
            lr_range_test(model, opt, blobs_batches, start_lr=1e-4, end_lr=1.0, num_steps=20)
        for x, y in blobs_batches[:5]:
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        return model[0].weight.detach().clone()

    assert torch.equal(train_once(True), train_once(False))


# --- suggestion rules on hand-built curves ---------------------------------------------------------------------


LOG_GRID = np.linspace(-4, 0, 41)  # lr from 1e-4 to 1 in steps of 0.1 decade
LRS = list(10**LOG_GRID)


def test_steepest_on_known_curve():
    losses = list(-np.tanh(2 * (LOG_GRID + 2)))  # steepest descent at lr = 1e-2
    assert suggest_steepest(LRS, losses) == pytest.approx(1e-2)


def test_min_loss_div10_on_known_curve():
    losses = list((LOG_GRID + 1) ** 2)  # minimum at lr = 1e-1
    assert suggest_min_loss_div10(LRS, losses) == pytest.approx(1e-2)


def test_rules_agree_gives_no_flag_and_rule_choice_is_honoured():
    losses = list(-np.tanh(2 * (LOG_GRID + 2)) + 3 * np.clip(LOG_GRID + 1, 0, None) ** 2)  # steepest 1e-2, min 1e-1
    both = {"steepest": pytest.approx(1e-2), "min_loss_div10": pytest.approx(1e-2)}
    assert suggest_lr(LRS, losses) == (pytest.approx(1e-2), "steepest", both, None)
    value, rule, _, flag = suggest_lr(LRS, losses, rule="min_loss_div10")
    assert (value, rule, flag) == (pytest.approx(1e-2), "min_loss_div10", None)


def test_disagree_flag_when_rules_differ_more_than_10x():
    losses = list(-np.tanh(3 * (LOG_GRID + 3)) - 0.01 * LOG_GRID)  # steepest 1e-3, still falling at lr = 1
    value, rule, suggestions, flag = suggest_lr(LRS, losses)
    assert flag == "disagree"
    assert (value, rule) == (pytest.approx(1e-3), "steepest")
    assert suggestions["min_loss_div10"] == pytest.approx(0.1)


@pytest.mark.parametrize("losses", [list(LOG_GRID + 5), [1.0] * len(LOG_GRID)], ids=["rising", "flat"])
def test_no_descent_flag_uses_fallback_or_raises(losses):
    value, rule, suggestions, flag = suggest_lr(LRS, losses, fallback_lr=3e-3)
    assert (value, rule, flag) == (3e-3, "fallback", "no_descent")
    assert set(suggestions) == {"steepest", "min_loss_div10"}
    with pytest.raises(ValueError, match="no descent"):
        suggest_lr(LRS, losses)


def test_too_short_curve_uses_fallback_or_raises():
    lrs, losses = LRS[:16], list(-np.arange(16.0))
    value, rule, suggestions, flag = suggest_lr(lrs, losses, fallback_lr=1e-2)
    assert (value, rule, flag) == (1e-2, "fallback", "too_short")
    assert suggestions == {"steepest": None, "min_loss_div10": pytest.approx(lrs[-1] / 10)}
    with pytest.raises(ValueError, match="too short"):
        suggest_lr(lrs, losses)
    with pytest.raises(ValueError, match="too few points"):
        suggest_steepest(lrs, losses)
    assert suggest_steepest(LRS[:17], list(-np.arange(17.0))) == pytest.approx(LRS[10])  # 17 = 10 + 5 + 2 suffices


def test_unknown_rule_raises_config_error():
    with pytest.raises(ConfigError, match="steepest") as err:
        suggest_lr(LRS, list(-LOG_GRID), rule="valley")
    assert err.value.field == "lr_rule"


# --- divergence ------------------------------------------------------------------------------------------------


def test_divergence_stops_early_on_scripted_blowup():
    values = [2.0 - 0.05 * i for i in range(20)] + [1.0 * 1.5**i for i in range(80)]
    result = lr_range_test(*tiny_setup(), num_steps=100, step_fn=scripted_step(values))
    assert result.diverged
    assert 20 < result.num_steps < 100
    assert result.losses[-1] > 5 * min(result.losses)
    assert max(result.losses[:-1]) <= 5 * min(result.losses)  # stopped at the first step past the threshold


def test_nan_loss_stops_without_raising():
    values = [2.0 - 0.05 * i for i in range(25)] + [math.nan] * 75
    result = lr_range_test(*tiny_setup(), num_steps=100, step_fn=scripted_step(values))
    assert result.diverged and result.num_steps == 25 and result.images_seen == 50
    assert all(math.isfinite(v) for v in result.losses + result.raw_losses)


def test_real_model_diverges_with_huge_end_lr(blobs_batches):
    model = make_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    result = lr_range_test(model, opt, blobs_batches, start_lr=1e-4, end_lr=1e3, num_steps=100)
    assert result.diverged and result.num_steps < 100
    assert result.rule == "steepest" and result.suggestion < result.lrs[-1]
    assert min(result.losses) < result.losses[0]


# --- parity with torch-lr-finder -------------------------------------------------------------------------------


@pytest.mark.parametrize("end_lr", [1.0, 10.0])
def test_matches_torch_lr_finder(end_lr):
    lr_finder = pytest.importorskip("torch_lr_finder")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x, y = make_blobs()
    loader = DataLoader(TensorDataset(x, y), batch_size=64, shuffle=False)
    torch.manual_seed(0)
    init = copy.deepcopy(nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 10)).state_dict())
    kwargs = dict(start_lr=1e-5, end_lr=end_lr, smooth_f=0.05, diverge_th=5)

    def fresh() -> tuple[nn.Module, torch.optim.Optimizer]:
        model = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 10))
        model.load_state_dict(init)
        return model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    ours = lr_range_test(*fresh(), list(loader), num_steps=100, **kwargs)
    finder = lr_finder.LRFinder(*fresh(), nn.CrossEntropyLoss(), device="cpu")
    with contextlib.redirect_stdout(io.StringIO()):
        finder.range_test(loader, num_iter=100, step_mode="exp", **kwargs)
        ax, theirs = finder.plot(suggest_lr=True)
    plt.close(ax.figure)

    their_lrs, their_smoothed = np.array(finder.history["lr"]), np.array(finder.history["loss"])
    n = min(len(their_lrs), ours.num_steps)
    assert n >= 50
    np.testing.assert_allclose(ours.lrs[:n], their_lrs[:n], rtol=1e-12)
    np.testing.assert_allclose(ours.lrs, exp_lrs(1e-5, end_lr, 100)[: ours.num_steps], rtol=1e-12)
    # torch-lr-finder keeps only its (first-value-seeded) EMA; undo it to compare raw per-step losses.
    their_raw = np.r_[their_smoothed[0], (their_smoothed[1:] - 0.95 * their_smoothed[:-1]) / 0.05]
    np.testing.assert_allclose(ours.raw_losses[:n], their_raw[:n], rtol=1e-4, atol=1e-6)
    assert ours.diverged == (len(their_lrs) < 100)
    assert theirs / 2 <= ours.suggestion <= theirs * 2


# --- validation and serialisation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"start_lr": 0.0}, "lr_min"),
        ({"start_lr": -1e-3}, "start_lr"),
        ({"start_lr": 1e-2, "end_lr": 1e-3}, "lr_max"),
        ({"start_lr": 1e-2, "end_lr": 1e-2}, "end_lr"),
        ({"num_steps": 1}, "num_steps"),
        ({"smooth_f": 1.0}, "smooth_f"),
        ({"smooth_f": -0.1}, "smooth_f"),
        ({"diverge_th": 1.0}, "diverge_th"),
        ({"rule": "valley"}, "lr_rule"),
    ],
)
def test_invalid_settings_raise_config_error_naming_field(kwargs, field):
    model = nn.Linear(3, 2)
    before = copy.deepcopy(model.state_dict())
    batches = [(torch.randn(2, 3), torch.zeros(2, dtype=torch.long))]
    with pytest.raises(ConfigError) as err:
        lr_range_test(model, torch.optim.SGD(model.parameters(), lr=0.1), batches, **kwargs)
    assert field in err.value.field and field in str(err.value)
    assert torch.equal(model.weight, before["weight"])


def test_empty_batches_raise_config_error():
    model = nn.Linear(3, 2)
    with pytest.raises(ConfigError, match="batches"):
        lr_range_test(model, torch.optim.SGD(model.parameters(), lr=0.1), [])


def test_result_to_dict_is_json_serialisable(blobs_batches):
    model = make_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    result = lr_range_test(model, opt, blobs_batches, start_lr=1e-4, end_lr=1.0, num_steps=25)
    assert isinstance(result, LRFindResult)
    data = json.loads(json.dumps(result.to_dict()))
    assert len(data["lrs"]) == len(data["losses"]) == len(data["raw_losses"]) == data["num_steps"] == 25
    assert data["images_seen"] == 25 * 64
    assert set(data["suggestions"]) == {"steepest", "min_loss_div10"}
    assert data["rule"] in {"steepest", "min_loss_div10", "fallback"}
