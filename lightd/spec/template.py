"""The desired template document (``desired/templates/<name>.json``).

A template is what an egg (Pterodactyl ``PTDL_v1``/``PTDL_v2``, Pelican ``PLCN_*``)
describes, in lightd's own shape: named images, a startup command with ``{{VAR}}``
placeholders, variables with Laravel-style rules, start detection, the stop, an install
script with its image and entrypoint, config files to rewrite and a file deny list.
Eggs are turned into this by :mod:`lightd.templates.eggs`. Pure data: this module must not
import asyncio, quart or docker, nor read files.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

TEMPLATE_NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
TEMPLATE_NAME_RE = re.compile(TEMPLATE_NAME_PATTERN)

TemplateName = Annotated[str, StringConstraints(pattern=TEMPLATE_NAME_PATTERN)]
EnvName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,255}$")]

PARSERS = ("properties", "yaml", "json", "ini", "xml", "toml", "file")
Parser = Literal["properties", "yaml", "json", "ini", "xml", "toml", "file"]


def is_template_name(value: str) -> bool:
    return bool(TEMPLATE_NAME_RE.fullmatch(value))


class TemplateVariable(BaseModel):
    """One variable: the container sees it as ``env_variable``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(default="", max_length=255)
    env_variable: EnvName
    description: str = Field(default="", max_length=16384)
    default_value: str = Field(default="", max_length=65536)
    rules: list[str] = Field(default_factory=list, max_length=64)
    user_viewable: bool = True
    user_editable: bool = True


class Replacement(BaseModel):
    """One key of a config file: its new value, or values chosen by the current one.

    ``value`` may use placeholders (``{{server.build.default.port}}``, ``{{env.NAME}}``);
    ``if_value`` maps a current value (or ``regex:…``) to its replacement, as eggs do.
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    match: str = Field(min_length=1, max_length=1024)
    value: str | int | float | bool | None = None
    if_value: dict[str, str | int | float | bool | None] | None = None


class ConfigFile(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    path: str = Field(min_length=1, max_length=4096)
    parser: Parser
    replace: list[Replacement] = Field(default_factory=list, max_length=1024)

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        parts = value.strip("/").split("/")
        if "\x00" in value or ".." in parts or value.strip("/") == "":
            raise ValueError(f"config file path {value!r} must stay inside the volume")
        return value


class StartDetection(BaseModel):
    """The container counts as started once one ``done`` entry is seen on its console.

    Each entry is a plain substring, or a regular expression after ``regex:``.
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    done: list[Annotated[str, StringConstraints(min_length=1, max_length=4096)]] = Field(
        default_factory=list, max_length=64
    )
    strip_ansi: bool = False

    @field_validator("done")
    @classmethod
    def _done(cls, value: list[str]) -> list[str]:
        for entry in value:
            if entry.startswith("regex:"):
                try:
                    re.compile(entry[len("regex:") :])
                except re.error as exc:
                    raise ValueError(f"{entry!r} is not a valid regular expression: {exc}") from exc
        return value


class TemplateStop(BaseModel):
    """A console command, or a signal (``signal`` set, ``command`` None)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    command: str | None = Field(default=None, max_length=4096)
    signal: str | None = Field(default=None, pattern=r"^SIG[A-Z0-9]+$")


class InstallStep(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    script: str = Field(default="", max_length=1024 * 1024)
    image: str = Field(default="", max_length=512)
    entrypoint: str = Field(default="sh", max_length=255)


SCHEMA_KEY_DESCRIPTION = (
    "Where an editor finds this document's JSON Schema; lightd keeps it and ignores it."
)


class TemplateSpec(BaseModel):
    """One template's desired state."""

    model_config = ConfigDict(
        extra="forbid", populate_by_name=True, title="lightd template document", strict=True
    )

    schema_uri: str | None = Field(
        default=None, alias="$schema", description=SCHEMA_KEY_DESCRIPTION
    )
    name: TemplateName
    description: str = Field(default="", max_length=65536)
    author: str = Field(default="", max_length=255)
    source: str = Field(
        default="lightd", max_length=32, description="what it was made from (PTDL_v2, …)"
    )
    images: dict[str, str] = Field(min_length=1, max_length=64, description="label -> image")
    startup: str = Field(default="", max_length=16384)
    variables: list[TemplateVariable] = Field(default_factory=list, max_length=256)
    start: StartDetection = Field(default_factory=StartDetection)
    stop: TemplateStop = Field(default_factory=TemplateStop)
    install: InstallStep | None = None
    config_files: list[ConfigFile] = Field(default_factory=list, max_length=64)
    file_denylist: list[str] = Field(default_factory=list, max_length=1024)
    features: dict[str, Any] = Field(default_factory=dict, max_length=64)

    @field_validator("variables")
    @classmethod
    def _unique(cls, value: list[TemplateVariable]) -> list[TemplateVariable]:
        seen: set[str] = set()
        for variable in value:
            if variable.env_variable in seen:
                raise ValueError(f"variable {variable.env_variable!r} is listed twice")
            seen.add(variable.env_variable)
        return value

    def default_image(self) -> str:
        """The first image (eggs list their preferred image first)."""
        return next(iter(self.images.values()))

    def variable(self, env_name: str) -> TemplateVariable | None:
        return next((v for v in self.variables if v.env_variable == env_name), None)

    def document(self) -> dict[str, object]:
        data: dict[str, object] = self.model_dump(mode="json", by_alias=True)
        if data.get("$schema") is None:
            data.pop("$schema", None)
        return data
