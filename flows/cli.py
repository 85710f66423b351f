"""The `cnn-lab` command: compare, retrain, variants, bench."""
from __future__ import annotations

import argparse
import atexit
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any

QUICKSTART = "cnn-lab compare --dataset digits --variants lenet1,cnn2_5,generic_2 --epochs 4 --batch-size 32"


def _lr(value: str) -> float | str:
    return value if value == "auto" else float(value)


def _int_or_auto(value: str) -> int | str:
    return value if value == "auto" else int(value)


def _common(p: argparse.ArgumentParser) -> None:
    """Options shared by compare and retrain (the flows' parameters)."""
    p.add_argument("--dataset", default="fashion-mnist", help="fashion-mnist (default), mnist, kmnist, cifar10, digits, or a torchvision set name")
    p.add_argument("--epochs", type=_int_or_auto, default="auto", help="a number, or 'auto' (default): enough to see 20,000 images, 5-30")
    p.add_argument("--batch-size", type=_int_or_auto, default="auto", help="a number, or 'auto' (default): >= 50 steps per epoch, 8-128 on CPU, 8-512 on CUDA")
    p.add_argument("--lr", type=_lr, default="auto", help="'auto' (LR range test) or a number")
    p.add_argument("--lr-min", type=float, default=1e-5)
    p.add_argument("--lr-max", type=float, default=1.0)
    p.add_argument("--lr-rule", default="min_loss_div10", help="min_loss_div10 (fastai, default) or steepest")
    p.add_argument("--optimizer", default="adam", help="adam (default), adamw or sgd")
    p.add_argument("--schedule", default="onecycle", help="onecycle, cosine or none")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default="./data", help="raw files in torchvision's layout (a mirror), or where to download")
    p.add_argument("--storage", default="./results", help="local path or s3://bucket/prefix (endpoint: AWS_ENDPOINT_URL)")
    p.add_argument("--run", default=None, help="run folder name (default: time and flow-run name)")
    p.add_argument("--val-size", type=float, default=0.1)
    p.add_argument("--max-train", type=int, default=None, help="use only this many training images")
    p.add_argument("--max-test", type=int, default=None)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--quiet", action="store_true", help="no terminal progress lines")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with its four subcommands."""
    parser = argparse.ArgumentParser(prog="cnn-lab", description="Train, compare and inspect CNN architectures as Prefect flows.")
    sub = parser.add_subparsers(dest="command", required=True)
    compare = sub.add_parser("compare", help="compare variants on a dataset (the compare-architectures flow)", description=f"Example: {QUICKSTART}")
    compare.add_argument("--variants", default="lenet1,lenet5,cnn2_5,generic_1", help="comma-separated names (see `cnn-lab variants`)")
    compare.add_argument("--repeats", type=int, default=1, help="seeds per variant")
    compare.add_argument("--refresh", action="store_true", help="ignore cached steps and run everything again")
    compare.add_argument("--train-deployment", default=None, help="dispatch each variant to this deployment (e.g. train-variant/train-variant-gpu)")
    _common(compare)
    retrain = sub.add_parser("retrain", help="retrain one variant afresh and publish an updated comparison table")
    retrain.add_argument("variant")
    _common(retrain)
    variants = sub.add_parser("variants", help="list variants with parameter counts and input sizes")
    variants.add_argument("--channels", type=int, default=1)
    variants.add_argument("--classes", type=int, default=10)
    variants.add_argument("--size", type=int, default=28, help="native image side of the dataset")
    variants.add_argument("--json", action="store_true")
    bench = sub.add_parser("bench", help="benchmark cnn-lab's training path against the seed-style pipeline")
    bench.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    bench.add_argument("--json", action="store_true")
    bench.add_argument("--device", default="auto")
    bench.add_argument("--prefect-overhead", action="store_true", help="also time the comparison flow against a plain loop")
    bench.add_argument("--all-variants", action="store_true", help="instead: every variant x 10 epochs at batch 2048 and at the seeds' 64 (a GPU's job; see cnn/bench_variants.py)")
    bench.add_argument("--recipe", action="store_true", help="instead: the default recipe against a plain PyTorch loop (Adam 1e-3, batch 32), variant x dataset x seed")
    bench.add_argument("--datasets", default="digits,distorted-digits-small", help="with --recipe: digits, distorted-digits-small/-medium/-large")
    bench.add_argument("--variants", default="all", help="with --recipe: comma-separated variant names, or 'all'")
    bench.add_argument("--seeds", default="0,1,2", help="with --recipe: comma-separated seeds")
    return parser


def _flow_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "dataset": args.dataset, "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "optimizer": args.optimizer,
        "schedule": args.schedule, "seed": args.seed, "data_dir": args.data_dir, "storage": args.storage, "run": args.run,
        "val_size": args.val_size, "max_train": args.max_train, "max_test": args.max_test, "device": args.device,
        "lr_min": args.lr_min, "lr_max": args.lr_max, "lr_rule": args.lr_rule,
    }


def _progress_printer(variant: str, row: dict[str, Any], done: float) -> None:
    print(f"[{100 * done:5.1f}%] {variant:<16} epoch {int(row['epoch'])}: loss {row['train_loss']:.4f} val_acc {row['val_acc']:.4f} ({row['images_per_sec']:.0f} img/s)", file=sys.stderr, flush=True)


class Interrupted(Exception):
    """Ctrl-C stopped the flow run (which the server now shows as Crashed); `run` is its run folder, when known."""

    def __init__(self, run: str | None):
        self.run = run
        super().__init__(run)


def _exit_at_once(signum: int, frame: Any) -> None:
    """A second Ctrl-C during the clean-up: leave now (the temporary server stops itself once this process is gone)."""
    os._exit(130)


def _run_flow(flow_fn: Any, kwargs: dict[str, Any], quiet: bool) -> Any:
    """Run a flow in this process (on a temporary server tied to it unless PREFECT_API_URL is set); return its state.

    Ctrl-C raises Interrupted once the flow run is recorded as Crashed; tracebacks of cnn-lab's own errors stay out of the
    terminal (the run's logs in the UI keep them)."""
    from flows.local_server import quiet_tracebacks, start_tied_server
    from tasks.progress import LISTENERS, RUN_LISTENERS

    if not quiet:
        LISTENERS.append(_progress_printer)
    runs: list[str] = []
    RUN_LISTENERS.append(runs.append)
    quiet_tracebacks()
    try:
        start_tied_server()
        state = flow_fn(**kwargs, return_state=True)
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, _exit_at_once)
        raise Interrupted(runs[-1] if runs else None) from None
    if state.is_crashed() and "interrupt" in str(state.message):
        signal.signal(signal.SIGINT, _exit_at_once)
        raise Interrupted(runs[-1] if runs else None)
    return state


def cmd_compare(args: argparse.Namespace) -> int:
    """Run the comparison flow and print its table."""
    from flows.compare import compare_architectures

    start = time.perf_counter()
    kwargs = {**_flow_kwargs(args), "variants": [v.strip() for v in args.variants.split(",") if v.strip()], "repeats": args.repeats, "refresh": args.refresh, "train_deployment": args.train_deployment}
    state = _run_flow(compare_architectures, kwargs, args.quiet)
    result = state.result(raise_on_failure=False)
    if isinstance(result, dict) and "comparison_md" in result:
        print(result["comparison_md"])
        print(f"\nreport: {result['report']}")
    else:
        print(f"comparison failed: {state.message or result}", file=sys.stderr)
    print(f"flow run {state.name}, {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0 if state.is_completed() else 1


def given_options(argv: Sequence[str]) -> set[str]:
    """Destinations of the --options typed on the command line (`--batch-size 32` and `--batch-size=32` give batch_size)."""
    return {tok[2:].split("=", 1)[0].replace("-", "_") for tok in argv if tok.startswith("--")}


def published_defaults(args: argparse.Namespace, argv: Sequence[str]) -> dict[str, Any]:
    """The published comparison's settings for every recipe option the user did not type (retrain keeps them)."""
    from cnn.publishing import comparison_settings, latest_rows

    published = comparison_settings(latest_rows(args.storage, args.dataset.lower())["rows"])
    return {k: v for k, v in published.items() if k not in given_options(argv)}


def cmd_retrain(args: argparse.Namespace) -> int:
    """Retrain one variant afresh (every cached step refreshed) with the published comparison's settings, and republish."""
    from flows.variant import train_variant_flow

    kwargs = {**_flow_kwargs(args), **published_defaults(args, args.argv), "variant": args.variant, "refresh": True, "publish": True}
    state = _run_flow(train_variant_flow, kwargs, args.quiet)
    row = state.result(raise_on_failure=False)
    if state.is_completed():
        print(f"{args.variant}: test accuracy {row['test_acc']:.4f}, files in {row['folder']}")
        return 0
    print(f"retrain failed: {state.message}", file=sys.stderr)
    return 1


def cmd_variants(args: argparse.Namespace) -> int:
    """Print the variants table."""
    from cnn.models import variant_table

    rows = variant_table(args.channels, args.classes, args.size)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'name':<16} {'params':>12} {'input':>6}  description")
    for r in rows:
        print(f"{r['name']:<16} {r['params']:>12,} {r['input_size']:>6}  {r['description']}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """Run the benchmarks and print a table (or JSON)."""
    from cnn import bench

    if args.recipe:
        from benchmarks import recipe

        recipe.main(["--datasets", args.datasets, "--variants", args.variants, "--seeds", args.seeds, "--device", "cpu" if args.device == "auto" else args.device] + (["--json", "/dev/stdout"] if args.json else []))
        return 0
    if args.all_variants:
        from cnn import bench_variants

        small = {"variants": ["lenet1", "cnn2_5"], "epochs": 2, "batch_size": 256, "n_train": 1_500, "n_test": 300} if args.quick else {}
        result = bench_variants.bench_variants(device=args.device, **small)
        print(json.dumps(result, indent=2, default=str) if args.json else bench_variants.format_variants(result))
        return 0
    results = bench.run_benchmarks(quick=args.quick, device=args.device)
    if args.prefect_overhead:
        from flows.overhead import bench_prefect_overhead

        results["prefect_overhead"] = bench_prefect_overhead(quick=args.quick)
    print(json.dumps(results, indent=2, default=str) if args.json else bench.format_table(results))
    return 0


COMMANDS = {"compare": cmd_compare, "retrain": cmd_retrain, "variants": cmd_variants, "bench": cmd_bench}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `cnn-lab` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    from cnn.errors import CnnLabError

    try:
        return COMMANDS[args.command](args)
    except CnnLabError as err:
        print(f"cnn-lab: {err}", file=sys.stderr)
        return 2
    except Interrupted as stop:
        print(f"cnn-lab: {_interrupted_line(args, stop.run)}", file=sys.stderr, flush=True)
        _exit_now(130)
    except KeyboardInterrupt:  # outside a flow run (variants, bench, or before the flow started)
        print("cnn-lab: interrupted", file=sys.stderr, flush=True)
        return 130


def _exit_now(code: int) -> None:
    """Run the exit handlers (they send the last logs and stop the temporary server), then leave without Python's module
    teardown, which takes seconds with torch and Prefect loaded: a Ctrl-C ends the command within a few seconds."""
    sys.stdout.flush()
    sys.stderr.flush()
    atexit._run_exitfuncs()
    os._exit(code)


def _interrupted_line(args: argparse.Namespace, run: str | None) -> str:
    """What to do after Ctrl-C: finished steps are cached and training resumes from the checkpoint in the same run folder."""
    if args.command == "retrain":
        return "interrupted; nothing was published: rerun the same command to retrain afresh"
    if getattr(args, "run", None) is None and run:
        return f"interrupted; rerun the same command with --run {run} to resume"
    return "interrupted; rerun the same command to resume"


if __name__ == "__main__":
    raise SystemExit(main())
