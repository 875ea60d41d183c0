"""Node-to-node transfers of one container: the source side and the target side.

Source (``POST /containers/<id>/transfer``, master token): after a check pass (the
manifest alone, so the target refuses before any data moves), the volume is sent as one
or, when large, several concurrent zstd PAX tars of disjoint file sets
(:mod:`lightd.transfer.stream`, :mod:`lightd.transfer.pipe`), and with
``include_backups`` the volume's backups (:mod:`lightd.transfer.backups`), each stream
and archive with its SHA-256, in one request per pass to the target's ``POST
/transfers``. With ``live`` a first pass runs while the server does; after the graceful
stop a final pass sends only what changed. When the target answers ready (copy
verified, moved in, document written, container running) the source records
``committing``, commits (:mod:`lightd.transfer.commit`), and only once the target
acknowledged the commit deletes its document, its moved backups and, unless
``keep_source``, its volume. Any failure before ``committing`` tells the target to
abort and restores the desired power the container had.

Target (``POST /transfers``, the transfer token minted for that ``internal_id``): the
document is checked before any data is read (id and volume free here, host limits and
ports with the contract's port errors, backups it can hold); each stream is unpacked
into ``<data_dir>/transfer-staging/<transfer_id>/`` while it arrives and is verified at
its end; then the volume is moved in, the backups registered, the document written; the
answer waits until the container runs and says ready. The copy stays only if the
source's commit comes within the commit window; without it, on the source's abort, or
on any failure, staging and whatever was published are removed.

Every transfer has a record (:mod:`lightd.transfer.records`) that survives restarts: at
start, one a killed daemon left running ends ``failed`` (``Interrupted``): the source
aborts the target and gets its desired power back (in ``committing`` it settles the
commit first, in ``cleaning`` it finishes its cleanup) and the target removes staging
and what it had published, a ready copy still awaiting its commit too. Every phase (and
progress at most once a second) goes to ``changed`` (``/watch``, ``kind: "transfer"``),
the outcome to ``finished`` (the panel outbox), on both nodes. This module must not
serve HTTP (routes call it).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import re
import secrets
import shutil
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeGuard

import orjson

from lightd.backups.records import BackupRecord
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
from lightd.fs.durable import sync_filesystems
from lightd.fs.volumes import VolumeManager
from lightd.spec.container import ContainerSpec, Power
from lightd.spec.observed import InstallState, ObservedContainer, RuntimeState
from lightd.store import DocumentStore
from lightd.transfer.backups import Outgoing, incoming, outgoing
from lightd.transfer.commit import (
    ABORT_SECONDS,
    ABORTED,
    AWAITING,
    COMMIT_SECONDS_HEADER,
    COMMITTING,
    PROTOCOL,
    PROTOCOL_HEADER,
    CommitLink,
    CommitWindows,
    Outcome,
    Verdict,
    secret_hash,
    secret_matches,
    settle,
)
from lightd.transfer.hooks import pause_point
from lightd.transfer.pipe import Inflow, Outflow, run_in_thread
from lightd.transfer.records import INTERRUPTED, Transfer, TransferRecords, TransferState
from lightd.transfer.stream import (
    CHUNK,
    COMPRESSIONS,
    Buffer,
    Compression,
    Folder,
    FrameError,
    FrameReader,
    Owner,
    Signature,
    finish_folders,
    frame,
    pack_entries,
    plan,
    remove,
    split,
    unpack,
    zstd_threads,
)
from lightd.transfer.tokens import TransferTokens

if TYPE_CHECKING:
    import httpx

if TYPE_CHECKING:
    from lightd.backups.service import BackupService

log = logging.getLogger("lightd.transfer")

STAGING = "transfer-staging"
VENDOR = "application/vnd.pkglatv1+json"
STOP_WAIT = 120.0
STAGE_SECONDS = 600.0
TRANSFER_ID = re.compile(r"[0-9a-f]{16}")
START_WAIT = 120.0
DEFAULT_COMMIT_SECONDS = 60.0
COMMIT_HASH = re.compile(r"[0-9a-f]{64}")
UNSETTLED = (
    "Transfer failed: the target could not be reached to settle the commit; the server is "
    "kept stopped here. An operator must check the target (GET /transfers/<id> there: "
    "completed means it runs the server, delete it here; failed means start it here)"
)
# A pass whose files weigh this much or more is sent as several concurrent streams.
PARALLEL_BYTES = 256 * 1024 * 1024
MAX_STREAMS = 8


def stream_count(size: int, cpus: int | None = None) -> int:
    """How many concurrent tar streams a full pass of ``size`` bytes of files uses."""
    if size < PARALLEL_BYTES:
        return 1
    return max(2, min(4, cpus or os.cpu_count() or 1))


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
        drop_seed: Callable[[str], Awaitable[bool]],
        changed: Callable[[str, dict[str, Any]], None] | None = None,
        finished: Callable[[str, dict[str, Any]], None] | None = None,
        hand_over: Callable[[ContainerSpec, Path, Owner | None], Awaitable[None]] | None = None,
        owner_of: Callable[[ContainerSpec], Owner | None] | None = None,
        commit_seconds: Callable[[], float] = lambda: DEFAULT_COMMIT_SECONDS,
    ) -> None:
        # The volume moved in goes to the document's user once, recorded (as after installs):
        # the unpacker gives every entry to ``owner_of``'s answer as it makes it (when the
        # install came along), and ``hand_over`` learns which owner that was (no walk then).
        self._hand_over = hand_over
        self._owner_of = owner_of
        self._data_dir = data_dir
        self._containers = containers
        self._observed = observed
        self._volumes = volumes
        self._tokens = tokens
        self._admit = admit
        self._seed_install = seed_install
        self._drop_seed = drop_seed
        self._changed = changed
        self._finished = finished
        self._records = TransferRecords(data)
        self._transfers: dict[str, Transfer] = {}
        self._staged: dict[str, _Staged] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # Target: a ready copy not committed within its window is removed.
        self.commit_seconds = commit_seconds
        self._windows = CommitWindows(commit_seconds, self._commit_expired)
        # Set by the daemon once built: the backups that travel with ``include_backups``.
        self.backups: BackupService | None = None

    # -- reporting -----------------------------------------------------------------------

    def _report(self, transfer: Transfer, *, force: bool = True) -> None:
        """``/watch`` (``kind: "transfer"``): every phase, progress at most once a second."""
        now = time.monotonic()
        if not force and now - transfer.reported_at < 1.0:
            return
        transfer.reported_at = now
        if self._changed is not None:
            self._changed(transfer.id, transfer.view())

    async def _save(self, transfer: Transfer) -> None:
        try:
            await asyncio.shield(asyncio.to_thread(self._records.save, transfer))
        except (LightdError, OSError) as exc:
            log.warning("transfer %s: its record could not be written: %s", transfer.id, exc)

    async def _set_phase(self, transfer: Transfer, phase: str) -> None:
        transfer.phase = phase
        self._report(transfer)
        await self._save(transfer)

    async def _end(self, transfer: Transfer) -> None:
        transfer.ended_at = time.time()
        self._report(transfer)
        await self._save(transfer)
        if self._finished is not None:
            self._finished(transfer.internal_id, transfer.view())

    def _spawn(self, work: Any, name: str) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- recovery ------------------------------------------------------------------------

    async def recover(self) -> int:
        """After a crash: drop staging, end interrupted transfers (``Interrupted``).

        A source killed after the target acknowledged the commit (phase ``cleaning``)
        finishes deleting what moved; killed in ``committing`` (the commit may have
        reached the target) it settles the commit with the target first (the container
        stays stopped meanwhile); killed before, it tells the target to abort and gets
        its container's desired power back. A target removes what it had published,
        also a ready copy still awaiting its commit (the source hears ``failed`` when
        it asks).

        The daemon calls it after the desired documents are read and before the
        reconciler starts: what it ends is recorded, and a target's published document
        removed, before it returns, so the reconciler never starts an uncommitted copy;
        the rest (waiting for the engine container to go, the volume, the backups) runs
        on once the reconciler does.
        """
        dropped = 0
        staging = self._data_dir / STAGING
        if staging.exists():
            await asyncio.to_thread(shutil.rmtree, staging, True)
        for transfer in await asyncio.to_thread(self._records.load):
            self._transfers[transfer.id] = transfer
            if transfer.state != "running":
                continue
            log.warning(
                "transfer %s (%s of %s) was interrupted in phase %s",
                transfer.id,
                transfer.role,
                transfer.internal_id,
                transfer.phase,
            )
            if transfer.role == "source" and transfer.phase == "cleaning":
                self._spawn(self._finish_source(transfer), f"transfer-clean-{transfer.id}")
                continue
            if transfer.role == "source" and transfer.phase == COMMITTING:
                self._spawn(self._settle(transfer), f"transfer-settle-{transfer.id}")
                continue
            if transfer.role == "source":
                abort = transfer.phase not in ("starting", "checking")
                self._spawn(
                    self._give_back(transfer, "failed", INTERRUPTED, abort=abort),
                    f"transfer-restore-{transfer.id}",
                )
                continue
            transfer.state, transfer.error = "failed", INTERRUPTED
            if transfer.published:
                # Killed between the seeded install record and the document: the record
                # alone is dropped (see Controller.drop_seed), else the document goes.
                dropped += await self._drop_seed(transfer.internal_id)
                await self._withdraw(transfer)
                self._spawn(self._unpublish(transfer), f"transfer-clean-{transfer.id}")
            await self._end(transfer)
        return dropped

    async def _finish_source(self, transfer: Transfer) -> None:
        with contextlib.suppress(ContainerNotFound):
            await self._containers.delete(transfer.internal_id)
        await self._wait_forgotten(transfer.internal_id)
        if not transfer.keep_source and transfer.volume_id is not None:
            with contextlib.suppress(LightdError, OSError):
                await self._delete_volume(transfer, transfer.volume_id)
        if transfer.backups and not transfer.keep_source and self.backups is not None:
            await self.backups.let_go(transfer.backups, remove_archives=True)
        transfer.state, transfer.phase = "completed", "done"
        await self._end(transfer)

    # -- queries -------------------------------------------------------------------------

    def get(self, transfer_id: str) -> Transfer:
        found = self._transfers.get(transfer_id)
        if found is None:
            raise TransferNotFound()
        return found

    async def cancel(self, transfer_id: str) -> Transfer:
        """Cancel a running transfer: on the source until it records ``committing`` (from
        then on the commit may have reached the target: 409), on the target as the
        source's ``abort`` does (a ready copy is removed, never a committed one)."""
        found = self.get(transfer_id)
        if found.role == "target":
            await self._abort_here(found)
            return found
        if found.state == "running" and found.phase in (COMMITTING, "cleaning"):
            raise Conflict(f"Transfer {transfer_id} is {found.phase}: it cannot be cancelled")
        if found.state == "running" and found.task is not None:
            found.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await found.task
        return found

    async def close(self) -> None:
        tasks = [t.task for t in self._transfers.values() if t.task and not t.task.done()]
        tasks += list(self._tasks)
        self._windows.close_all()
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
        if not target_url.startswith(("http://", "https://")):
            raise InvalidField("target_url", "must be an http:// or https:// URL")
        if any(
            t.internal_id == internal_id and t.state == "running" for t in self._transfers.values()
        ):
            raise Conflict(f"A transfer of {internal_id} is already running")
        travel = outgoing(self.backups, spec.volume_id) if include_backups else Outgoing([], None)
        transfer = Transfer(
            id=secrets.token_hex(8),
            internal_id=internal_id,
            role="source",
            power=spec.power.value,
            volume_id=spec.volume_id,
            keep_source=keep_source,
            backups=[r.backup_id for r in travel.records],
            target_url=target_url.rstrip("/"),
            commit_secret=secrets.token_hex(24),
        )
        self._transfers[transfer.id] = transfer
        self._report(transfer)
        await self._save(transfer)
        transfer.task = asyncio.create_task(
            self._send(transfer, spec, target_url.rstrip("/"), token, live, travel),
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
        live: bool,
        travel: Outgoing,
    ) -> None:
        """The passes, then the commit step (:meth:`_settle`) once the target is ready.

        Until ``committing`` is recorded the target cannot hold a committed copy, so any
        failure tells it to abort (it removes staging and a ready copy) and gives the
        container its desired power back.
        """
        import httpx

        was_running = spec.power is Power.RUNNING
        reached = False  # the target may hold something of this transfer
        try:
            async with httpx.AsyncClient(
                trust_env=False, timeout=httpx.Timeout(START_WAIT + 60)
            ) as client:
                link = _Link(client, target_url, spec.internal_id, token)
                manifest = self._manifest(transfer, spec, travel)
                await self._set_phase(transfer, "checking")
                answer = await link.send("check", [frame(b"M", orjson.dumps(manifest))])
                if answer.headers.get(PROTOCOL_HEADER) != str(PROTOCOL):
                    raise TransferFailed(
                        "Transfer refused: the target speaks an older transfer protocol "
                        f"(this node needs {PROTOCOL}; upgrade the target)"
                    )
                reached = True
                seen: dict[str, Signature] | None = None
                if live and was_running:
                    await self._set_phase(transfer, "first pass")
                    seen = {}
                    answer = await link.send(
                        "first", self._frames(transfer, manifest, spec, seen=seen, travel=travel)
                    )
                    link.secret = answer.headers.get("X-Lightd-Transfer-Secret", "")
                await self._set_phase(transfer, "stopping")
                if was_running:
                    await self._containers.stop(spec.internal_id)
                await self._wait_state(spec.internal_id, {RuntimeState.OFFLINE}, STOP_WAIT)
                await self._set_phase(transfer, "final pass" if seen is not None else "sending")
                answer = await link.send(
                    "final" if seen is not None else "only",
                    self._frames(
                        transfer,
                        manifest,
                        spec,
                        since=seen,
                        travel=None if seen is not None else travel,
                    ),
                )
                if answer.json().get("phase") != AWAITING:
                    raise TransferFailed("Transfer failed: the target did not answer ready")
                transfer.commit_seconds = _seconds(answer.headers.get(COMMIT_SECONDS_HEADER))
            await pause_point("ready", transfer.id)
            await self._set_phase(transfer, COMMITTING)
        except BaseException as exc:
            state: TransferState = (
                "cancelled" if isinstance(exc, asyncio.CancelledError) else "failed"
            )
            # Shielded: a cancel or a shutdown meanwhile must not skip the power restore
            # (a shutdown leaves the record running: the next start gives back).
            work = self._give_back(transfer, state, _reason(exc), abort=reached)
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(self._spawn(work, f"transfer-restore-{transfer.id}"))
            if isinstance(exc, asyncio.CancelledError):
                raise
            if not isinstance(exc, LightdError | httpx.HTTPError | ValueError):
                log.exception("transfer %s failed", transfer.id)
            return
        await self._settle(transfer)

    async def _give_back(
        self, transfer: Transfer, state: TransferState, error: str, *, abort: bool
    ) -> None:
        """A source transfer that did not commit: with ``abort`` the target is told to
        drop what it holds (bounded; unreachable, it drops a ready copy when its commit
        window closes, as no commit was sent), then the container gets its desired
        power back and the record ends with ``state`` and ``error`` (it stays
        ``running`` until then)."""
        outcome = await self._abort_target(transfer) if abort else None
        if outcome is not None and outcome.verdict is Verdict.COMMITTED:
            # No commit was sent before ``committing``; should a target claim one, it
            # owns the server and this node must not start its copy.
            log.error("transfer %s: the target says it committed; cleaning here", transfer.id)
            await self._set_phase(transfer, "cleaning")
            await self._clean(transfer)
            return
        transfer.state, transfer.error = state, error
        if transfer.power == Power.RUNNING.value:
            with contextlib.suppress(LightdError):
                await self._containers.start(transfer.internal_id)
        await self._end(transfer)

    async def _abort_target(self, transfer: Transfer) -> Outcome | None:
        link = self._commit_link(transfer)
        if link is None:
            return None
        outcome = await settle(lambda: link.ask("abort"), ABORT_SECONDS)
        if outcome is None:
            log.warning("transfer %s: the target could not be told to abort", transfer.id)
        return outcome

    def _commit_link(self, transfer: Transfer) -> CommitLink | None:
        if not transfer.target_url or not transfer.commit_secret:
            return None
        return CommitLink(
            transfer.target_url, transfer.id, transfer.internal_id, transfer.commit_secret
        )

    async def _settle(self, transfer: Transfer) -> None:
        """Phase ``committing`` (recorded): commit, retried until the target answers.

        The commit is idempotent, so it is sent again after a lost answer or a restart:
        committed means cleaning here; not committed (the target's window closed, it
        was restarted, it never heard of the transfer) means the container gets its
        desired power back. A target silent for twice its commit window plus 10 s
        leaves the container stopped and the transfer ``failed`` (:data:`UNSETTLED`):
        the commit may have reached it, and starting here could run the server twice.
        """
        await pause_point("committing", transfer.id)
        link = self._commit_link(transfer)
        window = transfer.commit_seconds or DEFAULT_COMMIT_SECONDS
        outcome = None
        if link is not None:
            outcome = await settle(lambda: link.ask("commit"), 2 * window + 10)
        if outcome is None:
            log.error("transfer %s: %s", transfer.id, UNSETTLED)
            transfer.state, transfer.error = "failed", UNSETTLED
            await self._end(transfer)
            return
        if outcome.verdict is Verdict.NOT_COMMITTED:
            error = f"Transfer failed: the target did not take the commit ({outcome.detail})"
            await self._give_back(transfer, "failed", error, abort=False)
            return
        await pause_point("committed", transfer.id)
        await self._set_phase(transfer, "cleaning")
        await self._clean(transfer)

    async def _clean(self, transfer: Transfer) -> None:
        try:
            await self._finish_source(transfer)
        except LightdError as exc:
            # The target runs the copy: the transfer stands; what is left here is logged.
            log.warning("transfer %s: cleaning the source failed: %s", transfer.id, exc)
            transfer.state, transfer.phase = "completed", "done"
            await self._end(transfer)

    async def _wait_forgotten(self, internal_id: str, seconds: float = 60.0) -> None:
        """Until the reconciler removed the deleted container from the engine (at most
        ``seconds``): a volume deleted under a container still starting (one a killed
        daemon had created, started again at the next start) comes back empty, as the
        engine creates a missing bind source."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self._observed(internal_id) is None:
                return
            await asyncio.sleep(0.2)

    async def _delete_volume(self, transfer: Transfer, volume_id: str) -> None:
        """The volume renamed into the trash (:meth:`VolumeManager.discard`: gone from
        listings and disk accounting at once; retried while its container is still
        being removed), its tree removed in the background, or at the next start
        should this daemon die first."""
        deadline = time.monotonic() + 60
        while True:
            try:
                aside = await asyncio.to_thread(self._volumes.discard, volume_id)
                break
            except VolumeInUse:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
        if aside is not None:
            self._spawn(self._purge(transfer.id), f"transfer-purge-{transfer.id}")

    async def _purge(self, transfer_id: str) -> None:
        await pause_point("trashed", transfer_id)
        try:
            await self._volumes.run_heavy(self._volumes.purge_trash)
        except (LightdError, OSError) as exc:
            log.warning("transfer %s: the old volume could not be removed: %s", transfer_id, exc)

    def _manifest(
        self, transfer: Transfer, spec: ContainerSpec, travel: Outgoing
    ) -> dict[str, Any]:
        observed = self._observed(spec.internal_id)
        return {
            "version": PROTOCOL,
            "transfer_id": transfer.id,
            "commit_sha256": secret_hash(transfer.commit_secret or ""),
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
            "backups": travel.manifest() if travel.records else None,
        }

    async def _frames(
        self,
        transfer: Transfer,
        manifest: dict[str, Any],
        spec: ContainerSpec,
        *,
        seen: dict[str, Signature] | None = None,
        since: dict[str, Signature] | None = None,
        travel: Outgoing | None = None,
    ) -> AsyncIterator[bytes]:
        """One pass: the manifest, the volume's streams and their end, the backups."""
        root = await asyncio.to_thread(Root, self._volumes.resolve(spec.volume_id).path)
        try:
            entries, gone = await asyncio.to_thread(plan, root, seen=seen, since=since)
            size = sum(e.info.st_size for e in entries if e.is_file)
            streams = 1 if since is not None else stream_count(size)
            yield frame(b"M", orjson.dumps({**manifest, "streams": streams}))
            compression: Compression = manifest["compression"]
            outflow = Outflow(streams)
            producers = [
                run_in_thread(
                    functools.partial(
                        pack_entries,
                        root,
                        group,
                        outflow.sink(index),
                        compression,
                        threads=zstd_threads(streams),
                    ),
                    f"transfer-pack-{transfer.id}-{index}",
                )
                for index, group in enumerate(split(entries, streams))
            ]
            async for piece in outflow.frames(producers):
                transfer.bytes_done += len(piece)
                self._report(transfer, force=False)
                yield piece
            ends = outflow.end()
            yield frame(b"E", orjson.dumps({**ends[0], "streams": ends, "deleted": gone}))
        finally:
            root.close()
        if travel is None or self.backups is None:
            return
        for backup_id, path in travel.files(self.backups):
            yield frame(b"B", orjson.dumps({"backup_id": backup_id}))
            outflow = Outflow(1)
            reader = run_in_thread(
                functools.partial(_read_file, path, outflow.sink(0)),
                f"transfer-backup-{transfer.id}",
            )
            async for piece in outflow.frames([reader]):
                transfer.bytes_done += len(piece)
                self._report(transfer, force=False)
                yield piece
            yield frame(b"E", orjson.dumps(outflow.end()[0]))

    # -- target --------------------------------------------------------------------------

    async def receive(
        self, token: str, internal_id: str, body: AsyncIterable[bytes], *, phase: str = "only"
    ) -> tuple[Transfer, str | None]:
        """Take one pass of a transfer; the transfer and, after a first pass, its secret.

        ``check``: the body is the manifest alone; everything is checked (the token
        without using it up) and nothing is kept, so a source learns of a refusal before
        any data moves. ``only``: the whole volume (and the backups), then publish and
        converge; the answer waits until the container runs and says ready (phase
        :data:`AWAITING`): the copy stays only if the source commits within the commit
        window (:meth:`settle_here`). ``first``: the whole volume (and the backups)
        while the source still runs, kept in staging (for :data:`STAGE_SECONDS` at
        most); the answer carries the secret the ``final`` pass (only what changed, and
        what is gone) authenticates with before publishing as ``only`` does. Any failure
        removes staging and whatever was published.
        """
        if phase not in ("check", "only", "first", "final"):
            raise InvalidRequest("Transfer refused: unknown pass")
        staged: _Staged | None = None
        if phase == "final":
            staged = self._staged.pop(secret_hash(token), None)
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
                existing = self._transfers.get(transfer_id)
                if existing is not None and existing.state == "running":
                    raise Conflict("Transfer refused: this transfer is being received already")
                self._check_here(spec)
                records = incoming(self.backups, spec.volume_id, manifest.get("backups"))
            elif transfer_id != staged.transfer.id:
                raise InvalidRequest("Transfer refused: the manifest is for another transfer")
            else:
                records = staged.records
            streams = manifest.get("streams", 1)
            if not isinstance(streams, int) or not 1 <= streams <= MAX_STREAMS:
                raise InvalidRequest("Transfer refused: bad stream count")
        except BaseException:
            if staged is not None:
                await self._fail_staged(staged, "Transfer refused")
            raise
        compression: Compression = "zstd" if manifest.get("compression") == "zstd" else "gzip"
        if phase == "check":
            transfer = Transfer(
                id=transfer_id, internal_id=internal_id, role="target", phase="checked"
            )
            return transfer, None
        if staged is None:
            transfer = Transfer(
                id=transfer_id,
                internal_id=internal_id,
                role="target",
                phase="receiving",
                volume_id=spec.volume_id,
                backups=[r.backup_id for r in records],
                commit_hash=manifest["commit_sha256"],
            )
            self._transfers[transfer.id] = transfer
            self._report(transfer)
            await self._save(transfer)
            staging = self._data_dir / STAGING / transfer.id
        else:
            transfer, staging = staged.transfer, staged.staging
            await self._set_phase(transfer, "receiving changes")
        # The source's ``abort`` (or a DELETE here) cancels this request's work.
        transfer.task = asyncio.current_task()
        keep = False
        try:
            tree = staging / "volume"
            if staged is None:
                await asyncio.to_thread(_make_staging, staging, tree)
            owner = self._unpack_owner(spec, manifest)
            if staged is not None and staged.owner != owner:
                owner = None  # the first pass gave its entries to another: the walk decides
            await self._receive_volume(transfer, reader, chunks, tree, streams, compression, owner)
            files: dict[str, Path] = dict(staged.files) if staged is not None else {}
            if staged is None:
                files = await self._receive_backups(transfer, reader, chunks, staging, records)
            if phase == "first":
                secret = secrets.token_hex(24)
                self._staged[secret_hash(secret)] = _Staged(
                    transfer=transfer,
                    spec=spec,
                    staging=staging,
                    records=records,
                    files=files,
                    owner=owner,
                    expiry=asyncio.get_running_loop().call_later(
                        STAGE_SECONDS, self._expire, secret_hash(secret)
                    ),
                )
                await self._set_phase(transfer, "staged")
                keep = True
                transfer.task = None
                return transfer, secret
            transfer.published = True
            await self._set_phase(transfer, "converging")
            try:
                await asyncio.to_thread(self._volumes.adopt, spec.volume_id, tree)
            except VolumeInUse:
                transfer.published = False  # someone else's volume: never removed here
                raise
            if records and self.backups is not None:
                await self.backups.take_in(records, files)
            await self._seed(internal_id, manifest.get("install"))
            await pause_point("seeded", transfer.id)
            if self._hand_over is not None:
                await self._hand_over(spec, self._volumes.root / spec.volume_id, owner)
            # On disk before this node says ready: the source deletes its copy on that.
            await asyncio.to_thread(
                sync_filesystems, [self._volumes.root / spec.volume_id, self._data_dir]
            )
            await self._containers.create(spec.model_dump(mode="json"))
            if spec.power is Power.RUNNING:
                await self._wait_state(internal_id, {RuntimeState.RUNNING}, START_WAIT)
            await asyncio.to_thread(shutil.rmtree, staging, True)
            # Ready: the copy is kept only if the source commits within the window.
            transfer.phase = AWAITING
            self._windows.open(transfer.id)
            self._report(transfer)
            await self._save(transfer)
        except BaseException as exc:
            self._windows.close(transfer.id)
            transfer.state = "failed"
            transfer.error = ABORTED if isinstance(exc, asyncio.CancelledError) else _reason(exc)
            log.warning("transfer %s (target) failed: %s", transfer.id, transfer.error)
            if transfer.published:
                await asyncio.shield(self._unpublish(transfer))
            else:
                await self._end(transfer)
            raise
        finally:
            transfer.task = None
            if not keep:
                await asyncio.to_thread(shutil.rmtree, staging, True)
        return transfer, None

    # -- target: the commit step ---------------------------------------------------------

    async def settle_here(
        self, kind: str, secret: str, internal_id: str, transfer_id: str
    ) -> Transfer:
        """The source's ``commit`` or ``abort`` (authenticated by its commit secret).

        Both are idempotent and answer the record, whose ``state`` is the outcome:
        ``commit`` keeps a ready copy (``completed``); ``abort`` removes what this node
        holds of the transfer (staging, a copy being published or ready) unless it was
        committed. After the window closed, or a restart, both answer ``failed``.
        """
        if kind not in ("commit", "abort"):
            raise InvalidRequest("Transfer refused: unknown pass")
        transfer = self._transfers.get(transfer_id)
        if transfer is None or transfer.role != "target":
            raise TransferNotFound()
        if transfer.internal_id != internal_id or not secret_matches(secret, transfer.commit_hash):
            raise Unauthorized("Transfer refused: unknown commit secret")
        if kind == "commit":
            await self._commit_here(transfer)
        else:
            await self._abort_here(transfer)
        return transfer

    async def _commit_here(self, transfer: Transfer) -> None:
        if transfer.state != "running" or transfer.phase != AWAITING:
            return  # committed already, failed, or not ready: the record says which
        self._windows.close(transfer.id)
        transfer.state, transfer.phase, transfer.ended_at = "completed", "done", time.time()
        try:
            # Recorded before the answer: a restart after it keeps the copy.
            await asyncio.shield(asyncio.to_thread(self._records.save, transfer))
        except (LightdError, OSError) as exc:
            transfer.state, transfer.phase, transfer.ended_at = "running", AWAITING, None
            self._windows.open(transfer.id)
            raise TransferFailed(
                f"Transfer failed: the commit could not be recorded ({exc})"
            ) from None
        self._report(transfer)
        if self._finished is not None:
            self._finished(transfer.internal_id, transfer.view())

    async def _abort_here(self, transfer: Transfer) -> None:
        task = transfer.task
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()  # its failure path removes what it published, then ends
            await asyncio.wait([task], timeout=START_WAIT)
        key = next((k for k, v in self._staged.items() if v.transfer is transfer), None)
        staged = self._staged.pop(key, None) if key is not None else None
        if staged is not None:
            staged.expiry.cancel()
            await self._fail_staged(staged, ABORTED)
            return
        if transfer.state == "running" and transfer.phase == AWAITING:
            self._windows.close(transfer.id)
            transfer.state, transfer.error = "failed", ABORTED
            log.warning("transfer %s (target): aborted by the source", transfer.id)
            await asyncio.shield(self._unpublish(transfer))

    def _commit_expired(self, transfer_id: str) -> None:
        transfer = self._transfers.get(transfer_id)
        if transfer is None or transfer.state != "running" or transfer.phase != AWAITING:
            return
        transfer.state = "failed"
        transfer.error = "Transfer failed: no commit from the source in time"
        log.warning("transfer %s (target): no commit came; removing the copy", transfer.id)
        self._spawn(self._unpublish(transfer), f"transfer-expire-{transfer.id}")

    async def _receive_volume(
        self,
        transfer: Transfer,
        reader: FrameReader,
        chunks: AsyncIterator[bytes],
        tree: Path,
        streams: int,
        compression: Compression,
        owner: Owner | None,
    ) -> None:
        """The volume's streams unpacked into ``tree`` as they arrive, each verified at
        the end (a mismatch is reported as such, whatever the unpacker made of it); with
        ``owner``, every entry goes to it as it is written."""
        root = await asyncio.to_thread(Root, tree)
        inflows = [Inflow() for _ in range(streams)]
        folders: list[list[Folder]] = [[] for _ in range(streams)]

        def work(index: int) -> None:
            try:
                unpack(inflows[index], root, compression, folders=folders[index], owner=owner)
            finally:
                inflows[index].drain()

        workers = [
            run_in_thread(functools.partial(work, i), f"transfer-unpack-{transfer.id}-{i}")
            for i in range(streams)
        ]
        try:
            while True:
                kind, payload = await _next_frame(reader, chunks)
                if kind == b"D":
                    index = 0
                    if streams > 1:
                        if not payload or payload[0] >= streams:
                            raise InvalidRequest("Transfer refused: bad stream index")
                        index, payload = payload[0], payload[1:]
                    transfer.bytes_done += len(payload)
                    self._report(transfer, force=False)
                    await inflows[index].put(payload)
                    continue
                if kind != b"E":
                    raise InvalidRequest("Transfer refused: unexpected frame")
                end = _loads(payload)
                break
            for inflow in inflows:
                await inflow.put_end()
            outcomes = await asyncio.gather(*workers, return_exceptions=True)
            expected = end.get("streams") if streams > 1 else [end]
            if not isinstance(expected, list) or len(expected) != streams:
                raise ChecksumMismatch()
            for inflow, want in zip(inflows, expected, strict=True):
                if not isinstance(want, dict) or (
                    want.get("sha256") != inflow.digest.hexdigest()
                    or want.get("bytes") != inflow.count
                ):
                    raise ChecksumMismatch()
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    raise outcome
            deleted = end.get("deleted", [])
            if not isinstance(deleted, list) or not all(isinstance(n, str) for n in deleted):
                raise InvalidRequest("Transfer refused: bad end frame")
            await asyncio.to_thread(remove, root, deleted)
            await asyncio.to_thread(
                functools.partial(
                    finish_folders, root, [f for fs in folders for f in fs], owner=owner
                )
            )
            transfer.bytes_total = transfer.bytes_done
        except BaseException:
            for inflow in inflows:
                inflow.abort()
            await asyncio.shield(asyncio.gather(*workers, return_exceptions=True))
            raise
        finally:
            root.close()

    async def _receive_backups(
        self,
        transfer: Transfer,
        reader: FrameReader,
        chunks: AsyncIterator[bytes],
        staging: Path,
        records: list[BackupRecord],
    ) -> dict[str, Path]:
        """The archive of every ``archive`` backup, in manifest order, each verified."""
        files: dict[str, Path] = {}
        wanted = [r for r in records if r.adapter == "archive"]
        if not wanted:
            return files
        folder = staging / "backups"
        await asyncio.to_thread(folder.mkdir, mode=0o700)
        await self._set_phase(transfer, "receiving backups")
        for record in wanted:
            kind, payload = await _next_frame(reader, chunks)
            if kind != b"B" or _loads(payload).get("backup_id") != record.backup_id:
                raise InvalidRequest("Transfer refused: a backup is missing from the stream")
            path = folder / record.backup_id
            inflow = Inflow()
            writer = run_in_thread(
                functools.partial(_write_file, inflow, path), f"transfer-backup-{transfer.id}"
            )
            try:
                while True:
                    kind, payload = await _next_frame(reader, chunks)
                    if kind != b"D":
                        break
                    transfer.bytes_done += len(payload)
                    self._report(transfer, force=False)
                    await inflow.put(payload)
                if kind != b"E":
                    raise InvalidRequest("Transfer refused: unexpected frame")
                await inflow.put_end()
                failure: BaseException | None = None
                try:
                    await writer
                except (OSError, LightdError) as exc:
                    failure = exc
                end = _loads(payload)
                if (
                    end.get("sha256") != inflow.digest.hexdigest()
                    or end.get("bytes") != inflow.count
                ):
                    raise ChecksumMismatch()
                if failure is not None:
                    raise failure
            except BaseException:
                inflow.abort()
                await asyncio.shield(asyncio.gather(writer, return_exceptions=True))
                raise
            files[record.backup_id] = path
        transfer.bytes_total = transfer.bytes_done
        return files

    def _expire(self, key: str) -> None:
        staged = self._staged.pop(key, None)
        if staged is not None:
            self._spawn(
                self._fail_staged(staged, "Transfer failed: the final pass never came"),
                f"transfer-expire-{staged.transfer.id}",
            )

    async def _fail_staged(self, staged: _Staged, reason: str) -> None:
        staged.transfer.state = "failed"
        staged.transfer.error = reason
        await asyncio.to_thread(shutil.rmtree, staged.staging, True)
        await self._end(staged.transfer)

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
        version = manifest.get("version")
        if not isinstance(version, int) or version < PROTOCOL:
            raise InvalidRequest(
                f"Transfer refused: the source speaks transfer protocol {version}; this node "
                f"needs {PROTOCOL} (the commit step): upgrade the source"
            )
        if not isinstance(manifest.get("commit_sha256"), str) or not COMMIT_HASH.fullmatch(
            manifest["commit_sha256"]
        ):
            raise InvalidRequest("Transfer refused: the manifest has no commit_sha256")
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

    def _unpack_owner(self, spec: ContainerSpec, manifest: dict[str, Any]) -> Owner | None:
        """Who the entries go to while unpacking: the hand-over's owner when the install
        comes along (a copy still to install is handed over by its install), else None."""
        if self._owner_of is None or not _install_ready(manifest.get("install")):
            return None
        return self._owner_of(spec)

    async def _seed(self, internal_id: str, install: object) -> None:
        if _install_ready(install):
            code = install.get("exit_code")
            await self._seed_install(
                internal_id,
                state=InstallState.READY,
                install_key=_text(install.get("key")),
                image=_text(install.get("image")),
                exit_code=code if isinstance(code, int) else None,
            )

    async def _withdraw(self, transfer: Transfer) -> None:
        """Delete the document a failed target published (the reconciler removes its
        engine container); nothing when it is gone already. A seeded install record
        without a document is let go too."""
        await self._drop_seed(transfer.internal_id)
        with contextlib.suppress(LightdError):
            await self._containers.delete(transfer.internal_id)

    async def _unpublish(self, transfer: Transfer) -> None:
        """Remove what a failed target published (document, volume, backups), then end."""
        await self._withdraw(transfer)
        await self._wait_forgotten(transfer.internal_id)
        if transfer.volume_id is not None:
            with contextlib.suppress(LightdError, OSError):
                await self._delete_volume(transfer, transfer.volume_id)
        if transfer.backups and self.backups is not None:
            with contextlib.suppress(LightdError, OSError):
                await self.backups.let_go(transfer.backups, remove_archives=True)
        transfer.published = False
        await self._end(transfer)


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


async def _next_frame(reader: FrameReader, chunks: AsyncIterator[bytes]) -> tuple[bytes, Buffer]:
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


def _loads(payload: Buffer) -> dict[str, Any]:
    try:
        value = orjson.loads(payload)
    except ValueError:
        raise InvalidRequest("Transfer refused: bad frame") from None
    if not isinstance(value, dict):
        raise InvalidRequest("Transfer refused: bad frame")
    return value


def _make_staging(staging: Path, tree: Path) -> None:
    staging.mkdir(parents=True, exist_ok=False, mode=0o700)
    tree.mkdir(mode=0o700)


def _read_file(path: Path, sink: Callable[[bytes], None]) -> None:
    with open(path, "rb", buffering=0) as handle:
        while chunk := handle.read(CHUNK):
            sink(chunk)


def _write_file(source: Inflow, path: Path) -> None:
    try:
        with open(path, "xb", buffering=0) as handle:
            for chunk in source:
                view = memoryview(chunk)
                while view:
                    view = view[handle.write(view) or 0 :]
            os.fsync(handle.fileno())
    finally:
        source.drain()


@dataclass
class _Staged:
    """A first pass received and kept until the final pass (or its expiry)."""

    transfer: Transfer
    spec: ContainerSpec
    staging: Path
    expiry: asyncio.TimerHandle
    records: list[BackupRecord] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)
    owner: Owner | None = None  # who the first pass gave its entries to


def _install_ready(install: object) -> TypeGuard[dict[str, Any]]:
    """Whether a manifest's ``install`` says the copy is installed (it is seeded so)."""
    return isinstance(install, dict) and install.get("state") == InstallState.READY.value


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _seconds(value: str | None) -> float | None:
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return seconds if seconds is not None and 0 < seconds <= 3600 else None


def _reason(exc: BaseException) -> str:

    import httpx

    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    if isinstance(exc, LightdError):
        return exc.message
    if isinstance(exc, httpx.HTTPError):
        return f"Transfer failed: {type(exc).__name__}: {exc}"
    return f"Transfer failed: {type(exc).__name__}"
