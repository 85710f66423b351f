"""Worker processes live and die with the run that started them (`--parallel N`, `--task-runner dask`).

- Workers start deaf to SIGINT and SIGTERM. A terminal sends Ctrl-C to its whole foreground process group (and a
  service manager may send SIGTERM to a whole group): a worker that takes it prints its own traceback and breaks its
  pool mid-task. The signals are blocked in the thread that starts a worker (`stop_signals_blocked`); a blocked signal
  stays blocked across fork and exec, so the worker is deaf from its first instruction, imports included, and the
  initializer then ignores them (`init_worker`). The flow's process alone takes the signal and stops its workers.
- On a stop, the flow's process ends its workers at once (`stop_workers`): SIGKILL, since a worker holds nothing to
  tidy (every store write is atomic, and training resumes from the checkpoint); Dask nannies are first told not to
  start replacements. A variant that the flow's own process runs on a thread gets a KeyboardInterrupt there.
- A worker ends when its parent is gone, SIGKILL (an out-of-memory kill) included: `watch_parent` polls os.getppid(),
  which changes when the parent dies (the orphan is adopted). Chosen over a watched pipe, whose write end any other
  child of the parent could hold open, and over prctl(PR_SET_PDEATHSIG), which is Linux-only and fires when the parent
  *thread* that started the worker exits (Prefect starts them from pool threads). Dask's own worker processes already
  watch their nanny, which lives in the flow's process, through a pipe (distributed.process.AsyncProcess).
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
PARENT_POLL_S = 0.5  # how often a worker checks that its parent is alive: the most it outlives a killed parent
_LOCAL_CLUSTERS: list[Any] = []  # the Dask clusters this process started (`local_cluster`)
_VARIANT_THREADS: set[int] = set()  # threads of this process running a variant (`variant_thread`)


@contextlib.contextmanager
def stop_signals_blocked() -> Iterator[None]:
    """SIGINT and SIGTERM blocked in this thread for the block: threads and processes started in it inherit the block
    (a signal arriving meanwhile waits, or goes to another thread of this process, and is handled on leaving)."""
    before = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def init_worker(parent_pid: int) -> None:
    """A pool worker's initializer: ignore the stop signals (a pending one is dropped), then end with the parent."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    threading.Thread(target=watch_parent, args=(parent_pid,), name="cnn-lab-parent-watch", daemon=True).start()


def watch_parent(parent_pid: int, interval: float = PARENT_POLL_S) -> None:
    """Exit this process at once when its parent `parent_pid` is gone."""
    while os.getppid() == parent_pid:
        time.sleep(interval)
    os._exit(1)


def local_cluster(**kwargs: Any) -> Any:
    """A Dask LocalCluster (prefect-dask's `cluster_class`), remembered so that `stop_workers` can stop its nannies."""
    from distributed import LocalCluster

    cluster = LocalCluster(**kwargs)
    _LOCAL_CLUSTERS.append(cluster)
    return cluster


@contextlib.contextmanager
def variant_thread() -> Iterator[None]:
    """Mark this thread as running a variant for the block (outside the main thread), so that a stop interrupts it."""
    ident = threading.get_ident()
    if ident == threading.main_thread().ident:
        yield
        return
    _VARIANT_THREADS.add(ident)
    try:
        yield
    finally:
        _VARIANT_THREADS.discard(ident)


def _raise_in_thread(ident: int, exc: type[BaseException]) -> None:
    """Raise `exc` in thread `ident` at its next Python instruction (CPython's PyThreadState_SetAsyncExc, which Prefect
    uses too for task timeouts): the only way to stop a thread that is inside a training loop."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), ctypes.py_object(exc))


def stop_workers(spared: Iterable[Any] = (), clusters: Iterable[Any] | None = None) -> None:
    """End the workers of this process now: Dask nannies (of `clusters`, by default every cluster started here) stop
    restarting workers, each worker process not in `spared` is killed, and each variant on a thread of this process
    gets a KeyboardInterrupt."""
    for cluster in _LOCAL_CLUSTERS if clusters is None else clusters:
        for nanny in list(getattr(cluster, "workers", {}).values()):
            with contextlib.suppress(Exception):  # a nanny already closing: nothing to tell it
                nanny.close_gracefully(reason="cnn-lab-stop")
    spared = set(spared)
    for child in multiprocessing.active_children():
        if child not in spared:
            child.kill()
    for ident in list(_VARIANT_THREADS):
        _raise_in_thread(ident, KeyboardInterrupt)


def is_stop(exc: BaseException | None) -> bool:
    """Whether `exc` ends the run from outside (Ctrl-C, SIGTERM, a system exit), rather than being an error of the run."""
    return exc is not None and not isinstance(exc, Exception)


def stopper() -> Callable[[Any, BaseException | None, Any], bool]:
    """An ExitStack callback that, when the block ends by Ctrl-C or SIGTERM, stops the workers started from now on.
    Push it after the task runners, so that it runs before their shutdown, which waits for their running tasks."""
    before = set(multiprocessing.active_children())
    known = len(_LOCAL_CLUSTERS)

    def on_exit(exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        if is_stop(exc):
            stop_workers(spared=before, clusters=_LOCAL_CLUSTERS[known:])
        return False  # the stop goes on up

    return on_exit
