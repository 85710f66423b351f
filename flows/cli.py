"""The `cnn-lab` command: compare, retrain, variants, bench.

One module: the four commands share the option parser built from RunParams, the pre-torch checks and the one-line
error and interrupt handling, and each command is a short function over flows/ and benchmarks/."""

from __future__ import annotations

import argparse
import atexit
import json
import os
import sys
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from cnn.params import RunParams

# The README quickstart (tests/test_readme.py checks that the README shows this command): the default recipe on two
# variants of the bundled digits, offline, with no warning
QUICKSTART = "cnn-lab compare --dataset digits --variants lenet1,generic_2 --epochs 3"


# CLI spellings that differ from the parameter names (the parameters keep theirs in flows and deployments)
OPTION_NAMES = {"variant_files": "--variant", "variant_modules": "--variant-module"}
# `cnn-lab variants` builds each variant on the meta device for this input: (option, default, upper bound, help)
VARIANT_TABLE_OPTIONS = (
    ("--channels", 1, 1_024, "image channels (1 grey, 3 RGB); at most 1,024"),
    ("--classes", 10, 100_000, "classes to tell apart; at most 100,000 (ImageNet-21k has 21,841)"),
    ("--size", 28, 4_096, "native image side of the dataset; at most 4,096 (AlexNet's input is 224)"),
)


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (`cnn-lab: ...`, exit 2) and a suggestion for a mistyped option."""

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        """Print one line and exit 2."""
        from cnn.errors import did_you_mean

        unknown = message.removeprefix("unrecognized arguments: ").split()
        options = [o for action in self._actions for o in action.option_strings]
        for sub in self._subparsers._group_actions if self._subparsers else []:  # type: ignore[union-attr]
            for parser in getattr(sub, "choices", {}).values():
                options += [o for action in parser._actions for o in action.option_strings]
        typed = message.startswith("unrecognized") and unknown
        hint = did_you_mean(unknown[0].split("=")[0], options, cutoff=0.6, quote=False) if typed else ""
        self.exit(2, f"{self.prog}: {message}{hint}\n")


def add_run_options(p: argparse.ArgumentParser, fields: Iterable[str]) -> None:
    """One option per run parameter, with its description and default as help; unset options keep the model's default."""
    from cnn.checks import Choice, LearningRate, Number
    from cnn.params import ModuleList, Refresh, RunParams, VariantFiles, VariantNames, check_of

    for name in fields:
        info = RunParams.model_fields[name]
        marker = check_of(name)
        default = info.default
        shown = ",".join(default) if isinstance(default, list) else default
        text = f"{info.description} Default: {shown if shown not in ('', {}) else 'none'}.".replace("%", "%%")
        kwargs: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS, "help": text, "metavar": name.upper()}
        if isinstance(marker, Refresh):
            kwargs.update(nargs="?", const=True, metavar="STEPS")
        elif isinstance(marker, (VariantFiles, ModuleList)):
            kwargs.update(action="append", metavar="NAME=FILE" if isinstance(marker, VariantFiles) else "MODULE")
        elif isinstance(marker, Choice):
            kwargs["metavar"] = "{" + ",".join(marker.choices) + "}"
        elif isinstance(marker, Number):
            kwargs["metavar"] = "N" if marker.integer else "X"
        elif isinstance(marker, LearningRate):
            kwargs["metavar"] = "auto|X"
        elif isinstance(marker, VariantNames):
            kwargs["metavar"] = "A,B,..."
        p.add_argument(OPTION_NAMES.get(name, "--" + name.replace("_", "-")), **kwargs)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with its four subcommands; compare and retrain take the flows' parameters."""
    from cnn.checks import Number, option_type
    from cnn.params import seed_list
    from flows.parameters import COMPARE_FIELDS, RETRAIN_FIELDS

    parser = Parser(prog="cnn-lab", description="Train, compare and inspect CNN architectures as Prefect flows.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    compare = sub.add_parser(
        "compare",
        help="compare variants on a dataset (the compare-architectures flow)",
        description=f"Example: {QUICKSTART}",
    )
    add_run_options(compare, COMPARE_FIELDS)
    compare.add_argument(
        "--quiet", action="store_true", help="no epoch progress in the terminal (the run's log keeps it)"
    )
    retrain = sub.add_parser(
        "retrain",
        help="retrain one variant of a comparison afresh (its settings unless given) and publish its table again",
        description="Options left out take the comparison's recorded values (epochs, batch size, optimizer, seeds...).",
    )
    retrain.add_argument("variant")
    add_run_options(retrain, [f for f in RETRAIN_FIELDS if f != "variant"])
    retrain.add_argument(
        "--quiet", action="store_true", help="no epoch progress in the terminal (the run's log keeps it)"
    )
    variants = sub.add_parser("variants", help="list variants with parameter counts and input sizes")
    for option, default, bound, text in VARIANT_TABLE_OPTIONS:
        variants.add_argument(
            option, type=option_type(Number(integer=True, ge=1, le=bound)), default=default, help=text, metavar="N"
        )
    variants.add_argument("--json", action="store_true")
    add_run_options(variants, ["variant_files", "variant_modules"])
    bench = sub.add_parser("bench", help="benchmark cnn-lab's training path against the student pipeline")
    bench.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    bench.add_argument("--json", action="store_true")
    bench.add_argument("--device", default="auto")
    bench.add_argument(
        "--prefect-overhead", action="store_true", help="also time the comparison flow against a plain loop"
    )
    bench.add_argument(
        "--end-to-end",
        action="store_true",
        help="instead: where the README quickstart's wall time goes (start-up, server, each part and variant, Prefect, idle workers) and what --parallel auto gains (see flows/overhead.py)",
    )
    bench.add_argument(
        "--full",
        action="store_true",
        help="with --end-to-end: the full comparison instead (every variant for --device, 60,000 test-made images, the default recipe)",
    )
    bench.add_argument(
        "--repeats",
        type=option_type(Number(integer=True, ge=1, le=20)),
        default=1,
        help="with --end-to-end: quickstart runs (fresh and rerun); the medians count",
    )
    bench.add_argument(
        "--json-out",
        default=None,
        help="where the figures go as JSON (default: benchmarks/results/<benchmark>.json; none for --quick)",
    )
    bench.add_argument(
        "--all-variants",
        action="store_true",
        help="instead: every variant x 10 epochs at batch 2048 and at the student pipeline's 64 (a GPU's job; see benchmarks/variants.py)",
    )
    bench.add_argument(
        "--recipe",
        action="store_true",
        help="instead: the default recipe against a plain PyTorch loop (Adam 1e-3, batch 32), variant x dataset x seed",
    )
    bench.add_argument(
        "--verdict",
        action="store_true",
        help="instead: the verdict's calibration, the false-alarm rate (cnn2_5 vs generic_0) and the power of the paired tests (see benchmarks/verdict.py)",
    )
    bench.add_argument(
        "--datasets",
        default="digits,distorted-digits-small",
        help="with --recipe: digits, distorted-digits-small/-medium/-large",
    )
    bench.add_argument("--variants", default="all", help="with --recipe: comma-separated variant names, or 'all'")
    bench.add_argument(
        "--seeds", default="0,1,2", type=option_type(seed_list()), help="with --recipe: comma-separated seeds"
    )
    return parser


def run_params(args: argparse.Namespace, **fixed: Any) -> RunParams:
    """The checked RunParams from the options given (and `fixed` values); the first bad one raises ConfigError."""
    from cnn.params import RunParams, parse_params

    given = {name: value for name, value in vars(args).items() if name in RunParams.model_fields}
    return parse_params({**given, **fixed})


def checked_config(params: RunParams, variants: list[str] | None = None) -> RunParams:
    """Check names, device and store before torch loads (cnn.fastchecks), then load plug-ins and check them all with
    the registries and torch, before Prefect starts (ConfigError/StorageError otherwise): the run's config."""
    from cnn.fastchecks import fast_checks

    fast_checks(params, variants)
    from flows.settings import prepare_run

    return prepare_run(params, variants)


class Interrupted(Exception):
    """Ctrl-C or SIGTERM stopped the flow run (which the server now shows as Crashed); `run` is its run folder, when
    known."""

    def __init__(self, run: str | None):
        self.run = run
        super().__init__(run)


def _run_flow(flow_fn: Any, kwargs: dict[str, Any], quiet: bool) -> Any:
    """Run a flow in this process (on a temporary server tied to it unless PREFECT_API_URL is set); return its state.

    Ctrl-C or SIGTERM raises Interrupted once the flow run is recorded as Crashed (flows.interrupts); cnn-lab's own
    errors are logged without their traceback (flows.failures), each epoch shows once (flows.terminal_progress), and the
    temporary server's telemetry is off unless the user set it (flows.local_server)."""
    from flows import interrupts
    from flows.failures import quiet_tracebacks
    from flows.local_server import start_tied_server
    from flows.terminal_progress import EpochDisplay
    from tasks.progress import LISTENERS, RUN_LISTENERS

    display = EpochDisplay(quiet)
    LISTENERS.append(display)
    runs: list[str] = []
    RUN_LISTENERS.append(runs.append)
    quiet_tracebacks()
    try:
        with display:
            start_tied_server()
            state = flow_fn(**kwargs, return_state=True)
    except KeyboardInterrupt:
        raise Interrupted(runs[-1] if runs else None) from None
    if state.is_crashed() and interrupts.received():
        raise Interrupted(runs[-1] if runs else None)
    return state


def _launch_server() -> None:
    """Check Prefect's home and server variables, then start the temporary Prefect server now (when no PREFECT_API_URL
    is set), so that it starts while torch loads."""
    from flows.local_server import check_prefect_environment, launch_tied_server

    check_prefect_environment()
    launch_tied_server()


def cmd_compare(args: argparse.Namespace) -> int:
    """Check every parameter, run the comparison flow and print its table."""
    from flows.parameters import COMPARE_FIELDS

    start = time.perf_counter()
    params = run_params(args)
    _launch_server()
    checked_config(params)
    from flows.compare import compare_architectures
    from flows.failures import flow_output

    kwargs = params.model_dump(include=set(COMPARE_FIELDS))
    state = _run_flow(compare_architectures, kwargs, args.quiet)
    result = flow_output(state)
    if isinstance(result, dict) and "comparison_md" in result:
        print(comparison_table_text(result, params))
    else:
        print(f"comparison failed: {state.message or result}", file=sys.stderr)
    print(f"flow run {state.name}, {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0 if state.is_completed() else 1


def comparison_table_text(result: dict[str, Any], params: RunParams) -> str:
    """The comparison as the terminal shows it (120 columns), the report's path relative to the store on the last line."""
    from cnn.report import Change, comparison_text
    from cnn.report.tables import relative_path
    from cnn.storage import open_storage

    root = open_storage(params.storage).url
    summaries = result["summaries"]  # the published ones: with the verdict
    repeats = max([int(s.get("n_seeds") or 1) for s in summaries] or [1])
    changes = [Change(**c) for c in result.get("changes") or []]
    text = comparison_text(
        summaries, params.dataset.lower(), repeats, root=root, notes=result.get("notes") or (), changes=changes
    )
    return f"{text}report: {relative_path(result['report'], root)}"


def cmd_retrain(args: argparse.Namespace) -> int:
    """Retrain one variant of a recorded comparison (the retrain-variant flow: the comparison's settings unless typed
    here), and print the comparison's new table."""
    from flows.parameters import RETRAIN_FIELDS

    start = time.perf_counter()
    params = run_params(args)
    _launch_server()
    checked_config(params, [params.variant])
    from cnn.comparisons import read_comparison
    from cnn.storage import open_storage
    from flows.failures import flow_output
    from flows.retrain import check_retrainable, retrain_variant

    dataset = params.dataset.lower()  # its records are checked before Prefect starts, as the flow checks them again
    found = read_comparison(open_storage(params.storage), dataset, params.comparison)
    check_retrainable(params.variant, found, params.storage, dataset, params.comparison)

    given = {name: value for name, value in vars(args).items() if name in RETRAIN_FIELDS}
    kwargs = {name: getattr(params, name) for name in given}  # the checked values of the options typed
    state = _run_flow(retrain_variant, kwargs, args.quiet)
    result = flow_output(state)
    if isinstance(result, dict) and "comparison_md" in result:
        print(comparison_table_text(result, params))
    else:
        print(f"retrain failed: {state.message or result}", file=sys.stderr)
    print(f"flow run {state.name}, {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0 if state.is_completed() else 1


def cmd_variants(args: argparse.Namespace) -> int:
    """Print the variants table (with the plug-ins named by --variant-module and --variant)."""
    from cnn.models import load_variants, variant_table

    params = run_params(args)
    load_variants(params.variant_modules, params.variant_files)
    rows = variant_table(args.channels, args.classes, args.size)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'name':<16} {'params':>12} {'input':>6}  description")
    for r in rows:
        origin = "" if r["origin"] == "built-in" else f" [{r['origin']}]"
        print(f"{r['name']:<16} {r['params']:>12,} {r['input_size']:>6}  {r['description']}{origin}")
    return 0


def _results_file(args: argparse.Namespace, name: str) -> str | None:
    """Where a bench run writes its figures: --json-out, else benchmarks/results/<name>.json (none for --quick)."""
    from benchmarks.record import output_path

    out = output_path(args.json_out, name, args.quick)
    return str(out) if out else None


def _save(args: argparse.Namespace, name: str, result: dict[str, Any]) -> None:
    """Write a bench result with its command as JSON (see `_results_file`)."""
    from benchmarks.record import write_result

    result.setdefault("command", " ".join(["cnn-lab", *sys.argv[1:]]))
    if out := _results_file(args, name):
        write_result(result, out)


def cmd_bench(args: argparse.Namespace) -> int:
    """Run the benchmarks, print a table (or JSON) and write the figures as JSON (benchmarks/record.py)."""
    from benchmarks.speed import run_benchmarks
    from benchmarks.speed_report import format_table
    from cnn.train_setup import resolve_device

    if args.recipe:
        from benchmarks import recipe

        out = "/dev/stdout" if args.json else _results_file(args, "recipe")
        recipe.main(
            [
                "--datasets",
                args.datasets,
                "--variants",
                args.variants,
                "--seeds",
                ",".join(str(seed) for seed in args.seeds),
                "--device",
                "cpu" if args.device == "auto" else args.device,
            ]
            + (["--json", out] if out else [])
        )
        return 0
    if args.verdict:
        from benchmarks import verdict

        quick = [
            "--checks",
            "false-alarm:digits:cnn2_5:generic_0",
            "--pool",
            "5",
            "--trials",
            "20",
            "--repeat-seeds",
            "2",
        ]
        device = ["--device", "cpu" if args.device == "auto" else args.device]
        out = "/dev/stdout" if args.json else (_results_file(args, "verdict") or os.devnull)  # quick: keep none
        verdict.main((quick if args.quick else []) + device + ["--json", out])
        return 0
    if args.end_to_end:
        from flows.overhead import bench_end_to_end, format_end_to_end

        device = args.device if args.full else ("cpu" if args.device == "auto" else args.device)
        result = bench_end_to_end(
            quick=args.quick,
            full=args.full,
            device=device,
            repeats=args.repeats,
            command=" ".join(["cnn-lab", *sys.argv[1:]]),
        )
        _save(args, f"{result['benchmark']}-{result['environment']['device'].split(':')[0]}", result)
        print(json.dumps(result, indent=2, default=str) if args.json else format_end_to_end(result))
        return 0
    if args.all_variants:
        from benchmarks import variants as bench_variants

        small = (
            {"variants": ["lenet1", "cnn2_5"], "epochs": 2, "batch_size": 256, "n_train": 1_500, "n_test": 300}
            if args.quick
            else {}
        )
        result = bench_variants.bench_variants(device=args.device, **small)
        _save(args, f"variants-{resolve_device(args.device).type}", result)
        print(json.dumps(result, indent=2, default=str) if args.json else bench_variants.format_variants(result))
        return 0
    results = run_benchmarks(quick=args.quick, device=args.device)
    if args.prefect_overhead:
        from flows.overhead import bench_prefect_overhead

        results["prefect_overhead"] = bench_prefect_overhead(quick=args.quick)
    _save(args, f"speed-{resolve_device(args.device).type}", results)
    print(json.dumps(results, indent=2, default=str) if args.json else format_table(results))
    return 0


COMMANDS = {"compare": cmd_compare, "retrain": cmd_retrain, "variants": cmd_variants, "bench": cmd_bench}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `cnn-lab` console script."""
    from flows import interrupts

    with interrupts.handled():  # first: Ctrl-C or SIGTERM while the imports below run ends in one line too
        args = None
        try:
            args = build_parser().parse_args(argv)
            return _run_command(args)
        except Interrupted as stop:
            interrupts.tell(_interrupted_line(args, stop.run))
        except KeyboardInterrupt:  # outside a flow run (while importing, variants, bench, before the flow started)
            interrupts.tell(interrupts.word())
        _exit_now(interrupts.exit_code())
    return interrupts.exit_code()  # not reached: _exit_now leaves


def _run_command(args: argparse.Namespace) -> int:
    """Run the subcommand; a cnn-lab error is one line on stderr and exit code 2."""
    from cnn.errors import CnnLabError

    try:
        return COMMANDS[args.command](args)
    except CnnLabError as err:
        print(f"cnn-lab: {err}", file=sys.stderr)
        return 2


def _exit_now(code: int) -> None:
    """Run the exit handlers (they send the last logs and stop the temporary server), then leave without Python's module
    teardown, which takes seconds with torch and Prefect loaded: a Ctrl-C ends the command within a few seconds."""
    sys.stdout.flush()
    sys.stderr.flush()
    atexit._run_exitfuncs()
    os._exit(code)


def _interrupted_line(args: argparse.Namespace | None, run: str | None) -> str:
    """What to do after Ctrl-C or SIGTERM: finished steps are cached and training resumes from the checkpoint in the
    same run folder."""
    from flows.interrupts import word

    if args is None:
        return word()
    if args.command == "retrain":
        return f"{word()}; nothing was published: rerun the same command to retrain afresh"
    if getattr(args, "run", None) is None and run:
        return f"{word()}; rerun the same command with --run {run} to resume"
    return f"{word()}; rerun the same command to resume"


if __name__ == "__main__":
    raise SystemExit(main())
