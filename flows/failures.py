"""A cnn-lab error (bad input, missing data, a store or checkpoint problem, diverged training) ends a flow run as one
line: the run ends Failed with that line as its message, and no log (terminal, worker, the run's log in the UI) shows
its traceback. Unexpected errors keep theirs.

A flow run that ends Failed on purpose hands Prefect an error as the state's data: a worker's engine (`python -m
prefect.engine`) asks the final state for its result and raises what it holds, and it can raise only an error (plain
data there ends in `TypeError: Unexpected result for failed state` and its traceback). That error is marked as the one
the run ended with, so the engine's own log of it ("Engine execution exited with unexpected exception") is dropped: the
run's "Finished in state Failed(...)" line has already said it.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from prefect.client.schemas.objects import State
from prefect.states import Failed

from cnn.errors import CnnLabError

F = TypeVar("F", bound=Callable[..., Any])
ENDED_RUN = "_cnn_lab_ended_run"  # set on the error a flow run ended Failed with
RUN_LOGGERS = (
    "",
    "prefect.flow_runs",
    "prefect.task_runs",
)  # root (the terminal's handler) and the run-log (API) handlers


def error_line(err: BaseException) -> str:
    """'<ErrorClass>: <message>', first line only."""
    return f"{type(err).__name__}: {err}".splitlines()[0]


class RunFailed(Exception):
    """A flow run that ended Failed on purpose without a cnn-lab error (e.g. every variant failed); `data` is what it
    produced (the CLI still prints it)."""

    def __init__(self, message: str, data: Any) -> None:
        self.data = data
        super().__init__(message)


def _ended(err: BaseException) -> BaseException:
    setattr(err, ENDED_RUN, True)
    return err


class _NoTraceback(logging.Filter):
    """Errors cnn-lab raises on purpose, and interrupts, are logged as their one-line message, without a traceback; the
    error a run ended Failed with is not logged again (the engine re-raising it on a worker)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if isinstance(record.exc_info, tuple) else None
        if getattr(exc, ENDED_RUN, False):
            return False
        if isinstance(exc, (CnnLabError, KeyboardInterrupt)):
            record.exc_info, record.exc_text = None, None
        return True


def quiet_tracebacks() -> None:
    """Add the filter to the handlers of the terminal and of the run's log (once each)."""
    for name in RUN_LOGGERS:
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, _NoTraceback) for f in handler.filters):
                handler.addFilter(_NoTraceback())


def flow_output(state: State) -> Any:
    """What a finished flow run returned, also when it ended Failed on purpose (RunFailed's data); the cnn-lab error it
    ended with is raised as one line (the CLI prints it)."""
    result = state.result(raise_on_failure=False)
    if isinstance(result, CnnLabError):
        raise CnnLabError(str(result).splitlines()[0])
    return result.data if isinstance(result, RunFailed) else result


def fail_in_one_line(fn: F) -> F:
    """Decorator (below @flow): a CnnLabError ends the run Failed('<ErrorClass>: <message>') with the error as its data;
    a Failed state the flow returns keeps its message, with its data in a RunFailed; other errors propagate as usual."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        quiet_tracebacks()
        try:
            result = fn(*args, **kwargs)
        except CnnLabError as err:
            return Failed(message=error_line(err), data=_ended(err))
        if isinstance(result, State) and result.is_failed() and not isinstance(result.data, BaseException):
            return Failed(message=result.message, data=_ended(RunFailed(str(result.message), result.data)))
        return result

    return run  # type: ignore[return-value]
