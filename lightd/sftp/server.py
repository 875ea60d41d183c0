"""The SFTP service: asyncssh listener, authentication, sessions and their limits.

:class:`SftpService` is the room's one entry point. It keeps a persistent ed25519 host
key (``<data_dir>/sftp/host_ed25519``, 0600), the credential store, the lockout book
and the open sessions; it listens with asyncssh on ``sftp.host:sftp.port`` offering
only the ``sftp`` subsystem (no shell, exec, scp, pty, agent, X11 or forwarding) with
``aes128-gcm@openssh.com`` first. Each accepted connection gets a :class:`_Connection`
(asyncssh's per-connection ``SSHServer``) that authenticates by password (scrypt,
verified in a thread; a password verified in the last 10 minutes is recognised by an
in-memory HMAC so clients opening many sessions pay scrypt once) or OpenSSH public
key, counts tries (6 per connection) and failures (3 per username and address in 60 s
lock the pair for 60 s), and enforces the per-container and node session caps.
Revocation, container deletion and reinstalls close a user's sessions at once; a
sweeper closes idle ones. Activity (logins,
uploads, deletions, renames) is batched and handed to ``on_activity``.

It must not log passwords, hashes or keys, and must not import the web framework or
the Docker engine: the daemon hands it plain callables.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import asyncssh

from lightd.errors import ConfigError
from lightd.fs.paths import Parts
from lightd.sftp import protocol, transport
from lightd.sftp.activity import Action, ActivityBatch
from lightd.sftp.credentials import (
    Credential,
    CredentialStore,
    Issued,
    RecentLogins,
    verify_password,
)
from lightd.sftp.handler import SessionContext, VolumeSftp
from lightd.sftp.rules import MAX_TRIES_PER_CONNECTION, Lockouts, session_refusal
from lightd.store import DocumentStore

log = logging.getLogger("lightd.sftp")

HOST_KEY = "sftp/host_ed25519"
ENCRYPTION_ALGS = [
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes128-ctr",
    "aes256-ctr",
]
SWEEP_SECONDS = 1.0
WINDOW_BYTES = 8 * 1024 * 1024
MAX_PACKET_BYTES = 256 * 1024


class SftpSettingsLike(Protocol):
    enabled: bool
    host: str
    port: int
    max_sessions_per_container: int
    max_sessions: int
    idle_timeout_seconds: float
    login_timeout_seconds: float
    keepalive_seconds: float


@dataclass(frozen=True)
class ContainerAccess:
    """What the daemon says of a container: its volume, and why it is closed, if it is."""

    volume: Path | None
    busy: str | None = None  # e.g. "installing": sessions are refused and closed
    owner: tuple[int, int] | None = None  # the container's user: what SFTP makes is its
    # The volume's disk limit (blocking, called in a thread): bytes it may still take
    # (None: no limit), and what a committed upload changed, for the accounting.
    room: Callable[[], int | None] = lambda: None
    wrote: Callable[[int], None] = lambda _delta: None
    # (parts, folder or None) -> True when the volume's file denylist refuses the entry.
    denied: Callable[[Parts, bool | None], bool] = lambda _parts, _folder: False


ContainerOf = Callable[[str], ContainerAccess | None]
ActivitySink = Callable[[dict[str, Any]], None]


def ensure_host_key(data_dir: Path) -> asyncssh.SSHKey:
    """The node's ed25519 host key, generated once into ``<data_dir>`` (mode 0600)."""
    path = data_dir / HOST_KEY
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        key = asyncssh.read_private_key(str(path))
    except FileNotFoundError:
        key = asyncssh.generate_private_key("ssh-ed25519")
        temp = path.with_name(path.name + ".tmp")
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(key.export_private_key())
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
        log.info("generated the SFTP host key %s", key.get_fingerprint("sha256"))
    except (OSError, asyncssh.KeyImportError) as exc:
        raise ConfigError(f"cannot read the SFTP host key {path}: {exc}") from exc
    if path.stat().st_mode & 0o077:
        path.chmod(0o600)
    return key


@dataclass
class Session:
    """One authenticated connection."""

    connection: _Connection
    credential: Credential
    started: float
    last_active: float
    handlers: list[VolumeSftp] = field(default_factory=list)


class _Connection(asyncssh.SSHServer):
    """asyncssh's per-connection callbacks: authentication and the session's life."""

    def __init__(self, service: SftpService) -> None:
        self.service = service
        self.conn: asyncssh.SSHServerConnection | None = None
        self.address = "?"
        self.tries = 0
        self.credential: Credential | None = None
        self.session: Session | None = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        peer = conn.get_extra_info("peername")
        if peer:
            self.address = str(peer[0])
        service = self.service
        if len(service._pending) >= service.max_pending:
            service.refused_connections += 1
            conn.disconnect(asyncssh.DISC_TOO_MANY_CONNECTIONS, "Too many connections")
            return
        service._pending.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.service._pending.discard(self)
        self.service._ended(self)

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    def kbdint_auth_supported(self) -> bool:
        return False

    def _count_try(self) -> bool:
        """False (and the connection closed) past the tries one connection may make."""
        self.tries += 1
        if self.tries > MAX_TRIES_PER_CONNECTION:
            log.warning(
                "SFTP connection from %s closed: too many authentication attempts",
                self.address,
                extra={"fields": {"ip": self.address}},
            )
            if self.conn is not None:
                self.conn.disconnect(
                    asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE,
                    "Too many authentication attempts",
                )
            return False
        return True

    async def validate_password(self, username: str, password: str) -> bool:
        if not self._count_try():
            return False
        service = self.service
        if service.lockouts.locked(username, self.address, time.monotonic()):
            service.locked_refusals += 1
            log.info(
                "SFTP login for %s from %s refused: locked out",
                username,
                self.address,
                extra={"fields": {"user": username, "ip": self.address}},
            )
            return False
        cred = service.credentials.by_username(username)
        stored = cred.password_hash if cred is not None else None
        now = time.monotonic()
        if stored is not None and service.recent.known(username, password, stored, now):
            ok = True
        else:
            ok = await asyncio.to_thread(verify_password, password, stored)
            if ok and stored is not None:
                service.recent.remember(username, password, stored, now)
        return self._verdict(username, cred if ok else None, method="password")

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        service = self.service
        if service.lockouts.locked(username, self.address, time.monotonic()):
            self._count_try()
            return False
        cred = service.credentials.by_username(username)
        if cred is not None and cred.accepts_key(key):
            return self._verdict(username, cred, method="publickey")
        # An offered key that does not match counts as a try, not as a lockout failure
        # (clients offer every key they have).
        self._count_try()
        return False

    def _verdict(self, username: str, cred: Credential | None, *, method: str) -> bool:
        service = self.service
        now = time.monotonic()
        if cred is not None:
            refusal = service.refusal(cred)
            if refusal is None:
                service.lockouts.succeed(username, self.address)
                self.credential = cred
                return True
            log.info(
                "SFTP login for %s from %s refused: %s",
                username,
                self.address,
                refusal,
                extra={"fields": {"user": username, "ip": self.address}},
            )
            return False
        service.auth_failures += 1
        known = service.credentials.by_username(username)
        if known is not None:
            service.record(known.container, "sftp.login_failed", username, self.address)
        if service.lockouts.fail(username, self.address, now):
            log.warning(
                "SFTP user %s from %s locked out for %.0f s after %d failed logins",
                username,
                self.address,
                service.lockouts.duration,
                service.lockouts.failures,
                extra={"fields": {"user": username, "ip": self.address}},
            )
        else:
            log.info(
                "SFTP %s login failed for %s from %s",
                method,
                username,
                self.address,
                extra={"fields": {"user": username, "ip": self.address}},
            )
        return False

    def auth_completed(self) -> None:
        cred = self.credential
        conn = self.conn
        assert cred is not None and conn is not None
        self.service._pending.discard(self)
        refusal = self.service.open_session(self, cred)
        if refusal is not None:
            log.warning(
                "SFTP session for %s from %s refused: %s",
                cred.username,
                self.address,
                refusal,
                extra={"fields": {"user": cred.username, "ip": self.address}},
            )
            conn.disconnect(asyncssh.DISC_TOO_MANY_CONNECTIONS, refusal)


class SftpService:
    """The SFTP server of the node (see the module docstring)."""

    def __init__(
        self,
        settings: SftpSettingsLike,
        *,
        data_dir: Path,
        container_of: ContainerOf,
        on_activity: ActivitySink | None = None,
    ) -> None:
        self.settings = settings
        self.data_dir = data_dir
        self.container_of = container_of
        self.on_activity = on_activity
        self.credentials = CredentialStore(DocumentStore(data_dir, file_mode=0o600))
        self.lockouts = Lockouts()
        self.recent = RecentLogins()
        self.activity = ActivityBatch()
        self.host_key: asyncssh.SSHKey | None = None
        self.port = settings.port
        self.auth_failures = 0
        self.locked_refusals = 0
        self.refused_connections = 0
        # Connections still authenticating (each ends by login_timeout at the latest).
        self.max_pending = max(64, settings.max_sessions)
        self._server: asyncssh.SSHAcceptor | None = None
        self._sessions: dict[_Connection, Session] = {}
        self._pending: set[_Connection] = set()
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle -----------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        return self.settings.enabled

    async def start(self) -> None:
        """Load credentials, make sure of the host key, listen. ConfigError if it cannot."""
        loaded = await asyncio.to_thread(self.credentials.load)
        if not self.enabled:
            return
        logging.getLogger("asyncssh").setLevel(logging.WARNING)
        self.host_key = await asyncio.to_thread(ensure_host_key, self.data_dir)
        host, port = self.settings.host, self.settings.port
        try:
            self._server = await transport.listen(
                host,
                port,
                server_factory=lambda: _Connection(self),
                session_wrapper=protocol.wrap_session,
                server_host_keys=[self.host_key],
                encryption_algs=ENCRYPTION_ALGS,
                sftp_factory=self._sftp_factory,
                allow_scp=False,
                allow_pty=False,
                line_editor=False,  # no pty, no shell: the editor's layer only cost time
                agent_forwarding=False,
                x11_forwarding=False,
                password_auth=True,
                public_key_auth=True,
                kbdint_auth=False,
                login_timeout=self.settings.login_timeout_seconds,
                keepalive_interval=self.settings.keepalive_seconds,
                keepalive_count_max=3,
                server_version="lightd",
                reuse_address=True,
                backlog=1024,
                # Bigger windows and packets: fewer trips through Python per MiB (the
                # window bounds what one session may buffer: 8 MiB x sftp.max_sessions).
                window=WINDOW_BYTES,
                max_pktsize=MAX_PACKET_BYTES,
            )
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(f"sftp.port {port} on {host} is already in use") from exc
            reason = exc.strerror or str(exc)
            raise ConfigError(f"cannot listen for SFTP on {host}:{port}: {reason}") from exc
        except (socket.gaierror, ValueError) as exc:
            raise ConfigError(f"cannot listen for SFTP on {host}:{port}: {exc}") from exc
        sockets = self._server.sockets
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        self._tasks.append(asyncio.create_task(self._sweeper(), name="sftp-sweeper"))
        log.info(
            "sftp listening on %s:%d",
            host,
            self.port,
            extra={"fields": {"host": host, "port": self.port, "credentials": loaded}},
        )

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._server is not None:
            self._server.close()
            for pending in list(self._pending):
                if pending.conn is not None:
                    pending.conn.close()
            for conn in list(self._sessions):
                self._close(conn, "lightd stopping")
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), timeout=5)
            self._server = None
        self._flush(everything=True)

    # -- what the API asks ---------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """The ``sftp`` block of ``GET /system``."""
        fingerprint = self.host_key.get_fingerprint("sha256") if self.host_key else None
        return {
            "enabled": self.enabled,
            "host": self.settings.host,
            "port": self.port,
            "host_key_fingerprint": fingerprint,
            "sessions": len(self._sessions),
        }

    def sessions_of(self, username: str) -> int:
        return sum(1 for s in self._sessions.values() if s.credential.username == username)

    def issue(self, container: str, **fields: Any) -> Issued:
        """Create or replace a container's credential; the old one's sessions are closed."""
        issued = self.credentials.issue(container, **fields)
        if issued.replaced is not None:
            self.close_sessions(issued.replaced.username, reason="credentials replaced")
        return issued

    def revoke(self, container: str) -> Credential:
        cred = self.credentials.revoke(container)
        self.close_sessions(cred.username, reason="credentials revoked")
        return cred

    def forget_container(self, container: str) -> None:
        """The container is gone: its credential is removed and its sessions closed."""
        cred = self.credentials.forget(container)
        if cred is not None:
            log.info("SFTP credentials of deleted container %s removed", container)
            self.close_sessions(cred.username, reason="container deleted")

    def close_container_sessions(self, container: str, reason: str) -> int:
        closed = 0
        for conn, session in list(self._sessions.items()):
            if session.credential.container == container:
                self._close(conn, reason)
                closed += 1
        return closed

    def close_sessions(self, username: str, *, reason: str = "closed") -> int:
        closed = 0
        for conn, session in list(self._sessions.items()):
            if session.credential.username == username:
                self._close(conn, reason)
                closed += 1
        return closed

    def on_observed(self, old: Any, new: Any) -> None:
        """ObservedStore listener: a deletion forgets, a reinstall closes sessions."""
        if new is None:
            if old is not None:
                self.forget_container(str(old.internal_id))
            return
        installing = str(getattr(new, "install_state", "")) == "installing"
        was_installing = old is not None and str(getattr(old, "install_state", "")) == "installing"
        if installing and not was_installing:
            self.close_container_sessions(str(new.internal_id), "container reinstalling")

    def metrics(self) -> list[tuple[str, str, float]]:
        """Gauges for ``/metrics`` (name, help, value)."""
        return [
            ("lightd_sftp_sessions", "Open SFTP sessions", len(self._sessions)),
            (
                "lightd_sftp_auth_failures",
                "Failed SFTP authentications since start",
                self.auth_failures,
            ),
            (
                "lightd_sftp_lockouts",
                "SFTP (username, address) pairs locked out since start",
                self.lockouts.count,
            ),
            (
                "lightd_sftp_refused_connections",
                "SFTP connections refused because too many were authenticating, since start",
                self.refused_connections,
            ),
            (
                "lightd_sftp_locked_refusals",
                "SFTP logins refused because the pair was locked out, since start",
                self.locked_refusals,
            ),
            (
                "lightd_sftp_fast_data_packets",
                "SSH data packets lightd framed and sealed itself (AES-GCM, chacha20), since start",
                transport.Counters.fast_data_packets,
            ),
            (
                "lightd_sftp_fast_channel_packets",
                "Of those, packets cut from the channel buffer without asyncssh's copies",
                transport.Counters.channel_packets,
            ),
            (
                "lightd_sftp_fast_received_packets",
                "SSH channel data packets lightd received and opened itself, since start",
                transport.Counters.received_data_packets,
            ),
            (
                "lightd_sftp_fast_received_bytes",
                "Bytes of data those packets carried, since start",
                transport.Counters.received_data_bytes,
            ),
            (
                "lightd_sftp_fast_protocol_sessions",
                "SFTP sessions served by lightd's SFTP packet layer (fewer copies), since start",
                protocol.Counters.sessions,
            ),
            (
                "lightd_sftp_inline_writes",
                "SFTP WRITE requests cut from the channel data and answered inline, since start",
                protocol.Counters.inline_writes,
            ),
            (
                "lightd_sftp_joined_requests",
                "Of the requests lightd cut itself, those that spanned pieces of data",
                protocol.Counters.joined_packets,
            ),
        ]

    # -- sessions ------------------------------------------------------------------

    def refusal(self, cred: Credential) -> str | None:
        """Why ``cred`` cannot log in now (container gone or busy), or None."""
        access = self.container_of(cred.container)
        if access is None or access.volume is None:
            return "container or volume not found"
        if access.busy:
            return f"container {access.busy}"
        return None

    def open_session(self, conn: _Connection, cred: Credential) -> str | None:
        refusal = session_refusal(
            container_sessions=sum(
                1 for s in self._sessions.values() if s.credential.container == cred.container
            ),
            node_sessions=len(self._sessions),
            per_container=self.settings.max_sessions_per_container,
            node_cap=self.settings.max_sessions,
        )
        if refusal is not None:
            return refusal
        now = time.monotonic()
        session = Session(connection=conn, credential=cred, started=now, last_active=now)
        self._sessions[conn] = session
        conn.session = session
        self.record(cred.container, "sftp.login", cred.username, conn.address)
        log.info(
            "SFTP session for %s from %s opened",
            cred.username,
            conn.address,
            extra={"fields": {"user": cred.username, "ip": conn.address}},
        )
        return None

    def _ended(self, conn: _Connection) -> None:
        session = self._sessions.pop(conn, None)
        if session is not None:
            log.info(
                "SFTP session for %s from %s closed",
                session.credential.username,
                conn.address,
                extra={"fields": {"user": session.credential.username, "ip": conn.address}},
            )

    def _close(self, conn: _Connection, reason: str) -> None:
        session = self._sessions.pop(conn, None)
        if session is not None:
            for handler in session.handlers:
                handler.close_all()
            log.info(
                "SFTP session for %s from %s closed: %s",
                session.credential.username,
                conn.address,
                reason,
                extra={"fields": {"user": session.credential.username, "ip": conn.address}},
            )
        if conn.conn is not None:
            conn.conn.disconnect(asyncssh.DISC_BY_APPLICATION, reason)

    def _sftp_factory(self, chan: asyncssh.SSHServerChannel[bytes]) -> VolumeSftp:
        owner = chan.get_connection().get_owner()
        session = owner.session if isinstance(owner, _Connection) else None
        if session is None or session.connection not in self._sessions:
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED, "No session")
        cred = session.credential
        access = self.container_of(cred.container)
        if access is None or access.volume is None or access.busy:
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED, "Container unavailable")
        conn = session.connection

        def touch() -> None:
            session.last_active = time.monotonic()

        def activity(action: Action, path: str, target: str) -> None:
            self.record(cred.container, action, cred.username, conn.address, path, target)

        context = SessionContext(
            username=cred.username,
            container=cred.container,
            address=conn.address,
            permissions=frozenset(cred.permissions),
            volume=access.volume,
            owner=access.owner,
            touch=touch,
            activity=activity,
            room=access.room,
            wrote=access.wrote,
            denied=access.denied,
        )
        handler = VolumeSftp(chan, context)
        session.handlers.append(handler)
        return handler

    # -- activity and idle ---------------------------------------------------------

    def record(
        self,
        container: str,
        action: Action,
        user: str,
        address: str,
        path: str = "",
        target: str = "",
    ) -> None:
        self.activity.add(
            container=container,
            action=action,
            user=user,
            address=address,
            now=time.time(),
            path=path,
            target=target,
        )

    def _flush(self, *, everything: bool = False) -> None:
        for item in self.activity.due(time.time(), everything=everything):
            if self.on_activity is not None:
                try:
                    self.on_activity(item.body())
                except Exception:
                    log.exception("SFTP activity sink failed")

    async def _sweeper(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            now = time.monotonic()
            idle = self.settings.idle_timeout_seconds
            for conn, session in list(self._sessions.items()):
                if now - session.last_active >= idle:
                    self._close(conn, "idle")
            self.lockouts.prune(now)
            self._flush()
