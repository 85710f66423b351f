"""Measure what the user sees for each fault in docs/faults.md, through the real `cnn-lab` command: the time from the fault
to the one-line error, the lines printed, and what the store kept. A measurement, not a test: `python tests/fault_timings.py`
(`--stops [--repeats N] [--json FILE]` measures only Ctrl-C, SIGTERM and SIGKILL with and without worker processes).

Runs on scikit-learn's digits (offline) against one local Prefect server, except the Ctrl-C and SIGKILL cases, which use
the CLI's own temporary server. Prints a Markdown table (and JSON with --json).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1]))

from prefect_server import _alive, descendants, running_server  # noqa: E402
from storage_helpers import S3Server, s3_env  # noqa: E402

ROOT = Path(__file__).parents[1]
BASE = ["--dataset", "digits", "--batch-size", "32", "--lr", "0.05", "--device", "cpu"]
# Runs the CLI with a fault injected into the store: the first matching write raises `errno`, and the moment is printed
INJECT = r"""
import errno, os, sys, time
from cnn.storage import Storage
suffix, code, after = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
real, seen = Storage._put, []
def put(self, full, data):
    if full.endswith(suffix):
        seen.append(full)
        if len(seen) > after:
            print(f"FAULT {time.time():.3f}", file=sys.stderr, flush=True)
            raise OSError(code, os.strerror(code), full)
    return real(self, full, data)
Storage._put = put
from flows.cli import main
sys.argv = ["cnn-lab", *sys.argv[4:]]
raise SystemExit(main())
"""


class Run:
    """A CLI process with its stderr lines timestamped as they arrive."""

    def __init__(self, args: list[str], env: dict[str, str], inject: tuple[str, int, int] | None = None) -> None:
        prog = ["-c", INJECT, inject[0], str(inject[1]), str(inject[2])] if inject else ["-m", "flows.cli"]
        self.proc = subprocess.Popen(
            [sys.executable, *prog, *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.lines: list[tuple[float, str]] = []
        self.out = ""
        self._threads = [
            threading.Thread(target=self._read_err, daemon=True),
            threading.Thread(target=self._read_out, daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _read_err(self) -> None:
        for line in self.proc.stderr:
            self.lines.append((time.time(), line.rstrip("\n")))

    def _read_out(self) -> None:
        self.out = self.proc.stdout.read()

    def wait_for(self, pattern: str, timeout: float = 600) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for at, line in list(self.lines):
                if re.search(pattern, line):
                    return at
            if self.proc.poll() is not None and not any(t.is_alive() for t in self._threads[:1]):
                break
            time.sleep(0.05)
        raise RuntimeError(f"no {pattern!r}:\n" + "\n".join(line for _, line in self.lines[-40:]))

    def finish(self, timeout: float = 900) -> int:
        self.proc.wait(timeout)
        for t in self._threads:
            t.join(30)
        return self.proc.returncode

    def error_line(self) -> tuple[float, str]:
        """The command's own one-line verdict (the last line naming a failure or an interrupt)."""
        found = [
            (at, line)
            for at, line in self.lines
            if line.startswith(("cnn-lab:", "comparison failed:", "retrain failed:"))
        ]
        return found[-1] if found else (float("nan"), "(none)")

    def fault_time(self) -> float:
        return next(float(line.split()[1]) for _, line in self.lines if line.startswith("FAULT "))


def env_for(home: Path, api: str | None, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "AWS_", "CNN_LAB_"))}
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PYTHONPATH=str(ROOT),
        OMP_NUM_THREADS="1",
        **(extra or {}),
    )
    if api:
        env["PREFECT_API_URL"] = api
    return env


def rows_kept(store: str, env: dict[str, str], *names: str) -> list[str]:
    """variant@run of every row the comparisons `names` (default: "default") hold."""
    code = "import json, sys; from cnn.comparisons import read_comparison; from cnn.storage import Storage; print(json.dumps(sorted(r['variant'] + '@' + r['folder'].rsplit('/', 2)[-2] for n in sys.argv[2:] for r in read_comparison(Storage(sys.argv[1]), 'digits', n).table_rows())))"
    done = subprocess.run(
        [sys.executable, "-c", code, store, *(names or ("default",))],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    return json.loads(done.stdout)


def measure(work: Path) -> list[dict]:
    results: list[dict] = []
    home = work / "prefect"
    with running_server(home) as (api, _):
        env = env_for(home, api)
        store = str(work / "store")

        # a comparison already in the store
        base = Run(
            [
                "compare",
                *BASE,
                "--variants",
                "lenet1,cnn2_5",
                "--epochs",
                "3",
                "--storage",
                store,
                "--run",
                "base",
                "--quiet",
            ],
            env,
        )
        assert base.finish() == 0, base.lines[-20:]
        kept = rows_kept(store, env)

        # two retrains of different variants at once, then two comparisons at once
        pair = [
            Run(["retrain", v, *BASE, "--epochs", "3", "--storage", store, "--run", f"re-{v}", "--quiet"], env)
            for v in ("lenet1", "cnn2_5")
        ]
        codes = [r.finish() for r in pair]
        after = rows_kept(store, env)
        results.append(
            {
                "fault": "two `cnn-lab retrain` of different variants at once",
                "sees": f"both exit {codes}",
                "kept": f"rows {after}",
                "seconds": None,
            }
        )
        pair = [
            Run(
                [
                    "compare",
                    *BASE,
                    "--variants",
                    v,
                    "--epochs",
                    "2",
                    "--storage",
                    store,
                    "--run",
                    f"cmp-{v}",
                    "--comparison",
                    f"cmp-{v}",
                    "--quiet",
                ],
                env,
            )
            for v in ("lenet5", "generic_2")
        ]
        codes = [r.finish() for r in pair]
        after = rows_kept(store, env, "default", "cmp-lenet5", "cmp-generic_2")
        results.append(
            {
                "fault": "two `cnn-lab compare` of different variants at once",
                "sees": f"both exit {codes}",
                "kept": f"rows {after}",
                "seconds": None,
            }
        )

        # a full disk while training, a file where a variant's folder goes
        full = Run(
            ["compare", *BASE, "--variants", "lenet1", "--epochs", "4", "--storage", store, "--run", "full"],
            env,
            inject=("checkpoint.pt", 28, 1),
        )
        full.finish()
        at, line = full.error_line()
        results.append(
            {
                "fault": "disk full while writing the epoch-2 checkpoint",
                "sees": line,
                "kept": "epoch-1 checkpoint; earlier runs unchanged",
                "seconds": at - full.fault_time(),
                "lines": len(full.lines),
            }
        )
        Path(store, "digits", "clash").mkdir(parents=True, exist_ok=True)
        Path(store, "digits", "clash", "lenet1").write_text("in the way")
        clash = Run(
            ["compare", *BASE, "--variants", "lenet1,cnn2_5", "--epochs", "2", "--storage", store, "--run", "clash"],
            env,
        )
        clash.finish()
        at, line = clash.error_line()
        results.append(
            {
                "fault": "a file where the variant's folder goes",
                "sees": line,
                "kept": "earlier runs unchanged",
                "seconds": at - clash.lines[0][0],
                "lines": len(clash.lines),
                "from": "command start",
            }
        )

        # a truncated record of the comparison before a retrain
        latest = Path(store, "digits", "comparisons", "default", "cnn2_5.json")
        saved = latest.read_bytes()
        latest.write_text('{"run": "x", "rows": [{"variant": "cnn2_5", "te')
        trunc = Run(["retrain", "lenet1", *BASE, "--epochs", "3", "--storage", store, "--run", "trunc"], env)
        trunc.finish()
        at, line = trunc.error_line()
        results.append(
            {
                "fault": "a truncated record of another variant of the comparison before a retrain",
                "sees": line,
                "kept": "no training done; the file left for the user",
                "seconds": at - trunc.lines[0][0],
                "lines": len(trunc.lines),
                "from": "command start",
            }
        )
        latest.write_bytes(saved)

        # the S3 endpoint goes away mid-training, with the default retry settings
        s3 = S3Server().start()
        s3.client().create_bucket(Bucket="faults")
        s3env = {**env, **s3_env(s3.endpoint)}
        gone = Run(
            [
                "compare",
                *BASE,
                "--variants",
                "lenet1,cnn2_5",
                "--epochs",
                "30",
                "--storage",
                "s3://faults/results",
                "--run",
                "gone",
            ],
            s3env,
        )
        gone.wait_for(r"epoch 2/")
        s3.stop()
        stopped = time.time()
        gone.finish()
        at, line = gone.error_line()
        results.append(
            {
                "fault": "S3 endpoint goes away mid-training (defaults: CNN_LAB_STORAGE_GIVE_UP_S=60)",
                "sees": line,
                "kept": "finished variants' files and checkpoints in the bucket",
                "seconds": at - stopped,
                "lines": len(gone.lines),
            }
        )

    # Ctrl-C and SIGKILL: the CLI's own temporary server
    home2 = work / "prefect-temp"
    env = env_for(home2, None)
    run = Run(["compare", *BASE, "--variants", "lenet1", "--epochs", "30", "--storage", str(work / "store2")], env)
    run.wait_for(r"epoch 2/")
    os.killpg(run.proc.pid, signal.SIGINT)
    sent = time.time()
    run.finish()
    at, line = run.error_line()
    results.append(
        {
            "fault": "Ctrl-C mid-training (SIGINT to the process group)",
            "sees": line,
            "kept": "checkpoint of the last epoch; the flow run Crashed",
            "seconds": at - sent,
            "exit_s": time.time() - sent,
        }
    )
    run = Run(
        ["compare", *BASE, "--variants", "lenet1", "--epochs", "30", "--storage", str(work / "store2"), "--run", "k"],
        env,
    )
    run.wait_for(r"epoch 1/")
    [server] = [
        p for p in descendants(run.proc.pid) if "create_app" in Path(f"/proc/{p}/cmdline").read_text(errors="replace")
    ]
    os.kill(run.proc.pid, signal.SIGKILL)
    killed = time.time()
    while _alive(server) and time.time() - killed < 30:
        time.sleep(0.05)
    results.append(
        {
            "fault": "SIGKILL of the CLI",
            "sees": "(no line: the process is gone)",
            "kept": "checkpoint of the last epoch",
            "seconds": time.time() - killed,
            "note": "until the temporary server exited",
        }
    )
    results.append(
        {"fault": "rows of the first comparison still there", "sees": "", "kept": f"{kept}", "seconds": None}
    )
    return results


STOPS = [  # (what, extra options, signal, to the process group?)
    ("Ctrl-C, one process", [], signal.SIGINT, True),
    ("Ctrl-C, --parallel 2", ["--variants", "lenet1,cnn2_5", "--parallel", "2"], signal.SIGINT, True),
    (
        "Ctrl-C, --task-runner dask",
        ["--variants", "lenet1,cnn2_5", "--parallel", "2", "--task-runner", "dask"],
        signal.SIGINT,
        True,
    ),
    ("SIGTERM to the CLI, --parallel 2", ["--variants", "lenet1,cnn2_5", "--parallel", "2"], signal.SIGTERM, False),
    ("SIGKILL of the CLI, --parallel 2", ["--variants", "lenet1,cnn2_5", "--parallel", "2"], signal.SIGKILL, False),
    (
        "SIGKILL of the CLI, --task-runner dask",
        ["--variants", "lenet1,cnn2_5", "--parallel", "2", "--task-runner", "dask"],
        signal.SIGKILL,
        False,
    ),
]


def measure_stops(work: Path, repeats: int = 3) -> list[dict]:
    """Each stop of STOPS `repeats` times, mid-training on digits: seconds to the line and to the exit, the exit code,
    the lines printed after the signal, tracebacks, and the processes still running 1 s and 5 s after the exit."""
    results = []
    for index, (what, extra, sig, group) in enumerate(STOPS):
        for attempt in range(repeats):
            env = env_for(work / f"prefect-{attempt}", None)
            store = str(work / f"stops-{index}-{attempt}")  # a store of its own: no step of another stop is cached
            run = Run(["compare", *BASE, "--variants", "lenet1", "--epochs", "40", "--storage", store, *extra], env)
            run.wait_for(r"epoch 2/")
            everything = descendants(run.proc.pid)
            (os.killpg if group else os.kill)(run.proc.pid, sig)
            sent, before = time.time(), len(run.lines)
            run.finish()
            exited = time.time() - sent
            at, line = run.error_line()
            after = [text for _, text in run.lines[before:]]
            time.sleep(1)
            left_1s = [p for p in everything if _alive(p)]
            time.sleep(4)
            results.append(
                {
                    "stop": what,
                    "exit_code": run.proc.returncode,
                    "line": line,
                    "line_s": None if line == "(none)" else round(at - sent, 2),
                    "exit_s": round(exited, 2),
                    "lines_after_signal": len(after),
                    "tracebacks": sum("Traceback" in text for _, text in run.lines),
                    "left_after_1s": len(left_1s),
                    "left_after_5s": len([p for p in everything if _alive(p)]),
                }
            )
    return results


def environment() -> dict:
    """Machine, versions, load and command the figures were measured with."""
    import platform
    from importlib.metadata import version

    return {
        "python": platform.python_version(),
        "prefect": version("prefect"),
        "distributed": version("distributed"),
        "torch": version("torch"),
        "cpus": os.cpu_count(),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
        "command": " ".join(sys.argv),
    }


def main() -> None:
    if "--stops" in sys.argv:  # only the stops: python tests/fault_timings.py --stops [--json out.json]
        load = [round(x, 2) for x in os.getloadavg()]
        with tempfile.TemporaryDirectory() as tmp:
            repeats = int(sys.argv[sys.argv.index("--repeats") + 1]) if "--repeats" in sys.argv else 3
            stops = measure_stops(Path(tmp), repeats)
        out = {"environment": {**environment(), "load_avg_before": load}, "stops": stops}
        if "--json" in sys.argv:
            Path(sys.argv[sys.argv.index("--json") + 1]).write_text(json.dumps(out, indent=2))
        print(
            "| stop | exit code | line | s to the line | s to the exit | lines after | tracebacks | left 1 s / 5 s after |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for r in stops:
            print(
                f"| {r['stop']} | {r['exit_code']} | {r['line']} | {r['line_s']} | {r['exit_s']} | "
                f"{r['lines_after_signal']} | {r['tracebacks']} | {r['left_after_1s']} / {r['left_after_5s']} |"
            )
        return
    with tempfile.TemporaryDirectory() as tmp:
        results = measure(Path(tmp))
    if "--json" in sys.argv:
        print(json.dumps(results, indent=2))
        return
    print("| fault | what the user sees | kept | seconds to the line |")
    print("|---|---|---|---|")
    for r in results:
        seconds = "" if r.get("seconds") is None else f"{r['seconds']:.1f}"
        print(f"| {r['fault']} | {r['sees'][:300]} | {r['kept']} | {seconds} {r.get('from', '')} |")


if __name__ == "__main__":
    main()
