"""Where a comparison flow run's wall time went: seconds per part and per variant, read back from its task runs (the
end-to-end benchmark, flows/overhead.py, prints and stores them)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# task name (the function a task wraps: the start of its task key) -> the part its seconds count towards
PART_OF_TASK = {
    "prepare_dataset": "dataset preparation",
    "lr_range_test": "LR range test",
    "train_variant": "training",
    "evaluate_variant": "evaluation",
    "extract_features": "feature maps and plots",
    "publish_variant": "the per-variant artifact",
    "record_comparison": "publishing",
    "publish_comparison": "publishing",
}
AROUND = "around the epochs"  # the training step's seconds outside its epochs: learn check, checkpoints, loss plot
VARIANT_PARTS = (
    "training",
    AROUND,
    "LR range test",
    "evaluation",
    "feature maps and plots",
    "the per-variant artifact",
)
RUN_PARTS = ("dataset preparation", "publishing")
PARTS = VARIANT_PARTS + RUN_PARTS
SHORT = dict(zip(VARIANT_PARTS, ("train", "around", "lr", "eval", "plots", "artifact")))  # column heads
VARIANT_TASK = "variant_steps"  # one task run per variant when variants run in worker processes


@dataclass(frozen=True)
class StepRun:
    """One finished task run: its task, the variant it served (None for the run-wide ones), when it started and ended."""

    task: str
    variant: str | None
    start: float
    end: float

    @property
    def seconds(self) -> float:
        """How long it ran."""
        return self.end - self.start


def step_run(task_key: str, name: str, start: float, end: float) -> StepRun:
    """A StepRun from a task run's key ("train_variant-1a2b3c") and name ("train lenet1 s0-s2": the task_run_name
    patterns of tasks/ put the variant second, flows/variant_steps.py's "variant lenet1" too)."""
    task = task_key.rsplit("-", 1)[0]
    words = name.split()
    per_variant = task == VARIANT_TASK or (task in PART_OF_TASK and PART_OF_TASK[task] in VARIANT_PARTS)
    return StepRun(task, words[1] if per_variant and len(words) > 1 else None, start, end)


def covered_seconds(intervals: Sequence[tuple[float, float]]) -> float:
    """Length of the union of [start, end] intervals (steps of variants running at once overlap)."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def most_at_once(intervals: Sequence[tuple[float, float]]) -> int:
    """The most intervals open at one time (how many variants ran at once)."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals], key=lambda x: (x[0], x[1]))
    most = now = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


def breakdown(runs: Sequence[StepRun], rows: Sequence[Mapping[str, Any]], wall_s: float) -> dict[str, Any]:
    """Seconds per part (summed over variants, so parts of variants that ran at once add up to more than the wall time),
    per variant (its parts, and its wall: its variant_steps run in a worker, else its steps end to end), Prefect's share
    (the wall time outside every step: task-run and state bookkeeping, result records, artifacts, worker start-up in the
    flow's process) and the idle worker seconds (slots x the variants' span, less the variants' own seconds)."""
    steps = [r for r in runs if r.task in PART_OF_TASK]
    epochs: dict[str, float] = {}
    for row in rows:
        epochs[str(row["variant"])] = epochs.get(str(row["variant"]), 0.0) + float(row.get("train_seconds") or 0.0)
    variants: dict[str, dict[str, float]] = {v: dict.fromkeys(VARIANT_PARTS, 0.0) for v in epochs}
    parts = dict.fromkeys(PARTS, 0.0)
    for r in steps:
        part = PART_OF_TASK[r.task]
        parts[part] += r.seconds
        if r.variant is not None:
            variants.setdefault(r.variant, dict.fromkeys(VARIANT_PARTS, 0.0))[part] += r.seconds
    for variant, seconds in variants.items():
        seconds[AROUND] = max(seconds["training"] - epochs.get(variant, 0.0), 0.0)
        seconds["training"] = epochs.get(variant, 0.0)
    parts[AROUND] = sum(v[AROUND] for v in variants.values())
    parts["training"] = sum(v["training"] for v in variants.values())
    whole = {r.variant: r for r in runs if r.task == VARIANT_TASK and r.variant}
    for variant, seconds in variants.items():
        own = [r for r in steps if r.variant == variant]
        span = (max(r.end for r in own) - min(r.start for r in own)) if own else 0.0
        seconds["wall"] = whole[variant].seconds if variant in whole else span
    slots = [(r.start, r.end) for r in whole.values()]
    workers = max(1, most_at_once(slots))
    idle = (
        workers * (max(e for _, e in slots) - min(s for s, _ in slots)) - sum(e - s for s, e in slots) if slots else 0.0
    )
    return {
        "flow_s": round(wall_s, 2),
        "parts_s": {k: round(v, 2) for k, v in parts.items()},
        "prefect_s": round(max(wall_s - covered_seconds([(r.start, r.end) for r in steps]), 0.0), 2),
        "workers": workers,
        "idle_worker_s": round(max(idle, 0.0), 2),
        "variants": {v: {k: round(s, 2) for k, s in seconds.items()} for v, seconds in variants.items()},
        "test_acc": {str(r["variant"]): r.get("test_acc") for r in rows},
    }


async def _task_runs(flow_run_id: Any) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async with get_client() as client:
        return await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))


def flow_step_runs(state: Any) -> list[StepRun]:
    """The finished task runs of the flow run that ended in `state`, as StepRuns."""
    from prefect.utilities.asyncutils import run_coro_as_sync

    runs = run_coro_as_sync(_task_runs(state.state_details.flow_run_id)) or []
    return [
        step_run(r.task_key, r.name, r.start_time.timestamp(), r.end_time.timestamp())
        for r in runs
        if r.start_time and r.end_time
    ]


def flow_breakdown(state: Any, wall_s: float) -> dict[str, Any]:
    """`breakdown` of the comparison flow run that ended in `state`, `wall_s` seconds after it was called."""
    return breakdown(flow_step_runs(state), state.result()["rows"], wall_s)


def format_breakdown(result: Mapping[str, Any], indent: str = "  ") -> list[str]:
    """The breakdown as lines: each part's seconds and share of the flow, Prefect's, idle workers', then each variant's
    wall time and parts."""
    flow_s = max(float(result["flow_s"]), 1e-9)
    lines = []
    for part, seconds in [
        *result["parts_s"].items(),
        ("Prefect (outside every step)", result["prefect_s"]),
        (f"idle workers ({result['workers']} at once)", result["idle_worker_s"]),
    ]:
        lines.append(f"{indent}{part:<44} {seconds:8.1f} s {100 * seconds / flow_s:5.1f}%")
    lines.append(f"{indent}{'variant':<16} {'wall s':>8} " + " ".join(f"{SHORT[p]:>8}" for p in VARIANT_PARTS))
    for variant, seconds in result["variants"].items():
        cells = " ".join(f"{seconds.get(p, 0.0):8.1f}" for p in VARIANT_PARTS)
        lines.append(f"{indent}{variant:<16} {seconds['wall']:8.1f} {cells}")
    return lines
