"""Settings of lightd: a JSON file, overridden by ``LIGHTD_*`` environment variables.

The sections follow the contract's ``GET /remote/config`` shape (``version``,
``server``, ``authorization``, ``remote``) plus lightd's own (``storage``, ``docker``,
``logging``, ``containers``, ``gitops``, ``sftp``). Settings are built once by
:func:`load_settings` and passed down; nothing else reads the environment or the file.
This module must not start anything or touch the disk beyond reading the config file.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from lightd import __version__
from lightd.errors import ConfigError

CONFIG_ENV = "LIGHTD_CONFIG"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8070, ge=0, le=65535)
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    cors_origins: list[str] = Field(default_factory=list)
    shutdown_grace_seconds: float = Field(default=10.0, ge=0)
    # /openapi.json and /docs without a token (they describe the API, no data).
    docs_public: bool = False


class AuthorizationSettings(_Section):
    enabled: bool = True
    # Empty means: use the token kept in the data folder, generating it on first start.
    token: str = ""


class RemoteSettings(_Section):
    """The panel lightd reports to (``lightd.remote``)."""

    enabled: bool = False
    url: str = ""
    token: str = ""
    # GET <url>/health this often; the answer is the remote's reachability.
    health_interval_seconds: float = Field(default=30.0, gt=0)
    # One request (connect, send, answer) to the panel.
    timeout_seconds: float = Field(default=10.0, gt=0)
    # Exponential backoff between attempts of one notification: initial, doubling, capped.
    retry_initial_seconds: float = Field(default=1.0, gt=0)
    retry_max_seconds: float = Field(default=60.0, gt=0)
    # Notifications kept while the panel is away; beyond it old states collapse.
    outbox_max: int = Field(default=10_000, ge=1)

    @model_validator(mode="after")
    def _url_when_enabled(self) -> RemoteSettings:
        if self.enabled and not self.url.startswith(("http://", "https://")):
            raise ValueError("remote.url must be an http:// or https:// URL when enabled")
        return self


class StorageSettings(_Section):
    data_dir: Path = Path("var")
    desired_dir: Path = Path("desired")


class DockerSettings(_Section):
    # None: the environment decides (DOCKER_HOST, else the local socket), as docker.from_env().
    base_url: str | None = None
    timeout_seconds: float = Field(default=60.0, gt=0)
    # The engine's json-file log of each container: size of one file, files kept.
    log_max_size: str = Field(default="10m", pattern=r"^[1-9][0-9]*[kmg]$")
    log_max_files: int = Field(default=2, ge=1, le=100)
    # Follow console output by reading those files when lightd can (same host, root):
    # the engine's own follow repeats and drops lines across rotation (Docker 20.10).
    follow_log_files: bool = True


class ContainersSettings(_Section):
    install_timeout_seconds: float = Field(default=1800.0, gt=0)
    crash_backoff_initial_seconds: float = Field(default=10.0, ge=0)
    crash_backoff_max_seconds: float = Field(default=300.0, ge=0)
    crash_window_seconds: float = Field(default=600.0, gt=0)
    crash_max: int = Field(default=5, ge=1)
    workers: int = Field(default=8, ge=1, le=64)
    resync_seconds: float = Field(default=60.0, ge=1)
    # Host folders under which `mount` sources may lie; empty: no extra mounts allowed.
    allowed_mount_roots: list[Path] = Field(default_factory=list)
    console_ring_lines: int = Field(default=1000, ge=10, le=100_000)
    console_throttle_lines: int = Field(default=2000, ge=1)
    console_throttle_window_ms: int = Field(default=100, ge=1, le=60_000)
    # uid:gid new main containers run as (a document may set `user`); installs run as root.
    user: str = Field(default="988:988", pattern=r"^\d{1,10}(:\d{1,10})?$")
    # Main containers run with these capabilities dropped and no-new-privileges.
    cap_drop: list[str] = Field(
        default_factory=lambda: [
            "setpcap", "mknod", "audit_write", "net_raw", "dac_override", "fowner",
            "fsetid", "net_bind_service", "sys_chroot", "setfcap",
        ]
    )  # fmt: skip


class TemplatesSettings(_Section):
    """Templates (eggs): image names mapped to local ones, the containers' TZ."""

    # image name -> the image to use instead (offline nodes, private registries, tests).
    image_map: dict[str, str] = Field(default_factory=dict)
    timezone: str = Field(default="UTC", pattern=r"^[A-Za-z0-9_+/-]{1,64}$")


class WebSocketSettings(_Section):
    max_sockets_per_container: int = Field(default=30, ge=1)
    max_watch_sockets: int = Field(default=100, ge=1)
    # Browser origins allowed to open sockets; empty: any origin (tokens still needed).
    allowed_origins: list[str] = Field(default_factory=list)
    max_frame_bytes: int = Field(default=32 * 1024, ge=1024, le=1024 * 1024)
    inbound_per_second: float = Field(default=10.0, gt=0)
    inbound_burst: int = Field(default=20, ge=1)
    queue_frames: int = Field(default=512, ge=8)
    heartbeat_seconds: float = Field(default=30.0, gt=0)
    watch_history: int = Field(default=1000, ge=10)
    # permessage-deflate costs CPU per socket for every frame; console text is small.
    compression: bool = False


class VolumeSettings(_Section):
    """Limits of the volume file routes (``PUT .../files/content`` and archives)."""

    max_upload_bytes: int = Field(default=2 * 1024**3, ge=1)
    archive_max_total_bytes: int = Field(default=10 * 1024**3, ge=1)
    archive_max_entries: int = Field(default=100_000, ge=1)
    archive_max_ratio: float = Field(default=200.0, gt=1)
    # Per-volume disk limits (lightd.fs.limits): which backend holds them. auto prefers
    # btrfs, then project quotas, then loop-mounted images (root, loop devices), then soft.
    disk_backend: Literal["auto", "btrfs", "image", "project", "soft"] = "auto"
    # How often every volume's usage is read into the cache that stats, metrics and the
    # over-limit check use (one O(1) read per volume under btrfs, image and project).
    disk_check_seconds: float = Field(default=10.0, ge=0.2)
    # soft backend: a volume is walked again at most this often, and the walk reads at
    # most this many entries a second (it yields in between), so it never hogs the disk.
    soft_rescan_seconds: float = Field(default=60.0, ge=0.2)
    soft_scan_entries_per_second: int = Field(default=20_000, ge=100)
    # Bytes of one file a content search reads (issue 19).
    search_content_max_bytes: int = Field(default=5 * 1024 * 1024, ge=1)
    # Networks a pull from a URL may reach although they are loopback, private, ...
    pull_allow_networks: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _networks_parse(self) -> VolumeSettings:
        for entry in self.pull_allow_networks:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError as exc:
                raise ValueError(f"volumes.pull_allow_networks: {exc}") from None
        return self


class TransferSettings(_Section):
    """Node-to-node transfers (lightd.transfer)."""

    # How long a target keeps a verified, started copy while it waits for the source's
    # commit; without one it removes the copy (the source stays authoritative).
    commit_timeout_seconds: float = Field(default=60.0, gt=0, le=3600)


class BackupS3Settings(_Section):
    """The bucket of the ``s3`` backup adapter (path-style, SigV4)."""

    endpoint: str = ""
    region: str = "us-east-1"
    bucket: str = ""
    prefix: str = ""
    access_key: str = ""
    secret_key: str = ""
    part_size_mib: int = Field(default=16, ge=5, le=5120)
    retries: int = Field(default=10, ge=0, le=100)
    retry_initial_seconds: float = Field(default=1.0, gt=0)
    retry_max_seconds: float = Field(default=30.0, gt=0)
    timeout_seconds: float = Field(default=120.0, gt=0)


class BackupResticSettings(_Section):
    # A local folder or an ``s3:`` URL; empty: <data_dir>/backups/restic.
    repository: str = ""
    binary: str = "restic"
    lock_retries: int = Field(default=8, ge=0)


class BackupSettings(_Section):
    """Backups and restores (``lightd.backups``)."""

    # Empty: <data_dir>/backups.
    local_dir: Path | None = None
    default_adapter: Literal["archive", "s3", "restic"] = "archive"
    concurrency: int = Field(default=2, ge=1, le=32)
    # Reads of the volume (and so writes of the backup) per backup; 0: unlimited.
    write_limit_mib_s: float = Field(default=0.0, ge=0)
    compression_level: int = Field(default=6, ge=1, le=9)
    # How archive and s3 backups are stored: tar.gz, or tar.zst (zstd at zstd_level).
    archive_format: Literal["gz", "zst"] = "gz"
    zstd_level: int = Field(default=3, ge=1, le=19)
    restore_max_total_bytes: int = Field(default=1024**4, ge=1)
    restore_max_entries: int = Field(default=10_000_000, ge=1)
    # A restore stops the volume's running containers and waits this long for them.
    stop_timeout_seconds: float = Field(default=300.0, gt=0)
    s3: BackupS3Settings = Field(default_factory=BackupS3Settings)
    restic: BackupResticSettings = Field(default_factory=BackupResticSettings)


class GitopsSettings(_Section):
    """The desired-folder watcher and the deletion guard."""

    # A full rescan runs this often even without file events (the kernel can drop them).
    rescan_seconds: float = Field(default=30.0, ge=0.5)
    # How long a burst of file events is gathered before one rescan (milliseconds).
    debounce_ms: int = Field(default=50, ge=1, le=10_000)
    # A scan that would delete more than this share of the known containers at once (and
    # more than one) deletes nothing until `lightd apply --allow-mass-delete`.
    max_delete_share: float = Field(default=0.5, ge=0.0, le=1.0)
    # Poll the folder instead of using inotify (network file systems).
    force_polling: bool = False


class SftpSettings(_Section):
    """The built-in SFTP server (``lightd.sftp``)."""

    enabled: bool = True
    host: str = "127.0.0.1"
    # 0: any free port (the log's "sftp listening" line and GET /system tell which).
    port: int = Field(default=2022, ge=0, le=65535)
    max_sessions_per_container: int = Field(default=8, ge=1, le=1024)
    # Open SFTP sessions on the whole node.
    max_sessions: int = Field(default=256, ge=1, le=65536)
    idle_timeout_seconds: float = Field(default=600.0, gt=0)
    # A connection must authenticate within this; keepalives find dead clients.
    login_timeout_seconds: float = Field(default=30.0, gt=0)
    keepalive_seconds: float = Field(default=30.0, gt=0)

    @model_validator(mode="after")
    def _host_is_an_address(self) -> SftpSettings:
        if self.host != "localhost":
            try:
                ipaddress.ip_address(self.host)
            except ValueError:
                raise ValueError(
                    f"sftp.host must be an IP address or localhost, not {self.host!r}"
                ) from None
        return self


class LoggingSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["plain", "json"] = "plain"


class Settings(BaseSettings):
    """The whole configuration; see ``deploy/config.example.json``."""

    model_config = SettingsConfigDict(
        env_prefix="LIGHTD_",
        env_nested_delimiter="__",
        extra="forbid",
        case_sensitive=False,
    )

    version: str = __version__
    server: ServerSettings = Field(default_factory=ServerSettings)
    authorization: AuthorizationSettings = Field(default_factory=AuthorizationSettings)
    remote: RemoteSettings = Field(default_factory=RemoteSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    docker: DockerSettings = Field(default_factory=DockerSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    containers: ContainersSettings = Field(default_factory=ContainersSettings)
    websocket: WebSocketSettings = Field(default_factory=WebSocketSettings)
    volumes: VolumeSettings = Field(default_factory=VolumeSettings)
    transfers: TransferSettings = Field(default_factory=TransferSettings)
    gitops: GitopsSettings = Field(default_factory=GitopsSettings)
    sftp: SftpSettings = Field(default_factory=SftpSettings)
    backups: BackupSettings = Field(default_factory=BackupSettings)
    templates: TemplatesSettings = Field(default_factory=TemplatesSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file arrives as init kwargs; the environment wins over it.
        return (env_settings, init_settings)


def _read_file(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a JSON object")
    return data


def describe_validation_error(exc: ValidationError) -> str:
    """One line naming each bad setting, e.g. ``server.port: Input should be ...``."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        if err["type"] == "extra_forbidden":
            parts.append(f"{loc}: unknown setting")
        else:
            parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_settings(config_path: Path | None = None) -> Settings:
    """Build settings from the file (``config_path`` or ``$LIGHTD_CONFIG``) and environment.

    Raises :class:`ConfigError` with one line naming the problem.
    """
    if config_path is None and os.environ.get(CONFIG_ENV):
        config_path = Path(os.environ[CONFIG_ENV])
    file_data = _read_file(config_path) if config_path is not None else {}
    origin = f" (in {config_path} or LIGHTD_* environment)" if config_path else ""
    try:
        settings = Settings(**file_data)
    except ValidationError as exc:
        raise ConfigError(
            f"invalid configuration{origin}: {describe_validation_error(exc)}"
        ) from exc
    if not settings.authorization.enabled and not _is_loopback(settings.server.host):
        raise ConfigError(
            "authorization.enabled = false is only allowed when server.host is a loopback "
            f"address, not {settings.server.host!r}"
        )
    settings.storage.data_dir = settings.storage.data_dir.expanduser().absolute()
    settings.storage.desired_dir = settings.storage.desired_dir.expanduser().absolute()
    return settings
