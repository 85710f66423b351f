"""How the `cnn-lab` command stops on Ctrl-C (SIGINT) or SIGTERM: the same way for both, with one line and exit code
128 + the signal's number (130, 143), within STOP_DEADLINE_S.

SIGTERM raises `Terminated`, a KeyboardInterrupt, where Ctrl-C raises KeyboardInterrupt, so every clean-up that Ctrl-C
gets (the flow run marked Crashed, the workers stopped, the temporary server stopped) SIGTERM gets too: a work pool's
scheduler stops a run with SIGTERM. A second signal during the clean-up leaves at once; so does the deadline, should a
library's clean-up wait on something that never ends (the worker processes and the temporary server end with this
process: flows.worker_lifecycle, flows.local_server).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

STOP_DEADLINE_S = 4.0  # after the first signal: the promise is an exit within 5 s
WORDS = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised as Ctrl-C is, so that both stop a run the same way."""


_received: list[int] = []
_told: list[bool] = []


@contextlib.contextmanager
def handled() -> Iterator[None]:
    """SIGINT and SIGTERM handled as above for the block (when called in the main thread), then as before."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _received.clear()  # a command run before in this process (tests call main() again and again) is over
    _told.clear()
    before = {sig: signal.signal(sig, _on_signal) for sig in WORDS}
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def _on_signal(signum: int, frame: Any) -> None:
    if _received:  # a second signal during the clean-up: leave now
        _leave()
    _received.append(signum)
    threading.Thread(target=_deadline, name="cnn-lab-stop-deadline", daemon=True).start()
    raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def received() -> bool:
    """Whether a stop signal arrived."""
    return bool(_received)


def word() -> str:
    """'interrupted' (Ctrl-C, or no signal) or 'terminated' (SIGTERM)."""
    return WORDS.get(signal.Signals(_received[0]), "interrupted") if _received else "interrupted"


def exit_code() -> int:
    """128 + the first signal's number (130 for Ctrl-C, 143 for SIGTERM)."""
    return 128 + (_received[0] if _received else signal.SIGINT)


def tell(line: str) -> None:
    """Print the stop's one line on stderr (once)."""
    if not _told:
        _told.append(True)
        print(f"cnn-lab: {line}", file=sys.stderr, flush=True)


def _deadline() -> None:
    time.sleep(STOP_DEADLINE_S)
    _leave()


def _leave() -> None:
    """Exit now with the stop's code, after its line."""
    tell(word())
    sys.stdout.flush()
    os._exit(exit_code())
