"""Node-to-node transfers of one container: the source side and the target side.

Source (``POST /containers/<id>/transfer``, master token): the container is stopped
gracefully (its desired power is remembered in ``<data_dir>/state/transfers/<id>.json``),
then one request to the target's ``POST /transfers`` streams the frames of
:mod:`lightd.transfer.stream` (manifest: the document and observed install state; the
volume as a gzip tar; the end with its SHA-256). Only when the target answers 200
(copy verified, moved in, document written, container running) does the source delete
its document and, unless ``keep_source``, its volume. Any failure restores the
remembered power; a source killed meanwhile restores it at its next start.

Target (``POST /transfers``, the transfer token minted for that ``internal_id``): the
document is checked before any data is read (id and volume free here, host limits and
ports, with the contract's port errors), the archive is received into
``<data_dir>/transfer-staging/<transfer_id>/`` while hashed, verified, unpacked there,
then the volume is moved in and the document written; the answer waits until the
container runs. Any failure removes the staging folder and whatever was published; a
target killed meanwhile removes staging at its next start.

Not here yet: live mode (a pass while running, then only the changes), backups, parallel
streams, ``/watch`` events. This module must not serve HTTP (routes call it).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import queue
import secrets
import shutil
import threading
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import httpx
import orjson

from lightd.desired.service import ContainerExists, ContainerNotFound, ContainerService
from lightd.errors import (
    Conflict,
    InvalidField,
    InvalidRequest,
    LightdError,
    TransferNotFound,
    Unauthorized,
    VolumeInUse,
)
from lightd.fs.beneath import Root
from lightd.fs.volumes import VolumeManager
from lightd.spec.container import ContainerSpec, Power
from lightd.spec.observed import InstallState, ObservedContainer, RuntimeState
from lightd.store import DocumentStore
from lightd.transfer.stream import FrameError, FrameReader, frame, pack, unpack
from lightd.transfer.tokens import TransferTokens

log = logging.getLogger("lightd.transfer")

STAGING = "transfer-staging"
STATE_PREFIX = "state/transfers"
VENDOR = "application/vnd.pkglatv1+json"
STOP_WAIT = 120.0
START_WAIT = 120.0
TransferState = Literal["running", "completed", "failed", "cancelled"]


class SeedInstall(Protocol):
    async def __call__(
        self,
        key: str,
        *,
        state: InstallState,
        install_key: str | None,
        image: str | None,
        exit_code: int | None,
    ) -> None: ...


class TransferFailed(LightdError):
    message = "Transfer failed"


class ChecksumMismatch(InvalidRequest):
    message = "Transfer refused: checksum mismatch"


@dataclass
class Transfer:
    id: str
    internal_id: str
    role: Literal["source", "target"]
    state: TransferState = "running"
    phase: str = "starting"
    bytes_done: int = 0
    bytes_total: int | None = None
    error: str | None = None
    started_at: float = field(default_factory=time.time)
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    def view(self) -> dict[str, Any]:
        return {
            "transfer_id": self.id,
            "internal_id": self.internal_id,
            "role": self.role,
            "state": self.state,
            "phase": self.phase,
            "bytes_done": self.bytes_done,
            "bytes_total": self.bytes_total,
            "error": self.error,
        }


class Transfers:
    def __init__(
        self,
        *,
        data_dir: Path,
        data: DocumentStore,
        containers: ContainerService,
        observed: Callable[[str], ObservedContainer | None],
        volumes: VolumeManager,
        tokens: TransferTokens,
        admit: Callable[[ContainerSpec], LightdError | None],
        seed_install: SeedInstall,
    ) -> None:
        self._data_dir = data_dir
        self._data = data
        self._containers = containers
        self._observed = observed
        self._volumes = volumes
        self._tokens = tokens
        self._admit = admit
        self._seed_install = seed_install
        self._transfers: dict[str, Transfer] = {}

    # -- recovery ------------------------------------------------------------------------

    async def recover(self) -> None:
        """After a crash: drop staging folders, give interrupted sources their power back."""
        staging = self._data_dir / STAGING
        if staging.exists():
            await asyncio.to_thread(shutil.rmtree, staging, True)
        folder = self._data_dir / STATE_PREFIX
        names = sorted(os.listdir(folder)) if folder.is_dir() else []
        for name in names:
            record = self._data.read(f"{STATE_PREFIX}/{name}")
            if isinstance(record, dict) and record.get("power") == Power.RUNNING.value:
                with contextlib.suppress(LightdError):
                    await self._containers.start(str(record["internal_id"]))
                    log.warning("transfer %s interrupted: %s started again", name, record)
            self._data.delete(f"{STATE_PREFIX}/{name}")

    # -- queries -------------------------------------------------------------------------

    def get(self, transfer_id: str) -> Transfer:
        found = self._transfers.get(transfer_id)
        if found is None:
            raise TransferNotFound()
        return found

    async def cancel(self, transfer_id: str) -> Transfer:
        found = self.get(transfer_id)
        if found.state == "running" and found.task is not None:
            found.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await found.task
        return found

    async def close(self) -> None:
        tasks = [t.task for t in self._transfers.values() if t.task and not t.task.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- source --------------------------------------------------------------------------

    async def start(
        self,
        internal_id: str,
        *,
        target_url: str,
        token: str,
        include_backups: bool,
        live: bool,
        keep_source: bool,
    ) -> Transfer:
        spec = self._containers.get(internal_id)
        if include_backups:
            raise InvalidField("include_backups", "backups are not available on this node yet")
        if live:
            raise InvalidField("live", "live transfers are not available yet; send live: false")
        if not target_url.startswith(("http://", "https://")):
            raise InvalidField("target_url", "must be an http:// or https:// URL")
        if any(
            t.internal_id == internal_id and t.state == "running" for t in self._transfers.values()
        ):
            raise Conflict(f"A transfer of {internal_id} is already running")
        transfer = Transfer(id=secrets.token_hex(8), internal_id=internal_id, role="source")
        self._transfers[transfer.id] = transfer
        await asyncio.to_thread(
            self._data.write,
            f"{STATE_PREFIX}/{transfer.id}.json",
            {"internal_id": internal_id, "power": spec.power.value},
        )
        transfer.task = asyncio.create_task(
            self._send(transfer, spec, target_url.rstrip("/"), token, keep_source),
            name=f"transfer-{transfer.id}",
        )
        return transfer

    async def _wait_state(
        self, internal_id: str, states: set[RuntimeState], seconds: float
    ) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            seen = self._observed(internal_id)
            if seen is not None and seen.state in states:
                return
            await asyncio.sleep(0.2)
        raise TransferFailed(f"Transfer failed: {internal_id} did not reach {sorted(states)}")

    async def _send(
        self, transfer: Transfer, spec: ContainerSpec, target_url: str, token: str, keep: bool
    ) -> None:
        was_running = spec.power is Power.RUNNING
        try:
            transfer.phase = "stopping"
            if was_running:
                await self._containers.stop(spec.internal_id)
            await self._wait_state(spec.internal_id, {RuntimeState.OFFLINE}, STOP_WAIT)
            transfer.phase = "checking"
            answer = await self._post(transfer, spec, target_url, token)
            if answer.status_code != 200:
                try:
                    reason = str(answer.json().get("error"))
                except ValueError:
                    reason = answer.text[:200]
                raise TransferFailed(
                    f"Transfer refused by the target ({answer.status_code}): {reason}"
                )
            transfer.phase = "cleaning"
            await self._containers.delete(spec.internal_id)
            if not keep:
                await self._delete_volume(spec.volume_id)
        except BaseException as exc:
            transfer.state = "cancelled" if isinstance(exc, asyncio.CancelledError) else "failed"
            transfer.error = _reason(exc)
            if was_running:
                with contextlib.suppress(LightdError):
                    await self._containers.start(spec.internal_id)
            await self._forget(transfer)
            if isinstance(exc, asyncio.CancelledError):
                raise
            if not isinstance(exc, LightdError | httpx.HTTPError):
                log.exception("transfer %s failed", transfer.id)
            return
        transfer.state = "completed"
        transfer.phase = "done"
        await self._forget(transfer)

    async def _forget(self, transfer: Transfer) -> None:
        await asyncio.to_thread(self._data.delete, f"{STATE_PREFIX}/{transfer.id}.json")

    async def _delete_volume(self, volume_id: str) -> None:
        deadline = time.monotonic() + 60
        while True:
            try:
                await asyncio.to_thread(self._volumes.delete, volume_id)
                return
            except VolumeInUse:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)

    async def _post(
        self, transfer: Transfer, spec: ContainerSpec, target_url: str, token: str
    ) -> httpx.Response:
        observed = self._observed(spec.internal_id)
        manifest = {
            "version": 1,
            "transfer_id": transfer.id,
            "document": spec.model_dump(mode="json"),
            "install": None
            if observed is None
            else {
                "state": observed.install_state.value,
                "key": observed.install_key,
                "image": observed.install_image,
                "exit_code": observed.install_exit_code,
            },
        }
        volume = self._volumes.resolve(spec.volume_id)
        headers = {
            "Authorization": f"Bearer {token}",
            "Accept": VENDOR,
            "Content-Type": "application/octet-stream",
            "X-Lightd-Internal-Id": spec.internal_id,
        }
        async with httpx.AsyncClient(
            trust_env=False, timeout=httpx.Timeout(START_WAIT + 60)
        ) as client:
            check = await client.post(
                f"{target_url}/transfers",
                content=frame(b"M", orjson.dumps(manifest)),
                headers={**headers, "X-Lightd-Transfer-Check": "1"},
            )
            if check.status_code != 200:
                return check
            transfer.phase = "sending"
            return await client.post(
                f"{target_url}/transfers",
                content=self._frames(transfer, manifest, volume.path),
                headers=headers,
            )

    async def _frames(
        self, transfer: Transfer, manifest: dict[str, Any], path: Path
    ) -> AsyncIterator[bytes]:
        yield frame(b"M", orjson.dumps(manifest))
        pieces: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=16)
        stop = threading.Event()

        def put(item: bytes | BaseException | None) -> None:
            while not stop.is_set():
                try:
                    pieces.put(item, timeout=0.5)
                    return
                except queue.Full:
                    continue

        def produce() -> None:
            try:
                with Root(path) as root:
                    pack(root, put)
                put(None)
            except BaseException as exc:  # handed to the event loop side
                put(exc)

        worker = threading.Thread(target=produce, name=f"transfer-pack-{transfer.id}", daemon=True)
        worker.start()
        digest = hashlib.sha256()
        try:
            while True:
                item = await asyncio.to_thread(pieces.get)
                if item is None:
                    break
                if isinstance(item, BaseException):
                    raise item
                digest.update(item)
                transfer.bytes_done += len(item)
                yield frame(b"D", item)
            end = {"sha256": digest.hexdigest(), "bytes": transfer.bytes_done}
            yield frame(b"E", orjson.dumps(end))
        finally:
            stop.set()

    # -- target --------------------------------------------------------------------------

    async def receive(
        self, token: str, internal_id: str, body: AsyncIterable[bytes], *, check_only: bool = False
    ) -> Transfer:
        """Take one transfer; returns once the container runs here (else raises, clean).

        With ``check_only`` the body is the manifest alone: everything is checked (token
        included, without using it up) and nothing is kept, so a source learns of a
        refusal before any data moves.
        """
        reason = (
            self._tokens.check(token, internal_id)
            if check_only
            else await self._tokens.consume(token, internal_id)
        )
        if reason is not None:
            raise Unauthorized(f"Transfer refused: {reason}")
        reader = FrameReader()
        chunks = body.__aiter__()
        kind, payload = await _next_frame(reader, chunks)
        if kind != b"M":
            raise InvalidRequest("Transfer refused: the body must start with a manifest")
        try:
            manifest = orjson.loads(payload)
            spec = ContainerSpec.model_validate(manifest["document"])
            transfer_id = str(manifest["transfer_id"])
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidRequest(f"Transfer refused: bad manifest ({exc})") from None
        if spec.internal_id != internal_id or not transfer_id.isalnum():
            raise InvalidRequest("Transfer refused: the manifest is for another container")
        with contextlib.suppress(ContainerNotFound):
            self._containers.get(internal_id)
            raise ContainerExists(f"Container {internal_id} already exists")
        if (self._volumes.root / spec.volume_id).exists():
            raise VolumeInUse(f"Volume {spec.volume_id} already exists on this node")
        refusal = self._admit(spec)
        if refusal is not None:
            raise refusal
        if check_only:
            return Transfer(id=transfer_id, internal_id=internal_id, role="target", phase="checked")
        transfer = Transfer(
            id=transfer_id, internal_id=internal_id, role="target", phase="receiving"
        )
        self._transfers[transfer.id] = transfer
        staging = self._data_dir / STAGING / transfer.id
        published = False
        try:
            await asyncio.to_thread(staging.mkdir, parents=True, exist_ok=False)
            archive = staging / "volume.tar.gz"
            await self._receive_archive(transfer, reader, chunks, archive)
            transfer.phase = "unpacking"
            tree = staging / "volume"
            await asyncio.to_thread(_unpack_file, archive, tree)
            transfer.phase = "converging"
            await asyncio.to_thread(self._volumes.adopt, spec.volume_id, tree)
            published = True
            install = manifest.get("install")
            if isinstance(install, dict) and install.get("state") == InstallState.READY.value:
                await self._seed_install(
                    internal_id,
                    state=InstallState.READY,
                    install_key=_text(install.get("key")),
                    image=_text(install.get("image")),
                    exit_code=install.get("exit_code")
                    if isinstance(install.get("exit_code"), int)
                    else None,
                )
            await self._containers.create(spec.model_dump(mode="json"))
            if spec.power is Power.RUNNING:
                await self._wait_state(internal_id, {RuntimeState.RUNNING}, START_WAIT)
        except BaseException as exc:
            transfer.state = "failed"
            transfer.error = _reason(exc)
            if published:
                await self._unpublish(spec)
            raise
        finally:
            await asyncio.to_thread(shutil.rmtree, staging, True)
        transfer.state = "completed"
        transfer.phase = "done"
        return transfer

    async def _receive_archive(
        self,
        transfer: Transfer,
        reader: FrameReader,
        chunks: AsyncIterator[bytes],
        archive: Path,
    ) -> None:
        digest = hashlib.sha256()
        handle = await asyncio.to_thread(open, archive, "xb")
        try:
            while True:
                kind, payload = await _next_frame(reader, chunks)
                if kind == b"D":
                    digest.update(payload)
                    transfer.bytes_done += len(payload)
                    await asyncio.to_thread(handle.write, payload)
                    continue
                if kind != b"E":
                    raise InvalidRequest("Transfer refused: unexpected frame")
                end = orjson.loads(payload)
                if (
                    end.get("sha256") != digest.hexdigest()
                    or end.get("bytes") != transfer.bytes_done
                ):
                    raise ChecksumMismatch()
                transfer.bytes_total = transfer.bytes_done
                break
            await asyncio.to_thread(handle.flush)
            await asyncio.to_thread(os.fsync, handle.fileno())
        finally:
            await asyncio.to_thread(handle.close)

    async def _unpublish(self, spec: ContainerSpec) -> None:
        with contextlib.suppress(LightdError):
            await self._containers.delete(spec.internal_id)
        with contextlib.suppress(LightdError, OSError):
            await self._delete_volume(spec.volume_id)


async def _next_frame(reader: FrameReader, chunks: AsyncIterator[bytes]) -> tuple[bytes, bytes]:
    while True:
        try:
            ready = next(reader.feed(b""), None)
        except FrameError as exc:
            raise InvalidRequest(f"Transfer refused: {exc}") from None
        if ready is not None:
            return ready
        try:
            data = await chunks.__anext__()
        except StopAsyncIteration:
            raise TransferFailed("Transfer failed: the stream ended early") from None
        try:
            found = next(reader.feed(data), None)
        except FrameError as exc:
            raise InvalidRequest(f"Transfer refused: {exc}") from None
        if found is not None:
            return found


def _unpack_file(archive: Path, tree: Path) -> None:
    tree.mkdir(mode=0o700)
    with open(archive, "rb") as handle, Root(tree) as root:
        unpack(handle, root)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    if isinstance(exc, LightdError):
        return exc.message
    if isinstance(exc, httpx.HTTPError):
        return f"Transfer failed: {type(exc).__name__}: {exc}"
    return f"Transfer failed: {type(exc).__name__}"
