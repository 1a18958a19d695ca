"""What every ``glacial-lakes`` command shares: the exit-status contract and progress lines.

Exit status: 0 success; 2 bad input, which is exactly :class:`core.errors.InputError` and click's
own usage errors (one line naming the input); 1 anything else (one line with the error's class;
the full traceback with ``GLACIAL_LAKES_DEBUG=1``).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click

from core.errors import InputError
from tasks.defaults import Bound

__all__ = ["BadInput", "BoundedFloat", "BoundedInt", "debug_enabled", "exit_on_sigterm", "guarded", "progress"]

MAX_MESSAGE_CHARS = 400
"""An error line is cut here: a message that quotes hostile input must stay one readable line."""

F = TypeVar("F", bound=Callable[..., Any])


class BadInput(click.ClickException):
    """Exit 2 with a one-line reason."""

    exit_code = 2


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return line if len(line) <= MAX_MESSAGE_CHARS else f"{line[: MAX_MESSAGE_CHARS - 1]}…"


class BoundedFloat(click.ParamType[float]):
    """A float option checked against a :class:`tasks.defaults.Bound` (NaN and ±inf refused).

    click's own ``FloatRange`` lets NaN through (every comparison with NaN is false); this type
    shares its ranges with :class:`flows.settings.Settings`, so an option and its variable refuse
    the same values.
    """

    name = "float"

    def __init__(self, bound: Bound) -> None:
        self.bound = bound

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        """The value as a float; else :class:`BadInput` (exit 2, one line naming the option and range).

        Not click's usage error: that prints the usage text too, and the contract is one line.
        """
        option = param.opts[0] if param is not None and param.opts else "value"
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise BadInput(f"{option} {value!r}: not a number") from None
        reason = self.bound.reason(number)
        if reason is not None:
            raise BadInput(f"{option} {value!r}: {reason}")
        return number


def debug_enabled() -> bool:
    """``GLACIAL_LAKES_DEBUG`` set to anything but empty, ``0`` or ``false``: show tracebacks."""
    return os.environ.get("GLACIAL_LAKES_DEBUG", "").strip().lower() not in {"", "0", "false", "no"}


def guarded(fn: F) -> F:
    """Map errors to the exit-status contract (see the module docstring)."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except click.ClickException:
            raise
        except InputError as exc:
            _exit_if_signalled(exc)
            if debug_enabled():  # the traceback too, but still the bad-input status
                traceback.print_exception(exc, file=sys.stderr)
            raise BadInput(_one_line(exc)) from exc
        except Exception as exc:
            _exit_if_signalled(exc)
            # Anything else is ours or the environment's: one line, exit 1; the traceback on demand.
            if debug_enabled():
                raise
            raise click.ClickException(f"{type(exc).__name__}: {_one_line(exc)}") from exc

    return wrapper  # type: ignore[return-value]


def progress(step: str) -> None:
    """One progress line (``» step``) on standard error, so standard output stays the result."""
    click.echo(f"» {step}", err=True)


class BoundedInt(click.ParamType[int]):
    """An integer option in ``[low, high]`` (``None``: no limit); refusals are one line, exit 2."""

    name = "integer"

    def __init__(self, low: int | None = None, high: int | None = None) -> None:
        self.low, self.high = low, high

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        """The value as an int; else :class:`BadInput` naming the option and range."""
        option = param.opts[0] if param is not None and param.opts else "value"
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise BadInput(f"{option} {value!r}: not an integer") from None
        if (self.low is not None and number < self.low) or (self.high is not None and number > self.high):
            if self.high is None:
                rule = f">= {self.low}"
            elif self.low is None:
                rule = f"<= {self.high}"
            else:
                rule = f"in [{self.low}, {self.high}]"
            raise BadInput(f"{option} {value!r}: must be {rule}")
        return number


_signalled: list[int] = []
"""The signal that is ending this command, once its handler ran."""


def _exit_for_signal(signum: int, frame: object) -> None:
    _signalled.append(signum)
    raise SystemExit(128 + signum)


def _exit_if_signalled(exc: Exception) -> None:
    """Still exit 128 + signal when a library caught the handler's ``SystemExit`` and raised its own error.

    The handler raises wherever the main thread is; inside a pydantic serializer (Prefect's
    settings, read while Prefect imports) that ``SystemExit`` comes out as a
    ``PydanticSerializationError``, which would otherwise read as a failure (exit 1).
    """
    if _signalled:
        raise SystemExit(128 + _signalled[0]) from exc


def exit_on_sigterm() -> None:
    """Make SIGTERM end the command like Ctrl-C does: by unwinding, not by dying on the spot.

    Python's default for SIGTERM kills the process at once, so no ``finally`` block and no
    ``atexit`` hook runs: the temporary Prefect server a run starts (a child process, stopped when
    the command's ``with`` block ends) was left behind. Raising ``SystemExit(143)`` unwinds the
    command instead; the exit status stays the conventional 128 + signal number. (A ``kill -9``
    cannot be caught: :mod:`flows.prefect_server` ties the server's life to the run's instead.)
    """
    if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread only
        signal.signal(signal.SIGTERM, _exit_for_signal)
