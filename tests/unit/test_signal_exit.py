"""A SIGTERM still ends a command with 143 when a library turned the handler's SystemExit into its own error."""

from __future__ import annotations

import signal

import click
import pytest

from flows import cli_support
from flows.cli_support import guarded


def _command_interrupted_inside_a_library() -> None:
    try:
        cli_support._exit_for_signal(signal.SIGTERM, None)  # the handler, as the signal would run it
    except SystemExit as exc:  # what pydantic's serializer does with any exception raised inside it
        raise RuntimeError(f"Error calling function `_ser_model`: SystemExit: {exc.code}") from None


def test_a_rewrapped_sigterm_exits_143(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_support, "_signalled", [])
    with pytest.raises(SystemExit) as caught:
        guarded(_command_interrupted_inside_a_library)()
    assert caught.value.code == 128 + signal.SIGTERM


def test_the_same_error_without_a_signal_is_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_support, "_signalled", [])

    def fails() -> None:
        raise RuntimeError("Error calling function `_ser_model`: boom")

    with pytest.raises(click.ClickException) as caught:
        guarded(fails)()
    assert caught.value.exit_code == 1 and "RuntimeError" in caught.value.message
