"""The container API's write path: admission, then a desired document, then a hint.

Every change is an edit of ``desired/containers/<id>.json`` followed by a hint to the
reconciler (the one ingest path). A new or rebound document must name an existing volume
and pass :func:`lightd.desired.admission.admit` (ports in the pool and free, cpu fits the
host, mounts under allowed folders), run once under the pool's lock right before the
write, so two callers can never bind one port. It must never call the engine to change
anything.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from lightd.desired.admission import PoolLike, admit
from lightd.desired.documents import DesiredContainers
from lightd.errors import Conflict, InvalidRequest, NotFound
from lightd.spec.container import ContainerSpec, PortBinding, Power
from lightd.spec.observed import InstallState, ObservedContainer


class ContainerNotFound(NotFound):
    message = "Container not found"


class ContainerExists(Conflict):
    message = "Container already exists"


class ContainerNotRunning(Conflict):
    message = "Container is not running"


class RebindWhileInstalling(InvalidRequest):
    message = "Cannot rebind network while container is installing"


class VolumeLookup(Protocol):
    def __call__(self, volume_id: str) -> str: ...  # full id, or raises VolumeNotFound


def bindings_of(desired: DesiredContainers) -> Mapping[tuple[str, int, str], str]:
    """(ip, port, protocol) -> internal_id of every container document (cached)."""
    return desired.bindings()


def volume_users(desired: DesiredContainers, volume_id: str) -> list[str]:
    """The containers whose documents use the volume ``volume_id`` (its full id): an
    in-memory lookup (document prefixes are resolved once, when they are read)."""
    return desired.volume_users(volume_id)


class ContainerService:
    def __init__(
        self,
        *,
        desired: DesiredContainers,
        observed: Callable[[str], ObservedContainer | None],
        pool: PoolLike,
        resolve_volume: VolumeLookup,
        hint: Callable[[str], None],
        allowed_mount_roots: list[Path],
        host_cpus: int | None = None,
        check_template: Callable[[ContainerSpec], None] | None = None,
    ) -> None:
        self._check_template = check_template
        self._desired = desired
        self._observed = observed
        self._pool = pool
        self._resolve_volume = resolve_volume
        self._hint = hint
        self._allowed_roots = allowed_mount_roots
        self._host_cpus = host_cpus or os.cpu_count() or 1

    def get(self, internal_id: str) -> ContainerSpec:
        spec = self._desired.get(internal_id)
        if spec is None:
            raise ContainerNotFound()
        return spec

    def _with_full_volume_id(self, spec: ContainerSpec) -> ContainerSpec:
        full_id = self._resolve_volume(spec.volume_id)
        if full_id != spec.volume_id:
            spec = spec.model_copy(update={"volume_id": full_id})
        return spec

    async def _write_with_ports(self, spec: ContainerSpec, *, must_be_new: bool) -> None:
        """Admit under the pool's lock; a new document is written outside it.

        A new document is staged (its ports count as bound, its id as taken) before the
        lock is released, so concurrent creates are judged against it while its write
        waits for its group commit (concurrent POSTs share fsyncs); a failed write
        unstages it. An edit (rebind) is written under the lock, as one step with its
        admission. Either way the answer comes only after the document is durable.
        """
        keys = [(p.ip, p.port) for p in spec.ports]
        async with self._pool.lock:
            await self._pool.refresh()
            refusal = admit(
                spec,
                roots=self._allowed_roots,
                cpus=self._host_cpus,
                pool=self._pool,
                check_template=self._check_template,
            )
            # The answer's precedence: the host's limits, then an existing id, then ports.
            if refusal is not None and refusal.check == "host":
                raise refusal.error
            if must_be_new and (
                self._desired.get(spec.internal_id) is not None
                or self._desired.staged(spec.internal_id)
            ):
                raise ContainerExists(f"Container {spec.internal_id} already exists")
            if refusal is not None:
                raise refusal.error
            if not must_be_new:
                await asyncio.to_thread(self._desired.write, spec)
                await self._pool.release_reservations_locked(keys)
                self._hint(spec.internal_id)
                return
            if not self._desired.stage(spec):  # a concurrent create of this id
                raise ContainerExists(f"Container {spec.internal_id} already exists")
            reserved = self._pool.any_reserved(keys)
        try:
            await asyncio.to_thread(self._desired.write, spec)
        finally:
            self._desired.unstage(spec.internal_id)
        if reserved:
            # A binding supersedes a reservation: the panel reserved, then created.
            async with self._pool.lock:
                await self._pool.refresh()
                await self._pool.release_reservations_locked(keys)
        self._hint(spec.internal_id)

    async def create(self, body: dict[str, Any]) -> ContainerSpec:
        spec = self._with_full_volume_id(ContainerSpec.model_validate(body))
        await self._write_with_ports(spec, must_be_new=True)
        return spec

    async def _edit(self, internal_id: str, **changes: Any) -> ContainerSpec:
        current = self.get(internal_id)
        updated = ContainerSpec.model_validate({**current.model_dump(), **changes})
        await asyncio.to_thread(self._desired.write, updated)
        self._hint(internal_id)
        return updated

    async def start(self, internal_id: str) -> None:
        current = self.get(internal_id)
        observed = self._observed(internal_id)
        changes: dict[str, Any] = {"power": Power.RUNNING}
        if observed is not None and observed.gave_up:
            changes["restart_requested_at"] = time.time()
        if current.power is Power.RUNNING and "restart_requested_at" not in changes:
            self._hint(internal_id)
            return
        await self._edit(internal_id, **changes)

    async def stop(self, internal_id: str) -> None:
        await self._edit(internal_id, power=Power.STOPPED)

    async def kill(self, internal_id: str) -> None:
        await self._edit(internal_id, power=Power.STOPPED, kill_requested_at=time.time())

    async def restart(self, internal_id: str) -> None:
        await self._edit(internal_id, power=Power.RUNNING, restart_requested_at=time.time())

    async def reinstall(
        self, internal_id: str, *, image: str | None, install_script: str | None
    ) -> None:
        changes: dict[str, Any] = {"reinstall_requested_at": time.time()}
        if image is not None:
            changes["image"] = image
        if install_script is not None:
            changes["install_script"] = install_script
        await self._edit(internal_id, **changes)

    async def rebind(self, internal_id: str, ports: list[PortBinding]) -> None:
        current = self.get(internal_id)
        observed = self._observed(internal_id)
        if observed is None or observed.install_state is InstallState.INSTALLING:
            raise RebindWhileInstalling()
        updated = ContainerSpec.model_validate({**current.model_dump(), "ports": ports})
        await self._write_with_ports(updated, must_be_new=False)

    async def delete(self, internal_id: str) -> None:
        self.get(internal_id)
        async with self._pool.lock:
            await asyncio.to_thread(self._desired.remove, internal_id)
        self._hint(internal_id)
