"""A cnn-lab error (bad input, missing data, a store or checkpoint problem, diverged training) ends a flow run as one
line: the run ends Failed with that line as its message, and no log (terminal, worker, the run's log in the UI) shows
its traceback. Unexpected errors keep theirs."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from prefect.states import Failed

from cnn.errors import CnnLabError

F = TypeVar("F", bound=Callable[..., Any])
ERROR_KEY = "error"  # the failed run's result: {ERROR_KEY: the message}
RUN_LOGGERS = (
    "",
    "prefect.flow_runs",
    "prefect.task_runs",
)  # root (the terminal's handler) and the run-log (API) handlers


def error_line(err: BaseException) -> str:
    """'<ErrorClass>: <message>', first line only."""
    return f"{type(err).__name__}: {err}".splitlines()[0]


class _NoTraceback(logging.Filter):
    """Errors cnn-lab raises on purpose, and interrupts, are logged as their one-line message, without a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if isinstance(record.exc_info, tuple) else None
        if isinstance(exc, (CnnLabError, KeyboardInterrupt)):
            record.exc_info, record.exc_text = None, None
        return True


def quiet_tracebacks() -> None:
    """Add the filter to the handlers of the terminal and of the run's log (once each)."""
    for name in RUN_LOGGERS:
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, _NoTraceback) for f in handler.filters):
                handler.addFilter(_NoTraceback())


def flow_error(result: object) -> str | None:
    """The message of the cnn-lab error that ended a flow run, from its result (what fail_in_one_line returns), else None."""
    return result[ERROR_KEY] if isinstance(result, dict) and set(result) == {ERROR_KEY} else None


def fail_in_one_line(fn: F) -> F:
    """Decorator (below @flow): a CnnLabError ends the run Failed('<ErrorClass>: <message>'), with {"error": message}
    as its data (what the CLI prints); other errors propagate as usual."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        quiet_tracebacks()
        try:
            return fn(*args, **kwargs)
        except CnnLabError as err:
            return Failed(message=error_line(err), data={ERROR_KEY: str(err).splitlines()[0]})

    return run  # type: ignore[return-value]
