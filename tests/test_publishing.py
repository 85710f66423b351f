"""Publishing to a shared store: concurrent comparisons and retrains lose no row, on disk and on S3; a damaged record is
named before any training; artifacts escape user-controlled text."""

from __future__ import annotations

import multiprocessing
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from cnn.errors import StorageError
from cnn.params import RunParams
from cnn import comparisons
from cnn.publishing import build_comparison, comparison_artifact_markdown, variant_markdown
from cnn.report import aggregate_repeats, comparison_markdown, error_analysis_markdown, make_row
from cnn.storage import Storage
from storage_helpers import S3Server, s3_env

VARIANTS = ["lenet1", "lenet5", "cnn2_3", "cnn2_5", "cnn2_7", "generic_0", "generic_1", "generic_2"]


def _row(
    variant: str, acc: float = 0.5, seed: int = 0, folder: str | None = None, classes: tuple[str, str] = ("a", "b")
) -> dict:
    lr = {"lr": 0.05, "rule": "given"}
    train = {"params": 100, "epochs": 1, "best_val_acc": acc, "seconds": 1.0, "images_per_sec": 10.0, "folder": folder}
    evaluation = {
        "accuracy": acc,
        "macro_f1": acc,
        "per_class_f1": dict.fromkeys(classes, acc),
        "confusion": [[500, 500], [500, 500]],
        "most_confused": [{"true": classes[1], "predicted": classes[0], "count": 3}],
    }
    return make_row(variant, seed, lr, train, evaluation)


@pytest.fixture(scope="module")
def s3_server():
    server = S3Server().start()
    server.client().create_bucket(Bucket="shared")
    yield server
    server.stop()


@pytest.fixture(params=["local", "s3"])
def store_url(request, tmp_path, monkeypatch):
    """A shared store: a local folder, or a bucket on a moto server."""
    if request.param == "local":
        return str(tmp_path / "store")
    server = request.getfixturevalue("s3_server")
    for var, value in s3_env(server.endpoint).items():
        monkeypatch.setenv(var, value)
    return f"s3://shared/{tmp_path.name}"


def _config(url: str, run: str, variants: list[str], comparison: str = "default") -> RunParams:
    return RunParams(dataset="digits", val_size=0.15, storage=url, run=run, variants=variants, comparison=comparison)


def _rows_of(url: str, comparison: str = "default") -> dict[str, list[dict]]:
    store = Storage(url)
    definition = comparisons.read_definition(store, "digits", comparison)
    return {v: r.rows for v, r in comparisons.read_rows(store, definition).items()}


def test_concurrent_publishers_lose_no_row(store_url: str) -> None:
    barrier = threading.Barrier(len(VARIANTS))
    errors: list[BaseException] = []
    comparisons.record_definition(Storage(store_url), _config(store_url, "r0", VARIANTS))

    def publish(variant: str) -> None:
        try:
            barrier.wait()
            for round_ in range(3):
                config = _config(store_url, f"run-{variant}", [variant])
                comparisons.record_rows(Storage(store_url), config, [_row(variant, acc=round_ / 10)])
        except BaseException as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=publish, args=(v,)) for v in VARIANTS]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    kept = _rows_of(store_url)
    assert sorted(kept) == sorted(VARIANTS)
    assert {r["test_acc"] for rows in kept.values() for r in rows} == {0.2}


def test_a_variant_whose_every_seed_failed_keeps_its_earlier_rows(tmp_path: Path) -> None:
    url, store = str(tmp_path), Storage(str(tmp_path))
    comparisons.record_definition(store, _config(url, "r1", ["lenet1", "cnn2_5"]))
    comparisons.record_rows(store, _config(url, "r1", ["lenet1", "cnn2_5"]), [_row("lenet1", 0.6), _row("cnn2_5", 0.7)])
    comparisons.record_rows(
        store, _config(url, "r2", ["lenet1"]), [make_row("lenet1", 0, None, None, None, error="boom")]
    )
    kept = _rows_of(url)
    assert [r["test_acc"] for r in kept["lenet1"]] == [0.6] and [r["test_acc"] for r in kept["cnn2_5"]] == [0.7]


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (
            b'{"schema_version": 1, "rows": [{"variant": "lenet1", "test_',
            r"lenet1\.json is not valid JSON \(.* at line 1 column \d+; truncated\?\)",
        ),
        (b"\xff\xfe rows", r"lenet1\.json is not UTF-8 text"),
        (b"[1, 2]", r"lenet1\.json is not a cnn-lab VariantRows record"),
        (b"[" * 100_000 + b"]" * 100_000, r"lenet1\.json is (nested too deeply|not a cnn-lab VariantRows record)"),
    ],
    ids=["truncated", "not-utf8", "not-a-record", "deep"],
)
def test_a_damaged_record_is_named(tmp_path: Path, content: bytes, match: str) -> None:
    url, store = str(tmp_path), Storage(str(tmp_path))
    comparisons.record_definition(store, _config(url, "r", ["lenet1"]))
    (tmp_path / "digits" / "comparisons" / "default" / "lenet1.json").write_bytes(content)
    with pytest.raises(StorageError, match=match) as err:
        _rows_of(url)
    assert "\n" not in str(err.value)


def test_a_file_of_another_variant_is_named(tmp_path: Path) -> None:
    url, store = str(tmp_path), Storage(str(tmp_path))
    comparisons.record_definition(store, _config(url, "r", ["lenet1", "lenet5"]))
    comparisons.record_rows(store, _config(url, "r", ["lenet1"]), [_row("lenet1")])
    folder = tmp_path / "digits" / "comparisons" / "default"
    os.rename(folder / "lenet1.json", folder / "lenet5.json")
    with pytest.raises(StorageError, match=r"lenet5\.json is not a cnn-lab VariantRows record \(variant"):
        _rows_of(url)


# --- whole publications from separate processes --------------------------------------------------------------------


def _publish(url: str, rows: list[dict], barrier: Any, results: Any, env: dict[str, str]) -> None:
    """One publisher process: wait for the others, then record its rows in the comparison and write its report."""
    from cnn.report import files

    os.environ.update(env)  # the test's environment now (the S3 endpoint), not the one the fork server started with
    files._report_figures = lambda *args: {}  # the figures take seconds and touch no row
    barrier.wait()
    config = _config(url, rows[0]["variant"] + "-run", [r["variant"] for r in rows])
    comparisons.record_rows(Storage(url), config, rows)
    out = build_comparison(config, rows)
    results.put((rows[0]["variant"], sorted(r["variant"] for r in out["rows"])))


def test_comparisons_and_retrains_published_at_once_keep_every_row(store_url: str) -> None:
    """Two comparisons and two retrains, each in its own process, publish to one comparison at the same moment."""
    jobs = [
        [_row("lenet1"), _row("lenet5")],
        [_row("cnn2_3"), _row("cnn2_5")],
        [_row("generic_1", 0.7)],
        [_row("generic_2", 0.6)],
    ]
    everything = [r["variant"] for rows in jobs for r in rows]
    comparisons.record_definition(Storage(store_url), _config(store_url, "r0", everything))
    # Fresh processes (forking after a test left Prefect's threads running broke the children), forked from a server
    # process that imported this module once: spawning each child re-imported torch, scikit-learn and matplotlib
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    barrier, results = context.Barrier(len(jobs)), context.Queue()
    procs = [
        context.Process(target=_publish, args=(store_url, rows, barrier, results, dict(os.environ))) for rows in jobs
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * len(jobs)
    reported = dict(results.get(timeout=5) for _ in jobs)
    assert reported["lenet1"] == ["lenet1", "lenet5"]  # a publication reports its own rows
    assert sorted(_rows_of(store_url)) == sorted(everything)


# --- user-controlled text in the Markdown ---------------------------------------------------------------------------

HOSTILE = "<script>alert(1)</script>"


def test_markdown_escapes_paths_class_names_and_errors() -> None:
    classes = (f"cat{HOSTILE}", "dog|<img src=x onerror=alert(1)>")
    rows = [
        _row("lenet1", 0.6, folder=f"/data/{HOSTILE}/lenet1", classes=classes),
        _row("cnn2_5", 0.7, classes=classes),
        make_row("lenet5", 0, None, None, None, error=f"StorageError: cannot write /x/{HOSTILE}"),
    ]
    texts = [
        comparison_markdown(aggregate_repeats(rows), "digits", 1),
        error_analysis_markdown(rows, list(classes)),
        variant_markdown(rows[0], {}, "", {"filters": [f"/data/{HOSTILE}/f.png"], "feature_maps": []}),
        comparison_artifact_markdown(
            {
                "comparison_md": "",
                "images_small": {},
                "images": {"f1_heatmap": f"/data/{HOSTILE}/f1.png"},
                "report": f"/data/{HOSTILE}/report.md",
            }
        ),
    ]
    for text in texts:
        assert "<script" not in text and "<img" not in text, text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in texts[0] + texts[2]
    assert "dog\\|&lt;img" in texts[1]  # a pipe in a class name does not split the table


# --- what the UI shows ------------------------------------------------------------------------------------------------


def test_variant_page_scores_one_format_and_plots_at_the_ui_width(tmp_path: Path) -> None:
    import base64
    import io
    import re

    import matplotlib.pyplot as plt
    from PIL import Image

    from cnn import plots
    from cnn.publishing import classification_table, variant_images
    from cnn.storage import Storage

    store = Storage(str(tmp_path))
    folder = store.path("digits/r/lenet1")
    store.write_text(
        "digits/r/lenet1/classification_report.csv",
        "class,precision,recall,f1-score,support\n0,1.0,0.6666667,0.8,3\nmacro avg,0.5,1.0,0.6666667,3\n",
    )
    for name in ("losses.png", "confusion_matrix.png", "lr_finder.png"):
        store.write_bytes(f"digits/r/lenet1/{name}", plots.figure_to_png(plt.figure(figsize=(10, 4)), dpi=110))
    row = _row("lenet1", 0.6666667, folder=folder)
    table = classification_table(store, row)
    assert "| 0 | 1.000 | 0.667 | 0.800 | 3 |" in table  # never "1" next to "0.667"
    images = variant_images(store, row, {"plot": store.path("digits/r/lenet1/lr_finder.png")})
    assert list(images) == ["loss curves", "confusion matrix", "LR sweep"]
    page = variant_markdown(
        row, images, table, {"filters": [f"{folder}/filters/conv1.png"], "feature_maps": []}, root=store.url
    )
    widths = [
        Image.open(io.BytesIO(base64.b64decode(uri))).width for uri in re.findall(r"base64,([A-Za-z0-9+/=]+)", page)
    ]
    assert widths == [plots.UI_WIDTH] * 3  # 1100 px files shown at the content column's width, not 450 px thumbnails
    assert "test acc **0.667**" in page and "- filters: digits/r/lenet1/filters/conv1.png" in page


def test_link_artifacts_say_what_they_show_and_galleries_get_their_own_page() -> None:
    from cnn.publishing import galleries_markdown, link_description

    assert (
        link_description("f1_heatmap", "digits")
        == "digits: per-class F1 heatmap, full size (the comparison artifact embeds it at the page's width)"
    )
    assert (
        link_description("gallery_first_conv", "digits")
        == "digits: gallery of first conv, full size (the galleries artifact embeds it at the page's width)"
    )
    built = {
        "comparison_md": "table",
        "report": "/r/report.md",
        "images": {"f1_heatmap": "/r/f1.png", "gallery_filters": "/r/g.png"},
        "images_small": {"f1_heatmap": "data:image/png;base64,AA", "gallery_filters": "data:image/png;base64,BB"},
    }
    comparison = comparison_artifact_markdown(built)
    assert "base64,AA" in comparison and "base64,BB" not in comparison and "the galleries artifact" in comparison
    assert "## filters\n\n![filters](data:image/png;base64,BB)" in galleries_markdown(built, "digits")
    assert galleries_markdown({**built, "images_small": {"f1_heatmap": "x"}}, "digits") == ""


def test_link_artifacts_only_for_files_a_browser_opens_from_the_ui() -> None:
    from cnn.publishing import browser_links

    images = {
        "local": "/home/me/results/digits/r/report/f1_heatmap.png",
        "s3": "s3://bucket/results/digits/r/report/f1_heatmap.png",
        "served": "https://files.example.com/results/digits/r/report/f1_heatmap.png",
    }
    assert browser_links(images) == {"served": images["served"]}
