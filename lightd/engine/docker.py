"""The docker-py implementation of :class:`lightd.engine.base.Engine`.

docker-py is blocking, so calls run in a thread pool of their own; transient failures
(connection errors, timeouts, 5xx, 409 "removal in progress") are retried briefly with
tenacity; every docker-py exception leaves this module translated into lightd's error
tree. The client and the pool are private: nothing outside this module holds them. It
decides nothing about desired state. Only ``lightd.daemon`` and ``lightd.cli`` import it
(an import contract keeps it so); everything else takes an ``Engine``.

The first look at a container after lightd started it (the console follower's for
the log file and the process, or the reconciler's pass after the start, whichever comes
first) is kept for a moment (:class:`_RecentInspects`) and answers the other, instead of
asking the engine twice. The start itself does not wait for that look: the reconcile
worker goes on to the next key while the follower's thread inspects. The answer is
trusted only while this engine's event stream is open, only for :data:`RECENT_SECONDS`,
and until an event about the container newer than the inspect arrives or lightd itself
changes the container (kill, remove, start, ...).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import docker
import docker.errors
import requests.exceptions
from docker.transport.unixconn import UnixHTTPAdapter
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from lightd.config import DockerSettings
from lightd.engine.jsonlog import JsonLogFollower, Process
from lightd.engine.records import (
    INSTALL_TARGET,
    LABEL_INTERNAL_ID,
    LABEL_MANAGED,
    LABEL_NODE,
    LABEL_ROLE,
    LABEL_SPEC_HASH,
    VOLUME_TARGET,
    ActualContainer,
    BriefContainer,
    CreateRequest,
    EngineEvent,
    EngineStatus,
    Resources,
    Role,
    Stream,
    container_name,
    node_scoped_name,
)
from lightd.engine.translate import translate
from lightd.errors import EngineConflict, EngineError

log = logging.getLogger("lightd.engine")

T = TypeVar("T")

# Only used to ask the engine which API version it speaks; every later call uses that.
MIN_API_VERSION = "1.24"
# The URL every Unix-socket request is pooled under (docker-py's own base URL for them).
SHARED_POOL_KEY = "http+docker://localhost"
# Started containers whose first look is still to come (bounded: a look that never
# comes, the follower reading through the API and the key deleted, is forgotten).
STARTED_KEPT = 4096
# Inspects in flight at once while listing this node's containers (of the pool's 32).
LIST_INSPECTS = 8
# How long the inspect after a start stands in for the next looks at the container:
# the reconciler's next pass waits behind every key queued (a batch of 100 new
# containers: over 15 s on a loaded host). Events keep it true meanwhile.
RECENT_SECONDS = 60.0


@dataclass(frozen=True)
class RetryPolicy:
    """Short retries around one engine call (longer backoff belongs to the reconciler)."""

    attempts: int = 3
    initial_seconds: float = 0.2
    max_seconds: float = 2.0


def _retryable(exc: BaseException) -> bool:
    if not isinstance(exc, EngineError):
        return False
    if exc.transient:
        return True
    return isinstance(exc, EngineConflict) and "removal" in exc.message.lower()


def _timestamp(text: str | None) -> float | None:
    if not text or text.startswith("0001-"):
        return None
    cleaned = text.rstrip("Z")
    if "." in cleaned:
        head, frac = cleaned.split(".", 1)
        cleaned = f"{head}.{frac[:6]}"
    try:
        return dt.datetime.fromisoformat(cleaned).replace(tzinfo=dt.UTC).timestamp()
    except ValueError:
        return None


def view_of(attrs: dict[str, Any], node_id: str) -> ActualContainer:
    """An :class:`ActualContainer` from ``docker inspect`` data."""
    config = attrs.get("Config") or {}
    labels = config.get("Labels") or {}
    state = attrs.get("State") or {}
    host = attrs.get("HostConfig") or {}
    return ActualContainer(
        id=attrs["Id"],
        name=str(attrs.get("Name", "")).lstrip("/"),
        managed=labels.get(LABEL_MANAGED) == "true" and labels.get(LABEL_NODE) == node_id,
        internal_id=labels.get(LABEL_INTERNAL_ID),
        role=labels.get(LABEL_ROLE),
        spec_hash=labels.get(LABEL_SPEC_HASH),
        running=bool(state.get("Running")) or bool(state.get("Restarting")),
        status=str(state.get("Status", "")),
        exit_code=state.get("ExitCode"),
        started_at=_timestamp(state.get("StartedAt")),
        finished_at=_timestamp(state.get("FinishedAt")),
        memory=host.get("Memory"),
        memory_swap=host.get("MemorySwap"),
        nano_cpus=host.get("NanoCpus"),
        pids_limit=host.get("PidsLimit"),
        oom_killed=bool(state.get("OOMKilled")),
    )


def brief_of(entry: dict[str, Any]) -> BriefContainer:
    """A :class:`BriefContainer` from one entry of ``GET /containers/json``."""
    labels = entry.get("Labels") or {}
    names = entry.get("Names") or [""]
    state = str(entry.get("State") or "")
    return BriefContainer(
        id=str(entry["Id"]),
        name=str(names[0]).lstrip("/"),
        internal_id=labels.get(LABEL_INTERNAL_ID),
        role=labels.get(LABEL_ROLE),
        spec_hash=labels.get(LABEL_SPEC_HASH),
        running=state in ("running", "restarting", "paused"),  # as State.Running
    )


class _SharedUnixAdapter(UnixHTTPAdapter):  # type: ignore[misc]
    """docker-py's Unix-socket adapter with one connection pool for every request.

    docker-py keys its pools by the whole request URL and keeps 25: past 25 distinct
    URLs (``/containers/<id>/json`` of 25 containers) each call evicts a pool, closes
    its socket and connects again, so the cost of a call grew with the number of
    containers. Every URL goes to the same socket: one pool serves them all.
    """

    def get_connection(self, url: str, proxies: Any = None) -> Any:
        return super().get_connection(SHARED_POOL_KEY, proxies)


def _share_unix_pool(api: docker.APIClient) -> None:
    """Replace a Unix-socket client's adapter with :class:`_SharedUnixAdapter`."""
    current = api.get_adapter(SHARED_POOL_KEY)
    if not isinstance(current, UnixHTTPAdapter) or isinstance(current, _SharedUnixAdapter):
        return  # TCP or SSH engines: keyed by host already
    shared = _SharedUnixAdapter(
        current.socket_path, current.timeout, max_pool_size=current.max_pool_size
    )
    api.mount("http+docker://", shared)
    current.close()


@dataclass(frozen=True)
class _Recent:
    attrs: dict[str, Any]
    asked_ns: int  # wall clock when the inspect was sent (the engine's clock: same host)
    asked: float  # monotonic, for the age
    generation: int  # the event stream it was taken under


class _RecentInspects:
    """Inspect answers of this node's containers, by id and by name, for a moment.

    An entry is valid while the event stream that was open when its inspect was sent is
    still open (an event newer than the inspect drops it: :meth:`event`), for at most
    :data:`RECENT_SECONDS`, and until :meth:`drop` (lightd changed the container). Only
    for an engine on this host: the events' times and the inspect's are one clock.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, _Recent] = {}
        # Ids lightd started whose first look is to be kept (see :meth:`claim`).
        self._started: dict[str, None] = {}
        self._generation = 0
        self._open = 0  # event streams open now

    def stream_opened(self) -> None:
        with self._lock:
            self._generation += 1
            self._open += 1
            self._entries.clear()
            self._started.clear()

    def stream_closed(self) -> None:
        with self._lock:
            self._generation += 1
            self._open = max(0, self._open - 1)
            self._entries.clear()
            self._started.clear()

    def started(self, container_id: str) -> None:
        """lightd started the container: the first look at it that follows is kept."""
        with self._lock:
            if not self._open:
                return
            self._started.pop(container_id, None)
            self._started[container_id] = None
            while len(self._started) > STARTED_KEPT:
                del self._started[next(iter(self._started))]

    def claim(self, container_id: str) -> bool:
        """True once for a container :meth:`started` marked (its first look is kept)."""
        with self._lock:
            return self._started.pop(container_id, 0) is None

    def ticket(self) -> tuple[int, float, int] | None:
        """Taken just before an inspect is sent; None: nothing to keep (no stream)."""
        with self._lock:
            if not self._open:
                return None
            return time.time_ns(), time.monotonic(), self._generation

    def keep(self, attrs: dict[str, Any], ticket: tuple[int, float, int] | None) -> None:
        if ticket is None:
            return
        asked_ns, asked, generation = ticket
        entry = _Recent(attrs=attrs, asked_ns=asked_ns, asked=asked, generation=generation)
        with self._lock:
            if generation != self._generation:
                return  # the stream broke or restarted meanwhile: events may be lost
            self._expire(asked)
            for key in (str(attrs["Id"]), str(attrs.get("Name", "")).lstrip("/")):
                self._entries.pop(key, None)  # re-added at the end: the order is by age
                self._entries[key] = entry

    def _expire(self, now: float) -> None:
        """Drop the oldest entries past their time (kept in the order they came)."""
        while self._entries:
            oldest = next(iter(self._entries.values()))
            if now - oldest.asked <= RECENT_SECONDS:
                return
            self._pop(oldest)

    def get(self, name_or_id: str) -> dict[str, Any] | None:
        with self._lock:
            entry = self._entries.get(name_or_id)
            if entry is None:
                return None
            if (
                not self._open
                or entry.generation != self._generation
                or time.monotonic() - entry.asked > RECENT_SECONDS
            ):
                self._pop(entry)
                return None
            return entry.attrs

    def event(self, container_id: str, time_ns: int | None) -> None:
        """An engine event about the container: entries older than it are dropped."""
        with self._lock:
            entry = self._entries.get(container_id)
            if entry is not None and (time_ns is None or time_ns >= entry.asked_ns):
                self._pop(entry)

    def drop(self, name_or_id: str) -> None:
        with self._lock:
            self._started.pop(name_or_id, None)
            entry = self._entries.get(name_or_id)
            if entry is not None:
                self._pop(entry)

    def _pop(self, entry: _Recent) -> None:
        for key in (str(entry.attrs["Id"]), str(entry.attrs.get("Name", "")).lstrip("/")):
            if self._entries.get(key) is entry:
                del self._entries[key]


class _Events:
    """The engine's decoded event feed as :class:`EngineEvent` values."""

    def __init__(self, raw: Stream[dict[str, Any]], recent: _RecentInspects) -> None:
        self._raw = raw
        self._recent = recent
        self._ended = False
        self._end_lock = threading.Lock()
        recent.stream_opened()

    def _end(self) -> None:
        with self._end_lock:
            ended, self._ended = self._ended, True
        if not ended:
            self._recent.stream_closed()

    def __iter__(self) -> Iterator[EngineEvent]:
        try:
            for event in self._raw:
                action = str(event.get("Action") or event.get("status") or "")
                actor = event.get("Actor") or {}
                attributes = actor.get("Attributes") or {}
                stamp = event.get("timeNano")
                container_id = str(actor.get("ID") or event.get("id") or "")
                nanos = int(stamp) if isinstance(stamp, int) else None
                self._recent.event(container_id, nanos)
                yield EngineEvent(
                    action=action,
                    internal_id=attributes.get(LABEL_INTERNAL_ID),
                    attributes={str(k): str(v) for k, v in attributes.items()},
                    container_id=container_id or None,
                    at=None if nanos is None else nanos / 1e9,
                )
        finally:
            self._end()

    def close(self) -> None:
        self._end()
        self._raw.close()


class DockerEngine:
    """The :class:`~lightd.engine.base.Engine` of one node over one docker-py client."""

    def __init__(
        self,
        settings: DockerSettings,
        *,
        node_id: str,
        retry: RetryPolicy | None = None,
        max_workers: int = 32,
    ) -> None:
        self._settings = settings
        self._node_id = node_id
        self._retry = retry or RetryPolicy()
        self._client: docker.DockerClient | None = None
        self._client_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="engine")
        # Node-scoped names of this node's containers, known once this node's containers
        # have been listed (and kept up to date by :meth:`_create`): an absent plain name
        # needs a second look under the scoped one only when such a copy exists.
        self._scoped_names: set[str] = set()
        self._scoped_known = False
        self._recent = _RecentInspects()
        self._local = False  # the engine listens on a Unix socket (this host's clock)

    # -- the private client and pool -----------------------------------------------

    def _client_kwargs(self) -> dict[str, Any]:
        if self._settings.base_url:
            kwargs: dict[str, Any] = {"base_url": self._settings.base_url}
        else:
            kwargs = dict(docker.utils.kwargs_from_env())
        kwargs.update(timeout=self._settings.timeout_seconds, max_pool_size=64)
        return kwargs

    def _api(self) -> docker.APIClient:
        with self._client_lock:
            if self._client is None:
                # Negotiate the API version on a client we own, so that a failure closes
                # its socket (docker-py's own "auto" leaks it when the engine is down).
                kwargs = self._client_kwargs()
                probe = docker.DockerClient(version=MIN_API_VERSION, **kwargs)
                try:
                    api_version = str(probe.api.version(api_version=False)["ApiVersion"])
                finally:
                    probe.close()
                client = docker.DockerClient(version=api_version, **kwargs)
                # requests would look for ~/.netrc and proxy variables on every call;
                # neither applies to the engine's API.
                client.api.trust_env = False
                _share_unix_pool(client.api)
                self._local = str(client.api.base_url).startswith("http+docker://")
                self._client = client
            return self._client.api

    async def _run(self, fn: Callable[[], T], *, retry: bool = True) -> T:
        """Run a blocking docker-py call in the engine pool, translated and retried."""
        loop = asyncio.get_running_loop()

        def call() -> T:
            try:
                return fn()
            except BaseException as exc:
                raise translate(exc) from exc

        if not retry:
            return await loop.run_in_executor(self._pool, call)
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(_retryable),
            stop=stop_after_attempt(self._retry.attempts),
            wait=wait_exponential_jitter(
                multiplier=self._retry.initial_seconds, max=self._retry.max_seconds
            ),
            reraise=True,
        ):
            with attempt:
                return await loop.run_in_executor(self._pool, call)
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _stream(open_stream: Callable[[], Stream[T]]) -> Stream[T]:
        try:
            return open_stream()
        except Exception as exc:
            raise translate(exc) from exc

    # -- the Engine protocol ---------------------------------------------------------

    async def status(self) -> EngineStatus:
        def probe() -> dict[str, Any]:
            api = self._api()
            api.ping()
            return dict(api.version())

        try:
            info = await self._run(probe, retry=False)
        except EngineError as exc:
            return EngineStatus(reachable=False, version=None, api_version=None, error=exc.message)
        return EngineStatus(
            reachable=True,
            version=str(info.get("Version")),
            api_version=str(info.get("ApiVersion")),
            error=None,
        )

    def _inspect_attrs(self, name_or_id: str) -> dict[str, Any]:
        """``docker inspect`` of a container: the recent answer after a start, if valid;
        else the engine's, kept when it is the first look at a container lightd started."""
        recent = self._recent.get(name_or_id)
        if recent is not None:
            return recent
        api = self._api()
        ticket = self._recent.ticket() if self._local else None
        attrs = dict(api.inspect_container(name_or_id))
        labels = (attrs.get("Config") or {}).get("Labels") or {}
        if (
            ticket is not None
            and labels.get(LABEL_MANAGED) == "true"
            and labels.get(LABEL_NODE) == self._node_id
            and self._recent.claim(str(attrs["Id"]))
        ):
            self._recent.keep(attrs, ticket)
        return attrs

    def _inspect_view(self, name_or_id: str) -> tuple[ActualContainer | None, bool]:
        """The container and whether another lightd node manages it."""
        try:
            attrs = self._inspect_attrs(name_or_id)
        except docker.errors.NotFound:
            return None, False
        labels = (attrs.get("Config") or {}).get("Labels") or {}
        foreign = labels.get(LABEL_MANAGED) == "true" and labels.get(LABEL_NODE) != self._node_id
        return view_of(attrs, self._node_id), foreign

    async def inspect(self, name_or_id: str) -> ActualContainer | None:
        """The container by id or by lightd name; a lightd name also finds this node's
        node-scoped copy (:func:`node_scoped_name`) when the plain name is absent or
        held by another lightd node. A foreign non-lightd holder is answered as it is
        (the planner reports the conflict)."""

        def call() -> ActualContainer | None:
            found, foreign = self._inspect_view(name_or_id)
            if found is not None and not foreign:
                return found
            if not name_or_id.startswith("lightd-"):
                return found
            scoped_name = node_scoped_name(name_or_id, self._node_id)
            if found is None and self._scoped_known and scoped_name not in self._scoped_names:
                return None
            scoped, _ = self._inspect_view(scoped_name)
            if scoped is not None and scoped.managed:
                return scoped
            return None if found is None or foreign else found

        return await self._run(call)

    async def list_managed(self) -> list[ActualContainer]:
        """One list by label, then the inspects a few at a time in the pool (a restart
        beside 100 containers waits for this: one after the other they take seconds)."""

        def listed() -> list[str]:
            found = self._api().containers(
                all=True,
                filters={"label": [f"{LABEL_MANAGED}=true", f"{LABEL_NODE}={self._node_id}"]},
            )
            return [str(entry["Id"]) for entry in found]

        ids = await self._run(listed)
        gate = asyncio.Semaphore(LIST_INSPECTS)

        async def one(container_id: str) -> ActualContainer | None:
            def call() -> ActualContainer | None:
                try:
                    return view_of(self._api().inspect_container(container_id), self._node_id)
                except docker.errors.NotFound:  # removed since the list
                    return None

            async with gate:
                return await self._run(call)

        views = [view for view in await asyncio.gather(*map(one, ids)) if view is not None]
        self._scoped_names.update(
            view.name
            for view in views
            if view.internal_id is not None
            and view.name.startswith(f"lightd-{view.internal_id}")
            and ".n-" in view.name
        )
        self._scoped_known = True
        return views

    async def list_brief(self) -> list[BriefContainer]:
        def listed() -> list[BriefContainer]:
            found = self._api().containers(
                all=True,
                filters={"label": [f"{LABEL_MANAGED}=true", f"{LABEL_NODE}={self._node_id}"]},
            )
            return [brief_of(entry) for entry in found]

        return await self._run(listed)

    async def image_present(self, image: str) -> bool:
        def call() -> bool:
            try:
                self._api().inspect_image(image)
            except docker.errors.NotFound:  # ImageNotFound is a NotFound
                return False
            return True

        return await self._run(call)

    async def pull(self, image: str) -> None:
        last = image.split("/")[-1]
        repository, _, tag = image.rpartition(":") if ":" in last else (image, "", "")

        def call() -> None:
            self._api().pull(repository or image, tag=tag or "latest")

        await self._run(call)

    async def create(self, request: CreateRequest) -> str:
        return await self._run(lambda: self._create(request))

    def _create(self, request: CreateRequest) -> str:
        api = self._api()
        binds = {request.volume_path: {"bind": VOLUME_TARGET, "mode": "rw"}}
        if request.role is Role.INSTALL:
            binds[f"{request.volume_path}/"] = {"bind": INSTALL_TARGET, "mode": "rw"}
        for source, target in request.extra_binds.items():
            binds[source] = {"bind": target, "mode": "ro"}
        for source, target in request.mounts.items():
            binds[source] = {"bind": target, "mode": "rw"}
        port_bindings: dict[str, list[tuple[str, int]]] = {}
        for ip, port, protocol in request.ports:
            port_bindings.setdefault(f"{port}/{protocol}", []).append((ip, port))
        res = request.resources
        host_config = api.create_host_config(
            binds=binds,
            port_bindings=port_bindings,
            mem_limit=res.memory or None,
            memswap_limit=res.memory_swap if res.memory else None,
            nano_cpus=res.nano_cpus or None,
            pids_limit=res.pids_limit,
            security_opt=["no-new-privileges"],
            restart_policy={"Name": "no"},
            tmpfs={"/tmp": "rw,exec,nosuid,size=128m"},  # noqa: S108 (inside the container)
            log_config={
                "type": "json-file",
                "config": {
                    "max-size": self._settings.log_max_size,
                    "max-file": str(self._settings.log_max_files),
                },
            },
            init=True,
            cap_drop=list(request.cap_drop) or None,
            read_only=request.read_only or None,
        )
        labels = {
            LABEL_MANAGED: "true",
            LABEL_NODE: self._node_id,
            LABEL_INTERNAL_ID: request.internal_id,
            LABEL_ROLE: request.role.value,
        }
        if request.spec_hash:
            labels[LABEL_SPEC_HASH] = request.spec_hash
        name = container_name(request.internal_id, request.role)
        self._recent.drop(name)

        def create(name: str) -> str:
            created = api.create_container(
                image=request.image,
                name=name,
                command=request.command,
                entrypoint=request.entrypoint,
                working_dir=VOLUME_TARGET,
                environment=request.environment,
                user=request.user or None,
                labels=labels,
                host_config=host_config,
                ports=[(port, protocol) for _ip, port, protocol in request.ports],
                stdin_open=request.stdin,
                tty=False,
                detach=True,
            )
            return str(created["Id"])

        # The plain name first; only a name already in use needs a look at its holder:
        # another lightd node's container makes this one node-scoped.
        try:
            return create(name)
        except docker.errors.APIError as exc:
            if exc.status_code != 409:
                raise
            _, foreign = self._inspect_view(name)
            if not foreign:
                raise
        scoped = node_scoped_name(name, self._node_id)
        self._scoped_names.add(scoped)
        return create(scoped)

    async def start(self, container_id: str) -> None:
        """Start; the first look that follows (the console follower's or the
        reconciler's) is kept for the other: see :class:`_RecentInspects`."""

        def call() -> None:
            self._recent.drop(container_id)
            self._api().start(container_id)
            self._recent.started(container_id)

        await self._run(call)

    def _changing(self, container_id: str, change: Callable[[], T]) -> T:
        """Run a call that changes the container: its recent inspect is stale, also
        before the event that says so arrives."""
        self._recent.drop(container_id)
        try:
            return change()
        finally:
            self._recent.drop(container_id)

    async def signal(self, container_id: str, signame: str) -> None:
        await self._run(
            lambda: self._changing(
                container_id, lambda: self._api().kill(container_id, signal=signame)
            )
        )

    async def kill(self, container_id: str) -> None:
        def call() -> None:
            try:
                self._api().kill(container_id, signal="SIGKILL")
            except docker.errors.APIError as exc:
                if exc.status_code == 409:  # not running any more
                    return
                raise

        await self._run(lambda: self._changing(container_id, call))

    async def remove(self, container_id: str) -> None:
        def call() -> None:
            try:
                self._api().remove_container(container_id, force=True, v=False)
            except docker.errors.NotFound:
                return

        await self._run(lambda: self._changing(container_id, call))

    async def update_limits(self, container_id: str, resources: Resources) -> None:
        # docker-py's update_container lacks NanoCpus/PidsLimit; post the body directly.
        body: dict[str, Any] = {
            "NanoCpus": resources.nano_cpus,
            "PidsLimit": resources.pids_limit,
        }
        if resources.memory:
            body["Memory"] = resources.memory
            body["MemorySwap"] = resources.memory_swap

        def call() -> None:
            api = self._api()
            url = api._url("/containers/{0}/update", container_id)
            api._raise_for_status(api._post_json(url, data=body))

        await self._run(lambda: self._changing(container_id, call))

    async def wait_exit(self, container_id: str, *, seconds: float) -> int | None:
        def call() -> int | None:
            try:
                result = self._api().wait(container_id, timeout=seconds)
            except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
                return None
            return int(result.get("StatusCode", -1))

        return await self._run(lambda: self._changing(container_id, call))

    async def logs(self, container_id: str, *, tail: int | str = "all") -> bytes:
        def call() -> bytes:
            data = self._api().logs(
                container_id, stdout=True, stderr=True, tail=tail, timestamps=False
            )
            return data if isinstance(data, bytes) else b""

        return await self._run(call)

    async def send_line(self, container_id: str, line: str) -> None:
        def call() -> None:
            sock = self._api().attach_socket(container_id, params={"stdin": 1, "stream": 1})
            try:
                raw = getattr(sock, "_sock", sock)
                raw.sendall(line.encode("utf-8") + b"\n")
            finally:
                sock.close()

        await self._run(call)

    async def stats_once(self, container_id: str) -> dict[str, Any]:
        return await self._run(lambda: dict(self._api().stats(container_id, stream=False)))

    def follow_output(self, container_id: str, *, since: float | None) -> Stream[bytes]:
        """The container's output from ``since`` on, with the engine's timestamps. Read
        from the engine's json-file log files when this process can (the engine's own
        follow repeats and drops lines across rotation: :mod:`lightd.engine.jsonlog`),
        otherwise through the engine's API."""
        direct = self._log_files(container_id, since)
        if direct is not None:
            return direct
        kwargs: dict[str, Any] = {
            "stdout": True,
            "stderr": True,
            "stream": True,
            "follow": True,
            "timestamps": True,
        }
        if since is not None and since > 0:
            kwargs["since"] = float(since)  # fractions kept: a resume starts near its line
        return self._stream(lambda: self._api().logs(container_id, **kwargs))

    def _log_files(self, container_id: str, since: float | None) -> JsonLogFollower | None:
        if not self._settings.follow_log_files:
            return None
        try:
            attrs = self._inspect_attrs(container_id)
        except Exception as exc:
            raise translate(exc) from exc
        path = attrs.get("LogPath") or ""
        log_type = ((attrs.get("HostConfig") or {}).get("LogConfig") or {}).get("Type")
        state = attrs.get("State") or {}
        if log_type != "json-file" or not path or not os.access(path, os.R_OK):
            return None
        process = Process.of(int(state.get("Pid") or 0)) if state.get("Running") else None
        if process is None:
            return None  # not running, or in another pid namespace: the API knows best
        since_ns = int(since * 1_000_000_000) if since is not None and since > 0 else 0
        return JsonLogFollower(
            path, process=process, since_ns=since_ns, max_files=self._settings.log_max_files
        )

    def follow_stats(self, container_id: str) -> Stream[dict[str, Any]]:
        return self._stream(lambda: self._api().stats(container_id, stream=True, decode=True))

    def events(self) -> Stream[EngineEvent]:
        raw: Stream[dict[str, Any]] = self._stream(
            lambda: self._api().events(
                decode=True,
                filters={
                    "type": "container",
                    "label": [f"{LABEL_MANAGED}=true", f"{LABEL_NODE}={self._node_id}"],
                },
            )
        )
        return _Events(raw, self._recent)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._client_lock:
            if self._client is not None:
                self._client.close()
                self._client = None
