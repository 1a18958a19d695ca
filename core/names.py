"""The AOI name rule, shared by every way an AOI enters the inventory (``run``, ``import-inventory``).

A name becomes a folder under the data root and a key in the database, so it is kept to a
portable, unambiguous alphabet (no path separators, no leading dot, no whitespace).

This module is a leaf: it imports only :mod:`core.errors`.
"""

from __future__ import annotations

import re

from core.errors import AoiError

__all__ = ["AOI_NAME_RULE", "check_aoi_name"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
AOI_NAME_RULE = "AOI name must be 1–63 letters, digits, '-', '_' or '.', starting with a letter or digit"
"""The rule as stated in every refusal."""


def check_aoi_name(name: str) -> str:
    """``name`` unchanged when it follows the rule.

    Raises:
        core.errors.AoiError: it does not (the message quotes at most 80 characters of it).
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        shown = repr(name) if len(repr(name)) <= 80 else f"{repr(name)[:77]}…"
        raise AoiError(f"{shown}: {AOI_NAME_RULE}")
    return name
