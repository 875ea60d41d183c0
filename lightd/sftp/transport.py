"""asyncssh's server connection with a cheaper packet layer (same protocol, fewer copies).

Profiles of 256 MiB transfers with the OpenSSH client showed the event loop's time going
to asyncssh's packet framing, not to SFTP or AES-GCM: every packet sent was preceded by
an empty ``SSH_MSG_IGNORE`` (a counter-measure for CBC ciphers, which lightd does not
offer) and went out in its own ``send`` system call, and the receive buffer was re-sliced
after every packet (``self._inpbuf = self._inpbuf[n:]`` copies what is left of a
256 KiB read each time). :class:`FastServerConnection` keeps asyncssh's own parsing,
key exchange, authentication and channel logic, and changes only that:

- what one loop turn sends goes out in one ``writev`` (no join) while asyncio's transport
  has nothing buffered, else in one ``transport.write``;
- during the handshake every segment is ACKed at once (``TCP_QUICKACK``): the OpenSSH
  client has Nagle on until its session channel opens, and each message it sent before
  lightd's delayed ACK of the previous one waited 40 ms (seen at SERVICE_REQUEST);
- no empty ``SSH_MSG_IGNORE`` before each packet unless the negotiated cipher is CBC;
- received data is handed to asyncssh's packet parser in the pieces it asks for (the
  header block, then the rest of the packet), so nothing is copied more than once here;
- no rebuilding of all options at each login (``reload_config``: lightd passes no
  configuration file whose ``Match`` blocks it would apply);
- with AES-GCM (``aes128-gcm@openssh.com``, ``aes256-gcm@openssh.com``): one ``AESGCM``
  object per key instead of one per packet (:class:`FastGCM`), the ciphertext and tag of
  a received packet joined once; with ``chacha20-poly1305@openssh.com`` (the OpenSSH
  client's default) one keystream per packet for the MAC key and the payload and no
  joins for the MAC (:class:`FastChacha`); with both, channel data packets (a
  download's bulk: the OpenSSH client takes 32 KiB packets, 32 per MiB) framed, padded
  and sealed in one join (:meth:`FastServerConnection._send_data`) instead of
  asyncssh's six copies, the padding drawn from a random pool rather than a
  ``getrandom`` call per packet.
  ``lightd_sftp_fast_data_packets`` in ``/metrics`` counts those packets;
- with both, a received channel data packet for a session channel is opened here in one
  decryption of the bytes as they came and its data handed to the channel as a view
  (:meth:`FastServerConnection._recv_data_packet`; asyncssh sliced, joined and copied
  it about five times on its generic path); any other packet, and any check that
  fails, goes to asyncssh's parser from the same bytes (the nonce put back):
  ``lightd_sftp_fast_received_packets`` and ``_bytes``;
- a channel keeps the ``bytes`` written to it as they are, not copied into a
  ``bytearray``; each session asyncssh makes goes through the ``session_wrapper``
  given to :func:`listen` (lightd's SFTP packet layer, which this module does not know).

It relies on asyncssh's private names (``_recv_handler``, ``_inpbuf``, ``_send`` …);
:func:`supported` checks they are there and :func:`listen` falls back to asyncssh's
stock connection when they are not. It must not change what goes on the wire beyond
dropping the empty ignore messages (the packets it frames itself are the bytes asyncssh
would send, random padding aside), and must not know about SFTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections import deque
from collections.abc import Callable
from typing import Any, cast

import asyncssh
from asyncssh.constants import MSG_CHANNEL_DATA, MSG_IGNORE
from asyncssh.crypto.chacha import ChachaCipher, chacha20
from asyncssh.crypto.cipher import GCMCipher
from asyncssh.encryption import ChachaEncryption, GCMEncryption
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.ciphers.algorithms import ChaCha20
from cryptography.hazmat.primitives.poly1305 import Poly1305

_EMPTY_STRING = b"\x00\x00\x00\x00"  # asyncssh's String(b"")
ALL = -1
_GCM_TAG = 16
_COUNTER_MASK = 0xFFFFFFFFFFFFFFFF
# Random padding is drawn from a pool refilled this many bytes at a time (asyncssh asks
# the kernel for 4 to 19 bytes at every packet: one getrandom system call each).
PADDING_POOL_BYTES = 16 * 1024
_CHACHA_BLOCK0 = bytes(8)  # cryptography's ChaCha20 nonce: 64-bit block counter, then nonce
_CHACHA_ZERO_BLOCK = bytes(64)


class Counters:
    """Node-wide counts of this layer's own paths (``/metrics``; tests read them)."""

    fast_data_packets = 0  # channel data packets lightd framed and sealed
    channel_packets = 0  # of those, cut from the channel's buffer by FastServerChannel
    received_data_packets = 0  # channel data packets lightd opened and delivered itself
    received_data_bytes = 0  # the data they carried


# Pieces in one writev (the kernel's IOV_MAX).
IOV_MAX = 1024
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
# The connection state _send_data and _recv_data_packet read and advance as asyncssh
# would (and _feed reads).
_SEND_STATE = (
    "_recv_encryption",
    "_recv_seq",
    "_recv_blocksize",
    "_recv_macsize",
    "_max_recv_pktlen",
    "_decompressor",
    "_channels",
    "_auth_final",
    "create_server_channel",
    "_send_encryption",
    "_send_enchdrlen",
    "_send_blocksize",
    "_send_seq",
    "_compressor",
    "_rekey_bytes_sent",
    "_rekey_bytes",
    "_rekey_seconds",
    "_rekey_time",
    "_auth_complete",
    "_kex_complete",
)


class FastGCM:
    """AES-GCM for one direction of one key: asyncssh's ``GCMCipher``, set up once.

    asyncssh builds a new ``AESGCM`` object (a key schedule) for every packet and
    advances the nonce through ``int.from_bytes``/slicing; this keeps one ``AESGCM``
    and the invocation counter as an int. It is installed as the ``encrypt_and_sign``
    and ``verify_and_decrypt`` of that ``GCMCipher`` instance (and as the
    ``decrypt_packet`` of its ``GCMEncryption``, which joined the ciphertext, then the
    tag, in two copies of the packet), so every packet of the
    connection (asyncssh's own too) uses it and the nonce stays in step; ``_iv`` is kept
    current for anything that reads it. Same RFC 5647 nonce sequence, same bytes.
    """

    __slots__ = ("_aead", "_cipher", "_counter", "_fixed")

    def __init__(self, cipher: GCMCipher) -> None:
        self._cipher = cipher
        key: bytes = cipher._key
        iv: bytes = cipher._iv
        self._aead = AESGCM(key)
        self._fixed = iv[:4]
        self._counter = int.from_bytes(iv[4:], "big")

    def _nonce(self) -> bytes:
        nonce = self._fixed + self._counter.to_bytes(8, "big")
        self._counter = (self._counter + 1) & _COUNTER_MASK
        self._cipher._iv = self._fixed + self._counter.to_bytes(8, "big")
        return nonce

    def seal(self, header: bytes, data: bytes) -> bytes:
        """Ciphertext and tag (what follows the clear length on the wire)."""
        return self._aead.encrypt(self._nonce(), data, header)

    def seal_packet(self, seq: int, header: bytes, body: bytes) -> tuple[bytes, ...]:
        """The packet as it goes on the wire, in pieces: the clear length, then the rest."""
        return header, self.seal(header, body)

    def encrypt_and_sign(self, header: bytes, data: bytes) -> tuple[bytes, bytes]:
        sealed = self.seal(header, data)
        return header + sealed[:-_GCM_TAG], sealed[-_GCM_TAG:]

    def verify_and_decrypt(self, header: bytes, data: bytes, mac: bytes) -> bytes | None:
        try:
            return self._aead.decrypt(self._nonce(), data + mac, header)
        except InvalidTag:
            return None

    def decrypt_packet(
        self, seq: int, first: bytes, rest: bytes, header_len: int, mac: bytes
    ) -> bytes | None:
        """``GCMEncryption.decrypt_packet``: the ciphertext and tag joined once (not twice)."""
        nonce = self._nonce()
        try:
            return self._aead.decrypt(
                nonce, b"".join((first[header_len:], rest, mac)), first[:header_len]
            )
        except InvalidTag:
            return None

    def packet_length(self, seq: int, head: bytes | memoryview) -> int:
        """The packet length from its first 4 bytes (sent in the clear with AES-GCM)."""
        return int.from_bytes(head, "big")

    def open_packet(self, seq: int, packet: bytes | memoryview) -> bytes | None:
        """A whole received packet (length, ciphertext, tag) decrypted; None: bad tag.

        Nothing is joined: the views go to AES-GCM as they are.
        """
        try:
            return self._aead.decrypt(self._nonce(), packet[4:], packet[:4])
        except InvalidTag:
            return None

    def rewind(self) -> None:
        """Undo the last :meth:`open_packet` (asyncssh then decrypts that packet itself)."""
        self._counter = (self._counter - 1) & _COUNTER_MASK
        self._cipher._iv = self._fixed + self._counter.to_bytes(8, "big")

    @classmethod
    def install(cls, encryption: object) -> FastGCM | None:
        """The FastGCM of an asyncssh ``GCMEncryption`` (made once), or None for others."""
        if type(encryption) is not GCMEncryption:
            return None
        cipher = encryption._cipher
        fast = cipher.__dict__.get("_lightd_fast")
        if fast is None:
            if type(cipher) is not GCMCipher:
                return None
            fast = cls(cipher)
            cipher.__dict__["_lightd_fast"] = fast
            cipher.encrypt_and_sign = fast.encrypt_and_sign  # type: ignore[method-assign]
            cipher.verify_and_decrypt = fast.verify_and_decrypt  # type: ignore[method-assign]
            encryption.decrypt_packet = fast.decrypt_packet  # type: ignore[method-assign]
        return fast


class FastChacha:
    """chacha20-poly1305@openssh.com for one direction: asyncssh's ``ChachaCipher``, cheaper.

    asyncssh sets up three ChaCha20 ciphers per packet (the length, the Poly1305 key
    and the payload) and joins the packet twice for the MAC. Here the Poly1305 key and
    the payload come from one keystream (block 0 gives the key, the payload starts at
    block 1, as the protocol defines it), and the MAC is fed the pieces as they are.
    The nonce is the sequence number, so there is no state to keep in step with
    asyncssh's own path (its packets other than channel data still use it). Installed
    as the ``decrypt_packet`` of that ``ChachaEncryption``; sending goes through
    :meth:`seal_packet`.
    """

    __slots__ = ("_adkey", "_key")

    def __init__(self, cipher: ChachaCipher) -> None:
        self._key: bytes = cipher._key
        self._adkey: bytes = cipher._adkey

    def _stream(self, seq: int) -> tuple[CipherContext, Poly1305]:
        """The payload keystream (at block 1) and the Poly1305 MAC of packet ``seq``."""
        nonce = seq.to_bytes(8, "big")
        stream = Cipher(ChaCha20(self._key, _CHACHA_BLOCK0 + nonce), mode=None).encryptor()
        mac = Poly1305(stream.update(_CHACHA_ZERO_BLOCK)[:32])
        return stream, mac

    def seal_packet(self, seq: int, header: bytes, body: bytes) -> tuple[bytes, ...]:
        length = chacha20(self._adkey, header, seq.to_bytes(8, "big"), 0)
        stream, mac = self._stream(seq)
        sealed = stream.update(body)
        mac.update(length)
        mac.update(sealed)
        return length, sealed, mac.finalize()

    def decrypt_packet(
        self, seq: int, first: bytes, rest: bytes, header_len: int, mac: bytes
    ) -> bytes | None:
        """``ChachaEncryption.decrypt_packet``: the MAC checked first, nothing joined for it."""
        stream, poly = self._stream(seq)
        poly.update(first)
        poly.update(rest)
        try:
            poly.verify(mac)
        except InvalidSignature:
            return None
        return stream.update(first[header_len:]) + stream.update(rest)

    def packet_length(self, seq: int, head: bytes | memoryview) -> int:
        """The packet length: its first 4 bytes, decrypted with the header key."""
        return int.from_bytes(chacha20(self._adkey, bytes(head), seq.to_bytes(8, "big"), 0), "big")

    def open_packet(self, seq: int, packet: bytes | memoryview) -> bytes | None:
        """A whole received packet, MAC checked first, decrypted; None: bad MAC."""
        stream, poly = self._stream(seq)
        poly.update(packet[:-_GCM_TAG])
        try:
            poly.verify(bytes(packet[-_GCM_TAG:]))
        except InvalidSignature:
            return None
        return stream.update(packet[4:-_GCM_TAG])

    def rewind(self) -> None:
        """Nothing to undo: the nonce is the sequence number."""

    @classmethod
    def install(cls, encryption: object) -> FastChacha | None:
        if type(encryption) is not ChachaEncryption:
            return None
        fast = encryption.__dict__.get("_lightd_fast")
        if fast is None:
            cipher = encryption._cipher
            if type(cipher) is not ChachaCipher:
                return None
            fast = cls(cipher)
            encryption.__dict__["_lightd_fast"] = fast
            encryption.decrypt_packet = fast.decrypt_packet  # type: ignore[method-assign]
        return fast


def install_fast(encryption: object) -> FastGCM | FastChacha | None:
    """lightd's sealer for an asyncssh encryption object (installed once), or None."""
    if not _FAST_OK:
        return None
    return FastGCM.install(encryption) or FastChacha.install(encryption)


def supported() -> bool:
    """True when asyncssh still has the private methods this module hooks into."""
    return all(hasattr(asyncssh.SSHServerConnection, name) for name in _PRIVATE[1:])


def fast_supported() -> bool:
    """True when asyncssh's cipher shims still have the fields FastGCM/FastChacha read."""
    gcm = GCMCipher("aes128-gcm", bytes(16), bytes(12))
    chacha = ChachaCipher(bytes(64))
    return (
        all(hasattr(gcm, name) for name in ("_key", "_iv"))
        and all(hasattr(chacha, name) for name in ("_key", "_adkey"))
        and hasattr(GCMEncryption(gcm), "_cipher")
        and hasattr(ChachaEncryption(chacha), "_cipher")
    )


_FAST_OK = fast_supported()


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
        self._fd: int | None = None  # the socket's descriptor, for _writev
        self.session_wrapper: Callable[[Any], Any] | None = None  # see listen()
        self._acks = 0
        self._padding = b""
        self._padding_at = 0
        # (asyncssh's send encryption, lightd's sealer for it)
        self._sealer: tuple[object, FastGCM | FastChacha] | None = None
        self._recv_seen: object = None  # the receive encryption install_fast was tried on
        self._opener: FastGCM | FastChacha | None = None  # lightd's for _recv_seen
        self._rx_len = 0  # bytes in _rx
        self._fast_data = _FAST_OK and all(hasattr(self, name) for name in _SEND_STATE)

    # -- sending -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        assert isinstance(transport, asyncio.Transport)
        self._out_transport = transport
        sock = transport.get_extra_info("socket")
        self._sock = sock if hasattr(socket, "TCP_QUICKACK") else None
        fileno = getattr(sock, "fileno", None)
        self._fd = fileno() if fileno is not None and hasattr(os, "writev") else None
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
        if len(out) > 1 and self._fd is not None and not transport.get_write_buffer_size():
            out = self._writev(out)
            if not out:
                return
        with contextlib.suppress(ConnectionError):  # asyncssh's _send ignores these too
            transport.write(out[0] if len(out) == 1 else b"".join(out))

    def _writev(self, out: list[bytes]) -> list[bytes]:
        """Send ``out`` with ``writev`` (no join); what the socket did not take.

        Only while the transport has nothing buffered (so the order holds); anything
        left, and any error, goes to ``transport.write`` as before (which reports the
        error and closes the connection as it would have).
        """
        assert self._fd is not None
        start = 0
        while start < len(out):
            chunk = out[start : start + IOV_MAX]
            try:
                sent = os.writev(self._fd, chunk)
            except (BlockingIOError, InterruptedError):
                return out[start:]
            except OSError:
                return out[start:]  # the transport meets the error again and handles it
            for piece in chunk:
                if sent < len(piece):
                    rest = out[start:]
                    rest[0] = piece[sent:] if sent else piece
                    return rest
                sent -= len(piece)
                start += 1
        return []

    def send_packet(
        self, pkttype: int, *args: bytes, handler: Any = None
    ) -> None:  # asyncssh's signature
        if pkttype == MSG_IGNORE and args == (_EMPTY_STRING,) and b"cbc" not in self._enc_alg_sc:
            return  # the per-packet ignore message: only of use against CBC
        if (
            pkttype == MSG_CHANNEL_DATA
            and handler is not None
            and self._fast_data
            and self._send_data(args, handler)
        ):
            return
        super().send_packet(pkttype, *args, handler=handler)

    def _random(self, size: int) -> bytes:
        at = self._padding_at
        if at + size > len(self._padding):
            self._padding, at = os.urandom(PADDING_POOL_BYTES), 0
        self._padding_at = at + size
        return self._padding[at : at + size]

    def _fast_sealer(self) -> FastGCM | FastChacha | None:
        encryption = self._send_encryption
        sealer = self._sealer
        if sealer is not None and sealer[0] is encryption:
            return sealer[1]
        fast = install_fast(encryption)
        self._sealer = (encryption, fast) if fast is not None else None
        return fast

    def _data_sealer(self) -> FastGCM | FastChacha | None:
        """The sealer for channel data packets now, or None when asyncssh must send them.

        None whenever anything but the plain case applies: another cipher, compression,
        a rekey due, authentication or key exchange not complete.
        """
        if not self._fast_data or not (self._auth_complete and self._kex_complete):
            return None
        if self._compressor:
            return None
        if self._rekey_bytes_sent >= self._rekey_bytes or (
            self._rekey_seconds and time.monotonic() >= self._rekey_time
        ):
            return None
        return self._fast_sealer()

    def _seal_data(
        self, sealer: FastGCM | FastChacha, head: bytes, data: bytes | memoryview, handler: Any
    ) -> None:
        """Frame, pad and seal one channel data packet (``head``: what precedes ``data``).

        What asyncssh's ``send_packet`` does for it, minus its copies (the payload
        joined, prefixed, padded, split into ciphertext and tag and joined again): the
        same length, padding rule, sequence number and rekey accounting.
        """
        size = 1 + len(head) + len(data)
        padlen = -(self._send_enchdrlen + size) % self._send_blocksize
        if padlen < 4:
            padlen += self._send_blocksize
        pktlen = 1 + size + padlen
        header = pktlen.to_bytes(4, "big")
        body = b"".join((bytes((padlen, MSG_CHANNEL_DATA)), head, data, self._random(padlen)))
        seq = self._send_seq
        for piece in sealer.seal_packet(seq, header, body):
            self._send(piece)
        self._send_seq = (seq + 1) & 0xFFFFFFFF
        self._rekey_bytes_sent += pktlen
        Counters.fast_data_packets += 1
        if getattr(handler.logger, "_debug_level", 3) >= 3:
            payload = bytes((MSG_CHANNEL_DATA,)) + head + bytes(data)
            handler.log_sent_packet(MSG_CHANNEL_DATA, seq, payload)

    def _send_data(self, args: tuple[bytes, ...], handler: Any) -> bool:
        """A channel data packet asyncssh's channel built (False: asyncssh sends it)."""
        sealer = self._data_sealer()
        if sealer is None:
            return False
        self._seal_data(sealer, b"", b"".join(args), handler)
        return True

    def send_channel_data(self, channel: Any, recipient: int, data: memoryview) -> bool:
        """For :class:`FastServerChannel`: ``data`` to ``recipient`` in one packet.

        False (nothing sent) when asyncssh must send it.
        """
        sealer = self._data_sealer()
        if sealer is None:
            return False
        head = recipient.to_bytes(4, "big") + len(data).to_bytes(4, "big")
        self._seal_data(sealer, head, data, channel)
        Counters.channel_packets += 1
        return True

    def create_server_channel(self, *args: Any, **kwargs: Any) -> Any:
        """asyncssh's session channel, as a :class:`FastServerChannel` (same state)."""
        chan = super().create_server_channel(*args, **kwargs)
        if (
            type(chan) is asyncssh.SSHServerChannel
            and self._fast_data
            and all(hasattr(chan, name) for name in _CHANNEL_STATE)
        ):
            chan.__class__ = FastServerChannel
        return chan

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
        self._rx_len += len(data)
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
                self._rx_len -= size
                break
            pieces.append(self._rx.popleft())
            self._rx_len -= len(head)
            if size > 0:
                size -= len(head)
        if len(pieces) == 1:
            return bytes(pieces[0])
        return b"".join(pieces)

    def _peek(self, size: int) -> memoryview:
        """The first ``size`` bytes of what came (there are that many), as one view.

        A packet split over several reads is joined once (only its own bytes: the rest
        of the last read stays a view), and stays the first piece until :meth:`_drop`.
        """
        rx = self._rx
        head = rx[0]
        if len(head) < size:
            pieces = [rx.popleft()]
            got = len(head)
            while got < size and got + len(rx[0]) <= size:
                pieces.append(rx.popleft())
                got += len(pieces[-1])
            if got < size:
                last = rx[0]
                pieces.append(last[: size - got])
                rx[0] = last[size - got :]
            head = memoryview(b"".join(pieces))
            rx.appendleft(head)
        return head[:size]

    def _drop(self, size: int) -> None:
        """Forget the first ``size`` bytes (all within the first piece, after _peek)."""
        head = self._rx[0]
        if len(head) == size:
            self._rx.popleft()
        else:
            self._rx[0] = head[size:]
        self._rx_len -= size

    def _recv_data_packet(self) -> bool | None:
        """One received channel data packet opened and delivered here, if it is one.

        What asyncssh's ``_recv_pkthdr``, ``_recv_packet``, ``_process_data`` and
        ``_finish_recv_packet`` do for it, minus their copies (the packet sliced out of
        the receive buffer, joined for the cipher, the payload and the data sliced
        again) and their dispatch: the same length limit, the same checks of the
        channel's state and window, the same sequence number, and the data handed to
        the channel's ``_accept_data`` (a view of the decrypted packet).

        True: done, the next one may follow; False: the packet has not fully arrived;
        None: anything else (another packet type, another channel class, any check
        failing, a bad MAC), which asyncssh then reads from the same bytes exactly as
        it would have (the cipher's nonce is put back).
        """
        opener = self._opener
        if (
            opener is None
            or not self._auth_complete
            or self._decompressor
            or self._recv_macsize != _GCM_TAG
            or getattr(self._recv_handler, "__func__", None) is not _PKTHDR
        ):
            return None
        if self._rx_len < self._recv_blocksize:
            return False
        seq = self._recv_seq
        pktlen = opener.packet_length(seq, self._peek(4))
        if pktlen > self._max_recv_pktlen or 4 + pktlen < self._recv_blocksize:
            return None
        total = 4 + pktlen + self._recv_macsize
        if self._rx_len < total:
            return False
        plain = opener.open_packet(seq, self._peek(total))
        if plain is None:
            opener.rewind()
            return None
        padlen = plain[0]
        chan = None
        datalen = 0
        if len(plain) >= 10 and plain[1] == MSG_CHANNEL_DATA:
            datalen = int.from_bytes(plain[6:10], "big")
            if padlen and 10 + datalen + padlen == len(plain):
                chan = self._channels.get(int.from_bytes(plain[2:6], "big"))
        if (
            type(chan) is not FastServerChannel
            or chan._recv_state != "open"
            or chan._encoding is not None
            or datalen > chan._recv_window
        ):
            opener.rewind()
            return None
        self._drop(total)
        Counters.received_data_packets += 1
        Counters.received_data_bytes += datalen
        if getattr(chan.logger, "_debug_level", 3) >= 3:
            chan.log_received_packet(MSG_CHANNEL_DATA, seq, plain[1:-padlen])
        self._auth_final = True
        self._recv_seq = (seq + 1) & 0xFFFFFFFF
        # A view, not a copy: asyncssh's stream reader joins what it returns (bytes).
        chan._accept_data(cast(bytes, memoryview(plain)[10 : 10 + datalen]))
        return True

    def _feed(self) -> None:
        """asyncssh's ``_recv_data``, fed exactly what each step of its parser needs."""
        self._feeding = True
        try:
            self._reset_keepalive_timer()
            while True:
                if self._fast_data and self._recv_encryption is not self._recv_seen:
                    # New keys (also mid-read: NEWKEYS was the packet before).
                    self._recv_seen = self._recv_encryption
                    self._opener = install_fast(self._recv_seen)
                if self._opener is not None and not self._inpbuf:
                    done = self._recv_data_packet()
                    if done is True:
                        continue
                    if done is False:
                        break
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


# A channel's send buffer here: asyncssh's bytearrays, or views of bytes written.
_SendBuf = list[tuple[bytearray | memoryview, Any]]


class FastServerChannel(asyncssh.SSHServerChannel):  # type: ignore[type-arg]
    """asyncssh's server channel whose data goes out without asyncssh's per-packet copies.

    asyncssh copies what is written into a ``bytearray``, then cuts each packet out of
    it (a copy), wraps it as an SSH string (a copy) and prefixes the recipient (a copy)
    before the connection frames it. Here plain ``bytes`` written are kept as they are
    (a view), and each packet is a view of them handed to
    :meth:`FastServerConnection.send_channel_data`, which joins it into the packet once.
    Window and buffer accounting are asyncssh's (its ``_flush_send_buf`` then does the
    rest: pausing and resuming the writer, a pending EOF or close); anything else
    (extended data, no fast sealer now) is left to asyncssh's own loop, given
    ``bytearray`` pieces as it expects. The instance is asyncssh's, its class swapped at
    creation: no state of its own.
    """

    _send_buf_len: int
    _send_window: int
    _send_pktsize: int
    _send_chan: int | None
    _send_state: str

    def _wrap_session(self, session: Any) -> Any:
        """asyncssh's hook, after the session wrapper given to :func:`listen` (if any)."""
        wrap = getattr(self._conn, "session_wrapper", None)
        if wrap is not None:
            session = wrap(session)
        return super()._wrap_session(session)

    def write(self, data: Any, datatype: Any = None) -> None:
        """asyncssh's ``write`` for binary data, without copying it into a bytearray."""
        if (
            datatype is not None
            or type(data) is not bytes
            or self._encoding is not None
            or self._send_state != "open"
            or not data
        ):
            super().write(data, datatype)
            return
        self.logger.debug2("Sending %d data byte%s", len(data), "s" if len(data) > 1 else "")
        cast(_SendBuf, self._send_buf).append((memoryview(data), None))
        self._send_buf_len += len(data)
        self._flush_send_buf()

    def _flush_send_buf(self) -> None:
        conn = self._conn
        send = cast(_SendBuf, self._send_buf)
        if isinstance(conn, FastServerConnection) and self._send_chan is not None:
            recipient = self._send_chan
            while send and self._send_window:
                buf, datatype = send[0]
                if datatype is not None:
                    break
                size = min(len(buf), self._send_window, self._send_pktsize)
                if type(buf) is memoryview:
                    if not conn.send_channel_data(self, recipient, buf[:size]):
                        break
                    if size == len(buf):
                        del send[0]
                    else:
                        send[0] = (buf[size:], None)
                else:
                    with memoryview(buf) as view, view[:size] as piece:
                        if not conn.send_channel_data(self, recipient, piece):
                            break
                    if size == len(buf):
                        del send[0]
                    else:
                        del buf[:size]
                self._send_buf_len -= size
                self._send_window -= size
        if send and self._send_window:
            # asyncssh's loop sends the rest: it slices and deletes from bytearrays.
            send[:] = [
                (bytearray(buf) if type(buf) is memoryview else buf, datatype)
                for buf, datatype in send
            ]
        super()._flush_send_buf()


# The channel state FastServerChannel and _recv_data_packet read and advance.
_CHANNEL_STATE = (
    "_send_buf",
    "_send_buf_len",
    "_send_window",
    "_send_pktsize",
    "_send_chan",
    "_recv_state",
    "_recv_window",
    "_encoding",
    "_accept_data",
)
_PKTHDR = getattr(asyncssh.SSHServerConnection, "_recv_pkthdr", None)
_PACKET = getattr(asyncssh.SSHServerConnection, "_recv_packet", None)
_VERSION = getattr(asyncssh.SSHServerConnection, "_recv_version", None)


async def listen(
    host: str,
    port: int,
    *,
    backlog: int,
    session_wrapper: Callable[[Any], Any] | None = None,
    **options: Any,
) -> asyncssh.SSHAcceptor:
    """``asyncssh.create_server`` with :class:`FastServerConnection` (stock if unsupported).

    ``session_wrapper`` is applied to each session asyncssh makes for a session channel
    (it returns the session to use), when this layer is in use.
    """
    if not supported():
        return await asyncssh.listen(host, port, backlog=backlog, **options)
    loop = asyncio.get_running_loop()
    reuse_address = bool(options.pop("reuse_address", True))
    settings = await asyncssh.SSHServerConnectionOptions.construct(host=host, port=port, **options)
    settings.proxy_command = None

    def factory() -> FastServerConnection:
        conn = FastServerConnection(loop, settings, None, None)
        conn.session_wrapper = session_wrapper
        return conn

    server = await loop.create_server(
        factory, host, port, backlog=backlog, reuse_address=reuse_address
    )
    return asyncssh.SSHAcceptor(server, settings)
