"""asyncssh's SFTP server packet layer with fewer copies of the file data.

asyncssh's ``SFTPServerHandler`` builds every packet it sends in three copies (the
arguments joined, the type prepended, the length prepended), so a 255 KiB ``READ``
answer was copied three times after ``String(data)``; and a ``WRITE`` request's data
was sliced out of the request (a copy) before reaching :class:`VolumeSftp.write`.
:class:`FastSftpHandler` sends each packet in one join and hands a write's data on as a
view of the request (``os.pwritev`` takes it as it is). Everything else (parsing,
dispatch, answers, errors, limits) is asyncssh's.

:func:`wrap_session` is what :mod:`lightd.sftp.transport` applies to each new session:
asyncssh's ``SSHServerStreamSession`` gets :class:`FastStreamSession`'s class, which
starts :class:`FastSftpHandler` instead of asyncssh's handler for the ``sftp``
subsystem (and leaves anything else to asyncssh). It relies on asyncssh's private
names (checked by :func:`supported`; without them sessions are left as they are) and
must not know about files: those are :mod:`lightd.sftp.handler`'s.
"""

from __future__ import annotations

import inspect
from typing import Any

from asyncssh.constants import FXP_WRITE
from asyncssh.packet import PacketDecodeError, SSHPacket
from asyncssh.sftp import SFTPInvalidHandle, SFTPNoConnection, SFTPServerHandler
from asyncssh.stream import SSHReader, SSHServerStreamSession, SSHWriter


class Counters:
    """Node-wide counts of this layer's own paths (tests read them)."""

    sessions = 0  # SFTP sessions served by FastSftpHandler


class FastSftpHandler(SFTPServerHandler):
    """asyncssh's SFTP server handler, its packets sent in one join, write data as views."""

    def send_packet(self, pkttype: int, pktid: int | None, *args: bytes) -> None:
        writer = self._writer
        if not writer:
            raise SFTPNoConnection("Connection not open")
        if writer.channel.is_closing():
            return
        size = 1 + sum(len(arg) for arg in args)
        writer.write(b"".join((size.to_bytes(4, "big"), bytes((pkttype,)), *args)))
        if getattr(self.logger, "_debug_level", 3) >= 3:
            self.log_sent_packet(pkttype, pktid, bytes((pkttype,)) + b"".join(args))

    async def _process_write_view(self, packet: SSHPacket) -> int:
        """asyncssh's ``_process_write``, the data a view of the request, not a slice."""
        handle = packet.get_string()
        offset = packet.get_uint64()
        size = packet.get_uint32()
        start = packet._idx
        if start + size > packet._len:
            raise PacketDecodeError("Incomplete packet")
        data = memoryview(packet._packet)[start : start + size]
        packet._idx = start + size
        if self._version < 6:
            packet.check_end()
        self.logger.debug1(
            "Received write for %d bytes at offset %d in handle %s", size, offset, handle.hex()
        )
        file_obj = self._file_handles.get(handle)
        if not file_obj:
            raise SFTPInvalidHandle("Invalid file handle")
        result = self._server.write(file_obj, offset, data)  # type: ignore[arg-type]
        if inspect.isawaitable(result):
            result = await result
        return int(result)

    _packet_handlers = {
        **SFTPServerHandler._packet_handlers,
        FXP_WRITE: _process_write_view,  # type: ignore[dict-item]
    }


async def _serve(
    server: Any, reader: SSHReader[bytes], writer: SSHWriter[bytes], version: int
) -> None:
    if inspect.isawaitable(server):
        server = await server
    Counters.sessions += 1
    await FastSftpHandler(server, reader, writer, version).run()


class FastStreamSession(SSHServerStreamSession):  # type: ignore[type-arg]
    """asyncssh's server stream session, the ``sftp`` subsystem run by FastSftpHandler."""

    def session_started(self) -> None:
        chan = self._chan
        if chan is None or self._conn is None or chan.get_subsystem() != "sftp":
            super().session_started()
            return
        reader = SSHReader[bytes](self, chan)
        writer = SSHWriter[bytes](self, chan)
        reader.logger.info("Starting SFTP server")
        handler = _serve(self._init_sftp_server(), reader, writer, self._sftp_version)
        self._conn.create_task(handler, reader.logger)


def supported() -> bool:
    """True when asyncssh still has what this module builds on."""
    packet = SSHPacket(b"")
    return (
        all(hasattr(packet, name) for name in ("_packet", "_idx", "_len"))
        and FXP_WRITE in SFTPServerHandler._packet_handlers
        and all(
            hasattr(SSHServerStreamSession, name)
            for name in ("_init_sftp_server", "session_started")
        )
    )


_OK = supported()


def wrap_session(session: object) -> object:
    """``session`` with :class:`FastStreamSession`'s behaviour when it is asyncssh's own."""
    if _OK and type(session) is SSHServerStreamSession and hasattr(session, "_sftp_version"):
        session.__class__ = FastStreamSession
    return session
