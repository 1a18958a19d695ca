"""The user's Prefect profile is respected although the project sets ``PREFECT_HOME`` (issue 11, item 5).

``prefect config set PREFECT_API_URL=…`` saves the URL in ``~/.prefect/profiles.toml``; the
project's own Prefect home used to hide that file, so every command ran on a temporary server.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.deploy.conftest import child_env

_CHILD = textwrap.dedent(
    """
    import json, os
    from flows.settings import load_settings, prepare_prefect_environment
    prepare_prefect_environment(load_settings())
    from flows.prefect_server import configured_api_url
    from prefect.settings import get_current_settings
    s = get_current_settings()
    print(json.dumps({"api": configured_api_url(), "home": str(s.home), "level": s.logging.level,
                      "profiles": os.environ.get("PREFECT_PROFILES_PATH")}))
    """
)


def _user_env(tmp_path: Path) -> dict[str, str]:
    env = child_env(tmp_path)
    del env["PREFECT_HOME"], env["PREFECT_PROFILES_PATH"], env["PREFECT_LOGGING_LEVEL"]
    return env


def _resolved(tmp_path: Path, profile: str | None) -> dict[str, str | None]:
    env = _user_env(tmp_path)
    if profile is not None:
        (tmp_path / "user" / ".prefect").mkdir(parents=True)
        (tmp_path / "user" / ".prefect" / "profiles.toml").write_text(profile)
    done = subprocess.run(
        [sys.executable, "-c", _CHILD], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out: dict[str, str | None] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


def test_api_url_saved_in_the_users_profile_is_used(tmp_path: Path) -> None:
    out = _resolved(
        tmp_path,
        'active = "mine"\n\n[profiles.mine]\nPREFECT_API_URL = "http://127.0.0.1:4999/api"\n'
        'PREFECT_LOGGING_LEVEL = "DEBUG"\n\n[profiles.other]\nPREFECT_API_URL = "http://127.0.0.1:1/api"\n',
    )
    assert out["api"] == "http://127.0.0.1:4999/api"
    assert out["profiles"] == str(tmp_path / "user" / ".prefect" / "profiles.toml")
    assert out["level"] == "DEBUG"  # the profile's value, not the project's WARNING default
    assert out["home"] == str(tmp_path / "home" / "prefect")  # the project's home for what the profile leaves


def test_without_a_profile_nothing_is_configured_and_the_project_defaults_apply(tmp_path: Path) -> None:
    out = _resolved(tmp_path, None)
    assert out["api"] is None and out["profiles"] is None
    assert out["level"] == "WARNING"
    assert out["home"] == str(tmp_path / "home" / "prefect")


def test_the_ephemeral_default_profile_configures_no_api(tmp_path: Path) -> None:
    out = _resolved(tmp_path, 'active = "ephemeral"\n')
    assert out["api"] is None


def test_url_set_with_prefect_config_set_is_used(tmp_path: Path) -> None:
    """What the README tells a user to do: ``prefect config set PREFECT_API_URL=…`` (their own profile)."""
    done = subprocess.run(
        [sys.executable, "-m", "prefect", "config", "set", "PREFECT_API_URL=http://127.0.0.1:4998/api"],
        cwd=tmp_path,
        env=_user_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    out = _resolved(tmp_path, None)
    assert out["api"] == "http://127.0.0.1:4998/api"
    assert out["home"] == str(tmp_path / "home" / "prefect")
