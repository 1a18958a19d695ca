"""What every ``glacial-lakes`` command shares: the exit-status contract and progress lines.

Exit status: 0 success, 2 bad input (one line naming the input), 1 anything else.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click

__all__ = ["BadInput", "guarded", "progress"]

F = TypeVar("F", bound=Callable[..., Any])


class BadInput(click.ClickException):
    """Exit 2 with a one-line reason."""

    exit_code = 2


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def guarded(fn: F) -> F:
    """Map our error classes to the exit-status contract."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from db.local_cluster import LocalClusterError
        from models.registry import ModelLoadError
        from tasks.sources import SourceError

        try:
            return fn(*args, **kwargs)
        except click.ClickException:
            raise
        except (ValueError, SourceError, ModelLoadError, FileNotFoundError) as exc:
            raise BadInput(_one_line(exc)) from exc
        except LocalClusterError as exc:
            raise click.ClickException(_one_line(exc)) from exc
        except Exception as exc:
            # Anything else is ours or the environment's: one line, exit 1; the traceback on demand.
            if os.environ.get("GLACIAL_LAKES_DEBUG"):
                raise
            raise click.ClickException(f"{type(exc).__name__}: {_one_line(exc)}") from exc

    return wrapper  # type: ignore[return-value]


def progress(step: str) -> None:
    click.echo(f"» {step}", err=True)
