"""What every ``glacial-lakes`` command shares: the exit-status contract and progress lines.

Exit status: 0 success; 2 bad input, which is exactly :class:`core.errors.InputError` and click's
own usage errors (one line naming the input); 1 anything else (one line with the error's class;
the full traceback with ``GLACIAL_LAKES_DEBUG=1``).
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click

from core.errors import InputError

__all__ = ["BadInput", "debug_enabled", "guarded", "progress"]

F = TypeVar("F", bound=Callable[..., Any])


class BadInput(click.ClickException):
    """Exit 2 with a one-line reason."""

    exit_code = 2


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


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
            if debug_enabled():  # the traceback too, but still the bad-input status
                traceback.print_exception(exc, file=sys.stderr)
            raise BadInput(_one_line(exc)) from exc
        except Exception as exc:
            # Anything else is ours or the environment's: one line, exit 1; the traceback on demand.
            if debug_enabled():
                raise
            raise click.ClickException(f"{type(exc).__name__}: {_one_line(exc)}") from exc

    return wrapper  # type: ignore[return-value]


def progress(step: str) -> None:
    """One progress line (``» step``) on standard error, so standard output stays the result."""
    click.echo(f"» {step}", err=True)
