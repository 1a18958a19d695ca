"""core: the error taxonomy and atomic file replacement."""

from __future__ import annotations

from pathlib import Path

import pytest

from core import errors
from core.files import atomic_path


def test_every_input_error_is_a_value_error() -> None:
    """Callers that guard a value with ``except ValueError`` keep catching every input error."""
    classes = [getattr(errors, name) for name in errors.__all__ if isinstance(getattr(errors, name), type)]
    assert len(classes) == 11
    for cls in classes:
        assert issubclass(cls, errors.InputError) and issubclass(cls, ValueError), cls.__name__


def test_atomic_path_replaces_only_on_success(tmp_path: Path) -> None:
    """A failed write leaves the old file and no temporary; a good one replaces it."""
    target = tmp_path / "sub" / "out.bin"
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"one")
        assert not target.exists()
    assert target.read_bytes() == b"one"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("crash mid-write")
    assert target.read_bytes() == b"one"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.bin"]
