"""docs/performance.md from the end-to-end and threads JSON under benchmarks/results/ (benchmarks/render.py writes it):
where a comparison's wall time goes, before and after issue 26's cuts, what --parallel auto chose, the full comparison
per variant, the GPU run (or that it is missing), and the cost model behind the parallel rule."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.record import read_result
from cnn.report import markdown_table

VARIANT_COLUMNS = (  # (the breakdown's key, the column's head)
    ("wall", "wall s"),
    ("training", "epochs"),
    ("around the epochs", "around the epochs"),
    ("LR range test", "LR test"),
    ("evaluation", "evaluation"),
    ("feature maps and plots", "plots"),
    ("the per-variant artifact", "artifact"),
)
GPU_COMMAND = "cnn-lab bench --end-to-end --full --device cuda"
GPU_TARGET_S = 60.0
GPU_ACCURACY_POINTS = 0.01  # every variant within 1 point of its CPU-recipe accuracy


def _load(results: Path, name: str) -> dict[str, Any] | None:
    path = results / f"{name}.json"
    return read_result(path) if path.exists() else None


def _s(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _where(result: Mapping[str, Any]) -> str:
    """The machine and load a result was measured on, in one phrase."""
    env = result["environment"]
    load = env.get("load_avg") or [None]
    return (
        f"{env.get('cpu_count')} cores ({env.get('device_name')}), torch {env.get('torch')}, prefect "
        f"{env.get('prefect')}, load average {_s(load[0])} at the start"
    )


def _sources(pairs: Sequence[tuple[str, Mapping[str, Any] | None]]) -> list[str]:
    """One line per JSON file used: its name, the command that wrote it, the machine and load."""
    return [f"- `benchmarks/results/{name}.json`: `{r['command']}`; {_where(r)}" for name, r in pairs if r]


def quickstart_section(after: Mapping[str, Any], before: Mapping[str, Any] | None) -> list[str]:
    """The README quickstart as a user runs it, and one in-process flow run per part, before and after."""
    runs = [("before", before), ("after", after)] if before else [("measured", after)]
    head = ["", *(label for label, _ in runs)]
    q = {label: r["quickstart"] for label, r in runs}
    rows = [
        ["seeds a variant (`--repeats`: the default when measured)", *(str(v.get("repeats", 1)) for v in q.values())],
        ["`cnn-lab compare`, fresh store: wall (CPU) s", *(f"{_s(v['fresh_s'])} ({_s(v['fresh_cpu_s'])})" for v in q.values())],
        ["identical rerun: wall (CPU) s", *(f"{_s(v['rerun_s'])} ({_s(v['rerun_cpu_s'])})" for v in q.values())],
        ["cores other processes kept busy (fresh runs)", *(_others(v) for v in q.values())],
        ["importing torch, Prefect, cnn-lab (s)", *(_s(v["imports_s"]) for v in q.values())],
        ["temporary server start (s)", *(_s(r["server_start_s"]) for _, r in runs)],
    ]  # fmt: skip
    flows = {label: r["flow"] for label, r in runs}
    parts = list(after["flow"]["parts_s"])
    share = [
        [part, *(f"{_s(f['parts_s'].get(part))} ({_pct(f['parts_s'].get(part), f['flow_s'])})" for f in flows.values())]
        for part in parts
    ]
    share += [
        ["Prefect (outside every step)", *(f"{_s(f['prefect_s'])} ({_pct(f['prefect_s'], f['flow_s'])})" for f in flows.values())],
        ["the flow run", *(_s(f["flow_s"]) for f in flows.values())],
    ]  # fmt: skip
    return [
        "## The README quickstart",
        "",
        f"`{' '.join(['cnn-lab compare', *after['quickstart']['setup'].split()])}` in a fresh interpreter, as a user runs "
        f"it (median of {len(after['quickstart']['runs'])}), at the default number of seeds of its day (records "
        "without one were measured when the default was one seed); CPU seconds are the command's and its "
        "children's, the figure other processes disturb least. Targets (issue 26, 2 cores): 12 s fresh, 5 s rerun. "
        "The in-process runs below train one seed a variant (`--repeats 1`).",
        "",
        markdown_table(head, rows),
        "",
        _start_up(after),
        "",
        "One flow run of the quickstart in the benchmark's process, seconds per part (share of the flow run):",
        "",
        markdown_table(["part", *(label for label, _ in runs)], share),
        "",
        "Per variant (after):",
        "",
        variants_table(after["flow"]["variants"]),
        "",
    ]


def _start_up(result: Mapping[str, Any]) -> str:
    """Why a rerun cannot go below the command's start-up: the imports and the server, from the figures."""
    quick = result["quickstart"]
    start = max(quick["imports_s"], result["server_start_s"])
    return (
        f"Every command, a cached rerun too, starts an interpreter that imports torch and Prefect "
        f"({_s(quick['imports_s'])} s) and its temporary Prefect server ({_s(result['server_start_s'])} s, launched "
        f"while the imports run): about {_s(start)} s before the flow starts; then every artifact is published again "
        "(each run shows its own results in the UI). A server that stays (`PREFECT_API_URL`) takes the server's start "
        "off."
    )


def _others(quick: Mapping[str, Any]) -> str:
    loads = [r["fresh"].get("others") for r in quick["runs"] if r["fresh"].get("others") is not None]
    return "-" if not loads else f"{min(loads):.1f}-{max(loads):.1f}"


def _pct(part: float | None, whole: float) -> str:
    return "-" if part is None else f"{100 * part / max(whole, 1e-9):.0f}%"


def variants_table(variants: Mapping[str, Mapping[str, float]]) -> str:
    """One row per variant: its wall seconds and its parts."""
    rows = [[v, *(_s(parts.get(key)) for key, _ in VARIANT_COLUMNS)] for v, parts in variants.items()]
    return markdown_table(["variant", *(head for _, head in VARIANT_COLUMNS)], rows)


def parallel_section(after: Mapping[str, Any], before: Mapping[str, Any] | None) -> list[str]:
    """--parallel auto against --parallel 1 for each case, before and after, with the rule's prediction."""
    earlier = {c["case"]: c for c in (before or {}).get("parallel", [])}
    rows = []
    for case in after.get("parallel", []):
        old = earlier.get(case["case"])
        pred = case.get("predicted") or {}
        rows.append(
            [
                case["case"],
                _parallel_cell(old) if old else "-",
                _parallel_cell(case),
                f"{_s(pred.get('one_process_s'), 0)} s in one process, {_s(pred.get('chosen_s'), 0)} s with {pred.get('workers')}",
                "yes" if case["identical_metrics"] else "NO",
            ]
        )
    return [
        "## --parallel auto against --parallel 1",
        "",
        "Each case runs with `--parallel 1` and with the default `auto`, every step refreshed, in the order 1, auto, auto, "
        "1; the faster run of each counts. Cells: `--parallel 1` s / auto s (workers auto ran), auto's speed-up. The "
        "rule (cnn/parallel.py) predicts each variant's seconds on one core and adds a worker only where it beats one "
        "process by a fifth after the worker's start-up.",
        "",
        markdown_table(["case", "before", "after", "the rule predicted (after)", "same metrics"], rows),
        "",
        *(
            [
                "Where the metrics differ, the variants trained with another number of torch threads (all the free "
                "cores in one process, a share of them on each worker), which sums floating-point numbers in another "
                "order; the seeds, data order and recipe are the same.",
                "",
            ]
            if any(not c["identical_metrics"] for c in after.get("parallel", []))
            else []
        ),
    ]


def _parallel_cell(case: Mapping[str, Any]) -> str:
    one, auto = case["1"], case["auto"]
    same = " (one process: the run --parallel 1 makes)" if auto["workers"] == 1 else ""
    return f"{_s(one['wall_s'])} / {_s(auto['wall_s'])} ({auto['workers']}), {case['speedup']:.2f}x{same}"


def targets_section(results: Sequence[tuple[str, Mapping[str, Any] | None]]) -> list[str]:
    """Every target the results measured, before and after: its value and whether it was met."""
    seen: dict[str, dict[str, Any]] = {}
    for when, result in results:
        for check in (result or {}).get("targets", []):
            seen.setdefault(check["target"], {})[when] = check
    rows = [
        [target, *(_target_cell(by_when.get(when)) for when in ("before", "after"))] for target, by_when in seen.items()
    ]
    return ["## Targets", "", markdown_table(["target", "before", "after"], rows), ""] if rows else []


def _target_cell(check: Mapping[str, Any] | None) -> str:
    if check is None:
        return "-"
    return f"{check['value']} {'met' if check['met'] else 'MISSED'}" + (
        f" ({check['note']})" if check.get("note") else ""
    )


def training_floor(full: Mapping[str, Any]) -> str:
    """One sentence: the epochs' own seconds over the workers, the least wall time any cut outside training can reach."""
    epochs = sum(parts.get("training", 0.0) for parts in full["variants"].values())
    return (
        f"The epochs alone took {epochs:.0f} training-seconds: over {full['workers']} workers at least "
        f"{epochs / max(1, full['workers']):.0f} s, whatever the steps around them cost."
    )


def full_section(after: Mapping[str, Any], before: Mapping[str, Any] | None) -> list[str]:
    """The full comparison on CPU: total and per variant, before and after, against the 130 s target."""
    full = after["full"]
    setup = full["setup"]
    lines = [
        "## The full comparison on CPU",
        "",
        f"{len(setup['variants'])} variants (every built-in but AlexNet) on {setup['n_train']:,} test-made "
        "FashionMNIST-shaped images, the default recipe (epochs, batch, range test, `--parallel auto`) at one seed a "
        "variant (`--repeats 1`; the default, auto, trains 3 as one batched model: docs/seeds.md), every step and "
        f"artifact. Target (issue 26, 2 cores): 130 s. After: {_s(full['wall_s'])} s wall, {full['workers']} variants at "
        f"once, {_s(full['idle_worker_s'])} idle worker seconds"
        + (f"; before: {_s(before['full']['wall_s'])} s, {before['full']['workers']} at once." if before else ".")
        + f" {training_floor(full)}",
        "",
        variants_table(full["variants"]),
        "",
    ]
    if before:
        lines += ["Before:", "", variants_table(before["full"]["variants"]), ""]
    pred = full.get("predicted")
    if pred:
        rows = [
            [v, _s(seconds), _s(full["variants"].get(v, {}).get("wall"))] for v, seconds in pred["variant_s"].items()
        ]
        lines += [
            "The parallel rule's cost model (cnn/parallel.py `job_seconds`) against each variant's measured wall time "
            f"(predicted {_s(pred['one_process_s'], 0)} s in one process, {_s(pred['chosen_s'], 0)} s with "
            f"{pred['workers']} at once):",
            "",
            markdown_table(["variant", "predicted s (one core)", "measured s"], rows),
            "",
        ]
    return lines


def gpu_section(gpu: Mapping[str, Any] | None, cpu: Mapping[str, Any] | None) -> list[str]:
    """The full comparison on a GPU against its 60 s target and the CPU run's accuracies, or that it is missing."""
    lines = ["## The full comparison on a GPU", ""]
    if not gpu:
        return lines + [
            "Not measured: no GPU was lent to the session that built this. The command is ready (tested on CPU at a "
            f"small size): `{GPU_COMMAND}` writes `benchmarks/results/end-to-end-full-cuda.json`; rerun "
            "`python -m benchmarks.render` and this section shows its time per variant against the 60 s target and each "
            "variant's accuracy against the CPU run's.",
            "",
        ]
    full = gpu["full"]
    cpu_acc = (cpu or {}).get("full", {}).get("test_acc", {})
    rows = []
    for v, acc in full["test_acc"].items():
        ref = cpu_acc.get(v)
        diff = None if acc is None or ref is None else acc - ref
        ok = "-" if diff is None else ("yes" if diff >= -GPU_ACCURACY_POINTS else "NO")
        rows.append([v, _s(full["variants"].get(v, {}).get("wall")), _s(acc, 4), _s(ref, 4), ok])
    return lines + [
        f"{_where(gpu)}; {gpu['environment'].get('device_name')}. {len(full['setup']['variants'])} variants: "
        f"{_s(full['wall_s'])} s end to end (target {GPU_TARGET_S:g} s).",
        "",
        markdown_table(["variant", "wall s", "test acc", "CPU run's", "within 1 point"], rows),
        "",
    ]


def threads_section(threads: Mapping[str, Any]) -> list[str]:
    """Steps at one torch thread and at every core, with the cores others kept busy: why busy cores get no threads."""
    rows = [
        [r["variant"], str(r["threads"]), _s(r["wall_ms"]), _s(r["cpu_ms"]), _s(r["others"], 2)]
        for r in threads["rows"]
    ]
    return [
        "## Torch threads and busy cores",
        "",
        "A comparison gives torch only the cores other processes leave free (cnn.parallel.busy_cpus, watched for 0.2 s "
        "when the variants start): OpenMP threads that outnumber the free cores wait on each other at every op. "
        f"Milliseconds per training step at batch {threads['rows'][0]['batch_size'] if threads['rows'] else '-'} "
        "(median), and the cores other processes kept busy meanwhile:",
        "",
        markdown_table(["variant", "threads", "ms/step", "CPU ms/step", "others"], rows),
        "",
    ]


def page(results: Path) -> str | None:
    """docs/performance.md from the JSON in `results` (None when the end-to-end result is missing)."""
    after = _load(results, "end-to-end-cpu")
    if after is None:
        return None
    before = _load(results, "end-to-end-cpu-before")
    full, full_before = _load(results, "end-to-end-full-cpu"), _load(results, "end-to-end-full-cpu-before")
    gpu, threads = _load(results, "end-to-end-full-cuda"), _load(results, "threads-cpu")
    lines = [
        "# Performance: where a comparison's time goes",
        "",
        'Rendered by `python -m benchmarks.render` from the JSON below; do not edit by hand. "Before" is the same '
        "benchmark run on the code before issue 26's cuts, on the same machine in the same session. The machine is "
        "shared: read the load with every figure.",
        "",
        *_sources(
            [
                ("end-to-end-cpu", after),
                ("end-to-end-cpu-before", before),
                ("end-to-end-full-cpu", full),
                ("end-to-end-full-cpu-before", full_before),
                ("end-to-end-full-cuda", gpu),
                ("threads-cpu", threads),
            ]
        ),
        "",
        *targets_section([("before", before), ("after", after), ("before", full_before), ("after", full)]),
        *quickstart_section(after, before),
        *parallel_section(after, before),
    ]
    if full:
        lines += full_section(full, full_before)
    lines += gpu_section(gpu, full)
    if threads:
        lines += threads_section(threads)
    return "\n".join(lines)
