"""asyncssh's server connection with a cheaper packet layer (same protocol, fewer copies).

Profiles of 256 MiB transfers with the OpenSSH client showed the event loop's time going
to asyncssh's packet framing, not to SFTP or AES-GCM: every packet sent was preceded by
an empty ``SSH_MSG_IGNORE`` (a counter-measure for CBC ciphers, which lightd does not
offer) and went out in its own ``send`` system call, and the receive buffer was re-sliced
after every packet (``self._inpbuf = self._inpbuf[n:]`` copies what is left of a
256 KiB read each time). :class:`FastServerConnection` keeps asyncssh's own parsing,
key exchange, authentication and channel logic, and changes only that:

- what one loop turn sends goes out in one ``transport.write``;
- during the handshake every segment is ACKed at once (``TCP_QUICKACK``): the OpenSSH
  client has Nagle on until its session channel opens, and each message it sent before
  lightd's delayed ACK of the previous one waited 40 ms (seen at SERVICE_REQUEST);
- no empty ``SSH_MSG_IGNORE`` before each packet unless the negotiated cipher is CBC;
- received data is handed to asyncssh's packet parser in the pieces it asks for (the
  header block, then the rest of the packet), so nothing is copied more than once here;
- no rebuilding of all options at each login (``reload_config``: lightd passes no
  configuration file whose ``Match`` blocks it would apply).

It relies on asyncssh's private names (``_recv_handler``, ``_inpbuf``, ``_send`` …);
:func:`supported` checks they are there and :func:`listen` falls back to asyncssh's
stock connection when they are not. It must not change what goes on the wire beyond
dropping the empty ignore messages, and must not know about SFTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import deque
from typing import Any

import asyncssh
from asyncssh.constants import MSG_IGNORE

_EMPTY_STRING = b"\x00\x00\x00\x00"  # asyncssh's String(b"")
ALL = -1
# Reads during which lightd ACKs at once: the handshake and the first requests.
QUICKACK_READS = 32
_PRIVATE = (
    "_recv_handler",
    "_recv_pkthdr",
    "_recv_packet",
    "_recv_version",
    "_finish_recv_packet",
    "_reset_keepalive_timer",
    "_send",
    "_send_disconnect",
    "_force_close",
    "internal_error",
    "reload_config",
)


def supported() -> bool:
    """True when asyncssh still has the private methods this module hooks into."""
    return all(hasattr(asyncssh.SSHServerConnection, name) for name in _PRIVATE[1:])


class FastServerConnection(asyncssh.SSHServerConnection):
    """An asyncssh server connection with coalesced sends and a copy-free receive buffer."""

    _inpbuf: bytes
    _recv_blocksize: int
    _recv_macsize: int
    _pktlen: int
    _enc_alg_sc: bytes

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._out: list[bytes] = []
        self._out_transport: asyncio.Transport | None = None
        self._rx: deque[memoryview] = deque()
        self._feeding = False
        self._sock: socket.socket | None = None
        self._acks = 0

    # -- sending -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        assert isinstance(transport, asyncio.Transport)
        self._out_transport = transport
        sock = transport.get_extra_info("socket")
        self._sock = sock if hasattr(socket, "TCP_QUICKACK") else None
        self._quickack()

    def _quickack(self) -> None:
        """ACK at once during the handshake (Linux clears the flag again, so re-armed).

        The OpenSSH client sends with Nagle on until its session channel is open: a
        message it sends before our ACK of the previous one waits for that ACK, which
        Linux delays by 40 ms when lightd has nothing to answer (after NEWKEYS, ...).
        """
        if self._sock is None or self._acks >= QUICKACK_READS:
            return
        self._acks += 1
        with contextlib.suppress(OSError):
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)

    def _send(self, data: bytes) -> None:
        if not self._transport:
            return
        if not self._out:
            self._loop.call_soon(self._flush)
        self._out.append(data)

    def _flush(self) -> None:
        out, self._out = self._out, []
        transport = self._out_transport
        if not out or transport is None or transport.is_closing():
            return
        with contextlib.suppress(ConnectionError):  # asyncssh's _send ignores these too
            transport.write(out[0] if len(out) == 1 else b"".join(out))

    def send_packet(
        self, pkttype: int, *args: bytes, handler: Any = None
    ) -> None:  # asyncssh's signature
        if pkttype == MSG_IGNORE and args == (_EMPTY_STRING,) and b"cbc" not in self._enc_alg_sc:
            return  # the per-packet ignore message: only of use against CBC
        super().send_packet(pkttype, *args, handler=handler)

    async def reload_config(self) -> None:
        """Nothing to re-evaluate: lightd gives asyncssh no configuration file.

        asyncssh rebuilds every option in a worker thread at each login to apply the
        ``Match`` blocks of an sshd-style file; without one the result is the options
        it has (and lightd authenticates through its callbacks, not option values).
        """

    # -- receiving -----------------------------------------------------------------

    def data_received(self, data: bytes, datatype: Any = None) -> None:
        self._quickack()
        self._rx.append(memoryview(data))
        if not self._feeding:
            self._feed()

    def _finish_recv_packet(self, *args: Any, **kwargs: Any) -> None:
        is_async = kwargs.get("is_async", False)
        super()._finish_recv_packet(*args, **kwargs)
        if is_async and self._rx and not self._feeding:
            self._feed()

    def _wanted(self) -> int | None:
        """Bytes asyncssh's current receive step still needs (ALL: whatever came; None: wait).

        Zero or less: it has enough already (data left over from the version line).
        """
        handler = getattr(self._recv_handler, "__func__", None)
        if handler is _PKTHDR:
            return self._recv_blocksize - len(self._inpbuf)
        if handler is _PACKET:
            rest = 4 + self._pktlen + self._recv_macsize - self._recv_blocksize
            return rest - len(self._inpbuf)
        if handler is _VERSION:
            return ALL
        return None  # a packet being handled asynchronously: wait for it

    def _take(self, size: int) -> bytes:
        """Up to ``size`` bytes (everything with ALL) of what came, as one bytes object."""
        pieces: list[memoryview] = []
        while self._rx and size != 0:
            head = self._rx[0]
            if 0 < size < len(head):
                pieces.append(head[:size])
                self._rx[0] = head[size:]
                break
            pieces.append(self._rx.popleft())
            if size > 0:
                size -= len(head)
        if len(pieces) == 1:
            return bytes(pieces[0])
        return b"".join(pieces)

    def _feed(self) -> None:
        """asyncssh's ``_recv_data``, fed exactly what each step of its parser needs."""
        self._feeding = True
        try:
            self._reset_keepalive_timer()
            while True:
                wanted = self._wanted()
                if wanted is None:
                    break
                if wanted > 0 or wanted == ALL:
                    if not self._rx:
                        break
                    piece = self._take(wanted)
                    self._inpbuf = self._inpbuf + piece if self._inpbuf else piece
                    if len(piece) < wanted:
                        break  # the rest of this step has not arrived yet
                if not self._inpbuf or not self._recv_handler():
                    break
        except asyncssh.DisconnectError as exc:
            self._send_disconnect(exc.code, exc.reason, exc.lang)
            self._force_close(exc)
        except Exception:
            self.internal_error()
        finally:
            self._feeding = False


_PKTHDR = getattr(asyncssh.SSHServerConnection, "_recv_pkthdr", None)
_PACKET = getattr(asyncssh.SSHServerConnection, "_recv_packet", None)
_VERSION = getattr(asyncssh.SSHServerConnection, "_recv_version", None)


async def listen(host: str, port: int, *, backlog: int, **options: Any) -> asyncssh.SSHAcceptor:
    """``asyncssh.create_server`` with :class:`FastServerConnection` (stock if unsupported)."""
    if not supported():
        return await asyncssh.listen(host, port, backlog=backlog, **options)
    loop = asyncio.get_running_loop()
    reuse_address = bool(options.pop("reuse_address", True))
    settings = await asyncssh.SSHServerConnectionOptions.construct(host=host, port=port, **options)
    settings.proxy_command = None

    def factory() -> FastServerConnection:
        return FastServerConnection(loop, settings, None, None)

    server = await loop.create_server(
        factory, host, port, backlog=backlog, reuse_address=reuse_address
    )
    return asyncssh.SSHAcceptor(server, settings)
