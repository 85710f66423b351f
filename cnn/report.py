"""Compare variants across seeds: summaries, Pareto front, per-class F1, confusion shifts, and the report files.

Inputs are small row dicts, one per (variant, seed) run (see `make_row`); everything here is pure except
`write_report`, which renders figures and writes report.md, comparison.md/.csv and PNGs to a Storage.
"""
from __future__ import annotations

import io
import math
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from cnn import plots, recipe  # noqa: E402
from cnn.errors import ConfigError  # noqa: E402
from cnn.markdown import md_escape  # noqa: E402
from cnn.pipeline import FULL_DPI, SMALL_DPI  # noqa: E402
from cnn.storage import Storage, safe_name  # noqa: E402

Row = Mapping[str, Any]
Pair = tuple[str, str]

COSTS = {"params": "parameters (log scale)", "train_seconds": "training seconds"}
COLUMNS = ["variant", "params", "LR", "optimizer", "batch", "epochs", "best val acc", "test acc", "macro F1", "acc/1k params", "train s", "img/s", "wins", "most confused", "files"]
MAX_SMALL_URI = 60_000  # characters of one data-URI image in a Prefect artifact
ARROW = "\u2192"
WARN = "\u26a0"


# ---------------------------------------------------------------- rows and summaries


def make_row(variant: str, seed: int, lr_info: Mapping[str, Any] | None, train_info: Mapping[str, Any] | None, eval_info: Mapping[str, Any] | None, folder: str | None = None, *, error: str | BaseException | None = None) -> dict[str, Any]:
    """One run's row from what find_lr/train_variant/evaluate_variant returned; `error` (or a missing step) makes it failed."""
    train_info, eval_info, lr_info = train_info or {}, eval_info or {}, lr_info or {}
    folder = folder or train_info.get("folder")
    if error is not None or not train_info or not eval_info:
        text = str(error) if error is not None else "missing train or evaluation results"
        if isinstance(error, BaseException):
            text = f"{type(error).__name__}: {error}"
        return failed_row(variant, seed, text, folder)
    config = train_info.get("config", {})
    return {
        "variant": variant,
        "seed": seed,
        "status": "ok",
        "error": None,
        "learned": test_learned(eval_info),
        "params": int(train_info.get("params", eval_info.get("params", 0))),
        "lr": _float(config.get("lr", lr_info.get("lr"))),
        "lr_rule": "; ".join(n for n in (lr_info.get("rule", "given"), _fallback_note(train_info)) if n),
        "lr_flag": lr_info.get("flag"),
        "optimizer": config.get("optimizer"),
        "schedule": config.get("schedule"),
        "batch_size": config.get("batch_size"),
        "epochs": int(train_info["epochs"]),
        "best_val_acc": float(train_info["best_val_acc"]),
        "test_acc": float(eval_info["accuracy"]),
        "macro_f1": float(eval_info["macro_f1"]),
        "train_seconds": float(train_info["seconds"]),
        "images_per_sec": float(train_info["images_per_sec"]),
        "per_class_f1": {str(k): float(v) for k, v in eval_info.get("per_class_f1", {}).items()},
        "confusion": [list(map(int, r)) for r in eval_info.get("confusion", [])],
        "most_confused": [dict(p) for p in eval_info.get("most_confused", [])],
        "folder": folder,
    }


def _fallback_note(train_info: Mapping[str, Any]) -> str | None:
    """"fallback: no descent at adam 0.003" when training abandoned attempts, else None."""
    fallbacks = train_info.get("fallbacks") or []
    return f"fallback: {'; '.join(fallbacks)}" if fallbacks else None


def test_learned(eval_info: Mapping[str, Any]) -> bool:
    """Whether the test accuracy is clearly above chance (the majority class's share of the test split)."""
    confusion = np.asarray(eval_info.get("confusion") or [[0]], dtype=float)
    n = int(confusion.sum())
    chance = float(confusion.sum(axis=1).max() / n) if n else 0.0
    return recipe.learned(float(eval_info.get("accuracy", 0.0)), chance, n)


def learned(row: Row) -> bool:
    """A finished row whose model learned (rows written before this flag existed count as learned)."""
    return row.get("status", "ok") == "ok" and bool(row.get("learned", True))


def failed_row(variant: str, seed: int, error: str, folder: str | None = None) -> dict[str, Any]:
    """A row for a run that raised: status failed, the error text, None for every number."""
    numbers = ("learned", "params", "lr", "lr_rule", "lr_flag", "optimizer", "schedule", "batch_size", "epochs", "best_val_acc", "test_acc", "macro_f1", "train_seconds", "images_per_sec")
    return {"variant": variant, "seed": seed, "status": "failed", "error": str(error), **dict.fromkeys(numbers), "per_class_f1": {}, "confusion": [], "most_confused": [], "folder": folder}


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _ok(rows: Iterable[Row]) -> list[Row]:
    return [r for r in rows if r.get("status", "ok") == "ok"]


def _by_variant(rows: Iterable[Row]) -> dict[str, list[Row]]:
    """Rows grouped by variant, in order of first appearance."""
    groups: dict[str, list[Row]] = {}
    for row in rows:
        groups.setdefault(row["variant"], []).append(row)
    return groups


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    return float(statistics.fmean(values)), float(statistics.pstdev(values)) if len(values) > 1 else 0.0


def count_wins(rows: Iterable[Row]) -> dict[str, int]:
    """Per variant, the seeds where its test accuracy was the highest among that seed's ok runs (ties all win)."""
    by_seed: dict[Any, list[Row]] = {}
    for row in rows:
        if learned(row):
            by_seed.setdefault(row["seed"], []).append(row)
    wins: dict[str, int] = {}
    for seed_rows in by_seed.values():
        top = max(r["test_acc"] for r in seed_rows)
        for r in seed_rows:
            wins[r["variant"]] = wins.get(r["variant"], 0) + int(math.isclose(r["test_acc"], top, rel_tol=0, abs_tol=1e-12))
    return wins


def aggregate_repeats(rows: Iterable[Row]) -> list[dict[str, Any]]:
    """One summary per variant over its seeds (mean, population std, wins), best mean test accuracy first, failed last."""
    rows = list(rows)
    wins = count_wins(rows)
    summaries = [_summarise(variant, group, wins.get(variant, 0)) for variant, group in _by_variant(rows).items()]
    ok = sorted((s for s in summaries if s["status"] == "ok"), key=lambda s: -s["test_acc"])
    return ok + [s for s in summaries if s["status"] != "ok"]


def _summarise(variant: str, group: list[Row], wins: int) -> dict[str, Any]:
    ok = sorted(_ok(group), key=lambda r: r["seed"])
    failed = [r for r in group if r not in ok]
    if not ok:
        return {**failed_row(variant, failed[0]["seed"], failed[0].get("error") or "failed", failed[0].get("folder")), "seeds": [r["seed"] for r in group], "n_seeds": 0, "n_failed": len(failed), "wins": 0}
    first, best = ok[0], max(ok, key=lambda r: r["test_acc"])
    acc, acc_std = _mean_std([r["test_acc"] for r in ok])
    f1, f1_std = _mean_std([r["macro_f1"] for r in ok])
    classes = list(dict.fromkeys(c for r in ok for c in r.get("per_class_f1", {})))
    return {
        "variant": variant,
        "status": "ok",
        "error": "; ".join(str(r.get("error")) for r in failed) or None,
        "seeds": [r["seed"] for r in ok],
        "n_seeds": len(ok),
        "n_failed": len(failed),
        "test_acc": acc,
        "test_acc_std": acc_std,
        "macro_f1": f1,
        "macro_f1_std": f1_std,
        "wins": wins,
        "learned": all(learned(r) for r in ok),
        "n_not_learned": sum(not learned(r) for r in ok),
        "optimizer": first.get("optimizer"),
        "schedule": first.get("schedule"),
        "batch_size": first.get("batch_size"),
        "params": first["params"],
        "lr": first["lr"],
        "lr_rule": first["lr_rule"],
        "lr_flag": first["lr_flag"],
        "epochs": first["epochs"],
        "best_val_acc": float(statistics.fmean(r["best_val_acc"] for r in ok)),
        "train_seconds": float(statistics.fmean(r["train_seconds"] for r in ok)),
        "images_per_sec": float(statistics.fmean(r["images_per_sec"] for r in ok)),
        "per_class_f1": {c: float(np.mean([r["per_class_f1"][c] for r in ok if c in r.get("per_class_f1", {})])) for c in classes},
        "most_confused": [dict(p) for p in best.get("most_confused", [])],
        "best_seed": best["seed"],
        "folder": first.get("folder"),
    }


def best_variant(summaries_or_rows: Iterable[Row]) -> str | None:
    """Name of the learned variant with the highest mean test accuracy (None when none learned; ties: first seen)."""
    groups = _by_variant(r for r in summaries_or_rows if learned(r))
    return max(groups, key=lambda v: statistics.fmean(r["test_acc"] for r in groups[v])) if groups else None


# ---------------------------------------------------------------- cost and accuracy


def accuracy_per_1k_params(acc: float, params: int | float) -> float:
    """Accuracy (a fraction) per thousand trainable parameters."""
    if params is None or params <= 0:
        raise ConfigError("params", f"must be a positive parameter count, got {params!r}")
    return float(acc) * 1000.0 / float(params)


def pareto_front(points: Iterable[tuple[str, float, float]]) -> list[str]:
    """Names of the (name, cost, accuracy) points no other point dominates, cheapest first.

    A point dominates another when its cost is lower or equal and its accuracy higher or equal, strictly
    better in one; identical points do not dominate each other, so both stay on the front.
    """
    pts = [(str(n), float(c), float(a)) for n, c, a in points]
    front = [p for p in pts if not any(q[1] <= p[1] and q[2] >= p[2] and (q[1] < p[1] or q[2] > p[2]) for q in pts)]
    return [n for n, _, _ in sorted(front, key=lambda p: (p[1], -p[2]))]


# ---------------------------------------------------------------- per-class F1


def per_class_f1_table(summaries_or_rows: Iterable[Row], class_names: Sequence[str]) -> pd.DataFrame:
    """Classes x variants table of F1 averaged over seeds, most accurate variant first; failed runs are left out."""
    groups = _by_variant(_ok(summaries_or_rows))
    groups = dict(sorted(groups.items(), key=lambda kv: -statistics.fmean(r.get("test_acc") or 0.0 for r in kv[1])))
    names = [str(c) for c in class_names]
    data = {v: [_mean_or_nan([r.get("per_class_f1", {}).get(c) for r in group]) for c in names] for v, group in groups.items()}
    return pd.DataFrame(data, index=pd.Index(names, name="class"), columns=list(groups), dtype=float)


def _mean_or_nan(values: Iterable[float | None]) -> float:
    kept = [float(v) for v in values if v is not None]
    return float(np.mean(kept)) if kept else math.nan


def best_per_class(table: pd.DataFrame) -> dict[str, str]:
    """For each class (row), the variant (column) with the highest F1; ties go to the leftmost column."""
    return {str(c): str(row.idxmax()) for c, row in table.iterrows() if row.notna().any()}


def per_class_f1_markdown(table: pd.DataFrame, digits: int = 3) -> str:
    """The per-class F1 table as Markdown, the best cell of each class in bold."""
    best = best_per_class(table)
    body = []
    for cls, row in table.iterrows():
        cells = [_fmt(v, digits) for v in row]
        if str(cls) in best:
            i = list(table.columns).index(best[str(cls)])
            cells[i] = f"**{cells[i]}**"
        body.append([md_escape(cls), *cells])
    return markdown_table(["class", *map(str, table.columns)], body)


# ---------------------------------------------------------------- confusions


def top_confused(rows: Iterable[Row], k: int = 3) -> list[dict[str, Any]]:
    """The k most-confused (true, predicted) pairs of the given runs, counts summed over them, largest first."""
    totals: dict[Pair, int] = {}
    for row in rows:
        for p in row.get("most_confused") or []:
            key = (str(p["true"]), str(p["predicted"]))
            totals[key] = totals.get(key, 0) + int(p["count"])
    ranked = sorted(totals.items(), key=lambda kv: -kv[1])[:k]
    return [{"true": t, "predicted": p, "count": n} for (t, p), n in ranked]


def _pairs(top: Iterable[Mapping[str, Any]]) -> list[Pair]:
    return [(p["true"], p["predicted"]) for p in top]


def confusion_shifts(rows: Iterable[Row], best_variant: str, k: int = 3) -> dict[str, dict[str, list]]:
    """Per ok variant: its top-k confused pairs, the best variant's top-k pairs it avoids (fixed) and its own new ones (introduced)."""
    groups = _by_variant(_ok(rows))
    if best_variant not in groups:
        raise ConfigError("best_variant", f"no finished run of {best_variant!r}", allowed=list(groups))
    best_pairs = _pairs(top_confused(groups[best_variant], k))
    shifts = {}
    for variant, group in groups.items():
        top = top_confused(group, k)
        mine = _pairs(top)
        shifts[variant] = {"top_pairs": top, "fixed": [p for p in best_pairs if p not in mine], "introduced": [p for p in mine if p not in best_pairs]}
    return shifts


def common_confusions(rows: Iterable[Row], k: int = 3) -> list[Pair]:
    """(true, predicted) pairs in the top k of every ok variant, the most frequent overall first."""
    groups = _by_variant(_ok(rows))
    if not groups:
        return []
    tops = [_pairs(top_confused(g, k)) for g in groups.values()]
    shared = set(tops[0]).intersection(*tops[1:])
    overall = _pairs(top_confused([r for g in groups.values() for r in g], k=10**6))
    return [p for p in overall if p in shared]


def pair_text(true: str, predicted: str, count: int | None = None) -> str:
    """A confused pair as "Shirt→T-shirt/top" (with " (12)" when a count is given)."""
    return f"{true}{ARROW}{predicted}" + (f" ({count})" if count is not None else "")


# ---------------------------------------------------------------- text and tables


def summary_sentences(summaries: Sequence[Row], common: Sequence[Pair]) -> str:
    """Two to four sentences from the numbers: best variant, best accuracy per 1k params, shared confusions, LR flags."""
    finished = [s for s in summaries if s.get("status", "ok") == "ok"]
    ok = [s for s in finished if learned(s)]
    idle = [s["variant"] for s in finished if not learned(s)]
    failed = [s["variant"] for s in summaries if s.get("status", "ok") != "ok"]
    if not finished:
        return f"No variant finished ({len(failed)} failed)."
    if not ok:
        return f"No variant learned: every finished variant stayed at chance level ({', '.join(idle)}), so there is no winner; check the LR curves and the settings." + (f" Failed: {', '.join(failed)}." if failed else "")
    best = max(ok, key=lambda s: s["test_acc"])
    spread = f" \u00b1 {best['test_acc_std']:.4f} over {best['n_seeds']} seeds" if best.get("n_seeds", 1) > 1 else ""
    sentences = [f"{best['variant']} is the most accurate variant with {best['test_acc']:.4f} test accuracy{spread}."]
    sized = [s for s in ok if s.get("params")]
    if sized:
        thrifty = max(sized, key=lambda s: accuracy_per_1k_params(s["test_acc"], s["params"]))
        sentences.append(f"{thrifty['variant']} gets the most accuracy per parameter: {accuracy_per_1k_params(thrifty['test_acc'], thrifty['params']):.3g} per 1k parameters ({thrifty['params']:,} parameters).")
    if common and len(ok) > 1:
        sentences.append(f"Every variant confuses {', '.join(md_escape(pair_text(t, p)) for t, p in common)}.")
    flagged = [f"{s['variant']} ({str(s['lr_flag']).replace('_', ' ')})" for s in ok if s.get("lr_flag")]
    if flagged:
        sentences.append(f"The LR finder flagged {', '.join(flagged)}: check those curves.")
    if idle:
        sentences.append(f"Did not learn (test accuracy not clearly above chance, left out of the ranking): {', '.join(idle)}.")
    if failed:
        sentences.append(f"Failed: {', '.join(failed)}.")
    mixed = settings_differences(finished)
    if mixed:
        sentences.append(f"Rows were trained with different settings: {mixed}.")
    return " ".join(sentences)


SETTINGS = ("epochs", "batch_size", "optimizer", "schedule")


def settings_differences(rows: Sequence[Row]) -> str:
    """"epochs: cnn2_5 2, others 4" for each setting that differs between rows ('' when they all agree)."""
    parts = []
    for key in SETTINGS:
        values = {r["variant"]: r.get(key) for r in rows if r.get(key) is not None}
        counts: dict[Any, int] = {}
        for v in values.values():
            counts[v] = counts.get(v, 0) + 1
        if len(counts) > 1:
            common = max(counts, key=lambda v: counts[v])
            odd = ", ".join(f"{name} {v}" for name, v in values.items() if v != common)
            parts.append(f"{key.replace('_', ' ')} {odd}, others {common}")
    return "; ".join(parts)


def lr_text(lr: float | None, rule: str | None, flag: str | None = None) -> str:
    """LR cell: "0.031 (steepest, ⚠ disagree)"."""
    if lr is None:
        return ""
    notes = [n for n in (rule, f"{WARN} {str(flag).replace('_', ' ')}" if flag else None) if n]
    return f"{lr:.3g}" + (f" ({', '.join(notes)})" if notes else "")


def _mean_pm(mean: float, std: float | None, repeats: int, digits: int = 4) -> str | float:
    return f"{mean:.{digits}f} \u00b1 {(std or 0.0):.{digits}f}" if repeats > 1 else round(mean, digits)


def comparison_frame(summaries: Sequence[Row], repeats: int | None = None) -> pd.DataFrame:
    """The comparison table (for CSV and the Prefect table artifact), sorted by test accuracy; failed rows mostly blank."""
    repeats = repeats if repeats is not None else max([int(s.get("n_seeds", 1)) for s in summaries] or [1])
    ordered = sorted(summaries, key=lambda s: (s.get("status", "ok") != "ok", not learned(s), -(s.get("test_acc") or 0.0)))
    records = [_comparison_record(s, repeats) for s in ordered]
    columns = [c for c in COLUMNS if c != "wins" or repeats > 1]
    return pd.DataFrame({c: pd.Series([r.get(c) for r in records], dtype=object) for c in columns})


def _comparison_record(s: Row, repeats: int) -> dict[str, Any]:
    if s.get("status", "ok") != "ok":
        first_line = (str(s.get("error") or "unknown error").strip().splitlines() or ["unknown error"])[0]
        return {"variant": s["variant"], "test acc": f"failed: {first_line[:200]}", "files": s.get("folder")}
    top = (s.get("most_confused") or [None])[0]
    return {
        "variant": s["variant"],
        "params": s["params"],
        "LR": lr_text(s.get("lr"), s.get("lr_rule"), s.get("lr_flag")),
        "optimizer": s.get("optimizer"),
        "batch": s.get("batch_size"),
        "epochs": s["epochs"],
        "best val acc": round(s["best_val_acc"], 4),
        "test acc": _test_acc_cell(s, repeats),
        "macro F1": _mean_pm(s["macro_f1"], s.get("macro_f1_std"), repeats),
        "acc/1k params": round(accuracy_per_1k_params(s["test_acc"], s["params"]), 4) if s.get("params") else None,
        "train s": round(s["train_seconds"], 1),
        "img/s": round(s["images_per_sec"]),
        "wins": s.get("wins", 0),
        "most confused": pair_text(top["true"], top["predicted"], top["count"]) if top else "",
        "files": s.get("folder"),
    }


def _test_acc_cell(s: Row, repeats: int) -> str | float:
    """Mean (± std) test accuracy, marked when the variant did not learn."""
    value = _mean_pm(s["test_acc"], s.get("test_acc_std"), repeats)
    if learned(s):
        return value
    return f"{value if isinstance(value, str) else f'{value:.4f}'} (did not learn)"


def comparison_markdown(summaries: Sequence[Row], dataset: str, repeats: int) -> str:
    """Markdown comparison table (sorted by test accuracy) followed by the summary sentences."""
    frame = comparison_frame(summaries, repeats)
    seeds = f", mean \u00b1 std over {repeats} seeds" if repeats > 1 else ""
    heading = f"### {dataset}: {len(frame)} variant{'s' * (len(frame) != 1)}{seeds}"
    table = markdown_table(list(frame.columns), [[_cell(c, v) for c, v in zip(frame.columns, rec)] for rec in frame.itertuples(index=False)])
    return f"{heading}\n\n{table}\n\n{summary_sentences(summaries, common_confusions(summaries))}\n"


def error_analysis_markdown(rows: Sequence[Row], class_names: Sequence[str], k: int = 3) -> str:
    """Per-class F1 (best cell bold), then each variant's top confused pairs with what it fixes/introduces vs the best."""
    best = best_variant(rows)
    if best is None:
        return "### Error analysis\n\nNo variant finished, so there is nothing to analyse.\n"
    parts = ["### Per-class F1", "", per_class_f1_markdown(per_class_f1_table(rows, class_names)), "", f"### Most confused pairs (top {k}, counts summed over seeds; fixed/introduced vs the best variant, {best})", ""]
    for variant, shift in confusion_shifts(rows, best, k).items():
        top = ", ".join(md_escape(pair_text(p["true"], p["predicted"], p["count"])) for p in shift["top_pairs"]) or "none"
        line = f"- **{variant}**{' (best)' if variant == best else ''}: {top}"
        if variant != best:
            line += f"; fixed: {_pair_list(shift['fixed'])}; introduced: {_pair_list(shift['introduced'])}"
        parts.append(line)
    return "\n".join(parts) + "\n"


def _pair_list(pairs: Sequence[Pair]) -> str:
    return ", ".join(md_escape(pair_text(t, p)) for t, p in pairs) or "none"


CELL_FORMATS = {"params": "{:,}", "train s": "{:.1f}", "img/s": "{:,.0f}", "epochs": "{:d}", "batch": "{:d}"}


def _cell(column: str, value: Any) -> str:
    """A comparison-table cell: counts with thousands separators, seconds to 0.1, the rest via _fmt."""
    fmt = CELL_FORMATS.get(column)
    if fmt and isinstance(value, (int, float)) and not isinstance(value, bool) and value == value:
        return fmt.format(int(value) if fmt in ("{:,}", "{:d}") else value)
    return _fmt(value)


def _fmt(value: Any, digits: int = 4) -> str:
    """A table cell: blank for None/NaN, floats to `digits` decimals, text escaped (no HTML, no table breaks)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return md_escape(value)


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A GitHub-flavoured Markdown table from already-formatted cells."""
    lines = ["| " + " | ".join(_fmt(h) for h in headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(rows_cells) + " |" for rows_cells in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------- plots


def plot_f1_heatmap(table: pd.DataFrame) -> Figure:
    """Per-class F1 as a classes x variants heatmap with the values written in the cells."""
    if table.empty:
        raise ConfigError("table", "the per-class F1 table is empty (no finished variant)")
    values = table.to_numpy(dtype=float)
    rows, cols = values.shape
    fig, ax = plt.subplots(figsize=(min(16, 2.5 + 0.9 * cols), min(14, 1.2 + 0.4 * rows)))
    image = ax.imshow(values, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(cols), [str(c) for c in table.columns], rotation=45, ha="right", rotation_mode="anchor", fontsize=8)
    ax.set_yticks(range(rows), [str(c) for c in table.index], fontsize=8)
    if rows * cols <= 400:
        for (r, c), v in np.ndenumerate(values):
            if not math.isnan(v):
                ax.text(c, r, f"{v:.2f}", ha="center", va="center", fontsize=7, color="black" if v > 0.6 else "white")
    fig.colorbar(image, ax=ax, label="F1")
    ax.set_title("per-class F1 (mean over seeds)")
    fig.tight_layout()
    return fig


def plot_accuracy_vs_cost(summaries: Sequence[Row], cost: str = "params") -> Figure:
    """Test accuracy against parameters (log x) or training seconds; the Pareto front is a line of stars."""
    if cost not in COSTS:
        raise ConfigError("cost", f"unknown cost {cost!r}", allowed=list(COSTS))
    ok = [s for s in summaries if s.get("status", "ok") == "ok" and s.get(cost) is not None]
    if not ok:
        raise ConfigError("summaries", "no finished variant to plot")
    points = {s["variant"]: (float(s[cost]), float(s["test_acc"]), float(s.get("test_acc_std") or 0.0)) for s in ok}
    front = pareto_front((n, c, a) for n, (c, a, _) in points.items() if learned(next(s for s in ok if s["variant"] == n)))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    others = [n for n in points if n not in front]
    for names, marker, label in ((others, "o", "dominated"), (front, "*", "Pareto front")):
        if names:
            xs, ys, es = zip(*(points[n] for n in names))
            ax.errorbar(xs, ys, yerr=es, fmt=marker, markersize=12 if marker == "*" else 7, capsize=3, label=label, linestyle="-" if marker == "*" else "none")
    for name, (x, y, _) in points.items():
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
    if cost == "params":
        ax.set_xscale("log")
    ax.set_xlabel(COSTS[cost])
    ax.set_ylabel("test accuracy")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    ax.set_title(f"accuracy vs {cost.replace('_', ' ')}")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- report files


def small_png(png: bytes, max_chars: int = MAX_SMALL_URI) -> bytes:
    """Shrink PNG bytes (halving the size each time) until their data URI fits in `max_chars`."""
    from PIL import Image

    image = Image.open(io.BytesIO(png))
    while len(plots.png_data_uri(png)) > max_chars and min(image.size) > 16:
        image = image.resize((max(1, image.width // 2), max(1, image.height // 2)), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", optimize=True)
        png = buffer.getvalue()
    return png


def _report_figures(summaries: Sequence[Row], rows: Sequence[Row], class_names: Sequence[str]) -> dict[str, Callable[[], Figure]]:
    """Factories (called once per resolution) of the report's figures; none when nothing finished."""
    if not any(s.get("status", "ok") == "ok" for s in summaries):
        return {}
    return {
        "f1_heatmap": lambda: plot_f1_heatmap(per_class_f1_table(rows, class_names)),
        "accuracy_vs_params": lambda: plot_accuracy_vs_cost(summaries, "params"),
        "accuracy_vs_seconds": lambda: plot_accuracy_vs_cost(summaries, "train_seconds"),
    }


def write_report(storage: Storage, folder: str, summaries: Sequence[Row], rows: Sequence[Row], class_names: Sequence[str], dataset: str, repeats: int, galleries: Mapping[str, bytes] | None = None) -> dict[str, Any]:
    """Write <folder>/report.md (images under <folder>/report/, linked relatively), comparison.md and comparison.csv."""
    folder = folder.strip("/")
    images: dict[str, str] = {}
    small: dict[str, str] = {}
    links: dict[str, str] = {}

    def put(name: str, full: bytes, thumb: bytes) -> None:
        rel = f"report/{safe_name(name, 'image')}.png"
        images[name] = storage.write_bytes(f"{folder}/{rel}", full)
        small[name] = plots.png_data_uri(small_png(thumb))
        links[name] = rel

    for name, make in _report_figures(summaries, rows, class_names).items():
        put(name, plots.figure_to_png(make(), dpi=FULL_DPI), plots.figure_to_png(make(), dpi=SMALL_DPI))
    for name, png in (galleries or {}).items():
        put(f"gallery_{name}", png, png)
    comparison_md = comparison_markdown(summaries, dataset, repeats)
    error_md = error_analysis_markdown(rows, class_names)
    storage.write_text(f"{folder}/comparison.md", comparison_md)
    csv_url = storage.write_text(f"{folder}/comparison.csv", comparison_frame(summaries, repeats).to_csv(index=False))
    report = storage.write_text(f"{folder}/report.md", _report_text(dataset, comparison_md, error_md, links))
    return {"report": report, "comparison_csv": csv_url, "comparison_md": comparison_md, "error_analysis_md": error_md, "images": images, "images_small": small}


def _report_text(dataset: str, comparison_md: str, error_md: str, links: Mapping[str, str]) -> str:
    """report.md: comparison, accuracy-vs-cost plots, error analysis, galleries; images linked by relative path."""
    def image(name: str, alt: str) -> str:
        return f"![{alt}]({links[name]})\n" if name in links else ""

    parts = [f"# {dataset}: variant comparison\n", comparison_md]
    if "accuracy_vs_params" in links:
        parts += ["## Accuracy vs cost\n", image("accuracy_vs_params", "accuracy vs parameters"), image("accuracy_vs_seconds", "accuracy vs training seconds")]
    parts += ["## Error analysis\n", error_md, image("f1_heatmap", "per-class F1 heatmap")]
    gallery = [n for n in links if n.startswith("gallery_")]
    if gallery:
        parts += ["## Galleries\n"] + [f"### {n.removeprefix('gallery_').replace('_', ' ')}\n\n{image(n, n)}" for n in gallery]
    return "\n".join(parts)
