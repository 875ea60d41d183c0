"""The desired container document (``desired/containers/<internal_id>.json``).

It is the contract's ``POST /containers`` body plus the declarative fields that turn
commands into state (``power``, ``restart_requested_at``, ``reinstall_requested_at``).
Checks that need the host (volume exists, ports in the pool, cpu count, allowed mount
folders) live in ``lightd.desired.admission``; this module is pure data and must not
import asyncio, quart or docker.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from enum import StrEnum
from typing import Annotated, Literal

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
)

from lightd.spec.ids import InternalId
from lightd.spec.template import ConfigFile, EnvName, TemplateName

MIN_MEMORY_BYTES = 6 * 1024 * 1024
MIN_DISK_BYTES = 8 * 1024 * 1024  # the smallest ext4 image with a journal, rounded up

ImageRef = Annotated[
    str, StringConstraints(min_length=1, max_length=512, pattern=r"^[A-Za-z0-9][^\s\x00]*$")
]
# Empty only in a document that names a template (the template's first image is used).
OptionalImageRef = Annotated[
    str, StringConstraints(max_length=512, pattern=r"^([A-Za-z0-9][^\s\x00]*)?$")
]
ContainerUser = Annotated[
    str,
    StringConstraints(
        pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,31})?$"
    ),
]
VariableValue = str | int | float | bool | None


class Power(StrEnum):
    RUNNING = "running"
    STOPPED = "stopped"


class PortBinding(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    ip: str = "0.0.0.0"
    port: int = Field(ge=1, le=65535)
    protocol: Literal["tcp", "udp"] = "tcp"

    @field_validator("ip")
    @classmethod
    def _ip(cls, value: str) -> str:
        try:
            return str(ipaddress.ip_address(value.strip("[]")))
        except ValueError as exc:
            raise ValueError(f"{value!r} is not an IP address") from exc


class Limits(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    memory: int | None = Field(default=None, ge=MIN_MEMORY_BYTES, description="bytes")
    cpu: float | None = Field(default=None, gt=0, description="cores")
    swap: int | None = Field(default=None, ge=-1, description="bytes of swap beyond memory")
    pids: int | None = Field(default=None, ge=16, le=1_000_000)
    # The volume's disk limit: applied by the reconciler (the document wins over
    # POST /volumes/<id>/limit); None leaves the volume's limit to the API.
    disk: int | None = Field(default=None, ge=MIN_DISK_BYTES, le=2**60, description="bytes")


class StopPolicy(BaseModel):
    """How a graceful stop asks the app to end before it is killed."""

    model_config = ConfigDict(extra="forbid", strict=True)

    signal: str = Field(default="SIGTERM", pattern=r"^SIG[A-Z0-9]+$")
    command: str | None = Field(default=None, max_length=4096)
    timeout_seconds: float = Field(default=30.0, ge=0, le=3600)


class BackupSchedule(BaseModel):
    """Scheduled backups of the container's volume and the keep rules that prune them."""

    model_config = ConfigDict(extra="forbid", strict=True)

    every_seconds: float = Field(ge=60, le=366 * 86400, description="time between backups")
    adapter: Literal["archive", "s3", "restic"] | None = None
    ignore: list[str] = Field(default_factory=list, max_length=1024)
    keep_last: int = Field(default=0, ge=0, le=10_000)
    keep_daily: int = Field(default=0, ge=0, le=10_000)
    keep_weekly: int = Field(default=0, ge=0, le=10_000)
    before_commands: list[str] = Field(default_factory=list, max_length=64)
    after_commands: list[str] = Field(default_factory=list, max_length=64)
    command_wait_seconds: float = Field(default=5.0, ge=0, le=3600)


SCHEMA_KEY_DESCRIPTION = (
    "Where an editor finds this document's JSON Schema; lightd keeps it and ignores it."
)


class ContainerSpec(BaseModel):
    """One container's desired state."""

    model_config = ConfigDict(
        extra="forbid", populate_by_name=True, title="lightd container document", strict=True
    )

    schema_uri: str | None = Field(
        default=None, alias="$schema", description=SCHEMA_KEY_DESCRIPTION
    )
    internal_id: InternalId
    template: TemplateName | None = Field(
        default=None, description="a template (desired/templates/<name>.json) this builds on"
    )
    variables: dict[EnvName, VariableValue] = Field(
        default_factory=dict, max_length=256, description="the template's variables' values"
    )
    image: OptionalImageRef = Field(
        default="",
        validate_default=True,
        description="required unless a template gives it (then one of the template's images)",
    )
    volume_id: str = Field(min_length=8, max_length=36, pattern=r"^[0-9a-fA-F-]{8,36}$")
    startup_command: str = Field(default="", max_length=16384)
    start_pattern: str | None = Field(default=None, max_length=4096)
    ports: list[PortBinding] = Field(default_factory=list, max_length=256)
    limits: Limits = Field(default_factory=Limits)
    install_script: str | None = Field(default=None, max_length=1024 * 1024)
    mount: dict[str, str] = Field(default_factory=dict, max_length=64)
    environment: dict[str, str] = Field(default_factory=dict, max_length=512)
    power: Annotated[Power, Field(strict=False)] = Power.RUNNING  # its text names it
    restart_requested_at: float | None = None
    reinstall_requested_at: float | None = None
    kill_requested_at: float | None = None
    stop: StopPolicy = Field(default_factory=StopPolicy)
    backups: BackupSchedule | None = None
    user: ContainerUser | None = Field(
        default=None,
        description="uid[:gid] the main container runs as (default: containers.user for "
        "documents written since templates; the image's user for older ones)",
    )
    read_only_rootfs: bool = Field(
        default=False, description="the main container's root file system read-only (/tmp tmpfs)"
    )
    install_image: OptionalImageRef = Field(
        default="", description="the install container's image (default: the template's)"
    )
    config_files: list[ConfigFile] = Field(
        default_factory=list, max_length=64, description="rewritten before every start"
    )

    @field_validator("image")
    @classmethod
    def _image(cls, value: str, info: ValidationInfo) -> str:
        if not value and info.data.get("template") is None:
            raise ValueError("field required (or a template that gives it)")
        return value

    @field_validator("variables")
    @classmethod
    def _variables(
        cls, value: dict[str, VariableValue], info: ValidationInfo
    ) -> dict[str, VariableValue]:
        if value and info.data.get("template") is None:
            raise ValueError("variables need a template")
        for name, item in value.items():
            if isinstance(item, str) and len(item) > 65536:
                raise ValueError(f"{name} is longer than 65536 characters")
        return value

    @field_validator("start_pattern")
    @classmethod
    def _pattern(cls, value: str | None) -> str | None:
        if value in (None, ""):
            return None
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from exc
        return value

    @field_validator("ports")
    @classmethod
    def _unique_ports(cls, value: list[PortBinding]) -> list[PortBinding]:
        seen = set()
        for binding in value:
            key = (binding.ip, binding.port, binding.protocol)
            if key in seen:
                raise ValueError(f"{binding.ip}:{binding.port}/{binding.protocol} is listed twice")
            seen.add(key)
        return value

    @field_validator("mount")
    @classmethod
    def _mount(cls, value: dict[str, str]) -> dict[str, str]:
        for source, target in value.items():
            if not source.startswith("/") or "\x00" in source or ".." in source.split("/"):
                raise ValueError(f"mount source {source!r} must be an absolute host path")
            if not target.startswith("/") or "\x00" in target or ".." in target.split("/"):
                raise ValueError(f"mount target {target!r} must be an absolute container path")
            if target.rstrip("/") in ("/home/container", "/mnt/server", ""):
                raise ValueError(f"mount target {target!r} is reserved for the volume")
        return value

    @field_validator("environment")
    @classmethod
    def _environment(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,255}", key):
                raise ValueError(f"environment name {key!r} is invalid")
        return value

    def document(self) -> dict[str, object]:
        """The JSON form written to disk (defaults included, so files are explicit)."""
        data: dict[str, object] = self.model_dump(mode="json", by_alias=True)
        if data.get("$schema") is None:
            data.pop("$schema", None)
        # Fields of the template era stay out of documents that do not use them, so an
        # older document written again reads as it did.
        for key, empty in TEMPLATE_ERA_DEFAULTS.items():
            if data.get(key) == empty:
                data.pop(key, None)
        return data


TEMPLATE_ERA_DEFAULTS: dict[str, object] = {
    "template": None,
    "variables": {},
    "user": None,
    "read_only_rootfs": False,
    "install_image": "",
    "config_files": [],
}


def _digest(value: object) -> str:
    return hashlib.sha256(orjson.dumps(value, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def recreate_hash(spec: ContainerSpec, *, volume_path: str, user: str | None = None) -> str:
    """Hash of the fields that force a re-create: image, command, ports, mounts, environment.

    ``user`` (the effective user) and a read-only root enter it only when set, so a
    container created before lightd knew of users keeps its hash (and is not re-created
    by an upgrade).
    """
    fields: dict[str, object] = {
        "image": spec.image,
        "command": spec.startup_command,
        "ports": sorted((p.ip, p.port, p.protocol) for p in spec.ports),
        "volume": volume_path,
        "mount": spec.mount,
        "environment": spec.environment,
    }
    if user is not None:
        fields["user"] = user
    if spec.read_only_rootfs:
        fields["read_only_rootfs"] = True
    return _digest(fields)


def install_image_of(spec: ContainerSpec) -> str:
    """The image the install runs in: the template's installer, else the main image."""
    return spec.install_image or spec.image


def install_key(spec: ContainerSpec) -> str:
    """Identity of one install: a changed script or a reinstall request runs it again."""
    if spec.install_image:
        return _digest(
            {
                "script": spec.install_script,
                "reinstall": spec.reinstall_requested_at,
                "image": spec.install_image,
            }
        )
    return _digest({"script": spec.install_script, "reinstall": spec.reinstall_requested_at})


def numeric_owner(user: str | None) -> tuple[int, int] | None:
    """``"988:988"`` -> (988, 988); ``"988"`` -> (988, 988); a name -> None (not walkable)."""
    if user is None:
        return None
    uid, _, gid = user.partition(":")
    if not uid.isdigit() or (gid and not gid.isdigit()):
        return None
    return int(uid), int(gid or uid)
