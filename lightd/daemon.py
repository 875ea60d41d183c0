"""The composition root: settings, stores, tokens, the engine and the workers, built once.

``Daemon`` builds every long-lived part, wires their callbacks, owns their lifecycle
(start, reload, stop) and hands the API only :class:`~lightd.services.Services`. It must
not serve HTTP (``lightd.api``), build answers (``lightd.desired.views``) or decide
convergence (``lightd.reconcile``). Only the server and the CLI's entry point import it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path
from typing import Any

from lightd.auth.master import MasterToken, ensure_master_token
from lightd.auth.node import ensure_node_id
from lightd.auth.tokens import TokenStore
from lightd.backups.attach import attach as attach_backups
from lightd.config import ContainersSettings, Settings, load_settings
from lightd.desired.admission import admit
from lightd.desired.documents import DesiredContainers
from lightd.desired.effective import EffectiveDesired, Resolver
from lightd.desired.ingest import DesiredIngest
from lightd.desired.service import (
    ContainerService,
    bindings_of,
    volume_users,
)
from lightd.desired.templates import DesiredTemplates, TemplateService
from lightd.desired.views import Views
from lightd.engine.docker import DockerEngine
from lightd.errors import LightdError
from lightd.fs import ArchiveLimits, VolumeManager
from lightd.fs.beneath import Root
from lightd.fs.files import VolumeFiles
from lightd.fs.limits import DiskLimits
from lightd.fs.ops import hand_root
from lightd.logsetup import flush_logs, set_flush_waker, set_level
from lightd.malloc import TRIM_SECONDS, trim
from lightd.metrics import Metrics
from lightd.pool import PortPool
from lightd.reconcile.controller import Controller, ControllerSettings
from lightd.reconcile.planner import Policy
from lightd.remote import Notifier
from lightd.remote.events import Notification
from lightd.runtime.console import ConsoleHub
from lightd.runtime.events import ContainerEvents
from lightd.runtime.looplag import watch_loop_lag
from lightd.runtime.stats import StatsHub
from lightd.runtime.watch import NodeWatch
from lightd.services import Access, Consoles, GitOps, Node, Services, SocketCounts
from lightd.sftp import ContainerAccess, SftpService
from lightd.spec.container import ContainerSpec, numeric_owner
from lightd.spec.observed import InstallState, ObservedContainer, ObservedPatch, RuntimeState
from lightd.store import DocumentStore
from lightd.store.install_logs import InstallLogs
from lightd.store.observed import ObservedStore
from lightd.store.watch import FILE_EVENTS, FolderWatcher, WatchSettings
from lightd.templates.denylist import Denylist, denylist_of
from lightd.transfer.guard import parse_networks
from lightd.transfer.pull import Pulls
from lightd.transfer.service import Transfers
from lightd.transfer.tokens import TransferTokens

log = logging.getLogger("lightd.daemon")


def _tasks_alive() -> int:
    """asyncio tasks of the running loop (scrapes run on it); 0 off the loop."""
    try:
        return len(asyncio.all_tasks())
    except RuntimeError:
        return 0


def controller_settings(section: ContainersSettings) -> ControllerSettings:
    return ControllerSettings(
        workers=section.workers,
        resync_seconds=section.resync_seconds,
        policy=Policy(
            install_timeout_seconds=section.install_timeout_seconds,
            crash_backoff_initial_seconds=section.crash_backoff_initial_seconds,
            crash_backoff_max_seconds=section.crash_backoff_max_seconds,
            crash_window_seconds=section.crash_window_seconds,
            crash_max=section.crash_max,
            default_user=section.user,
            cap_drop=tuple(section.cap_drop),
        ),
    )


class Daemon:
    """Builds every long-lived part once, starts, stops and reloads them."""

    def __init__(self, settings: Settings, *, config_path: Path | None) -> None:
        self.settings = settings
        self.config_path = config_path
        data_dir = settings.storage.data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        data_dir.chmod(0o700)
        settings.storage.desired_dir.mkdir(parents=True, exist_ok=True)
        self.data = DocumentStore(data_dir, file_mode=0o600)
        self.desired = DocumentStore(settings.storage.desired_dir)
        self.master: MasterToken = ensure_master_token(
            configured=settings.authorization.token, data_dir=data_dir
        )
        self.tokens = TokenStore(self.data)
        self.transfer_tokens = TransferTokens(self.data)
        self.metrics = Metrics()
        self.node_id = ensure_node_id(data_dir)
        self.engine = DockerEngine(settings.docker, node_id=self.node_id)
        self.containers = DesiredContainers(self.desired)
        # Document volume prefixes are resolved once, when a document is read or written.
        self.containers.resolve_volume = self._volume_id
        self.templates = DesiredTemplates(self.desired)
        self.resolver = Resolver(
            templates=self.templates,
            image_map=lambda: self.settings.templates.image_map,
            timezone=lambda: self.settings.templates.timezone,
        )
        self.effective = EffectiveDesired(containers=self.containers, resolver=self.resolver)
        self.ports = PortPool(self.desired, bindings=lambda: bindings_of(self.containers))
        self.observed = ObservedStore(self.data)
        self.remote = Notifier(self.data, settings.remote, observed=self.observed.all)
        self.observed.subscribe(self.remote.on_change)
        self.consoles = ConsoleHub(
            self.engine,
            ring_lines=settings.containers.console_ring_lines,
            throttle_lines=settings.containers.console_throttle_lines,
            throttle_window_seconds=settings.containers.console_throttle_window_ms / 1000,
            on_match=lambda key, cid: self.controller.on_console_match(key, cid),
            on_end=lambda key: self.controller.on_console_end(key),
        )
        self.disk = DiskLimits(
            volumes_root=data_dir / "volumes",
            images=data_dir / "volume-images",
            meta=self.data,
            setting=settings.volumes.disk_backend,
            rescan_seconds=settings.volumes.soft_rescan_seconds,
            entries_per_second=settings.volumes.soft_scan_entries_per_second,
        )
        self.volumes = VolumeManager(
            data_dir / "volumes",
            meta=self.data,
            disk=self.disk,
            limits=ArchiveLimits(
                max_total_bytes=settings.volumes.archive_max_total_bytes,
                max_entries=settings.volumes.archive_max_entries,
                max_ratio=settings.volumes.archive_max_ratio,
            ),
            users_of=lambda volume_id: volume_users(self.containers, volume_id),
        )
        self.controller = Controller(
            engine=self.engine,
            desired=self.effective,
            observed=self.observed,
            consoles=self.consoles,
            volume_path=self._volume_path,
            data_dir=data_dir,
            settings=controller_settings(settings.containers),
            metrics=self.metrics,
            admit=self._admit,
            disk_state=self._disk_state,
            apply_disk=self._apply_disk,
        )
        self.views = Views(desired=self.effective, observed=self.observed, ports=self.ports)
        self.watch = NodeWatch(
            container_view=self.views.container,
            container_views=self.views.containers,
            port_views=self.views.port_views,
            port_view=self.views.port_view,
            port_keys_of=self.views.port_keys_of,
            history=settings.websocket.watch_history,
        )
        self.stats = StatsHub(self.engine, extra=self._stats_extra)
        self.container_events = ContainerEvents()
        self.sockets = SocketCounts()
        self.observed.subscribe(self.container_events.on_observed)
        self.observed.subscribe(self._observed_changed)
        self.ports.listeners.append(self.watch.refresh_ports)
        self.ports.listeners.append(self.controller.retry_refused)
        self.metrics.watch_state(self._metric_state)
        self.ingest = DesiredIngest(
            root=settings.storage.desired_dir,
            desired=self.containers,
            templates=self.templates,
            template_users=self.effective.users_of_template,
            pool=self.ports,
            observed_ids=lambda: [item.internal_id for item in self.observed.all()],
            hint=self.controller.hint,
            max_delete_share=settings.gitops.max_delete_share,
        )
        self.watcher = FolderWatcher(
            settings.storage.desired_dir,
            on_change=self._on_desired_change,
            settings=WatchSettings(
                rescan_seconds=settings.gitops.rescan_seconds,
                debounce_ms=settings.gitops.debounce_ms,
                force_polling=settings.gitops.force_polling,
            ),
        )
        self.files = VolumeFiles(
            self.volumes,
            owner_of=self._volume_owner,
            limit_owner=self._limit_owner,
            in_use=self._volume_in_use,
            denylist=self._denylist,
        )
        self.pulls = Pulls(
            self.files,
            allow_networks=lambda: parse_networks(self.settings.volumes.pull_allow_networks),
            max_bytes=lambda: self.settings.volumes.max_upload_bytes,
        )
        container_service = ContainerService(
            desired=self.containers,
            observed=self.observed.get,
            pool=self.ports,
            resolve_volume=lambda ref: self.volumes.resolve(ref).id,
            hint=self.controller.hint,
            allowed_mount_roots=settings.containers.allowed_mount_roots,
            check_template=self.resolver.check,
        )
        self.transfers = Transfers(
            data_dir=data_dir,
            data=self.data,
            containers=container_service,
            observed=self.observed.get,
            volumes=self.volumes,
            tokens=self.transfer_tokens,
            admit=self._admit_error,
            seed_install=self.controller.seed_install,
            drop_seed=self.controller.drop_seed,
            changed=lambda key, view: self.watch.set_object("transfer", key, view),
            finished=self._transfer_finished,
            hand_over=self._hand_transferred,
            owner_of=self._transfer_owner,
            commit_seconds=lambda: self.settings.transfers.commit_timeout_seconds,
        )
        # SFTP (lightd.sftp): sessions on container volumes; activity to /watch and the panel.
        self.sftp = SftpService(
            settings.sftp,
            data_dir=data_dir,
            container_of=self.sftp_access,
            on_activity=self.sftp_activity,
        )
        self.observed.subscribe(self.sftp.on_observed)
        consoles = Consoles(
            consoles=self.consoles,
            stats=self.stats,
            events=self.container_events,
            observed=self.observed,
            install_logs=InstallLogs(self.data),
        )
        self.backups = attach_backups(
            settings=settings,
            data=self.data,
            volumes=self.volumes,
            desired=self.containers,
            observed=self.observed,
            keep_stopped=self.controller.keep_stopped,
            let_run=self.controller.let_run,
            send_command=consoles.send_command,
            watch=self.watch,
            events=self.container_events,
            remote=self.remote,
            metrics=self.metrics,
        )
        self.backups.owner_of = self._volume_owner
        self.transfers.backups = self.backups
        self.services = Services(
            settings=settings,
            containers=container_service,
            templates=TemplateService(
                templates=self.templates, users=self.effective.users_of_template
            ),
            transfers=self.transfers,
            reads=self.views,
            watch=self.watch,
            gitops=GitOps(
                ingest=self.ingest,
                watching=lambda: self.watcher.watching,
                desired=self.containers,
                observed=self.observed,
                observe=self.controller.observe,
            ),
            consoles=consoles,
            ports=self.ports,
            files=self.files,
            pulls=self.pulls,
            transfer_tokens=self.transfer_tokens,
            tokens=Access(
                tokens=self.tokens,
                master=lambda: self.master.value,
                enabled=lambda: self.settings.authorization.enabled,
            ),
            node=Node(
                node_id=self.node_id,
                metrics=self.metrics,
                engine_status=self.engine.status,
                reconciled=self.controller.first_sync_done.is_set,
                engine_up=lambda: self.controller.engine_up,
                remote_status=self.remote.status,
                reload=self.reload,
            ),
            sockets=self.sockets,
            sftp=self.sftp,
            backups=self.backups,
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    def _transfer_finished(self, internal_id: str, view: dict[str, Any]) -> None:
        """The panel hears of a transfer's outcome on both nodes (``event: transfer``)."""
        body: dict[str, str | int | float] = {
            "event": "transfer",
            "server": internal_id,
            "transfer_id": str(view["transfer_id"]),
            "role": str(view["role"]),
            "state": str(view["state"]),
            "error": str(view["error"] or ""),
            "bytes": int(view["bytes_done"]),
        }
        self.remote.notify(internal_id, Notification("transfer", body))

    def _run_user(self, spec: ContainerSpec) -> str | None:
        """The user ``spec``'s container runs as: its own, else the node's default."""
        return spec.user or self.settings.containers.user

    def _transfer_owner(self, spec: ContainerSpec) -> tuple[int, int] | None:
        """The uid:gid a volume moved in for ``spec`` goes to (None for a user name)."""
        user = self._run_user(spec)
        return numeric_owner(user) if user is not None else None

    async def _hand_transferred(
        self, spec: ContainerSpec, volume: Path, given: tuple[int, int] | None
    ) -> None:
        """A volume a transfer moved in goes to the document's user once, recorded.

        As after an install (the planner's ``HandVolume``): one walk (none when the
        unpacker gave every entry to that owner already: ``given``), then
        ``volume_owner`` in the observed state, so neither the first reconcile nor later
        starts walk the tree again. Users that are names (not uid:gid) are left alone, and
        so is a volume whose install did not come along (the install hands it over).
        """
        user = self._run_user(spec)
        owner = self._transfer_owner(spec)
        observed = self.observed.get(spec.internal_id)
        if user is None or owner is None or observed is None:
            return
        if observed.install_state is not InstallState.READY:
            return
        if given == owner:
            log.info("%s: transferred volume unpacked as %s", spec.internal_id, user)
            await self.observed.patch(spec.internal_id, ObservedPatch(volume_owner=user))
            return

        def work() -> int:
            with Root(volume) as root:
                return hand_root(root, owner)

        changed = await asyncio.to_thread(work)
        log.info("%s: transferred volume handed to %s (%d entries changed)", spec.internal_id,
                 user, changed)  # fmt: skip
        await self.observed.patch(spec.internal_id, ObservedPatch(volume_owner=user))

    def _admit_error(self, spec: ContainerSpec) -> LightdError | None:
        """The error a transfer's target answers for a document it may not apply, or None."""
        refusal = admit(
            spec,
            roots=self.settings.containers.allowed_mount_roots,
            cpus=os.cpu_count() or 1,
            pool=self.ports,
        )
        return refusal.error if refusal is not None else None

    def sftp_access(self, internal_id: str) -> ContainerAccess | None:
        """An SFTP session's view of a container: its volume, and whether it is installing."""
        spec = self.containers.get(internal_id)
        if spec is None:
            return None
        path = self._volume_path(spec.volume_id)
        observed = self.observed.get(internal_id)
        installing = observed is not None and observed.install_state is InstallState.INSTALLING
        volume_id = self._volume_id(spec.volume_id)
        if volume_id is None or path is None:
            return ContainerAccess(volume=None)
        ref = self.volumes.resolve(volume_id).ref
        return ContainerAccess(
            volume=Path(path),
            busy="installing" if installing else None,
            owner=numeric_owner(observed.volume_owner if observed is not None else None),
            room=lambda: self.disk.room(ref),
            wrote=lambda delta: self.disk.wrote(volume_id, delta),
            denied=lambda parts, folder: self._denied(volume_id, parts, folder),
        )

    def sftp_activity(self, body: dict[str, Any]) -> None:
        self.watch.publish("activity", str(body["server"]), body)
        self.remote.on_activity(body)

    def _admit(self, spec: ContainerSpec) -> str | None:
        """Why a document may not be applied (hand edits skip the API's checks), or None."""
        # The reconciler holds the effective spec; admission judges the document as written.
        document = self.containers.get(spec.internal_id) or spec
        refusal = admit(
            document,
            roots=self.settings.containers.allowed_mount_roots,
            cpus=os.cpu_count() or 1,
            pool=self.ports,
            check_template=self.resolver.check,
        )
        return refusal.message if refusal is not None else None

    def _volume_owner(self, volume_id: str) -> tuple[int, int] | None:
        """The uid, gid the volume was handed to (by its container's last install)."""
        for internal_id in volume_users(self.containers, volume_id):
            observed = self.observed.get(internal_id)
            owner = numeric_owner(observed.volume_owner if observed is not None else None)
            if owner is not None:
                return owner
        return None

    def _denylist(self, volume_id: str) -> Denylist | None:
        """The file denylist of the templates the volume's containers use (in memory)."""
        return denylist_of(
            self.templates.get(spec.template)
            for spec in self._users(volume_id)
            if spec.template is not None
        )

    def _denied(self, volume_id: str, parts: tuple[str, ...], folder: bool | None) -> bool:
        denylist = self._denylist(volume_id)
        return denylist is not None and denylist.denies(parts, folder=folder)

    # -- disk limits -------------------------------------------------------------------

    def _volume_id(self, ref: str) -> str | None:
        try:
            return self.volumes.id_of(ref)
        except LightdError:
            return None

    def _disk_state(self, ref: str) -> tuple[int | None, str | None]:
        volume_id = self._volume_id(ref)
        if volume_id is None:
            return None, None
        cached = self.disk.cached(volume_id)
        limit = cached.limit if cached is not None else self.disk.limit(volume_id)
        return limit, self.disk.over(volume_id)

    async def _apply_disk(self, ref: str, limit: int, in_use: bool) -> None:
        volume = self.volumes.resolve(ref)
        await self.volumes.run_heavy(self.disk.set_limit, volume.ref, limit, in_use=in_use)

    def _users(self, volume_id: str) -> list[ContainerSpec]:
        """The documents using the volume (an in-memory lookup, no disk access)."""
        found = (self.containers.get(key) for key in volume_users(self.containers, volume_id))
        return [spec for spec in found if spec is not None]

    def _limit_owner(self, volume_id: str) -> str | None:
        """The container whose document sets the volume's limit (it wins over the API)."""
        for spec in self._users(volume_id):
            if spec.limits.disk is not None:
                return spec.internal_id
        return None

    def _volume_in_use(self, volume_id: str) -> bool:
        for spec in self._users(volume_id):
            observed = self.observed.get(spec.internal_id)
            if observed is not None and observed.state is not RuntimeState.OFFLINE:
                return True
        return False

    def _stats_extra(self, internal_id: str) -> dict[str, Any]:
        spec = self.containers.get(internal_id)
        volume_id = self._volume_id(spec.volume_id) if spec is not None else None
        cached = self.disk.cached(volume_id) if volume_id is not None else None
        if cached is None:
            return {}
        return {"disk_usage": cached.usage, "disk_limit": cached.limit or 0}

    def _disk_over_changed(self, volume_id: str) -> None:
        """From any thread: the volume crossed its limit; its containers look again."""
        loop = self._loop
        if loop is None:
            return
        for spec in self._users(volume_id):
            loop.call_soon_threadsafe(self.controller.hint, spec.internal_id)

    async def _trim_memory(self) -> None:
        """Hand the pages freed by connection churn back to the system (lightd.malloc)."""
        while True:
            await asyncio.sleep(TRIM_SECONDS)
            await asyncio.to_thread(trim)

    async def _purge_trash(self) -> None:
        removed = await self.volumes.run_heavy(self.volumes.purge_trash)
        if removed:
            log.info("removed %d deleted volumes left in the trash", removed)

    async def _watch_disk(self) -> None:
        interval = self.settings.volumes.disk_check_seconds
        while True:
            await asyncio.sleep(interval)
            await asyncio.to_thread(self.disk.refresh, self.volumes.refs())

    def _metric_state(self) -> dict[str, Any]:
        queue = self.controller.queue
        throttled, repeats = self.consoles.line_counts()
        state = self.views.metric_state(
            queue_depth=len(queue) if queue is not None else 0,
            retries=queue.retries if queue is not None else 0,
            container_sockets=self.sockets.containers,
            watch_sockets=self.sockets.watch,
            engine_up=self.controller.engine_up,
            extra=[
                (
                    "lightd_panel_outbox_depth",
                    "Panel notifications waiting",
                    len(self.remote.outbox),
                ),
                (
                    "lightd_panel_delivery_failures",
                    "Failed panel delivery attempts since start (retried)",
                    self.remote.failed_attempts,
                ),
                ("lightd_asyncio_tasks", "asyncio tasks alive now", _tasks_alive()),
                (
                    "lightd_console_lines_throttled",
                    "Console lines not sent since start: the container wrote over the throttle",
                    throttled,
                ),
                (
                    "lightd_console_repeats_skipped",
                    "Console lines the engine sent again (log rotation) and lightd skipped",
                    repeats,
                ),
                (
                    "lightd_panel_refused",
                    "Panel notifications refused with a 4xx and dropped since start",
                    self.remote.refused,
                ),
                *self.sftp.metrics(),
            ],
        )
        state["volumes"] = [
            (volume_id, disk.usage, disk.limit)
            for volume_id, disk in sorted(self.disk.all_cached().items())
        ]
        return state

    def _observed_changed(
        self, old: ObservedContainer | None, new: ObservedContainer | None
    ) -> None:
        self.views.changed()
        current = new if new is not None else old
        if current is not None:
            self.watch.refresh_container(current.internal_id)

    def _desired_changed(self, internal_id: str) -> None:
        self.views.changed()
        self.watch.refresh_container(internal_id)
        self.watch.refresh_ports_soon(internal_id)

    async def _on_desired_change(self, reason: str) -> None:
        await self.ingest.ingest(reason, full=not reason.endswith(FILE_EVENTS))

    def _volume_path(self, volume_id: str) -> str | None:
        try:
            return str(self.volumes.resolve(volume_id).path)
        except LightdError:
            return None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        # Disk limits first: the backend is probed and image volumes are mounted again
        # before anything (the sweep, an install, a container) uses a volume.
        await asyncio.to_thread(self.disk.probe)
        attached = await asyncio.to_thread(self.disk.attach_all, self.volumes.refs())
        log.info("disk limits: %s, %d volumes attached", self.disk.status.backend, attached)
        self.disk.on_over_changed = self._disk_over_changed
        await asyncio.to_thread(self.disk.refresh, self.volumes.refs())
        self.disk.start_accounting(self.volumes.refs)
        self._tasks.append(asyncio.create_task(self._watch_disk(), name="disk-watch"))
        self._tasks.append(asyncio.create_task(self._trim_memory(), name="malloc-trim"))
        # Before the temp sweep and any container: a truncating restore a kill left
        # mid-swap is finished (its staged entries are .lightd-tmp-* ones).
        await self.backups.recover()
        swept = await asyncio.to_thread(self.data.sweep_temp_files)
        swept += await asyncio.to_thread(self.desired.sweep_temp_files)
        swept += await asyncio.to_thread(self.volumes.sweep)
        if swept:
            log.info("removed %d temp files left by an interrupted write", swept)
        # Volumes deleted off the critical path (a transfer's source) that a stop or a
        # kill left in the trash: out of every listing already, removed in the background.
        self._tasks.append(asyncio.create_task(self._purge_trash(), name="volume-trash"))
        await self.sftp.start()  # first: a taken port is a config error before anything runs
        await asyncio.to_thread(self.tokens.load)
        await asyncio.to_thread(self.transfer_tokens.load)
        await self.ports.load()
        status = await self.engine.status()
        if status.reachable:
            log.info("docker engine %s answers", status.version)
        else:
            log.warning("docker engine unavailable: %s", status.error)
        loop = asyncio.get_running_loop()
        self._tasks.append(
            asyncio.create_task(watch_loop_lag(self.metrics.loop_lag.observe), name="loop-lag")
        )
        self.stats.bind_loop(loop)

        def desired_changed(key: str) -> None:
            loop.call_soon_threadsafe(self._desired_changed, key)

        self.containers.listeners.append(desired_changed)

        def template_changed(name: str) -> None:
            # Every container using the template converges again (its effective spec moved).
            for key in self.effective.users_of_template(name):
                loop.call_soon_threadsafe(self._desired_changed, key)
                loop.call_soon_threadsafe(self.controller.hint, key)

        self.templates.listeners.append(template_changed)
        # Observed state first, so that the first scan knows which containers exist and
        # a missing or emptied desired folder cannot delete them (the deletion guard).
        await asyncio.to_thread(self.observed.load)
        await self.ingest.ingest("start")
        await self.remote.load()
        await self.backups.start()  # first: a transfer's recovery may forget backups
        # Before the reconciler converges anything: unfinished transfers end
        # (``Interrupted``) and a target's uncommitted copy loses its document, so a
        # copy that stopped while lightd was down is never started again.
        if await self.transfers.recover():
            # A seeded record it dropped counted as a container the folder lacked.
            await self.ingest.ingest("start")
        await self.controller.start()
        await self.remote.start()
        await self.watcher.start()
        self.watch.prime()

    async def stop(self) -> None:
        await self.sftp.stop()
        await self.backups.stop()
        await self.watcher.stop()
        await self.controller.stop()
        self.stats.stop_all()
        await self.remote.stop()
        await self.pulls.close()
        await self.transfers.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        await asyncio.to_thread(self.disk.stop)
        self.volumes.close()
        self.engine.close()

    def spawn_log_flusher(self, interval: float = 0.5) -> None:
        """Flush buffered log lines ``interval`` after the first unflushed one.

        (See ``BatchedStreamHandler``.) Nothing written, no wake-up: an idle daemon
        stays asleep.
        """
        loop = asyncio.get_running_loop()
        written = asyncio.Event()

        def wake() -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closing
                loop.call_soon_threadsafe(written.set)

        async def flush_when_written() -> None:
            try:
                while True:
                    await written.wait()
                    await asyncio.sleep(interval)  # gather a batch
                    written.clear()
                    flush_logs()
            finally:
                set_flush_waker(None)

        set_flush_waker(wake)
        self._tasks.append(asyncio.create_task(flush_when_written(), name="log-flush"))

    def reload(self) -> Settings:
        """Re-read file and environment; apply what can change live. Raises ConfigError."""
        fresh = load_settings(self.config_path)
        self.master = ensure_master_token(
            configured=fresh.authorization.token, data_dir=self.settings.storage.data_dir
        )
        self.settings.authorization = fresh.authorization
        self.settings.remote = fresh.remote
        self.remote.configure(fresh.remote)
        self.settings.logging = fresh.logging
        set_level(fresh.logging.level)
        log.info("configuration reloaded")
        return self.settings
