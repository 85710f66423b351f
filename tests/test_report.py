"""Tests for cnn.report (cross-variant summaries, tables, report files) and cnn.gallery (probe galleries)."""

from __future__ import annotations

import base64
import io
import re

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from cnn import gallery, plots, report
from cnn.errors import CheckpointError, ConfigError
from cnn.predictions import Run
from cnn.testset import TestSet
from cnn.storage import Storage

CLASSES = ["T-shirt/top", "Trouser", "Shirt"]
PNG_MAGIC = b"\x89PNG"


def pair(true: str, predicted: str, count: int) -> dict:
    return {"true": true, "predicted": predicted, "count": count}


def row(
    variant: str,
    seed: int,
    acc: float,
    *,
    params: int = 1000,
    f1: float | None = None,
    per_class: dict | None = None,
    confused: list | None = None,
    flag: str | None = None,
    seconds: float = 10.0,
) -> dict:
    """A hand-built ok row as make_row would build it."""
    lr_info = {"lr": 0.031, "rule": "steepest", "flag": flag}
    train_info = {
        "params": params,
        "epochs": 3,
        "best_val_acc": min(acc + 0.01, 1.0),
        "seconds": seconds,
        "images_per_sec": 1000.0,
        "folder": f"memory://runs/{variant}",
    }
    eval_info = {
        "accuracy": acc,
        "macro_f1": acc - 0.02 if f1 is None else f1,
        "per_class_f1": per_class or {c: acc for c in CLASSES},
        "confusion": [[5, 1, 0], [0, 6, 0], [2, 0, 4]],
        "most_confused": confused if confused is not None else [pair("Shirt", "T-shirt/top", 2)],
    }
    return report.make_row(variant, seed, lr_info, train_info, eval_info)


@pytest.fixture(autouse=True)
def no_open_figures():
    plt.close("all")
    yield
    assert plt.get_fignums() == [], "a function left a figure open"


@pytest.fixture
def rows() -> list[dict]:
    """Three variants over two seeds, plus one variant that failed on both seeds."""
    return [
        row("small", 0, 0.80, params=500, seconds=5.0, per_class={"T-shirt/top": 0.7, "Trouser": 0.95, "Shirt": 0.5}),
        row("small", 1, 0.84, params=500, seconds=5.0, per_class={"T-shirt/top": 0.9, "Trouser": 0.95, "Shirt": 0.5}),
        row("big", 0, 0.90, params=8000, seconds=40.0, per_class={"T-shirt/top": 0.85, "Trouser": 0.99, "Shirt": 0.7}),
        row("big", 1, 0.82, params=8000, seconds=40.0, per_class={"T-shirt/top": 0.85, "Trouser": 0.97, "Shirt": 0.7}),
        row("mid", 0, 0.85, params=2000, seconds=20.0, flag="disagree"),
        row("mid", 1, 0.85, params=2000, seconds=20.0, flag="disagree"),
        report.make_row(
            "broken", 0, None, None, None, error=RuntimeError("CUDA out of memory\nTried to allocate 2 GiB")
        ),
        report.make_row("broken", 1, None, None, None, error="out of memory"),
    ]


# ---------------------------------------------------------------- rows and summaries


def test_make_row_maps_pipeline_outputs_and_given_lr() -> None:
    r = report.make_row(
        "v",
        3,
        {"lr": 0.05, "rule": "given"},
        {"params": 10, "epochs": 2, "best_val_acc": 0.5, "seconds": 1.5, "images_per_sec": 7.0, "folder": "f"},
        {"accuracy": 0.4, "macro_f1": 0.3, "per_class_f1": {"a": 0.1}, "confusion": [[1]], "most_confused": []},
    )
    assert (
        r["status"],
        r["error"],
        r["lr"],
        r["lr_rule"],
        r["lr_flag"],
        r["test_acc"],
        r["train_seconds"],
        r["folder"],
    ) == ("ok", None, 0.05, "given", None, 0.4, 1.5, "f")


def test_failed_row_keeps_error_and_blank_numbers() -> None:
    r = report.make_row("v", 0, None, None, None, "memory://x", error=ValueError("bad"))
    assert r["status"] == "failed" and r["error"] == "ValueError: bad"
    assert r["test_acc"] is None and r["params"] is None and r["folder"] == "memory://x"


STORED_KEYS = {
    "variant",
    "seed",
    "status",
    "error",
    "learned",
    "params",
    "lr",
    "lr_rule",
    "lr_flag",
    "optimizer",
    "schedule",
    "batch_size",
    "epochs",
    "best_val_acc",
    "test_acc",
    "macro_f1",
    "train_seconds",
    "images_per_sec",
    "per_class_f1",
    "confusion",
    "most_confused",
    "folder",
    "test_set",
}


def test_rows_keep_the_stored_json_shape_and_older_rows_still_read() -> None:
    assert (
        set(row("a", 0, 0.9)) == set(report.make_row("b", 0, None, None, None, error="x")) == STORED_KEYS
    )  # row.json, latest/<variant>.json
    older = {
        k: v for k, v in row("old", 0, 0.9).items() if k not in ("learned", "status", "lr_flag", "test_set")
    }  # before those keys existed
    (summary,) = report.aggregate_repeats([older])
    assert summary["status"] == "ok" and summary["learned"] and summary["test_acc"] == pytest.approx(0.9)
    assert report.RunRow.from_dict({**older, "a_later_key": 1}).variant == "old"


def test_aggregate_repeats_mean_std_wins_and_order(rows: list[dict]) -> None:
    summaries = report.aggregate_repeats(rows)
    assert [s["variant"] for s in summaries] == ["big", "mid", "small", "broken"]
    by = {s["variant"]: s for s in summaries}
    assert by["big"]["test_acc"] == pytest.approx(0.86)
    assert by["big"]["test_acc_std"] == pytest.approx(0.04)  # population std of 0.90, 0.82
    assert by["small"]["test_acc_std"] == pytest.approx(0.02)
    assert by["mid"]["test_acc_std"] == 0.0
    assert by["big"]["macro_f1"] == pytest.approx(0.84)
    # seed 0: big 0.90 wins; seed 1: mid 0.85 beats small 0.84 and big 0.82
    assert (by["big"]["wins"], by["mid"]["wins"], by["small"]["wins"]) == (1, 1, 0)
    assert by["big"]["n_seeds"] == 2 and by["big"]["params"] == 8000
    assert by["big"]["train_seconds"] == pytest.approx(40.0)
    assert by["small"]["per_class_f1"]["T-shirt/top"] == pytest.approx(0.8)
    assert by["broken"]["status"] == "failed" and "CUDA out of memory" in by["broken"]["error"]


def test_aggregate_single_seed_std_is_zero_and_a_tie_shares_the_win() -> None:
    summaries = report.aggregate_repeats([row("a", 0, 0.7), row("b", 0, 0.7)])
    assert [s["test_acc_std"] for s in summaries] == [0.0, 0.0]
    assert [s["wins"] for s in summaries] == [0.5, 0.5]  # one seed, one win


def test_most_confused_pair_comes_from_the_best_seed() -> None:
    rows = [
        row("a", 0, 0.6, confused=[pair("Shirt", "Trouser", 9)]),
        row("a", 1, 0.7, confused=[pair("Trouser", "Shirt", 3)]),
    ]
    (summary,) = report.aggregate_repeats(rows)
    assert summary["most_confused"][0] == pair("Trouser", "Shirt", 3)


# ---------------------------------------------------------------- cost and accuracy


def test_accuracy_per_1k_params() -> None:
    assert report.accuracy_per_1k_params(0.9, 3000) == pytest.approx(0.3)
    with pytest.raises(ConfigError, match="params"):
        report.accuracy_per_1k_params(0.9, 0)


def test_pareto_front_hand_built() -> None:
    points = [("a", 1, 0.80), ("b", 2, 0.85), ("c", 3, 0.84), ("d", 4, 0.90), ("e", 2, 0.70)]
    assert report.pareto_front(points) == ["a", "b", "d"]


def test_pareto_front_ties() -> None:
    # identical points both stay; same cost with lower accuracy, or same accuracy with higher cost, are dominated
    points = [("a", 1, 0.8), ("a2", 1, 0.8), ("b", 1, 0.7), ("c", 2, 0.8), ("d", 2, 0.9)]
    assert report.pareto_front(points) == ["a", "a2", "d"]


# ---------------------------------------------------------------- per-class F1 and confusions


def test_per_class_table_and_best_marked(rows: list[dict]) -> None:
    table = report.per_class_f1_table(rows, CLASSES)
    assert list(table.index) == CLASSES
    assert list(table.columns) == ["big", "mid", "small"]  # by mean test accuracy; the failed variant left out
    assert table.loc["T-shirt/top", "small"] == pytest.approx(0.8)
    best = report.best_per_class(table)
    assert best == {"T-shirt/top": ["big", "mid"], "Trouser": ["big"], "Shirt": ["mid"]}  # big and mid tie at 0.850
    md = report.per_class_f1_markdown(table)
    lines = md.splitlines()
    assert len(lines) == 2 + len(CLASSES)
    assert "**0.980**" in next(line for line in lines if line.startswith("| Trouser"))
    assert next(line for line in lines if line.startswith("| T-shirt/top")).count("**0.850**") == 2  # a tie: both bold
    assert [line.count("**") for line in lines[2:]] == [4, 2, 2]


def test_f1_values_equal_as_shown_are_a_tie() -> None:
    table = report.per_class_f1_table(
        [
            row("a", 0, 0.9, per_class={c: 0.9996 for c in CLASSES}),
            row("b", 0, 0.8, per_class={c: 1.0 for c in CLASSES}),
        ],
        CLASSES,
    )
    md = report.per_class_f1_markdown(table)
    assert all(line.count("**1.000**") == 2 for line in md.splitlines()[2:])


def test_confusion_shifts_fixed_and_introduced() -> None:
    best = [pair("Shirt", "T-shirt/top", 9), pair("T-shirt/top", "Shirt", 5), pair("Trouser", "Shirt", 1)]
    other = [pair("Shirt", "T-shirt/top", 12), pair("Trouser", "T-shirt/top", 4), pair("Shirt", "Trouser", 3)]
    rows = [row("best", 0, 0.9, confused=best), row("other", 0, 0.8, confused=other)]
    shifts = report.confusion_shifts(rows, "best", k=3)
    assert shifts["other"]["fixed"] == [("T-shirt/top", "Shirt"), ("Trouser", "Shirt")]
    assert shifts["other"]["introduced"] == [("Trouser", "T-shirt/top"), ("Shirt", "Trouser")]
    assert shifts["other"]["top_pairs"][0] == pair("Shirt", "T-shirt/top", 12)
    assert shifts["best"]["fixed"] == shifts["best"]["introduced"] == []
    assert report.common_confusions(rows, k=3) == [("Shirt", "T-shirt/top")]
    with pytest.raises(ConfigError, match="best_variant"):
        report.confusion_shifts(rows, "nope")


def test_confusion_counts_sum_over_seeds() -> None:
    rows = [
        row("a", 0, 0.9, confused=[pair("x", "y", 2), pair("y", "x", 3)]),
        row("a", 1, 0.9, confused=[pair("x", "y", 2)]),
    ]
    assert report.top_confused(rows, k=1) == [pair("x", "y", 4)]


# ---------------------------------------------------------------- markdown


def table_rows(md: str) -> list[list[str]]:
    lines = [line for line in md.splitlines() if line.startswith("|")]
    return [[c.strip() for c in line.strip("|").split(" | ")] for line in lines[2:]]


def test_comparison_markdown_rows_sorted_failed_kept(rows: list[dict]) -> None:
    md = report.comparison_markdown(report.aggregate_repeats(rows), "fashion-mnist", repeats=2)
    body = table_rows(md)
    header = md.splitlines()[2]
    assert [r[0] for r in body] == ["big", "mid", "small", "broken"]
    test_col = [c.strip() for c in header.strip("|").split(" | ")].index("test acc")
    assert body[0][test_col] == "0.860 ± 0.040"
    assert body[0][1] == "8,000"  # params stay integers next to a failed row
    assert "3 epochs" in md.splitlines()[0]  # settings every variant shares: in the heading, not a column each
    assert body[-1][test_col] == "failed"
    assert "- broken failed: RuntimeError: CUDA out of memory" in md  # the error below the table, first line only
    assert "Tried to allocate" not in md
    assert "wins" in header and "most confused" not in header  # the UI shows confused pairs in the error analysis
    assert "files: memory://runs/&lt;variant&gt;/" in md and "files" not in header  # rendered: memory://runs/<variant>/


def test_disagree_flag_shows_in_lr_column(rows: list[dict]) -> None:
    frame = report.comparison_frame(report.aggregate_repeats(rows))
    lr = dict(zip(frame["variant"], frame["LR"]))
    assert lr["mid"] == "0.031 ⚠"
    assert lr["big"] == "0.031"
    assert set(frame["LR rule"][:3]) == {"steepest"}
    assert "check those curves (⚠ in the LR column)" in report.comparison_markdown(
        report.aggregate_repeats(rows), "d", 2
    )


def test_single_seed_has_no_wins_and_plain_numbers() -> None:
    summaries = report.aggregate_repeats([row("a", 0, 0.7), row("b", 0, 0.8)])
    frame = report.comparison_frame(summaries, repeats=1)
    assert "wins" not in frame.columns
    assert list(frame["test acc"]) == ["0.800", "0.700"]
    md = report.comparison_markdown(summaries, "digits", repeats=1)
    assert "±" not in md


ELEVEN = {
    "alexnet": 57_029_322,
    "cnn2_3": 824,
    "cnn2_5": 1_090,
    "cnn2_7": 1_428,
    "generic_0": 1_090,
    "generic_1": 14_748,
    "generic_2": 654,
    "generic_3": 2_832_134,
    "lenet1": 186,
    "lenet5": 61_706,
    "lenet5_dropout": 61_706,
}
ROOT = "/home/someone/projects/cnn-lab/results"


def eleven_variants(seeds: tuple[int, ...]) -> list[dict]:
    """Every built-in variant over `seeds` on ten long class names, with long folders, a flagged LR and a failed run."""
    classes = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    out = []
    for i, (variant, params) in enumerate(ELEVEN.items()):
        for seed in seeds:
            acc = 0.8 + i / 100 + seed / 1000
            train = {
                "params": params,
                "epochs": 10,
                "best_val_acc": acc,
                "seconds": 1234.5,
                "images_per_sec": 123456.0,
                "folder": f"{ROOT}/fashion-mnist/20261128-140000/{variant}/seed-{seed}",
                "config": {"lr": 0.00316, "optimizer": "adamw", "batch_size": 256, "schedule": "onecycle"},
            }
            evaluation = {
                "accuracy": acc,
                "macro_f1": acc - 0.01,
                "per_class_f1": dict.fromkeys(classes, acc),
                "confusion": [[90, 10], [5, 95]],
                "most_confused": [pair("T-shirt/top", "Pullover", 123)],
            }
            out.append(
                report.make_row(
                    variant,
                    seed,
                    {"lr": 0.00316, "rule": "steepest", "flag": "disagree" if i % 3 else None},
                    train,
                    evaluation,
                )
            )
    return out + [
        report.make_row(
            "broken",
            0,
            None,
            None,
            None,
            f"{ROOT}/fashion-mnist/20261128-140000/broken",
            error=RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 15.78 GiB total capacity)"),
        )
    ]


def with_a_verdict(rows: list[dict]) -> list[dict]:
    """The rows' summaries with a verdict from hand-made runs at each row's test accuracy on 300 images."""
    test_set = TestSet("fashion-mnist", "f" * 24, 300, 0)
    runs = [
        Run(r["variant"], r["seed"], test_set, np.arange(300) < round(r["test_acc"] * 300))
        for r in rows
        if r["status"] == "ok"
    ]
    return report.with_verdict(report.aggregate_repeats(rows), report.decide(runs))


@pytest.mark.parametrize("seeds", [(0,), (0, 1, 2)])
def test_terminal_table_fits_120_columns_with_paths_relative_below(seeds: tuple[int, ...]) -> None:
    rows = eleven_variants(seeds)
    text = report.comparison_text(with_a_verdict(rows), "fashion-mnist", len(seeds), root=ROOT)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 120
    table = lines[: lines.index("")]
    assert "95% CI" in table[1] and "group" in table[1]
    assert len(table) == 3 + len(ELEVEN) + 1  # title, header, rule, one line per variant (none folded), the failed one
    assert all(ROOT not in line and "20261128" not in line for line in table)
    assert f"files under {ROOT}: fashion-mnist/20261128-140000/<variant>/" in lines
    assert "broken failed: RuntimeError: CUDA out of memory." in text
    assert "adamw, batch 256, 10 epochs, onecycle schedule" in lines[0]


def test_ui_table_has_no_paths_and_stays_narrow() -> None:
    summaries = with_a_verdict(eleven_variants((0, 1, 2)))
    md = report.comparison_markdown(summaries, "fashion-mnist", 3, root=ROOT)
    cells = [
        [c.strip() for c in line.strip("|").split(" | ")]
        for line in md.splitlines()
        if line.startswith("|") and not line.startswith("|---")
    ]
    widest = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    # the UI's markdown tables never wrap a cell: measured in its screenshots, 7.2 px a character and 25 px of padding a
    # cell; the artifact page's content column is 830 px wide at a 1400 px window
    assert sum(widest) * 7.2 + 25 * len(widest) <= 830, widest
    assert ROOT not in "".join("".join(row) for row in cells)
    assert f"files under {ROOT}: fashion-mnist/20261128-140000/&lt;variant&gt;/" in md


def test_per_class_f1_of_eleven_variants_splits_into_tables_that_fit_the_ui() -> None:
    rows = eleven_variants((0,))
    classes = list(rows[0]["per_class_f1"])
    md = report.per_class_f1_markdown(report.per_class_f1_table(rows, classes))
    tables = md.split("\n\n")
    assert len(tables) > 1
    seen = []
    for table in tables:
        cells = [
            [c.strip().replace("**", "") for c in line.strip("|").split(" | ")]
            for line in table.splitlines()
            if not line.startswith("|---")
        ]
        widest = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
        assert sum(widest) * 7.2 + 25 * len(widest) <= 830, widest  # the UI's measured character and cell widths
        assert cells[0][0] == "class" and len(cells) == 1 + len(classes)
        seen += cells[0][1:]
    assert sorted(seen) == sorted(ELEVEN)  # every variant once
    assert md.count("**") == 2 * len(classes)  # lenet5_dropout is best in every class, in whichever table it is


def test_scores_have_one_format_everywhere() -> None:
    summaries = report.aggregate_repeats([row("a", 0, 1.0, f1=0.6667), row("b", 0, 0.9)])
    frame = report.comparison_frame(summaries, repeats=1)
    assert list(frame["test acc"]) == ["1.000", "0.900"] and list(frame["macro F1"]) == ["0.667", "0.880"]
    assert list(frame["val acc"]) == ["1.000", "0.910"]
    assert "highest test accuracy: 1.000;" in report.summary_sentences(summaries)
    assert all(re.fullmatch(r"\d\.\d{3}", c) for c in frame["test acc"])


def test_summary_sentences_name_the_group_thrifty_common_and_flags(rows: list[dict]) -> None:
    summaries = with_a_verdict(rows)
    text = report.summary_sentences(summaries, report.common_confusions(rows))
    assert text.startswith("Tied for best (p ≥ 0.05; paired bootstrap over seeds and test images, Holm-corrected")
    assert "Among those tied for best, small gets the most accuracy per parameter" in text
    assert "Every variant has Shirt→T-shirt/top among its 3 most common confusions" in text
    assert "mid (disagree)" in text and "Failed: broken" in text


def test_error_analysis_markdown(rows: list[dict]) -> None:
    md = report.error_analysis_markdown(rows, CLASSES)
    assert "**big** (best)" in md
    assert md.count("**") >= 2 * len(CLASSES)
    assert "broken" not in md
    assert "nothing to analyse" in report.error_analysis_markdown(rows[-2:], CLASSES)


# ---------------------------------------------------------------- plots and files


def test_plots_return_figures(rows: list[dict]) -> None:
    summaries = report.aggregate_repeats(rows)
    heat = report.plot_f1_heatmap(report.per_class_f1_table(rows, CLASSES))
    for fig in (
        heat,
        report.plot_accuracy_vs_cost(summaries, "params"),
        report.plot_accuracy_vs_cost(summaries, "train_seconds"),
    ):
        assert isinstance(fig, Figure)
        assert plots.figure_to_png(fig, dpi=40).startswith(PNG_MAGIC)
    fig = report.plot_accuracy_vs_cost(summaries, "params")
    assert fig.axes[0].get_xscale() == "log"
    assert "Pareto front" in [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    plt.close(fig)
    with pytest.raises(ConfigError, match="cost"):
        report.plot_accuracy_vs_cost(summaries, "flops")


def test_write_report_files_and_relative_links(tmp_path, rows: list[dict]) -> None:
    storage = Storage(str(tmp_path))
    summaries = report.aggregate_repeats(rows)
    gallery_png = plots.figure_to_png(plt.figure(figsize=(2, 2)), dpi=50)
    out = report.write_report(
        storage, "fashion-mnist/run1", summaries, rows, CLASSES, "fashion-mnist", 2, galleries={"filters": gallery_png}
    )
    folder = tmp_path / "fashion-mnist" / "run1"
    text = (folder / "report.md").read_text()
    assert out["report"] == str(folder / "report.md")
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert sorted(links) == sorted(
        f"report/{n}.png" for n in ["f1_heatmap", "accuracy_vs_params", "accuracy_vs_seconds", "gallery_filters"]
    )
    for link in links:
        assert (folder / link).read_bytes().startswith(PNG_MAGIC)
    assert (folder / "comparison.md").read_text() == out["comparison_md"]
    assert (folder / "comparison.csv").read_text().splitlines()[0].startswith("variant,params,LR")
    assert out["error_analysis_md"] in text
    assert (
        set(out["images"])
        == set(out["images_small"])
        == {"f1_heatmap", "accuracy_vs_params", "accuracy_vs_seconds", "gallery_filters"}
    )
    for uri in out["images_small"].values():
        assert uri.startswith("data:image/png;base64,")
        assert _png_size(uri)[0] <= plots.UI_WIDTH


def test_write_report_when_everything_failed(tmp_path) -> None:
    failed = [report.make_row("a", 0, None, None, None, error="boom")]
    out = report.write_report(
        Storage(str(tmp_path)), "r", report.aggregate_repeats(failed), failed, CLASSES, "digits", 1
    )
    assert out["images"] == {}
    assert "failed: boom" in (tmp_path / "r" / "report.md").read_text()


def test_write_report_when_the_only_tested_variant_did_not_learn(tmp_path) -> None:
    idle = {**row("a", 0, 0.1), "learned": False}
    summaries = [{**s, "acc_low": 0.05, "acc_high": 0.2, "group": "best"} for s in report.aggregate_repeats([idle])]
    out = report.write_report(Storage(str(tmp_path)), "r", summaries, [idle], CLASSES, "digits", 1)
    assert "verdict" not in out["images"] and "f1_heatmap" in out["images"]  # no interval worth drawing


def _png_size(uri_or_png: str | bytes) -> tuple[int, int]:
    from PIL import Image

    raw = base64.b64decode(uri_or_png.split(",", 1)[1]) if isinstance(uri_or_png, str) else uri_or_png
    assert raw.startswith(PNG_MAGIC)
    return Image.open(io.BytesIO(raw)).size


def test_display_png_scales_down_to_the_ui_width_never_up() -> None:
    big = plots.figure_to_png(plt.figure(figsize=(20, 5)), dpi=100)
    small = plots.figure_to_png(plt.figure(figsize=(3, 2)), dpi=100)
    assert _png_size(plots.display_png(big))[0] == plots.UI_WIDTH
    assert _png_size(plots.display_png(small)) == _png_size(small)


@pytest.mark.parametrize("n_variants", [3, 11])
def test_heatmap_is_drawn_for_the_ui_width_with_legible_numbers(n_variants: int) -> None:
    names = [f"variant_{i}" for i in range(n_variants)]
    classes = [str(c) for c in range(10)]
    table = report.per_class_f1_table(
        [row(v, 0, 0.5 + i / 100, per_class=dict.fromkeys(classes, 0.9)) for i, v in enumerate(names)], classes
    )
    fig = report.plot_f1_heatmap(table)
    cell_font_px = min(t.get_fontsize() for t in fig.axes[0].texts) * plots.UI_DPI / 72
    width, _ = _png_size(plots.display_png(plots.figure_to_png(fig, dpi=plots.UI_DPI)))
    assert cell_font_px >= 12  # the old heatmap's numbers were ~4 px high in the UI
    assert 450 <= width <= plots.UI_WIDTH  # the old one was ~185 px wide
    assert table.shape == (10, n_variants)


# ---------------------------------------------------------------- galleries


@pytest.fixture(scope="module")
def digits():
    from cnn.data import load_dataset

    return load_dataset("digits")


@pytest.fixture(scope="module")
def tiny_models(digits):
    from cnn.models import create_variant, resolve_input_size

    torch.manual_seed(0)
    models = {}
    for name in ("lenet1", "cnn2_3"):
        size = resolve_input_size(name, digits.image_size)
        models[name] = (create_variant(name, digits.channels, digits.num_classes, size), size)
    return models


def test_probe_batch_is_fixed(digits) -> None:
    x1, y1 = gallery.probe_batch(digits)
    x2, y2 = gallery.probe_batch(digits)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert x1.dtype == torch.uint8 and sorted(y1.tolist()) == list(range(digits.num_classes))
    assert not torch.equal(gallery.probe_batch(digits, seed=1)[0], x1)


def test_gallery_figures_on_two_real_variants(digits, tiny_models) -> None:
    figures = gallery.gallery_feature_maps(tiny_models, digits)
    assert set(figures) == {"first_conv", "last_conv"}
    for fig in figures.values():
        assert len(fig.axes) == 1 + len(tiny_models)  # the probes, then one block per variant
        titles = [ax.get_title(loc="left") for ax in fig.axes]
        plots.figure_to_png(fig, dpi=30)
        assert any(t.startswith("lenet1: conv1") for t in titles)
    assert "cnn2_3: conv2" in " ".join(
        a.get_title(loc="left") for a in gallery.gallery_feature_maps(tiny_models, digits)["last_conv"].axes
    )
    plt.close("all")
    filters = gallery.gallery_filters(tiny_models)
    assert len(filters.axes) == 2
    assert plots.figure_to_png(filters, dpi=30).startswith(PNG_MAGIC)


def test_gallery_rejects_models_without_convs(digits) -> None:
    mlp = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    with pytest.raises(ConfigError, match="Conv2d"):
        gallery.gallery_feature_maps({"mlp": (mlp, 8)}, digits)
    with pytest.raises(ConfigError, match="Conv2d"):
        gallery.gallery_filters({"mlp": (mlp, 8)})


def test_a_trained_model_is_rebuilt_from_its_weights_file(tmp_path, digits, tiny_models) -> None:
    from cnn.trained_models import load_trained_model
    from cnn.storage import buffer_bytes

    model, size = tiny_models["cnn2_3"]
    storage = Storage(str(tmp_path))
    storage.write_bytes(
        "d/r/cnn2_3/model.pt",
        buffer_bytes(lambda b: torch.save({"variant": "cnn2_3", "model": model.state_dict(), "input_size": size}, b)),
    )
    loaded, loaded_size = load_trained_model(storage, "d/r/cnn2_3", "cnn2_3", digits)
    assert loaded_size == size and not loaded.training
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
    with pytest.raises(CheckpointError, match="lenet1"):
        load_trained_model(storage, "d/r/cnn2_3", "lenet1", digits)


def test_galleries_fill_the_ui_width(digits, tiny_models) -> None:
    pngs = gallery.gallery_pngs(tiny_models, digits)
    shown = {name: _png_size(plots.display_png(png)) for name, png in pngs.items()}
    for name in ("first_conv", "last_conv"):
        width, height = shown[name]
        assert width >= 700  # ten probe tiles of ~65 px each; the old embedded galleries were ~50-100 px wide in all
        assert height >= 8 * 60  # at least one variant's eight channels at tile size


def test_rows_with_other_seed_counts_show_their_seeds_and_no_spread_for_one() -> None:
    rows = [row("a", 0, 0.80), row("a", 1, 0.82), row("b", 0, 0.70), row("b", 1, 0.72), row("c", 1, 0.95)]
    summaries = report.aggregate_repeats(rows)
    frame = report.comparison_frame(summaries, 2, "terminal")
    cells = dict(zip(frame["variant"], frame["test acc"]))
    assert cells["c"] == "0.950" and cells["a"] == "0.810 ± 0.010"  # c ran one seed: no "± 0.000"
    assert dict(zip(frame["variant"], frame["seeds"])) == {"a": "2", "b": "2", "c": "1"}
    # seed 1 is the only one all three ran: c's lone seed 1 wins it, seed 0 (without c) counts for nobody
    assert {s["variant"]: s["wins"] for s in summaries} == {"a": 0, "b": 0, "c": 1.0}
    assert "mean ± std over 1-2 seeds (the seeds column)" in report.comparison_text(summaries, "toy", 2)
    even = report.comparison_frame(report.aggregate_repeats(rows[:4]), 2, "terminal")
    assert "seeds" not in even.columns  # every row has the same seeds: the heading says how many
