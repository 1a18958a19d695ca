"""Settings, read once at the edge (CLI / flow entry) from environment variables.

Every setting has a documented default; the README lists them. Nothing below the flows reads
the environment: engines, paths and parameters are passed down.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.errors import SettingsError
from db.local_cluster import DEFAULT_DBNAME, DEFAULT_PORT
from models.hub import HubCache
from models.runtime import InferenceRuntime
from tasks.catalogs import CATALOGS
from tasks.defaults import (
    MAX_PAIR_DAYS,
    MAX_PAIR_DAYS_BOUND,
    MIN_LAKE_AREA_M2,
    MIN_LAKE_AREA_M2_BOUND,
    PG_PORT_BOUND,
    WATER_THRESHOLD,
    WATER_THRESHOLD_BOUND,
    ZONE_MARGIN_M,
    ZONE_MARGIN_M_BOUND,
    Bound,
)
from tasks.dhus import DhusCredentials, DhusOptions
from tasks.remote_read import S3Access
from tasks.signing import PC_TOKEN_URL
from tasks.stac_api import DEFAULT_MAX_ITEMS, StacApiOptions

ENV_PREFIX = "GLACIAL_LAKES_"
PRIVATE_DIR_MODE = 0o700
"""Prefect's home and result storage: flow parameters, logs and failures name the user's files."""
_BOUNDS: dict[str, Bound] = {
    "pg_port": PG_PORT_BOUND,
    "threshold": WATER_THRESHOLD_BOUND,
    "min_area_m2": MIN_LAKE_AREA_M2_BOUND,
    "max_pair_days": MAX_PAIR_DAYS_BOUND,
    "zone_margin_m": ZONE_MARGIN_M_BOUND,
}
"""The same ranges the CLI options accept (one definition, in :mod:`tasks.defaults`)."""


def default_home() -> Path:
    """``$XDG_DATA_HOME/glacial-lakes`` (``~/.local/share/glacial-lakes``); ``/var/lib/glacial-lakes`` for root.

    Root's home is usually mode 700, where the ``postgres`` user running the local cluster
    cannot enter, so root gets the conventional place for service state instead.
    """
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return Path("/var/lib/glacial-lakes")
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "glacial-lakes"


class Settings(BaseSettings):
    """Environment: ``GLACIAL_LAKES_*`` plus ``DATABASE_URL``."""

    # An empty variable means "not set" (shells and compose files often export VAR= to clear one).
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", env_ignore_empty=True)

    home: Path = Field(default_factory=default_home)
    """All state: data root, local database cluster, caches, Prefect home."""
    database_url: SecretStr | None = Field(default=None, validation_alias="DATABASE_URL")
    """An existing PostGIS; unset → the project's own local cluster under ``home``."""
    pg_port: int = DEFAULT_PORT
    """Port of the local cluster (loopback only)."""
    pg_database: str = DEFAULT_DBNAME
    """Database of the local cluster that holds the inventory."""
    model: str = "default"
    """Segmenter: ``default`` (the shipped TerraMind-tiny demo model), ``baseline`` (spectral, QA
    only), a checkpoint path, or ``hf://repo/path``."""
    tta: bool = True
    """Flip test-time augmentation (4 passes per window) for TerraMind models; part of the model version."""
    inference_backend: Literal["auto", "onnxruntime", "torch"] = "auto"
    """What runs a TerraMind forward: ``auto`` (ONNX Runtime on the CPU, torch on CUDA), ``onnxruntime``
    (the model exported once to ONNX, cached under ``home``) or ``torch``; not part of the model version."""
    onnx_cache: Path | None = None
    """Folder of the exported ONNX graphs; default ``<home>/models/onnx``. One folder shared by several
    homes (workers of one host) exports each model once; files are keyed by model version and written
    atomically, so sharing is safe."""
    threshold: float = WATER_THRESHOLD
    """Water probability threshold."""
    min_area_m2: float = MIN_LAKE_AREA_M2
    """Minimum mapped lake area, m² (0.5 ha)."""
    max_pair_days: float = MAX_PAIR_DAYS
    """Largest S2–S1 sensing gap, days."""
    stac_catalog: str = "auto"
    """Table of the STAC API's collection ids and asset keys: ``auto`` (by the URL's host; any other
    host gets every spelling), ``earth-search-v1``, ``planetary-computer``, ``cdse`` or ``static``."""
    stac_max_items: int = Field(default=DEFAULT_MAX_ITEMS, ge=1, le=100_000)
    """Most items one collection's search may match; a search matching more fails, naming this setting."""
    allow_s3: bool = False
    """Accept ``s3://`` asset hrefs from a STAC API (read by GDAL with the ``S3_*`` settings below)."""
    pc_token_url: str = PC_TOKEN_URL
    """Planetary Computer's SAS token endpoint; ``{collection}`` is replaced by the collection id."""
    s3_access_key_id: SecretStr | None = None
    """S3 access key of ``s3://`` reads (Copernicus Data Space: your S3 key)."""
    s3_secret_access_key: SecretStr | None = None
    """S3 secret key of ``s3://`` reads."""
    s3_session_token: SecretStr | None = None
    """S3 session token of ``s3://`` reads (temporary credentials only)."""
    s3_endpoint: str | None = None
    """S3 endpoint host[:port] (GDAL's ``AWS_S3_ENDPOINT``); Copernicus Data Space:
    ``eodata.dataspace.copernicus.eu``."""
    s3_region: str | None = None
    """S3 region (``AWS_REGION``)."""
    s3_virtual_hosting: bool | None = None
    """``false`` for path-style S3 URLs (Copernicus Data Space); unset: GDAL's default."""
    s3_https: bool | None = None
    """``false`` for an S3 endpoint on plain HTTP; unset: GDAL's default (HTTPS)."""
    dhus_user: str | None = None
    """User name on the DHuS hub of ``--source dhus:URL`` (with ``DHUS_PASSWORD``; else a netrc entry)."""
    dhus_password: SecretStr | None = None
    """Password on the DHuS hub of ``--source dhus:URL``."""
    dhus_max_items: int = Field(default=DEFAULT_MAX_ITEMS, ge=1, le=100_000)
    """Most products one kind's DHuS query may match; a query matching more fails, naming this setting."""
    dhus_max_cloud_cover: float | None = Field(default=None, ge=0.0, le=100.0)
    """Largest S2 cloud cover a DHuS query asks for, percent; unset: no cloud-cover filter."""
    dhus_dem_source: str | None = None
    """Where a ``dhus:URL`` run finds its DEM tiles (``local:DIR`` or ``stac:URL``): DHuS serves none,
    so without it every scene is skipped for want of DEM cover."""
    keep_stacks: int = Field(default=5, ge=0, le=10_000)
    """Merged scenes per AOI whose stack files stay after a run's merges, the most recently
    written first; older merged scenes' stacks are deleted (:mod:`flows.retention`)."""
    zone_margin_m: float = ZONE_MARGIN_M
    """How far each UTM zone part's grid of an AOI across zones reaches beyond the seam, metres
    (:mod:`tasks.zones`)."""
    hf_home: Path | None = Field(default=None, validation_alias="HF_HOME")
    """Hugging Face home (its ``hub/`` folder is the model cache) for ``hf://`` model specs."""
    hf_hub_cache: Path | None = Field(default=None, validation_alias="HF_HUB_CACHE")
    """Hugging Face model cache; wins over ``HF_HOME``."""
    hf_hub_offline: bool = Field(default=False, validation_alias="HF_HUB_OFFLINE")
    """Resolve ``hf://`` specs from the cache only, never over the network."""

    @field_validator("home")
    @classmethod
    def _absolute(cls, v: Path) -> Path:
        return v.expanduser().resolve()

    @field_validator("pg_port", "threshold", "min_area_m2", "max_pair_days", "zone_margin_m")
    @classmethod
    def _in_range(cls, v: float, info: ValidationInfo) -> float:
        reason = _BOUNDS[str(info.field_name)].reason(v)
        if reason is not None:
            raise ValueError(reason)
        return v

    @field_validator("stac_catalog")
    @classmethod
    def _known_catalog(cls, v: str) -> str:
        if v != "auto" and v not in CATALOGS:
            raise ValueError(f"must be auto or one of {', '.join(CATALOGS)}")
        return v

    @field_validator("pc_token_url")
    @classmethod
    def _token_url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")) or "{collection}" not in v:
            raise ValueError("must be an http(s):// URL containing {collection}")
        return v

    @field_validator("model")
    @classmethod
    def _model_named(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must name a model (default, baseline, a checkpoint path or hf://…)")
        return v.strip()

    @property
    def data_root(self) -> Path:
        """Stacks, probabilities and downloads, one folder per AOI."""
        return self.home / "data"

    @property
    def cluster_root(self) -> Path:
        """The local PostGIS cluster (used when ``DATABASE_URL`` is unset)."""
        return self.home / "postgres"

    @property
    def hf_cache_dir(self) -> Path | None:
        """The Hugging Face model cache: ``HF_HUB_CACHE``, else ``HF_HOME/hub``, else None (the library's default)."""
        if self.hf_hub_cache is not None:
            return self.hf_hub_cache
        return self.hf_home / "hub" if self.hf_home is not None else None

    @property
    def hub(self) -> HubCache:
        """Where ``hf://`` model specs are resolved (passed down to the model loaders)."""
        return HubCache(self.hf_cache_dir, self.hf_hub_offline)

    @property
    def onnx_cache_dir(self) -> Path:
        """Exported ONNX graphs of the TerraMind models, one file per model version and window."""
        return self.onnx_cache if self.onnx_cache is not None else self.home / "models" / "onnx"

    @property
    def inference_runtime(self) -> InferenceRuntime:
        """The inference backend and the exported-graph cache (passed down to the model loaders)."""
        return InferenceRuntime(self.inference_backend, self.onnx_cache_dir)

    @property
    def stac_options(self) -> StacApiOptions:
        """How ``stac:URL`` sources are searched (no secrets: safe as a task parameter)."""
        return StacApiOptions(
            catalog=self.stac_catalog,
            max_items=self.stac_max_items,
            allow_s3=self.allow_s3,
            pc_token_url=self.pc_token_url,
        )

    def dhus_credentials(self, url: str) -> DhusCredentials | None:
        """The hub account of ``url``: ``DHUS_USER`` + ``DHUS_PASSWORD``, else the netrc entry of its host.

        Raises SettingsError when only one of the two settings is set. None when neither is set
        and no netrc entry names the host.
        """
        import netrc
        from urllib.parse import urlsplit

        if (self.dhus_user is None) != (self.dhus_password is None):
            raise SettingsError(
                f"{ENV_PREFIX}DHUS_USER and {ENV_PREFIX}DHUS_PASSWORD: set both or neither (netrc then)"
            )
        if self.dhus_user is not None and self.dhus_password is not None:
            return DhusCredentials(self.dhus_user, self.dhus_password.get_secret_value())
        host = urlsplit(url).hostname or ""
        try:
            entry = netrc.netrc(os.environ.get("NETRC") or None).authenticators(
                host
            )  # as requests: $NETRC, else ~/.netrc
        except FileNotFoundError:
            return None
        except netrc.NetrcParseError as exc:
            raise SettingsError(f"netrc {exc.filename}: unreadable ({exc.msg})") from None
        if entry is None or not entry[0] or entry[2] is None:
            return None
        return DhusCredentials(entry[0], entry[2])

    def dhus_options(self, source: str) -> DhusOptions | None:
        """How ``--source dhus:URL`` is searched and fetched; None for any other source.

        Holds the credentials: built inside the task that uses it, never a flow or task parameter.
        """
        if not source.startswith("dhus:"):
            return None
        return DhusOptions(
            data_root=self.data_root,
            credentials=self.dhus_credentials(source.removeprefix("dhus:")),
            max_items=self.dhus_max_items,
            max_cloud_cover=self.dhus_max_cloud_cover,
            dem_source=self.dhus_dem_source,
        )

    @property
    def s3_access(self) -> S3Access:
        """Credentials and endpoint of ``s3://`` reads, for :func:`tasks.remote_read.use_s3_access`."""

        def secret(value: SecretStr | None) -> str | None:
            return value.get_secret_value() if value is not None else None

        return S3Access(
            access_key_id=secret(self.s3_access_key_id),
            secret_access_key=secret(self.s3_secret_access_key),
            session_token=secret(self.s3_session_token),
            endpoint=self.s3_endpoint,
            region=self.s3_region,
            virtual_hosting=self.s3_virtual_hosting,
            https=self.s3_https,
        )

    @property
    def prefect_home(self) -> Path:
        """``PREFECT_HOME`` unless the user set one."""
        return self.home / "prefect"


def load_settings() -> Settings:
    """``Settings()`` from the environment, with a bad value reported as one line naming the variable.

    Raises:
        SettingsError: e.g. ``GLACIAL_LAKES_PG_PORT='x': Input should be a valid integer``.
    """
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "?"
        alias = Settings.model_fields[field].validation_alias if field in Settings.model_fields else None
        variable = alias if isinstance(alias, str) else f"{ENV_PREFIX}{field.upper()}"
        value = repr(first.get("input"))
        value = value if len(value) <= 80 else f"{value[:77]}…"  # one line, however long the value
        # pydantic prefixes messages of our validators with "Value error, ": the rule is what follows.
        reason = first["msg"].removeprefix("Value error, ")
        raise SettingsError(f"{variable}={value}: {reason}") from exc


def prepare_prefect_environment(settings: Settings) -> None:
    """Defaults that make a local Prefect start reliable; the user's own values win.

    Must run before ``prefect`` is imported: Prefect reads its settings at import time.

    Privacy: Prefect's database, logs and persisted results hold flow parameters and failure
    messages, which name (and may quote) the user's files. The home's ``prefect`` folder and its
    result storage are therefore created mode 0700 (re-tightened if an older run left them open),
    results are not persisted unless a task asks for it, and persisted ones land in that private
    storage. A ``PREFECT_HOME`` / ``PREFECT_LOCAL_STORAGE_PATH`` the user set is theirs: untouched.

    The user's Prefect profile (``~/.prefect/profiles.toml``, :mod:`flows.prefect_profile`) stays
    in force: Prefect is pointed at that file, and a setting its active profile sets (its
    ``PREFECT_API_URL``, or a ``PREFECT_HOME`` of its own) is not overridden by a default here.
    """
    from flows.prefect_profile import active_profile_settings, user_profiles_path

    profiles = user_profiles_path()  # before PREFECT_HOME is set below: where the user's file is
    users = active_profile_settings(profiles)
    if not os.environ.get("PREFECT_PROFILES_PATH") and profiles.exists():
        os.environ["PREFECT_PROFILES_PATH"] = str(profiles)

    def unset(variable: str) -> bool:
        return not os.environ.get(variable) and variable not in users

    home = os.environ.get("PREFECT_HOME") or users.get("PREFECT_HOME") or str(settings.prefect_home)
    for variable, default in (
        ("PREFECT_HOME", settings.prefect_home),
        ("PREFECT_LOCAL_STORAGE_PATH", Path(home).expanduser() / "storage"),
    ):
        if not unset(variable):  # the user's own folder: theirs to protect
            continue
        default.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
        default.chmod(PRIVATE_DIR_MODE)  # mkdir's mode passes through the umask; an older folder keeps its own
        os.environ[variable] = str(default)
    defaults = {
        "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "false",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        # The temporary server (flows.prefect_server) needs more than the default 20 s on a busy 2-core machine.
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }
    for variable, value in defaults.items():
        if variable not in os.environ and variable not in users:  # set, even empty: the user's
            os.environ[variable] = value
