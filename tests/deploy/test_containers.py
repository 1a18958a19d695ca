"""The worker image (deploy/Dockerfile) and the compose file (deploy/compose.yaml), checked without Docker.

CI has no Docker daemon, so the files are read as data: the compose file parses, its services,
volumes, images and build files exist, every variable it sets is one the project or Prefect
reads, every password is required (never defaulted), and every command it runs exists with the
options it passes (``--help`` of the very same argv). The Dockerfile is parsed the same way: its
base is Debian with the project's Python, it copies every package ``pip install .`` needs, and
its CMD is the compose worker's command.

Then the same services start from Debian packages instead: PostGIS from
``postgresql-15-postgis-3`` (the suite's cluster, the compose image's versions), the compose's
``prefect server start`` on a PostgreSQL database of that cluster, the compose worker's command
against that server (it creates the CPU pool), and ``inventory-init``'s script against a fresh
database (the schema migrated, a writer login that can read the inventory).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import secrets
import shlex
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
import yaml

from db.local_cluster import POSTGIS_PACKAGE
from flows.runner import RunnerSettings
from flows.settings import Settings
from tests.helpers.database import admin_sql, free_port, fresh_database

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
BIN = Path(sys.executable).parent
"""The virtualenv's scripts: where ``pip install .`` puts the console scripts the containers run."""
OUR_IMAGE = "glacial-lakes:0.1.0"
POSTGRES_IMAGE_VARIABLES = {"POSTGRES_DB", "POSTGRES_USER", "POSTGRES_PASSWORD"}
"""What the official postgres / postgis images read (their documented initialisation variables)."""
SHELL_WORDS = {"umask", "printf", "rm"}
"""Shell built-ins and coreutils the init script uses besides the project's commands."""


# ---------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of deploy/Dockerfile: comments dropped, continuation lines joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in (DEPLOY / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        instruction, _, args = (pending + line).partition(" ")
        out.append((instruction.upper(), args.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return out


def _instructions(name: str) -> list[str]:
    return [args for instruction, args in _dockerfile() if instruction == name]


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    assert isinstance(env, dict), "environment as a mapping (the YAML anchors merge mappings)"
    return {str(k): str(v) for k, v in env.items()}


def _depends_on(service: dict[str, Any]) -> dict[str, str]:
    deps = service.get("depends_on", {})
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: spec.get("condition", "service_started") for name, spec in deps.items()}


def _interpolated(text: str) -> list[tuple[str, str]]:
    """(variable, operator) of every ``${VAR…}`` compose substitutes (``$$`` is a literal ``$``)."""
    return re.findall(r"(?<!\$)\$\{([A-Z_][A-Z0-9_]*)(:\?|:-|\?|-)?", text)


def _substituted(value: str, values: dict[str, str]) -> str:
    """``value`` with compose's ``${VAR:?msg}`` / ``${VAR:-default}`` replaced from ``values``, ``$$`` → ``$``."""

    def one(match: re.Match[str]) -> str:
        name, op, rest = match.group(1), match.group(2) or "", match.group(3) or ""
        if name in values:
            return values[name]
        assert op == ":-", f"${{{name}}} is required"
        return rest

    return re.sub(r"(?<!\$)\$\{([A-Z_][A-Z0-9_]*)(?:(:\?|:-)([^}]*))?\}", one, value).replace("$$", "$")


def _commands(service: dict[str, Any]) -> list[list[str]]:
    """The argvs a service runs: its command, or each line of an ``sh -ec`` script."""
    command = service["command"]
    assert isinstance(command, list), "commands in exec form: no shell word splitting"
    if command[:2] == ["sh", "-ec"]:
        lines = [line.strip() for line in command[2].splitlines() if line.strip()]
        return [shlex.split(line) for line in lines]
    return [[str(c) for c in command]]


# ---------------------------------------------------------------------------------------
# The compose file
# ---------------------------------------------------------------------------------------


def test_compose_has_postgis_a_prefect_server_on_postgresql_and_a_worker() -> None:
    assert {"inventory-db", "prefect-db", "prefect-server", "inventory-init", "worker"} <= set(SERVICES)
    assert SERVICES["inventory-db"]["image"].startswith("postgis/postgis:")
    assert SERVICES["prefect-db"]["image"].startswith("postgres:")
    server_db = _environment(SERVICES["prefect-server"])["PREFECT_SERVER_DATABASE_CONNECTION_URL"]
    assert server_db.startswith("postgresql+asyncpg://") and "@prefect-db:5432/" in server_db
    assert SERVICES["worker"]["image"] == OUR_IMAGE
    # Only loopback ports are published: the databases are reached inside the compose network only.
    published = [p for s in SERVICES.values() for p in s.get("ports", [])]
    assert published and all(str(p).startswith("127.0.0.1:") for p in published), published


def test_compose_references_only_what_exists() -> None:
    top = set(COMPOSE) - {"name"}
    assert top <= {"services", "volumes"} | {k for k in top if k.startswith("x-")}, top
    declared_volumes = set(COMPOSE.get("volumes", {}))
    used_volumes: set[str] = set()
    for name, service in SERVICES.items():
        for dep, condition in _depends_on(service).items():
            assert dep in SERVICES, f"{name} depends on unknown service {dep}"
            assert condition in {"service_started", "service_healthy", "service_completed_successfully"}
            if condition == "service_healthy":
                assert "healthcheck" in SERVICES[dep], f"{name} waits for {dep}'s health, which has no check"
            if condition == "service_completed_successfully":
                assert SERVICES[dep].get("restart") == "no", f"{dep} must run once for {name} to wait on it"
        for mount in service.get("volumes", []):
            source = str(mount).split(":")[0]
            assert not source.startswith((".", "/")), f"{name}: bind mount {source}: use a named volume"
            used_volumes.add(source)
        image = service["image"]
        assert ":" in image and not image.endswith(":latest"), f"{name}: image {image} without a pinned tag"
        if "build" in service:
            build = service["build"]
            context = (DEPLOY / build["context"]).resolve()
            assert context == ROOT, f"{name}: the build context is the repository root"
            assert (context / build["dockerfile"]).is_file(), build
            assert image == OUR_IMAGE
        else:
            assert image != OUR_IMAGE, f"{name} runs the project's image but does not say how to build it"
    assert used_volumes == declared_volumes


def test_compose_images_match_what_ci_runs() -> None:
    """The image versions are the Debian package's and the pinned Prefect's (the same services in CI)."""
    pg_major, postgis_major = re.fullmatch(r"postgresql-(\d+)-postgis-(\d+)", POSTGIS_PACKAGE).groups()  # type: ignore[union-attr]
    tag = SERVICES["inventory-db"]["image"].split(":")[1]
    assert tag.split("-")[0] == pg_major and tag.split("-")[1].split(".")[0] == postgis_major, tag
    assert SERVICES["prefect-db"]["image"].split(":")[1].split("-")[0] == pg_major
    (prefect_pin,) = [d for d in PYPROJECT["project"]["dependencies"] if d.startswith("prefect==")]
    version = prefect_pin.split("==")[1]
    assert SERVICES["prefect-server"]["image"] == f"prefecthq/prefect:{version}-python3.11"
    assert metadata.version("prefect") == version


def test_passwords_are_required_and_every_variable_is_stated() -> None:
    text = (DEPLOY / "compose.yaml").read_text()
    found = _interpolated(text)
    assert found, "the compose file takes its passwords from the environment"
    header = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    for name, op in found:
        assert op in {":?", ":-"}, f"${{{name}}}: say what happens when it is unset (:? required, :- default)"
        if "PASSWORD" in name:
            assert op == ":?", f"{name} must be required, never defaulted"
        assert name in header, f"{name}: the header says how to set it"
    # No literal password anywhere: each one is exactly a required variable, in a value or a URL.
    for service in SERVICES.values():
        for variable, value in _environment(service).items():
            if "PASSWORD" in variable:
                assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]*\}", value), variable
            for password in re.findall(r"://[^:/@]+:([^@]*)@", value):
                assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]*\}", password), variable


def test_environment_is_what_the_project_or_prefect_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.settings import Settings as PrefectSettings

    ours = {f"GLACIAL_LAKES_{f.upper()}" for f in (*Settings.model_fields, *RunnerSettings.model_fields)}
    ours |= {str(f.validation_alias) for f in Settings.model_fields.values() if f.validation_alias}
    for name, service in SERVICES.items():
        env = _environment(service)
        for variable, value in env.items():
            script = " ".join(" ".join(argv) for argv in _commands(service)) if "command" in service else ""
            if variable.startswith("PREFECT_"):
                monkeypatch.setenv(variable, _substituted(value, {v: "x" for v, _ in _interpolated(value)}) or "x")
                known = PrefectSettings().to_environment_variables(exclude_unset=True)
                assert variable in known, f"{name}: {variable} is not a Prefect setting (by its current name)"
            elif variable.startswith("POSTGRES_"):
                assert service["image"].startswith(("postgres:", "postgis/postgis:")), (name, variable)
                assert variable in POSTGRES_IMAGE_VARIABLES, (name, variable)
            elif variable in ours:
                assert service["image"] == OUR_IMAGE, f"{name} is not the project's image but gets {variable}"
            else:
                assert f"$${variable}" in script, f"{name}: {variable} is read by nothing"
    worker = _environment(SERVICES["worker"])
    # The worker and the Dask workers connect as the writer login the init service creates.
    for name in ("worker", "dask-worker"):
        assert _environment(SERVICES[name])["DATABASE_URL"].startswith("postgresql://lakes_worker:"), name
    assert "lakes_worker --role writer" in SERVICES["inventory-init"]["command"][2]
    assert worker["PREFECT_API_URL"] == "http://prefect-server:4200/api"


def _help(argv: list[str]) -> str:
    """``argv --help`` run from the virtualenv's scripts; asserts it exists and knows every option passed."""
    script = BIN / argv[0]
    assert script.is_file(), f"{argv[0]}: no such console script in the environment"
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "COLUMNS": "200"}
    done = subprocess.run([str(script), *argv[1:], "--help"], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, f"{shlex.join(argv)}: {done.stderr[-2000:]}"
    for option in (a for a in argv[1:] if a.startswith("--")):
        # The whole option: --nthread must not pass as a prefix of --nthreads.
        assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", done.stdout), (
            f"{shlex.join(argv)}: {option} is not an option of the command"
        )
    return done.stdout


@pytest.mark.slow
def test_every_command_the_containers_run_exists() -> None:
    """The console scripts are the project's, Prefect's and Dask's, with the options passed."""
    scripts = dict(PYPROJECT["project"]["scripts"])
    assert scripts["glacial-lakes"] == "flows.cli:main"
    dependencies = {re.split(r"[=<>\[ ]", d)[0] for d in PYPROJECT["project"]["dependencies"]}
    # `prefect` comes with prefect, `dask` with distributed (prefect-dask's dependency): declared in pyproject.
    providers = {"prefect": "prefect", "dask": "prefect-dask", "glacial-lakes": "glacial-lake-inventory"}
    assert {"prefect", "prefect-dask"} <= dependencies
    seen: set[str] = set()
    for name, service in SERVICES.items():
        if "command" not in service:
            continue
        for argv in _commands(service):
            if argv[0] in SHELL_WORDS or "=" in argv[0]:  # the init script's shell: built-ins, coreutils, variables
                continue
            assert argv[0] in providers, f"{name}: {argv[0]} is not a console script of the project's dependencies"
            _help(argv)
            seen.add(argv[0])
    assert seen == set(providers)
    # And the image's own default command.
    (cmd,) = _instructions("CMD")
    _help(json.loads(cmd))


# ---------------------------------------------------------------------------------------
# The Dockerfile
# ---------------------------------------------------------------------------------------


def test_dockerfile_is_debian_with_the_projects_python() -> None:
    (base,) = _instructions("FROM")
    image, tag = base.split(":")
    assert image == "python" and tag.endswith("-bookworm"), base
    assert tag.startswith(f"{sys.version_info.major}.{sys.version_info.minor}")
    assert PYPROJECT["project"]["requires-python"] == ">=3.11" and tag.startswith("3.11")
    (user,) = _instructions("USER")
    assert user not in {"root", "0"}


def test_dockerfile_copies_what_pip_install_needs_and_runs_the_compose_workers_command() -> None:
    copied: set[str] = set()
    for args in _instructions("COPY"):
        *sources, _dest = args.split()
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
            copied.add(source.rstrip("/"))
    packages = {p.rstrip("*") for p in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert packages <= copied, packages - copied
    assert {"pyproject.toml", PYPROJECT["project"]["readme"]} <= copied
    assert any(run.startswith("pip install .") for run in _instructions("RUN"))
    (cmd,) = _instructions("CMD")
    argv = json.loads(cmd)  # exec form: a JSON array
    assert argv == SERVICES["worker"]["command"]
    # The pool it polls is the CPU pool of the deployments.
    pools = re.findall(r"^\s+name:\s*(\S+)", (DEPLOY / "prefect.yaml").read_text(), flags=re.M)
    assert argv[argv.index("--pool") + 1] in pools
    ignored = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    assert "**/.venv" in ignored and ".git" in ignored


# ---------------------------------------------------------------------------------------
# The same services from Debian packages
# ---------------------------------------------------------------------------------------


def _get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _wait_healthy(server: subprocess.Popen[bytes], port: int, limit_s: float) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        assert server.poll() is None, "the Prefect server exited"
        try:
            if _get(port, "/api/health")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(1)
    raise AssertionError(f"no healthy Prefect server on port {port} after {limit_s:.0f} s")


@pytest.fixture
def clean_env(tmp_path: Path) -> dict[str, str]:
    """This process's environment without Prefect or database settings, a home of the test's own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "GLACIAL_LAKES_", "DATABASE_URL"))}
    home = tmp_path / "home"
    home.mkdir()
    tmp_path.chmod(0o755)
    home.chmod(0o755)  # the postgres user may need to enter it when the suite runs as root
    return {**env, "HOME": str(home), "PREFECT_HOME": str(home / "prefect"), "GLACIAL_LAKES_HOME": str(home)}


@pytest.fixture
def prefect_server_on_postgresql(pg_url_base: str, clean_env: dict[str, str]) -> Iterator[int]:
    """The compose's prefect-server command and environment, on a database of the suite's PostgreSQL."""
    service = SERVICES["prefect-server"]
    port = free_port()
    argv = [str(a) for a in service["command"]]
    argv[argv.index("--host") + 1] = "127.0.0.1"  # loopback here; 0.0.0.0 inside the container's network
    argv[argv.index("--port") + 1] = str(port)
    with fresh_database(pg_url_base, None) as url:
        env = {**clean_env}
        for variable, value in _environment(service).items():
            env[variable] = _substituted(value, {"PREFECT_DB_PASSWORD": "unused"})
        env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = (
            sa.engine.make_url(url).set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
        )
        server = subprocess.Popen([str(BIN / argv[0]), *argv[1:]], env=env, stdout=subprocess.DEVNULL)
        try:
            _wait_healthy(server, port, 120)
            yield port
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


@pytest.mark.db
@pytest.mark.slow
def test_the_compose_server_and_worker_run_from_debian_packages(
    prefect_server_on_postgresql: int, clean_env: dict[str, str]
) -> None:
    port = prefect_server_on_postgresql
    status, _ = _get(port, "/api/admin/version")
    assert status == 200
    argv = [str(a) for a in SERVICES["worker"]["command"]]
    pool = argv[argv.index("--pool") + 1]
    env = {**clean_env, "PREFECT_API_URL": f"http://127.0.0.1:{port}/api", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    # --run-once: one poll, then exit (the container's worker polls forever).
    done = subprocess.run(
        [str(BIN / argv[0]), *argv[1:], "--run-once"], env=env, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr[-3000:]
    status, body = _get(port, f"/api/work_pools/{pool}")
    assert status == 200, body
    assert json.loads(body)["type"] == argv[argv.index("--type") + 1]


@pytest.mark.db
@pytest.mark.slow
def test_the_init_script_migrates_and_creates_the_writer_login(
    pg_url_base: str, clean_env: dict[str, str], tmp_path: Path
) -> None:
    service = SERVICES["inventory-init"]
    password = secrets.token_urlsafe(24)
    login = f"lakes_worker_{secrets.token_hex(4)}"  # roles are cluster-wide: one of this test's own
    script = service["command"][2].replace("lakes_worker", login).replace("$$", "$")
    with fresh_database(pg_url_base, None) as url:
        env = {
            **clean_env,
            "DATABASE_URL": url,
            "LAKES_WRITER_PASSWORD": password,
            "PATH": f"{BIN}:{os.environ['PATH']}",
        }
        try:
            done = subprocess.run(
                ["sh", "-ec", script], env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path
            )
            assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
            writer = sa.engine.make_url(url).set(username=login, password=password)
            conninfo = writer.set(drivername="postgresql").render_as_string(hide_password=False)
            with psycopg.connect(conninfo, connect_timeout=10) as conn:
                assert conn.execute("SELECT count(*) FROM inventory.lake").fetchone() == (0,)
                assert not conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()[0]  # type: ignore[index]
        finally:
            admin_sql(pg_url_base, f'DROP DATABASE IF EXISTS "{sa.engine.make_url(url).database}" WITH (FORCE)')
            admin_sql(pg_url_base, f'DROP ROLE IF EXISTS "{login}"')
