"""What the engine and the reconciler say to each other: labels, names, views, requests.

Neutral plain data imported by both ``lightd.engine`` and ``lightd.reconcile`` (and the
CLI), so that neither imports the other for its vocabulary. Frozen dataclasses and
constants only: it must not import asyncio, docker or anything that does I/O.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, TypeVar

LABEL_MANAGED = "io.lightd.managed"
LABEL_INTERNAL_ID = "io.lightd.internal_id"
LABEL_ROLE = "io.lightd.role"
LABEL_SPEC_HASH = "io.lightd.spec_hash"
# Which lightd owns a container: several daemons may share one engine.
LABEL_NODE = "io.lightd.node"

VOLUME_TARGET = "/home/container"
INSTALL_TARGET = "/mnt/server"
INSTALL_SCRIPT_DIR = "/mnt/install"
SHELL_PICKER = "if [ -x /bin/bash ]; then exec /bin/bash {script}; else exec /bin/sh {script}; fi"


class Role(StrEnum):
    MAIN = "main"
    INSTALL = "install"


def container_name(internal_id: str, role: Role) -> str:
    return f"lightd-{internal_id}" if role is Role.MAIN else f"lightd-{internal_id}-install"


def node_scoped_name(name: str, node_id: str) -> str:
    """The name a container gets while ``name`` is held by another lightd node's container.

    Two nodes sharing one engine can both hold a container of one ``internal_id`` (the
    source of a transfer keeps its own until the target's copy runs): the second one is
    ``<name>.n-<node id, first 12 name characters>``. Containers whose plain name was
    free keep it, so upgrades never rename (nor re-create) an existing container.
    """
    safe = "".join(ch for ch in node_id if ch.isascii() and (ch.isalnum() or ch in "_.-"))
    return f"{name}.n-{safe[:12] or 'node'}"


@dataclass(frozen=True)
class ActualContainer:
    """One Docker container as the engine reports it."""

    id: str
    name: str
    managed: bool  # carries lightd's labels and this node's id
    internal_id: str | None
    role: str | None
    spec_hash: str | None
    running: bool
    status: str
    exit_code: int | None
    started_at: float | None
    finished_at: float | None
    memory: int | None
    memory_swap: int | None
    nano_cpus: int | None
    pids_limit: int | None
    oom_killed: bool = False


@dataclass(frozen=True)
class BriefContainer:
    """One of this node's containers as the engine's list shows it (no inspect): enough
    to tell whether an earlier full look at it still holds."""

    id: str
    name: str
    internal_id: str | None
    role: str | None
    spec_hash: str | None
    running: bool

    def agrees(self, full: ActualContainer) -> bool:
        """Whether ``full`` (an inspect of the same container) shows what this shows."""
        return (
            self.id == full.id
            and self.name == full.name
            and self.internal_id == full.internal_id
            and self.role == full.role
            and self.spec_hash == full.spec_hash
            and self.running == full.running
        )


@dataclass(frozen=True)
class Actual:
    """The two containers one internal id may have on the engine."""

    main: ActualContainer | None
    install: ActualContainer | None


@dataclass(frozen=True)
class Resources:
    """Engine limits: bytes, bytes (memory + swap, -1 unlimited), 1e-9 CPUs, processes."""

    memory: int
    memory_swap: int
    nano_cpus: int
    pids_limit: int


@dataclass(frozen=True)
class CreateRequest:
    """Everything the engine needs to create (not start) one container of this node."""

    internal_id: str
    role: Role
    image: str
    command: list[str] | None
    entrypoint: list[str] | None
    volume_path: str
    mounts: dict[str, str]
    extra_binds: dict[str, str]
    ports: list[tuple[str, int, str]]
    environment: dict[str, str]
    resources: Resources
    spec_hash: str | None
    stdin: bool
    # Main containers: the user (None: the image's), capabilities dropped, read-only root.
    user: str | None = None
    cap_drop: tuple[str, ...] = ()
    read_only: bool = False


@dataclass(frozen=True)
class EngineStatus:
    reachable: bool
    version: str | None
    api_version: str | None
    error: str | None


@dataclass(frozen=True)
class EngineEvent:
    """One container event of this node's containers (only a hint to look again)."""

    action: str
    internal_id: str | None
    attributes: dict[str, str] = field(default_factory=dict)
    container_id: str | None = None  # the container the event is about
    at: float | None = None  # when, on the engine's clock (seconds)


T_co = TypeVar("T_co", covariant=True)


class Stream(Protocol[T_co]):
    """A blocking iterator for a thread of its own; ``close()`` stops it from another."""

    def __iter__(self) -> Iterator[T_co]: ...
    def close(self) -> None: ...
