"""Admission: whether a container document may be applied on this host, one rule for all.

The API's write path (under the pool's lock, before it writes) and the reconciler (for
documents edited by hand, which skip the API) call :func:`admit`, so a file cannot mount,
bind or claim what the API would refuse: its template exists and its variables pass their
rules (400 naming the variable and the rule), cpu within the host's cores, mounts under
the allowed folders, every port a pool entry not bound by another container. It decides only
and returns why not; it must not write documents, talk to the engine or await anything.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from lightd.errors import InvalidField, LightdError
from lightd.spec.container import ContainerSpec


class PoolLike(Protocol):
    """What the desired side needs of the port pool (:class:`lightd.pool.PortPool`)."""

    lock: asyncio.Lock

    async def refresh(self) -> None: ...

    async def reload(self) -> None: ...

    def check_bindings(
        self, ports: Iterable[tuple[str, int, str]], *, container: str
    ) -> Sequence[object]: ...

    def any_reserved(self, keys: list[tuple[str, int]]) -> bool: ...

    async def release_reservations_locked(self, keys: list[tuple[str, int]]) -> None: ...

    @property
    def document_error(self) -> str | None: ...

    @property
    def problems(self) -> Sequence[Any]: ...


@dataclass(frozen=True)
class Refusal:
    """Why a document may not be applied; ``error`` is what the API answers with.

    ``check`` names the check that refused it: ``host`` (template, variables, cpu,
    mounts) or ``ports``.
    """

    error: LightdError
    check: Literal["host", "ports"]

    @property
    def message(self) -> str:
        return self.error.message


def check_host_limits(spec: ContainerSpec, *, roots: Iterable[Path], cpus: int) -> None:
    """Checks that need the host: cpu within its cores, mounts under allowed folders."""
    if spec.limits.cpu is not None and spec.limits.cpu > cpus:
        raise InvalidField(
            "limits.cpu", f"at most {cpus} (the host's cores), not {spec.limits.cpu}"
        )
    resolved = [root.resolve() for root in roots]
    for source in spec.mount:
        path = Path(source).resolve()
        if not any(path == root or root in path.parents for root in resolved):
            raise InvalidField(
                "mount",
                f"{source} is not under an allowed folder (containers.allowed_mount_roots)",
            )


def admit(
    spec: ContainerSpec,
    *,
    roots: Iterable[Path],
    cpus: int,
    pool: PoolLike,
    check_template: Callable[[ContainerSpec], None] | None = None,
) -> Refusal | None:
    """Why ``spec`` (the document as written) may not be applied on this host, or None.

    ``check_template`` raises the 400 of a document whose template is missing or whose
    variables break their rules (:meth:`lightd.desired.effective.Resolver.check`). The
    port check reads the pool as it is: the API calls this with the pool's lock held
    after a refresh, and writes the document before releasing it.
    """
    try:
        if check_template is not None:
            check_template(spec)
        check_host_limits(spec, roots=roots, cpus=cpus)
    except LightdError as exc:
        return Refusal(exc, check="host")
    try:
        pool.check_bindings(
            [(p.ip, p.port, p.protocol) for p in spec.ports], container=spec.internal_id
        )
    except LightdError as exc:
        return Refusal(exc, check="ports")
    return None
