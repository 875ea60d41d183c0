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

Every phase (and progress at most once a second) goes to ``changed`` (``/watch``, ``kind:
"transfer"``), the outcome to ``finished`` (the panel outbox), on both nodes. Not here
yet: backups, parallel streams, zstd. This module must not serve HTTP (routes call it).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import queue
import re
import secrets
import shutil
import threading
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
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
from lightd.transfer.stream import (
    COMPRESSIONS,
    Compression,
    FrameError,
    FrameReader,
    Signature,
    frame,
    pack,
    remove,
    unpack,
)
from lightd.transfer.tokens import TransferTokens

log = logging.getLogger("lightd.transfer")

STAGING = "transfer-staging"
STATE_PREFIX = "state/transfers"
VENDOR = "application/vnd.pkglatv1+json"
STOP_WAIT = 120.0
STAGE_SECONDS = 600.0
TRANSFER_ID = re.compile(r"[0-9a-f]{16}")
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
    reported_at: float = field(default=0.0, repr=False)

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
        changed: Callable[[str, dict[str, Any]], None] | None = None,
        finished: Callable[[str, dict[str, Any]], None] | None = None,
        hand_over: Callable[[ContainerSpec, Path], Awaitable[None]] | None = None,
    ) -> None:
        # The volume moved in goes to the document's user once, recorded (as after installs).
        self._hand_over = hand_over
        self._data_dir = data_dir
        self._data = data
        self._containers = containers
        self._observed = observed
        self._volumes = volumes
        self._tokens = tokens
        self._admit = admit
        self._seed_install = seed_install
        self._changed = changed
        self._finished = finished
        self._transfers: dict[str, Transfer] = {}
        self._staged: dict[str, _Staged] = {}

    # -- reporting -----------------------------------------------------------------------

    def _report(self, transfer: Transfer, *, force: bool = True) -> None:
        """``/watch`` (``kind: "transfer"``): every phase, progress at most once a second."""
        now = time.monotonic()
        if not force and now - transfer.reported_at < 1.0:
            return
        transfer.reported_at = now
        if self._changed is not None:
            self._changed(transfer.id, transfer.view())

    def _set_phase(self, transfer: Transfer, phase: str) -> None:
        transfer.phase = phase
        self._report(transfer)

    def _end(self, transfer: Transfer) -> None:
        self._report(transfer)
        if self._finished is not None:
            self._finished(transfer.internal_id, transfer.view())

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
        if not target_url.startswith(("http://", "https://")):
            raise InvalidField("target_url", "must be an http:// or https:// URL")
        if any(
            t.internal_id == internal_id and t.state == "running" for t in self._transfers.values()
        ):
            raise Conflict(f"A transfer of {internal_id} is already running")
        transfer = Transfer(id=secrets.token_hex(8), internal_id=internal_id, role="source")
        self._transfers[transfer.id] = transfer
        self._report(transfer)
        await asyncio.to_thread(
            self._data.write,
            f"{STATE_PREFIX}/{transfer.id}.json",
            {"internal_id": internal_id, "power": spec.power.value},
        )
        transfer.task = asyncio.create_task(
            self._send(transfer, spec, target_url.rstrip("/"), token, keep_source, live),
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
        self,
        transfer: Transfer,
        spec: ContainerSpec,
        target_url: str,
        token: str,
        keep: bool,
        live: bool,
    ) -> None:
        was_running = spec.power is Power.RUNNING
        try:
            async with httpx.AsyncClient(
                trust_env=False, timeout=httpx.Timeout(START_WAIT + 60)
            ) as client:
                link = _Link(client, target_url, spec.internal_id, token)
                manifest = self._manifest(transfer, spec)
                self._set_phase(transfer, "checking")
                await link.send("check", [frame(b"M", orjson.dumps(manifest))])
                seen: dict[str, Signature] | None = None
                if live and was_running:
                    self._set_phase(transfer, "first pass")
                    seen = {}
                    answer = await link.send(
                        "first", self._frames(transfer, manifest, spec, seen=seen)
                    )
                    link.secret = answer.headers.get("X-Lightd-Transfer-Secret", "")
                self._set_phase(transfer, "stopping")
                if was_running:
                    await self._containers.stop(spec.internal_id)
                await self._wait_state(spec.internal_id, {RuntimeState.OFFLINE}, STOP_WAIT)
                self._set_phase(transfer, "final pass" if seen is not None else "sending")
                await link.send(
                    "final" if seen is not None else "only",
                    self._frames(transfer, manifest, spec, since=seen),
                )
            self._set_phase(transfer, "cleaning")
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
            self._end(transfer)
            if isinstance(exc, asyncio.CancelledError):
                raise
            if not isinstance(exc, LightdError | httpx.HTTPError):
                log.exception("transfer %s failed", transfer.id)
            return
        transfer.state = "completed"
        transfer.phase = "done"
        await self._forget(transfer)
        self._end(transfer)

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

    def _manifest(self, transfer: Transfer, spec: ContainerSpec) -> dict[str, Any]:
        observed = self._observed(spec.internal_id)
        return {
            "version": 1,
            "transfer_id": transfer.id,
            "compression": "zstd",
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

    async def _frames(
        self,
        transfer: Transfer,
        manifest: dict[str, Any],
        spec: ContainerSpec,
        *,
        seen: dict[str, Signature] | None = None,
        since: dict[str, Signature] | None = None,
    ) -> AsyncIterator[bytes]:
        path = self._volumes.resolve(spec.volume_id).path
        yield frame(b"M", orjson.dumps(manifest))
        gone: list[str] = []
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
                    gone.extend(
                        pack(root, put, seen=seen, since=since, compression=manifest["compression"])
                    )
                put(None)
            except BaseException as exc:  # handed to the event loop side
                put(exc)

        worker = threading.Thread(target=produce, name=f"transfer-pack-{transfer.id}", daemon=True)
        worker.start()
        digest = hashlib.sha256()
        sent = 0
        try:
            while True:
                item = await asyncio.to_thread(pieces.get)
                if item is None:
                    break
                if isinstance(item, BaseException):
                    raise item
                digest.update(item)
                transfer.bytes_done += len(item)
                self._report(transfer, force=False)
                sent += len(item)
                yield frame(b"D", item)
            end = {"sha256": digest.hexdigest(), "bytes": sent, "deleted": gone}
            yield frame(b"E", orjson.dumps(end))
        finally:
            stop.set()

    # -- target --------------------------------------------------------------------------

    async def receive(
        self, token: str, internal_id: str, body: AsyncIterable[bytes], *, phase: str = "only"
    ) -> tuple[Transfer, str | None]:
        """Take one pass of a transfer; the transfer and, after a first pass, its secret.

        ``check``: the body is the manifest alone; everything is checked (the token
        without using it up) and nothing is kept, so a source learns of a refusal before
        any data moves. ``only``: the whole volume, then publish and converge; the answer
        waits until the container runs. ``first``: the whole volume while the source
        still runs, kept in staging (for :data:`STAGE_SECONDS` at most); the answer
        carries the secret the ``final`` pass (only what changed, and what is gone)
        authenticates with before publishing. Any failure removes staging and whatever
        was published.
        """
        if phase not in ("check", "only", "first", "final"):
            raise InvalidRequest("Transfer refused: unknown pass")
        staged: _Staged | None = None
        if phase == "final":
            staged = self._staged.pop(_secret_hash(token), None)
            if staged is None or staged.spec.internal_id != internal_id:
                raise Unauthorized("Transfer refused: unknown transfer secret")
            staged.expiry.cancel()
        else:
            reason = (
                self._tokens.check(token, internal_id)
                if phase == "check"
                else await self._tokens.consume(token, internal_id)
            )
            if reason is not None:
                raise Unauthorized(f"Transfer refused: {reason}")
        reader = FrameReader()
        chunks = body.__aiter__()
        try:
            spec, manifest, transfer_id = await self._read_manifest(reader, chunks, internal_id)
            if staged is None:
                self._check_here(spec)
            elif transfer_id != staged.transfer.id:
                raise InvalidRequest("Transfer refused: the manifest is for another transfer")
        except BaseException:
            if staged is not None:
                await asyncio.to_thread(shutil.rmtree, staged.staging, True)
            raise
        compression: Compression = "zstd" if manifest.get("compression") == "zstd" else "gzip"
        if phase == "check":
            transfer = Transfer(
                id=transfer_id, internal_id=internal_id, role="target", phase="checked"
            )
            return transfer, None
        if staged is None:
            transfer = Transfer(
                id=transfer_id, internal_id=internal_id, role="target", phase="receiving"
            )
            self._transfers[transfer.id] = transfer
            self._report(transfer)
            staging = self._data_dir / STAGING / transfer.id
        else:
            transfer, staging = staged.transfer, staged.staging
            self._set_phase(transfer, "receiving changes")
        published = False
        keep = False
        try:
            if staged is None:
                await asyncio.to_thread(staging.mkdir, parents=True, exist_ok=False)
            archive = staging / f"{phase}.tar"
            deleted = await self._receive_archive(transfer, reader, chunks, archive)
            self._set_phase(transfer, "unpacking")
            tree = staging / "volume"
            await asyncio.to_thread(_unpack_file, archive, tree, deleted, compression)
            await asyncio.to_thread(archive.unlink)
            if phase == "first":
                secret = secrets.token_hex(24)
                self._staged[_secret_hash(secret)] = _Staged(
                    transfer=transfer,
                    spec=spec,
                    staging=staging,
                    expiry=asyncio.get_running_loop().call_later(
                        STAGE_SECONDS, self._expire, _secret_hash(secret)
                    ),
                )
                self._set_phase(transfer, "staged")
                keep = True
                return transfer, secret
            self._set_phase(transfer, "converging")
            await asyncio.to_thread(self._volumes.adopt, spec.volume_id, tree)
            published = True
            await self._seed(internal_id, manifest.get("install"))
            if self._hand_over is not None:
                await self._hand_over(spec, self._volumes.root / spec.volume_id)
            await self._containers.create(spec.model_dump(mode="json"))
            if spec.power is Power.RUNNING:
                await self._wait_state(internal_id, {RuntimeState.RUNNING}, START_WAIT)
        except BaseException as exc:
            transfer.state = "failed"
            transfer.error = _reason(exc)
            if published:
                await self._unpublish(spec)
            self._end(transfer)
            raise
        finally:
            if not keep:
                await asyncio.to_thread(shutil.rmtree, staging, True)
        transfer.state = "completed"
        transfer.phase = "done"
        self._end(transfer)
        return transfer, None

    def _expire(self, key: str) -> None:
        staged = self._staged.pop(key, None)
        if staged is not None:
            staged.transfer.state = "failed"
            staged.transfer.error = "Transfer failed: the final pass never came"
            self._end(staged.transfer)
            shutil.rmtree(staged.staging, ignore_errors=True)

    async def _read_manifest(
        self, reader: FrameReader, chunks: AsyncIterator[bytes], internal_id: str
    ) -> tuple[ContainerSpec, dict[str, Any], str]:
        kind, payload = await _next_frame(reader, chunks)
        if kind != b"M":
            raise InvalidRequest("Transfer refused: the body must start with a manifest")
        try:
            manifest = orjson.loads(payload)
            spec = ContainerSpec.model_validate(manifest["document"])
            transfer_id = str(manifest["transfer_id"])
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidRequest(f"Transfer refused: bad manifest ({exc})") from None
        if spec.internal_id != internal_id or not TRANSFER_ID.fullmatch(transfer_id):
            raise InvalidRequest("Transfer refused: the manifest is for another container")
        if manifest.get("compression", "gzip") not in COMPRESSIONS:
            raise InvalidRequest("Transfer refused: unknown compression")
        return spec, manifest, transfer_id

    def _check_here(self, spec: ContainerSpec) -> None:
        """Refuse a document this node cannot take, before any data moves."""
        with contextlib.suppress(ContainerNotFound):
            self._containers.get(spec.internal_id)
            raise ContainerExists(f"Container {spec.internal_id} already exists")
        if (self._volumes.root / spec.volume_id).exists():
            raise VolumeInUse(f"Volume {spec.volume_id} already exists on this node")
        refusal = self._admit(spec)
        if refusal is not None:
            raise refusal

    async def _seed(self, internal_id: str, install: object) -> None:
        if isinstance(install, dict) and install.get("state") == InstallState.READY.value:
            code = install.get("exit_code")
            await self._seed_install(
                internal_id,
                state=InstallState.READY,
                install_key=_text(install.get("key")),
                image=_text(install.get("image")),
                exit_code=code if isinstance(code, int) else None,
            )

    async def _receive_archive(
        self,
        transfer: Transfer,
        reader: FrameReader,
        chunks: AsyncIterator[bytes],
        archive: Path,
    ) -> list[str]:
        """The archive written to ``archive`` and verified; the names the source deleted."""
        digest = hashlib.sha256()
        count = 0
        handle = await asyncio.to_thread(open, archive, "xb")
        try:
            while True:
                kind, payload = await _next_frame(reader, chunks)
                if kind == b"D":
                    digest.update(payload)
                    count += len(payload)
                    transfer.bytes_done += len(payload)
                    self._report(transfer, force=False)
                    await asyncio.to_thread(handle.write, payload)
                    continue
                if kind != b"E":
                    raise InvalidRequest("Transfer refused: unexpected frame")
                end = orjson.loads(payload)
                if end.get("sha256") != digest.hexdigest() or end.get("bytes") != count:
                    raise ChecksumMismatch()
                deleted = end.get("deleted", [])
                if not isinstance(deleted, list) or not all(isinstance(n, str) for n in deleted):
                    raise InvalidRequest("Transfer refused: bad end frame")
                transfer.bytes_total = transfer.bytes_done
                break
            await asyncio.to_thread(handle.flush)
            await asyncio.to_thread(os.fsync, handle.fileno())
        finally:
            await asyncio.to_thread(handle.close)
        return list(deleted)

    async def _unpublish(self, spec: ContainerSpec) -> None:
        with contextlib.suppress(LightdError):
            await self._containers.delete(spec.internal_id)
        with contextlib.suppress(LightdError, OSError):
            await self._delete_volume(spec.volume_id)


class _Link:
    """The source's requests to the target's ``POST /transfers``, one per pass."""

    def __init__(self, client: httpx.AsyncClient, url: str, internal_id: str, token: str) -> None:
        self.client = client
        self.url = f"{url}/transfers"
        self.internal_id = internal_id
        self.token = token
        self.secret = ""

    async def send(self, phase: str, content: AsyncIterator[bytes] | list[bytes]) -> httpx.Response:
        headers = {
            "Authorization": f"Bearer {self.secret if phase == 'final' else self.token}",
            "Accept": VENDOR,
            "Content-Type": "application/octet-stream",
            "X-Lightd-Internal-Id": self.internal_id,
            "X-Lightd-Transfer-Pass": phase,
        }
        body = b"".join(content) if isinstance(content, list) else content
        answer = await self.client.post(self.url, content=body, headers=headers)
        if answer.status_code != 200:
            try:
                reason = str(answer.json().get("error"))
            except ValueError:
                reason = answer.text[:200]
            raise TransferFailed(f"Transfer refused by the target ({answer.status_code}): {reason}")
        return answer


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


def _unpack_file(archive: Path, tree: Path, deleted: list[str], compression: Compression) -> None:
    if not tree.exists():
        tree.mkdir(mode=0o700)
    with open(archive, "rb") as handle, Root(tree) as root:
        remove(root, deleted)
        unpack(handle, root, compression)


def _secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass
class _Staged:
    """A first pass received and kept until the final pass (or its expiry)."""

    transfer: Transfer
    spec: ContainerSpec
    staging: Path
    expiry: asyncio.TimerHandle


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
