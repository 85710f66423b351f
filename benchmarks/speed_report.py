"""The speed benchmark's report: the issue's targets checked against the median figures, and the printed tables."""

from __future__ import annotations

from typing import Any

from benchmarks.speed_cnn_lab import DEFAULT_BATCH_SIZE, FAST_NAME
from benchmarks.speed_student import STUDENT_BATCH_SIZE, STUDENT_NAME
from benchmarks.tables import load_text, text_table

TARGET_RATIO_STUDENT_BATCH, TARGET_RATIO_DEFAULT_BATCH = 5.0, 6.0  # the speed-up targets on CPU
GPU_TARGET_IMG_S = {"cnn2_5": 500_000, "alexnet": 60_000}  # half the resident figures measured on one H100


def check_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each with the measured value and whether it is met (median figures)."""
    checks: list[dict[str, Any]] = []
    training = results.get("training")
    if training:
        checks += _speed_targets(training) + _accuracy_targets(training)
    if "lr_finder" in results:
        lf = results["lr_finder"]
        checks.append(
            {
                "target": f"LR range test at batch {lf['batch_size']}: <= 1 epoch of images",
                "value": lf["epochs_cost"],
                "met": lf["epochs_cost"] <= 1.0,
            }
        )
        checks.append(
            {
                "target": f"LR range test at batch {lf['batch_size']}: <= 1 training epoch of time",
                "value": lf["time_vs_epoch"],
                "met": lf["time_vs_epoch"] <= 1.0,
            }
        )
    return checks


def _speed_targets(training: dict[str, Any]) -> list[dict[str, Any]]:
    """CPU: speed-up over student-style at batch 64 and 256; CUDA: resident img/s of cnn2_5 / alexnet at their best batch."""
    rows = {r["batch_size"]: r for r in training["fast"] if r["pipeline"] == FAST_NAME}
    if not str(training["device"]).startswith("cuda"):
        goals = ((STUDENT_BATCH_SIZE, TARGET_RATIO_STUDENT_BATCH), (DEFAULT_BATCH_SIZE, TARGET_RATIO_DEFAULT_BATCH))
        return [
            {
                "target": f"CPU batch {bs}: img/s >= {goal:g}x student-style",
                "value": rows[bs]["ratio"],
                "met": rows[bs]["ratio"] >= goal,
            }
            for bs, goal in goals
            if bs in rows
        ]
    goal = GPU_TARGET_IMG_S.get(training["variant"])
    if goal is None or not rows:
        return []
    best = max(rows.values(), key=lambda r: r["img_per_s"])
    return [
        {
            "target": f"GPU {training['variant']}: img/s >= {goal:,} (best batch {best['batch_size']})",
            "value": best["img_per_s"],
            "met": best["img_per_s"] >= goal,
        }
    ]


def _accuracy_targets(training: dict[str, Any]) -> list[dict[str, Any]]:
    """Each cnn-lab batch size: test accuracy no worse than student-style's after the same epochs."""
    student = training["student_style"]["test_acc"]
    return [
        {
            "target": f"{FAST_NAME} batch {r['batch_size']}: test acc >= student-style's {student:.4f}",
            "value": r["test_acc"],
            "met": r["test_acc"] >= student,
        }
        for r in training["fast"]
    ]


TRAINING_COLUMNS = [
    ("pipeline", "pipeline", "s"),
    ("batch_size", "batch", "d"),
    ("lr", "lr", ".3g"),
    ("lr_source", "lr from", "s"),
    ("img_per_s", "img/s", ",.0f"),
    ("ratio", "ratio", ".2f"),
    ("img_per_s_best", "best img/s", ",.0f"),
    ("ratio_best", "best ratio", ".2f"),
    ("seconds", "train s", ".2f"),
    ("test_acc", "test acc", ".4f"),
    ("peak_mem_mb", "peak MiB", ",.0f"),
    ("mem_growth_mb", "+MiB", ",.0f"),
    ("other_load", "others", ".2f"),
    ("device", "device", "s"),
    ("torch", "torch", "s"),
]


def _format_training(training: dict[str, Any]) -> str:
    """The pipelines' table: one row per pipeline and batch size."""
    head = (
        f"Training: {training['variant']} ({training['params']} params), {training['n_train']} train / {training['n_test']} test images, "
        f"{training['epochs']} epoch(s), median and best of {training['repeats']} run(s); 'others' = cores other processes kept busy meanwhile"
    )
    rows = [
        {**r, "device": training["device"], "torch": training["torch"]}
        for r in [training["student_style"], *training["fast"]]
    ]
    return head + "\n" + text_table(rows, TRAINING_COLUMNS)


def _format_scaling(sc: dict[str, Any]) -> str:
    """Epoch time vs training-set size, then total time vs number of variants."""
    return "\n".join(
        [
            f"Scaling ({FAST_NAME}, batch {sc['batch_size']}): epoch time vs training-set size",
            text_table(
                sc["by_size"],
                [
                    ("n_train", "images", ",d"),
                    ("seconds", "epoch s", ".2f"),
                    ("img_per_s", "img/s", ",.0f"),
                    ("other_load", "others", ".2f"),
                ],
            ),
            f"total time (data load {sc['load_seconds']:.2f} s + one epoch per variant) vs number of variants",
            text_table(
                sc["by_count"],
                [
                    ("variants", "variants", "d"),
                    ("total_seconds", "total s", ".2f"),
                    ("other_load", "others (max)", ".2f"),
                    ("names", "variants run", "s"),
                ],
            ),
        ]
    )


def format_table(results: dict[str, Any]) -> str:
    """Human-readable tables of what `run_benchmarks`, or any one bench_* function, returned."""
    results = _sections(results)
    env = results.get("environment") or next((v for v in results.values() if isinstance(v, dict) and "torch" in v), {})
    parts = [
        f"device {env.get('device')} ({env.get('device_name')}), torch {env.get('torch')}, {env.get('threads')} threads, {env.get('cpu_count')} cores, load {load_text(env)}"
    ]
    if results.get("quick"):
        parts.append("quick run: a few thousand images, a smoke test; its speeds and accuracies say little")
    if "training" in results:
        parts.append(_format_training(results["training"]))
    if "lr_finder" in results:
        lf = results["lr_finder"]
        parts.append(
            f"LR range test at batch {lf['batch_size']}: {lf['num_steps']} steps, {lf['images_seen']} images = {lf['epochs_cost']:.2f} epoch(s); "
            f"{lf['seconds']:.2f} s vs {lf['epoch_seconds']:.2f} s per training epoch ({lf['time_vs_epoch']:.2f}x); suggestion {lf['suggestion']:.3g}"
        )
    if "eval" in results:
        ev = results["eval"]
        parts.append(
            f"Evaluation on {ev['n_test']} test images: {FAST_NAME} {ev['img_per_s']:,.0f} img/s (batch {ev['batch_size']}) "
            f"vs {STUDENT_NAME} {ev['student_img_per_s']:,.0f} img/s (batch {ev['student_batch_size']}), {ev['ratio']:.2f}x"
        )
    if "scaling" in results:
        parts.append(_format_scaling(results["scaling"]))
    if results.get("targets"):
        rows = [{**t, "met": "met" if t["met"] else "MISSED"} for t in results["targets"]]
        parts.append(
            "Targets (median figures)\n"
            + text_table(rows, [("target", "target", "s"), ("value", "value", ".3f"), ("met", "", "s")])
        )
    if "gpu" in results:
        parts.append(f"GPU: {results['gpu']}")
    return "\n\n".join(parts)


def _sections(results: dict[str, Any]) -> dict[str, Any]:
    """`results` keyed like run_benchmarks' output, whichever bench_* made it."""
    for key, marker in (
        ("training", "student_style"),
        ("lr_finder", "epochs_cost"),
        ("eval", "student_img_per_s"),
        ("scaling", "by_size"),
    ):
        if marker in results:
            return {key: results}
    return results
