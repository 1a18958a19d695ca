"""The user's own Prefect profile, found before Prefect is imported.

The project points ``PREFECT_HOME`` at its own folder (see
:func:`flows.settings.prepare_prefect_environment`); Prefect reads profiles from
``$PREFECT_HOME/profiles.toml``, so without this a ``PREFECT_API_URL`` saved by
``prefect config set`` or ``prefect profile use`` in the user's ``~/.prefect/profiles.toml`` would
be ignored. This module finds that file the way Prefect would have without the project's home,
and reads which settings its active profile sets (those are the user's: no project default may
override them). Reads TOML only; imports nothing of Prefect.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

__all__ = ["DEFAULT_PROFILE", "active_profile_settings", "user_profiles_path"]

DEFAULT_PROFILE = "ephemeral"
"""The profile Prefect 3 activates when its profiles file names none."""


def user_profiles_path() -> Path:
    """``PREFECT_PROFILES_PATH``, else ``$PREFECT_HOME/profiles.toml``, else ``~/.prefect/profiles.toml``.

    What Prefect reads when the project sets nothing: the user's own values win.
    """
    if os.environ.get("PREFECT_PROFILES_PATH"):
        return Path(os.environ["PREFECT_PROFILES_PATH"]).expanduser()
    home = Path(os.environ["PREFECT_HOME"]).expanduser() if os.environ.get("PREFECT_HOME") else Path.home() / ".prefect"
    return home / "profiles.toml"


def active_profile_settings(path: Path) -> dict[str, str]:
    """Settings (``PREFECT_*`` name → value as text) of the active profile in ``path``; {} without one.

    The active profile is ``PREFECT_PROFILE`` if set, else the file's ``active``, else Prefect's
    default, ``ephemeral`` (what ``prefect config set`` writes to on a fresh machine). A missing or
    unreadable file names no settings: Prefect then runs on its defaults, as it would itself
    (and reports a malformed file on its own when it reads it).
    """
    try:
        doc = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return {}
    name = os.environ.get("PREFECT_PROFILE") or doc.get("active") or DEFAULT_PROFILE
    profiles = doc.get("profiles")
    profile = profiles.get(name) if isinstance(profiles, dict) and isinstance(name, str) else None
    if not isinstance(profile, dict):
        return {}
    return {str(k): str(v) for k, v in profile.items()}
