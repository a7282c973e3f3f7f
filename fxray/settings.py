"""Platform settings: one typed object, read from ``FXRAY_*`` environment variables or a TOML file.

Precedence (highest first): keyword arguments, environment variables, the TOML file named by
``FXRAY_CONFIG`` (or ``./fxray.toml`` if present), the defaults below. The defaults are the
embedded ones: local Ray, SQLite, local folders, the embedded event bus.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


def _toml_file() -> Path | None:
    explicit = os.environ.get("FXRAY_CONFIG")
    if explicit:
        if not Path(explicit).is_file():
            raise FileNotFoundError(f"FXRAY_CONFIG names {explicit}, which is not a file")
        return Path(explicit)
    local = Path("fxray.toml")
    return local if local.exists() else None


class Settings(BaseSettings):
    """Everything an operator can configure. Nested keys in env vars use ``__``."""

    model_config = SettingsConfigDict(
        env_prefix="FXRAY_", env_nested_delimiter="__", extra="forbid"
    )

    instance: str = Field(
        default="default",
        pattern=r"^[A-Za-z0-9_-]+$",
        description="Names this installation's actors.",
    )
    home: Path = Field(default=Path(".fxray"), description="Folder for embedded state.")
    database_url: str = Field(default="", description="SQLAlchemy URL; default SQLite in home.")
    event_bus: Literal["embedded", "kafka"] = "embedded"
    kafka_bootstrap: str = Field(default="127.0.0.1:9092", description="Kafka bootstrap servers.")
    kafka_producer_config: dict[str, Any] = Field(
        default_factory=dict, description="librdkafka producer properties (e.g. security)."
    )
    kafka_consumer_config: dict[str, Any] = Field(
        default_factory=dict, description="librdkafka consumer properties (e.g. security)."
    )
    package_store: Literal["local", "s3"] = Field(
        default="local", description="Where service packages are kept: home folder or S3 bucket."
    )
    asset_store: Literal["local", "s3"] | None = Field(
        default=None, description="Where assets are kept; default: like package_store."
    )
    s3_endpoint: str = Field(default="127.0.0.1:9000", description="S3/MinIO host:port.")
    s3_access_key: str | None = Field(default=None, description="S3 access key.")
    s3_secret_key: str | None = Field(
        default=None, description="S3 secret key (secret: give it through the environment)."
    )
    s3_secure: bool = Field(default=False, description="Talk to S3 over HTTPS.")
    s3_bucket: str = Field(default="fxray", description="Bucket of packages and assets.")
    s3_region: str | None = None
    kv_store: Literal["local", "consul"] = Field(
        default="local", description="Config, secrets and state: SQLite in home, or Consul KV."
    )
    consul_url: str = Field(default="http://127.0.0.1:8500", description="Consul HTTP API.")
    consul_token: str | None = Field(
        default=None,
        repr=False,  # a secret: kept out of repr(); give it through the environment
        description="Consul ACL token (secret: give it through the environment).",
    )

    events_topic: str = "fxray.events"
    max_event_bytes: int = Field(default=1_000_000, ge=1024, description="Larger: dead letter.")
    max_event_depth: int = Field(
        default=64, ge=4, le=500, description="JSON nesting deeper than this: dead letter."
    )
    ops_runs_topic: str = "fxray.ops.runs"
    ops_logs_topic: str = "fxray.ops.logs"
    ops_sink: Literal["none", "elasticsearch"] = Field(
        default="none",
        description="Ops pipeline: executors publish run and log records to the ops topics and "
        "ops sink actors write them to Elasticsearch (none: run rows only).",
    )
    ops_sinks: int = Field(default=1, ge=1, description="Ops sink actors in one consumer group.")
    ops_index_prefix: str = Field(
        default="fxray",
        pattern=r"^[a-z0-9][a-z0-9_-]*$",
        description="Indices <prefix>-runs-YYYY.MM.DD / <prefix>-logs-... and their aliases.",
    )
    es_url: str = Field(
        default="http://127.0.0.1:9200", description="Elasticsearch URL(s), comma-separated."
    )
    es_compat: Literal["elasticsearch", "opensearch"] = Field(
        default="elasticsearch",
        description="opensearch: send plain application/json (OpenSearch answers the client's "
        "compatible-with media type with 406).",
    )
    es_username: str | None = None
    es_password: str | None = Field(
        default=None, repr=False, description="Elasticsearch password (secret: use the env)."
    )
    es_api_key: str | None = Field(
        default=None, repr=False, description="Elasticsearch API key (secret: use the env)."
    )
    event_output_mode: Literal["structured", "binary"] = Field(
        default="structured",
        description="CloudEvents Kafka content mode of events fxray produces (input: both).",
    )
    deadletter_topic: str = "fxray.deadletter"
    deadletter_failed_runs: bool = Field(
        default=True, description="Send the event of a run that failed for good to dead letters."
    )
    bus_partitions: int = Field(default=4, ge=1)

    routers: int = Field(default=1, ge=1, description="Router actors in one consumer group.")
    router_group: str = Field(
        default="", description="Consumer group; default fxray-router.<instance>."
    )
    router_static_membership: bool = Field(
        default=False,
        description="Routers join as static members: a restarted router takes its partitions "
        "back at once; a removed one keeps them until the session times out.",
    )
    ray_address: str | None = Field(default=None, description="None starts a local Ray.")
    ray_num_cpus: int | None = None
    ray_include_dashboard: bool = False
    ray_namespace: str = "fxray"
    platform_actor_resources: dict[str, float] = Field(
        default_factory=dict,
        description="Custom Ray resources each router and ops sink asks for, so that they run "
        "only on nodes that offer them (on KubeRay: the worker groups, never the head); as JSON "
        "in the env: FXRAY_PLATFORM_ACTOR_RESOURCES='{\"fxray-platform\": 0.001}'.",
    )
    cluster_mode: bool | None = Field(
        default=None,
        description="Many Ray nodes: node-local backends (SQLite, local folders, local KV, the "
        "embedded bus) are refused and dependency environments are shared through the package "
        "store. None: on when Ray has more than one node or cluster_node_types is set; false: "
        "all nodes share this machine's folders (one-machine tests).",
    )
    cluster_node_types: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description="Node types an autoscaler can add, by name, with the resources each node "
        "offers (CPU, GPU, memory in bytes, custom): a service asking for more than any alive "
        "node or any of these offers is refused rather than left waiting; as JSON in the env.",
    )
    executor_resources: dict[str, float] = Field(
        default_factory=dict,
        description="Custom Ray resources every executor asks for (e.g. one only worker groups "
        "offer), on top of its service's own.",
    )
    executor_target_backlog: int = Field(
        default=1,
        ge=1,
        description="Runs waiting or running per executor a version scales to (between its min "
        "and max executors); a manifest's target_backlog overrides it.",
    )
    executor_start_timeout_s: float = Field(
        default=600.0,
        gt=0,
        description="An executor not placed and started within this time fails its runs (with "
        "what it asked for and what the nodes offer) instead of waiting for good.",
    )

    executor_cpus: float = Field(default=0.1, ge=0, description="CPUs reserved per executor actor.")
    executors_min_per_version: int = Field(default=0, ge=0)
    executors_max_per_version: int = Field(default=2, ge=1)
    executors_max_total: int = Field(default=16, ge=1, description="Executor actors in all.")
    env_backend: Literal["fxray", "ray-pip"] = "fxray"
    executor_idle_s: float = Field(default=60.0, gt=0, description="Reap idle executors after.")
    executor_batch_size: int = Field(default=256, ge=1, description="Most runs per executor call.")
    router_poll_max: int = Field(default=500, ge=1, description="Records per bus poll.")
    router_max_in_flight: int = Field(default=2000, ge=1, description="Runs queued or running.")
    router_pause_after_s: float = Field(
        default=1.0,
        ge=0,
        description="A full router waits this long for room before it pauses its partitions. "
        "Pausing drops the records the consumer has prefetched, and librdkafka fetches again "
        "up to ~1 s after a resume, so brief fullness is better waited out.",
    )
    trigger_refresh_s: float = Field(default=0.5, gt=0)
    default_timeout_s: float = Field(default=300.0, gt=0)
    pip_index_url: str | None = None
    api_host: str = Field(default="127.0.0.1", description="Address `fxray up` serves the API on.")
    api_port: int = Field(default=8080, ge=0, le=65535)
    admin_key: str | None = Field(
        default=None,
        description="First admin API key (e.g. from a secret); if unset, `fxray up` creates one "
        "on first start and prints it once.",
    )
    ray_dashboard_url: str | None = Field(
        default=None, description="Link the API gives to Ray's dashboard; None: ask Ray."
    )
    ui_enabled: bool = Field(
        default=True, description="Serve the web UI at / next to the management API."
    )
    ui_session_ttl_s: float = Field(
        default=8 * 3600.0,
        ge=60,
        description="A web UI sign-in lasts this long (then sign in again with an API key).",
    )
    api_allow_local_repos: bool = Field(
        default=False,
        description="Let the API register git repositories by file:// URL or local path "
        "(off: only https://, ssh:// and git@host:path, so API users cannot read server files).",
    )
    # upload and archive limits: service zips, package folders (git sync, validate), assets
    package_max_upload_bytes: int = Field(
        default=50 * 1024 * 1024, ge=1, description="Largest service zip (its own bytes)."
    )
    package_max_entries: int = Field(
        default=10_000,
        ge=1,
        description="Entries a service zip may list (files, folders, junk), or a package "
        "folder may hold; more is refused before anything is read.",
    )
    package_max_files: int = Field(default=1000, ge=1, description="Files a package keeps.")
    package_max_entry_bytes: int = Field(
        default=50 * 1024 * 1024, ge=1, description="Real (decompressed) bytes of one file."
    )
    package_max_total_bytes: int = Field(
        default=50 * 1024 * 1024, ge=1, description="Real (decompressed) bytes of a package."
    )
    archive_max_ratio: float = Field(
        default=200.0,
        gt=1,
        description="Largest decompressed / compressed size of a zip entry (deflate reaches "
        "~1000 on zeros; code and data stay far below 200).",
    )
    archive_ratio_floor_bytes: int = Field(
        default=1024 * 1024, ge=0, description="Entries up to this size skip the ratio check."
    )
    archive_chunk_bytes: int = Field(
        default=64 * 1024,
        ge=4096,
        le=16 * 1024 * 1024,
        description="Bytes decompressed per step while the limits are checked.",
    )
    asset_max_bytes: int = Field(
        default=256 * 1024 * 1024, ge=1, description="Largest asset upload (stored as is)."
    )
    git_allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Git hosts (names, addresses or networks like 10.0.0.0/8) that git sync may "
        "reach although they resolve to loopback, link-local or private addresses; as JSON in "
        "the env: FXRAY_GIT_ALLOWED_HOSTS='[\"git.internal\"]'.",
    )

    @model_validator(mode="after")
    def _fill_paths(self) -> Settings:
        self.home = self.home.expanduser().resolve()
        if not self.router_group:
            self.router_group = f"fxray-router.{self.instance}"
        if not self.database_url:
            self.database_url = f"sqlite:///{self.home / 'fxray.db'}"
        scheme, sep, rest = self.database_url.partition("://")
        if sep and scheme in ("postgresql", "postgres"):
            # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3; fxray ships psycopg2
            self.database_url = f"postgresql+psycopg2://{rest}"
        return self

    @property
    def packages_dir(self) -> Path:
        return self.home / "packages"

    @property
    def envs_dir(self) -> Path:
        return self.home / "envs"

    @property
    def kv_path(self) -> Path:
        return self.home / "kv.db"

    @property
    def assets_dir(self) -> Path:
        return self.home / "assets"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_path = _toml_file()
        if toml_path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_path))
        return tuple(sources)

    def public_dict(self) -> dict[str, Any]:
        """Settings as plain JSON-able data (for passing to actors)."""
        return self.model_dump(
            mode="json", exclude={"admin_key", "s3_secret_key", "es_password", "es_api_key"}
        )
