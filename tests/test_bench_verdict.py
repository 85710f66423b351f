"""The verdict's calibration benchmark (`cnn-lab bench --verdict`, benchmarks/verdict.py): trials drawn from pools of
seeds, the rates and the JSON it writes; at a tiny size, and once through real training (slow)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks import render
from benchmarks import verdict as bench

N = 200


def fake_pools(seeds: int = 5) -> dict:
    """An earlier result's pools: "same" and "twin" are one network (independent 3% of flips around one base), "weak"
    is right on far fewer images."""
    rng = np.random.default_rng(0)
    base = rng.random(N) < 0.8

    def pool(flip: float, drop: float) -> dict:
        out = {}
        for seed in range(seeds):
            correct = (base ^ (rng.random(N) < flip)) & (rng.random(N) >= drop)
            out[str(seed)] = {
                "accuracy": float(correct.mean()),
                "learned": True,
                "seconds": 1.0,
                "correct": "".join("1" if c else "0" for c in correct),
            }
        return {"test_set": {"dataset": "toy", "fingerprint": "f" * 24, "size": N, "split_seed": 0}, "seeds": out}

    return {
        "command": "python -m benchmarks.verdict --pool 5",
        "environment": {"load_avg": [1.0, 1.0, 1.0], "threads": 1},
        "settings": {"pool": seeds, "epochs": "auto", "max_train": None, "train_seconds": 12.0},
        "pools": {"toy": {"same": pool(0.03, 0.0), "twin": pool(0.03, 0.0), "weak": pool(0.03, 0.4)}},
    }


def test_trials_never_put_one_seed_on_both_sides_nor_repeat_a_draw() -> None:
    one = bench.draw_trials(range(5), 1, 40)
    assert len(one) == 20 and len(set(one)) == 20  # every ordered pair of 5 seeds, once
    three = bench.draw_trials(range(10), 3, 30)
    assert len(three) == 30 and len(set(three)) == 30
    assert all(not set(a) & set(b) and len(a) == len(b) == 3 for a, b in three)


def test_reused_pools_give_both_rates_for_both_tests_and_the_json_and_docs(tmp_path) -> None:
    source = tmp_path / "earlier.json"
    source.write_text(json.dumps(fake_pools()))
    out, docs = tmp_path / "results" / "verdict.json", tmp_path / "verdict.md"
    checks = "false-alarm:toy:same:twin;power:toy:weak:same"
    argv = ["--reuse-pools", str(source), "--checks", checks, "--trials", "8", "--repeat-seeds", "2"]
    result = bench.main([*argv, "--replicates", "300", "--json", str(out)])
    written = json.loads(out.read_text())
    assert written["checks"] == json.loads(json.dumps(result["checks"]))
    assert {"device_name", "torch", "python", "load_avg", "statsmodels", "scipy", "numpy"} <= set(
        written["environment"]
    )
    assert written["command"] == f"python -m benchmarks.verdict {' '.join(argv)} --replicates 300 --json {out}"
    assert (
        written["settings"]["pool"] == 5
        and written["settings"]["pools_from"] == "python -m benchmarks.verdict --pool 5"
    )
    checks = {(c["kind"], c["test"]): c for c in written["checks"]}
    tests = (bench.ONE_SEED, bench.REPEATS, bench.AUTO_SEEDS)  # auto up to 2 a side: half the pool of 5
    assert set(checks) == {(k, t) for k in (bench.FALSE_ALARM, bench.POWER) for t in tests}
    assert written["settings"]["auto_seeds"] == 2 and checks[(bench.POWER, bench.AUTO_SEEDS)]["seeds_per_side"] == 2
    for c in written["checks"]:
        assert c["trials"] == 8 and c["tied"] + c["apart"] + c["wrong"] == 8
        assert c["rate_low"] <= c["rate"] <= c["rate_high"]
    power = checks[(bench.POWER, bench.REPEATS)]
    assert power["better"] == "same" and power["rate"] == 1.0  # 40% fewer right answers: told apart every time
    alarm = checks[(bench.FALSE_ALARM, bench.ONE_SEED)]
    assert alarm["required"] == 0.95 and alarm["passes"] is (alarm["rate"] >= 0.95) and power["passes"] is None
    assert written["pools"] == fake_pools()["pools"]  # the pools travel on unchanged, so trials can be rerun
    assert render.main(["--results", str(out.parent), "--docs", str(docs.parent)]) == 0
    page = docs.read_text()
    assert "| false alarm | toy | same vs twin | one seed (1 a side) | 8 |" in page
    assert "| power | toy | weak vs same | auto (2, then up to 2 a side) | 8 |" in page
    assert (
        "| toy | weak | 5 | 200 |" in page
        and "benchmarks/results/verdict.json" in page
        and "Reading it: the false-alarm bar" in page
    )
    assert "false alarm  toy" in bench.format_table(written)
    readme = bench.readme_rates(written).splitlines()
    alarm_rate, power_rate = (f"{checks[(k, bench.REPEATS)]['rate']:.3f}" for k in (bench.FALSE_ALARM, bench.POWER))
    assert readme[:2] == ["| check | seeds a variant | toy |", "|---|---|---|"]
    assert f"| identical networks called tied (needs 95%) | 2 | {alarm_rate} |" in readme
    assert f"| different variants told apart | 2 | {power_rate} |" in readme
    assert "| identical networks called tied (needs 95%) | 1 (`--repeats 1`) |" in readme[2]
    assert any(
        line.startswith("| different variants told apart | `--repeats auto` (the default): 2, then up")
        for line in readme
    )
    assert "identical: same vs twin; different: weak vs same" in readme[-1]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_benchmark_trains_its_pools_through_the_pipeline(tmp_path) -> None:
    """Four seeds of cnn2_5 and generic_0 on 150 digits for one epoch: the pools come from predictions.npy."""
    out = tmp_path / "verdict.json"
    argv = ["--checks", "false-alarm:digits:cnn2_5:generic_0", "--pool", "4", "--trials", "6", "--repeat-seeds", "2"]
    bench.main([*argv, "--epochs", "1", "--max-train", "150", "--replicates", "200", "--json", str(out)])
    written = json.loads(out.read_text())
    pools = written["pools"]["digits"]
    assert set(pools) == {"cnn2_5", "generic_0"} and pools["cnn2_5"]["test_set"]["size"] == 360
    same_seed = [pools[v]["seeds"]["0"]["correct"] for v in ("cnn2_5", "generic_0")]
    assert same_seed[0] == same_seed[1]  # one network: the same seed gives the same predictions (never paired)
    assert [(c["test"], c["trials"]) for c in written["checks"]] == [
        (bench.ONE_SEED, 6),
        (bench.REPEATS, 6),
        (bench.AUTO_SEEDS, 6),  # up to 2 a side: half the pool
    ]
