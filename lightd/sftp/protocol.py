"""asyncssh's SFTP server packet layer with fewer copies of the file data.

asyncssh's ``SFTPServerHandler`` builds every packet it sends in three copies (the
arguments joined, the type prepended, the length prepended), so a 255 KiB ``READ``
answer was copied three times after ``String(data)``; and a ``WRITE`` request's data
was sliced out of the request (a copy) before reaching :class:`VolumeSftp.write`.
:class:`FastSftpHandler` sends each packet in one join and hands a write's data on as a
view of the request (``os.pwritev`` takes it as it is).

Its :meth:`FastSftpHandler.recv_packets` also cuts each request straight out of the
pieces of channel data the session holds (asyncssh read each one through two awaited,
locked ``readexactly`` calls) and handles a ``WRITE`` that parses, names an open handle
and is answered at once by :meth:`VolumeSftp.write` inline: the data handed on as a
view, the ``STATUS`` OK answers of one loop turn sent in one channel write (one SSH
packet, not one per 32 KiB request). A write whose answer must wait or is an error,
every other request, a packet not yet complete, an end of file or an error in the
stream go to asyncssh's own code, in order (the answers held back are sent first).
Everything else (parsing, dispatch, answers, errors, limits) is asyncssh's.

:func:`wrap_session` is what :mod:`lightd.sftp.transport` applies to each new session:
asyncssh's ``SSHServerStreamSession`` gets :class:`FastStreamSession`'s class, which
starts :class:`FastSftpHandler` instead of asyncssh's handler for the ``sftp``
subsystem (and leaves anything else to asyncssh). It relies on asyncssh's private
names (checked by :func:`supported`; without them sessions are left as they are) and
must not know about files: those are :mod:`lightd.sftp.handler`'s.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable
from typing import Any

from asyncssh.constants import FXP_STATUS, FXP_WRITE
from asyncssh.misc import Error
from asyncssh.packet import PacketDecodeError, SSHPacket
from asyncssh.sftp import (
    MAX_SFTP_PACKET_LEN,
    SFTPBadMessage,
    SFTPInvalidHandle,
    SFTPNoConnection,
    SFTPServerHandler,
)
from asyncssh.stream import SSHReader, SSHServerStreamSession, SSHWriter

# A STATUS packet's length, type and (after the request id) FX_OK with empty message
# and language tag: asyncssh's ``UInt32(FX_OK) + String('') + String('')``.
_STATUS_OK_TAIL = bytes(12)
_STATUS_HEAD = (1 + 4 + len(_STATUS_OK_TAIL)).to_bytes(4, "big") + bytes((FXP_STATUS,))
# A WRITE request after its length: type, id, handle length (then handle, offset, size).
_WRITE_FIXED = 1 + 4 + 4
_WRITE_TAIL = 8 + 4


class Counters:
    """Node-wide counts of this layer's own paths (tests read them)."""

    sessions = 0  # SFTP sessions served by FastSftpHandler
    inline_writes = 0  # WRITE requests handled by FastSftpHandler.recv_packets itself
    joined_packets = 0  # of the requests it cut, those that spanned pieces of data


class FastSftpHandler(SFTPServerHandler):
    """asyncssh's SFTP server handler, its packets sent in one join, write data as views."""

    # What the inline write path got from VolumeSftp.write when it was not a plain
    # count (an awaitable or an error): _process_write_view gives it to asyncssh.
    _outcome: Awaitable[int] | BaseException | None = None
    _answers: list[bytes] | None = None

    def _flush_answers(self) -> None:
        answers = self._answers
        if answers:
            self._answers = None
            writer = self._writer
            if writer and not writer.channel.is_closing():
                writer.write(answers[0] if len(answers) == 1 else b"".join(answers))

    def send_packet(self, pkttype: int, pktid: int | None, *args: bytes) -> None:
        writer = self._writer
        if not writer:
            raise SFTPNoConnection("Connection not open")
        self._flush_answers()
        if writer.channel.is_closing():
            return
        size = 1 + sum(len(arg) for arg in args)
        writer.write(b"".join((size.to_bytes(4, "big"), bytes((pkttype,)), *args)))
        if getattr(self.logger, "_debug_level", 3) >= 3:
            self.log_sent_packet(pkttype, pktid, bytes((pkttype,)) + b"".join(args))

    async def _process_write_view(self, packet: SSHPacket) -> int:
        """asyncssh's ``_process_write``, the data a view of the request, not a slice."""
        outcome = self._outcome
        if outcome is not None:
            self._outcome = None
            if isinstance(outcome, BaseException):
                raise outcome
            return int(await outcome)
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

    def _cut(self, buf: list[Any]) -> memoryview | bytes | None:
        """The next whole request in ``buf`` (after its length), taken out; else None."""
        first = buf[0]
        while not isinstance(first, Exception) and len(first) < 4:
            # The length itself cut between pieces (rare): those pieces joined.
            if len(buf) < 2 or isinstance(buf[1], Exception):
                return None
            first = buf[0] = b"".join((first, buf.pop(1)))
        if isinstance(first, Exception):
            return None
        end = 4 + int.from_bytes(first[:4], "big")
        if end > 4 + MAX_SFTP_PACKET_LEN:
            return None
        have = len(first)
        if have >= end:
            view = memoryview(first)
            if have == end:
                del buf[0]
            else:
                buf[0] = view[end:]
            return view[4:end]
        count = 1
        while have < end and count < len(buf):
            piece = buf[count]
            if isinstance(piece, Exception):
                return None
            have += len(piece)
            count += 1
        if have < end:
            return None
        last = memoryview(buf[count - 1])
        keep = have - end  # of the last piece
        parts = [memoryview(first)[4:], *buf[1 : count - 1], last[: len(last) - keep]]
        del buf[: count - 1]
        if keep:
            buf[0] = last[len(last) - keep :]
        else:
            del buf[0]
        Counters.joined_packets += 1
        return b"".join(parts)

    def _write_inline(self, packet: memoryview | bytes) -> bool:
        """Handle the WRITE ``packet`` here when it is the simple case; False when not."""
        hlen = int.from_bytes(packet[5:9], "big")
        head = _WRITE_FIXED + hlen
        start = head + _WRITE_TAIL
        if start > len(packet):
            return False
        size = int.from_bytes(packet[head + 8 : start], "big")
        if start + size != len(packet) and (self._version < 6 or start + size > len(packet)):
            return False
        file_obj = self._file_handles.get(bytes(packet[_WRITE_FIXED:head]))
        if not file_obj:
            return False
        offset = int.from_bytes(packet[head : head + 8], "big")
        logger = self.logger
        debug = logger.isEnabledFor(logging.DEBUG)
        if debug:
            logger.debug1(
                "Received write for %d bytes at offset %d in handle %s",
                size,
                offset,
                bytes(packet[_WRITE_FIXED:head]).hex(),
            )
        data = memoryview(packet)[start : start + size]
        try:
            result = self._server.write(file_obj, offset, data)  # type: ignore[arg-type]
        except Exception as exc:
            self._outcome = exc
            return False
        if inspect.isawaitable(result):
            self._outcome = result
            return False
        Counters.inline_writes += 1
        if debug:
            logger.debug1("Sending OK")
        answer = b"".join((_STATUS_HEAD, packet[1:5], _STATUS_OK_TAIL))
        if self._answers is None:
            self._answers = [answer]
        else:
            self._answers.append(answer)
        return True

    async def recv_packets(self) -> None:
        """asyncssh's loop, requests cut from the session's buffer, simple writes inline."""
        reader = self._reader
        assert reader is not None
        session: Any = getattr(reader, "_session", None)
        datatype = getattr(reader, "_datatype", None)
        buf: Any = getattr(session, "_recv_buf", {}).get(datatype)
        if not isinstance(buf, list) or not all(
            hasattr(session, name)
            for name in ("_maybe_resume_reading", "_block_read", "_eof_received", "_read_paused")
        ):
            await super().recv_packets()
            return
        logged = getattr(self.logger, "_debug_level", 3) >= 3
        try:
            while self._reader:
                cut = self._cut(buf) if buf else None
                if cut is None:
                    self._flush_answers()
                    if not (session._eof_received or session._read_paused):
                        # Wait for more data here, so that the next request is cut too.
                        await session._block_read(datatype)
                        continue
                    packet = await self.recv_packet()
                else:
                    session._recv_buf_len -= 4 + len(cut)
                    session._maybe_resume_reading()
                    if (
                        len(cut) >= _WRITE_FIXED
                        and cut[0] == FXP_WRITE
                        and not logged
                        and self._write_inline(cut)
                    ):
                        continue
                    # A write whose outcome is held needs only its type and id read.
                    packet = SSHPacket(cut if self._outcome is not None else bytes(cut))  # type: ignore[arg-type]
                    self._flush_answers()
                pkttype = packet.get_byte()
                pktid = packet.get_uint32()
                self.log_received_packet(pkttype, pktid, packet)
                await self._process_packet(pkttype, pktid, packet)
        except PacketDecodeError as exc:
            self._flush_answers()
            await self._cleanup(SFTPBadMessage(str(exc)))
        except EOFError:
            self._flush_answers()
            await self._cleanup(None)
        except (OSError, Error) as exc:
            self._flush_answers()
            await self._cleanup(exc)


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
