"""The SFTP packet layer's own request path (lightd.sftp.protocol) against the real server.

A raw SFTP client over asyncssh's ``sftp`` subsystem writes the bytes of each request
itself, so the cuts between pieces of channel data are the test's: a request split
across pieces, several requests in one piece, a request that is not a write between
writes, a write to a handle that is not open, short and truncated writes. Each answer
must be the one asyncssh's own dispatch gives, in order, and the file must hold exactly
what was written; the ``/metrics`` counters show the writes took the inline path.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncssh
import httpx
from asyncssh.sftp import (
    FX_BAD_MESSAGE,
    FX_OK,
    FXP_ATTRS,
    FXP_CLOSE,
    FXP_HANDLE,
    FXP_INIT,
    FXP_LSTAT,
    FXP_OPEN,
    FXP_STATUS,
    FXP_VERSION,
    FXP_WRITE,
    SFTPInvalidHandle,
)

from tests.sftp.conftest import Account, connect

_WRITE_CREATE_TRUNCATE = 0x02 | 0x08 | 0x10  # FXF_WRITE | FXF_CREAT | FXF_TRUNC
# A status answer's tail after the code: empty message and language tag (asyncssh's OK).
_OK = FX_OK.to_bytes(4, "big") + bytes(8)


def string(value: bytes) -> bytes:
    return len(value).to_bytes(4, "big") + value


def packet(pkttype: int, pktid: int, payload: bytes) -> bytes:
    body = bytes((pkttype,)) + pktid.to_bytes(4, "big") + payload
    return len(body).to_bytes(4, "big") + body


def write(pktid: int, handle: bytes, offset: int, data: bytes) -> bytes:
    return packet(FXP_WRITE, pktid, string(handle) + offset.to_bytes(8, "big") + string(data))


@dataclass
class Raw:
    """Raw SFTP bytes both ways over one ``sftp`` subsystem channel."""

    reader: asyncssh.SSHReader[bytes]
    writer: asyncssh.SSHWriter[bytes]

    async def send(self, *pieces: bytes) -> None:
        """Each piece its own channel data message, the server given time to take it."""
        for piece in pieces:
            self.writer.write(piece)
            await self.writer.drain()
            await asyncio.sleep(0.05)

    async def answer(self) -> tuple[int, int, bytes]:
        """(type, request id, the rest) of the next answer."""
        size = int.from_bytes(await self.reader.readexactly(4), "big")
        body = await self.reader.readexactly(size)
        return body[0], int.from_bytes(body[1:5], "big"), body[5:]

    async def status(self, pktid: int) -> bytes:
        pkttype, got, rest = await self.answer()
        assert (pkttype, got) == (FXP_STATUS, pktid), (pkttype, got, rest)
        return rest

    async def open_for_write(self, pktid: int, path: bytes) -> bytes:
        flags = _WRITE_CREATE_TRUNCATE.to_bytes(4, "big")
        await self.send(packet(FXP_OPEN, pktid, string(path) + flags + bytes(4)))
        pkttype, got, rest = await self.answer()
        assert (pkttype, got) == (FXP_HANDLE, pktid), (pkttype, got, rest)
        return rest[4 : 4 + int.from_bytes(rest[:4], "big")]

    async def close(self, pktid: int, handle: bytes) -> None:
        await self.send(packet(FXP_CLOSE, pktid, string(handle)))
        assert await self.status(pktid) == _OK


@asynccontextmanager
async def raw_session(account: Account) -> AsyncIterator[Raw]:
    async with connect(account.port, account.username, account.password) as conn:
        writer, reader, _ = await conn.open_session(subsystem="sftp", encoding=None)
        raw = Raw(reader, writer)
        writer.write((5).to_bytes(4, "big") + bytes((FXP_INIT,)) + (3).to_bytes(4, "big"))
        size = int.from_bytes(await reader.readexactly(4), "big")
        version = await reader.readexactly(size)
        assert version[0] == FXP_VERSION and version[1:5] == b"\x00\x00\x00\x03"
        try:
            yield raw
        finally:
            writer.close()


def counters(api: httpx.Client) -> tuple[float, float]:
    """(writes answered inline, requests joined from several pieces) from ``/metrics``."""
    found = {}
    for line in api.get("/metrics").text.splitlines():
        name, _, value = line.partition(" ")
        if name in ("lightd_sftp_inline_writes", "lightd_sftp_joined_requests"):
            found[name] = float(value)
    return found["lightd_sftp_inline_writes"], found["lightd_sftp_joined_requests"]


def test_a_write_split_across_pieces_is_joined(account: Account, api: httpx.Client) -> None:
    data = bytes(range(256)) * 40

    async def run() -> None:
        async with raw_session(account) as raw:
            handle = await raw.open_for_write(1, b"/split.bin")
            before = counters(api)
            request = write(2, handle, 0, data)
            # The length alone, then the header cut inside the handle, then the rest.
            await raw.send(request[:3], request[3:12], request[12:5000], request[5000:])
            assert await raw.status(2) == _OK
            after = counters(api)
            assert after[0] - before[0] == 1
            assert after[1] - before[1] == 1
            await raw.close(3, handle)

    asyncio.run(run())
    assert (account.volume / "split.bin").read_bytes() == data


def test_several_writes_in_one_piece_are_answered_in_order(
    account: Account, api: httpx.Client
) -> None:
    chunks = [bytes([i]) * (1000 + i) for i in range(10)]

    async def run() -> None:
        async with raw_session(account) as raw:
            handle = await raw.open_for_write(1, b"/many.bin")
            before = counters(api)
            offsets = [sum(len(c) for c in chunks[:i]) for i in range(len(chunks))]
            # Out of order on disk on purpose: the offsets are the client's.
            order = list(reversed(range(len(chunks))))
            await raw.send(b"".join(write(10 + i, handle, offsets[i], chunks[i]) for i in order))
            for i in order:
                assert await raw.status(10 + i) == _OK
            after = counters(api)
            assert after[0] - before[0] == len(chunks)
            assert after[1] - before[1] == 0
            await raw.close(30, handle)

    asyncio.run(run())
    assert (account.volume / "many.bin").read_bytes() == b"".join(chunks)


def test_a_request_between_writes_keeps_the_answers_in_order(account: Account) -> None:
    async def run() -> None:
        async with raw_session(account) as raw:
            handle = await raw.open_for_write(1, b"/mixed.bin")
            await raw.send(
                write(2, handle, 0, b"a" * 3000)
                + packet(FXP_LSTAT, 3, string(b"/"))
                + packet(FXP_LSTAT, 4, string(b"/missing"))
                + write(5, handle, 3000, b"b" * 3000)
            )
            assert await raw.status(2) == _OK
            pkttype, pktid, _ = await raw.answer()
            assert (pkttype, pktid) == (FXP_ATTRS, 3)
            missing = await raw.status(4)
            assert int.from_bytes(missing[:4], "big") != FX_OK
            assert await raw.status(5) == _OK
            await raw.close(6, handle)

    asyncio.run(run())
    assert (account.volume / "mixed.bin").read_bytes() == b"a" * 3000 + b"b" * 3000


def test_a_bad_handle_gets_asyncssh_s_answer_and_the_session_goes_on(
    account: Account, api: httpx.Client
) -> None:
    async def run() -> None:
        async with raw_session(account) as raw:
            handle = await raw.open_for_write(1, b"/bad-handle.bin")
            before = counters(api)
            await raw.send(
                write(2, handle, 0, b"x" * 100)
                + write(3, b"no-such-handle", 0, b"y" * 100)
                + write(4, handle, 100, b"z" * 100)
            )
            assert await raw.status(2) == _OK
            assert await raw.status(3) == SFTPInvalidHandle("Invalid file handle").encode(3)
            assert await raw.status(4) == _OK
            assert counters(api)[0] - before[0] == 2
            await raw.close(5, handle)

    asyncio.run(run())
    assert (account.volume / "bad-handle.bin").read_bytes() == b"x" * 100 + b"z" * 100


def test_short_writes_are_bad_messages_and_write_nothing(account: Account) -> None:
    async def run() -> None:
        async with raw_session(account) as raw:
            handle = await raw.open_for_write(1, b"/short.bin")
            full = write(0, handle, 0, b"q" * 64)
            body = full[4:]
            # Data shorter than its length says; a header cut inside the offset; no
            # handle at all; trailing bytes after the data (version 3 checks the end).
            truncated = packet(FXP_WRITE, 2, body[5:-10])
            no_offset = packet(FXP_WRITE, 3, string(handle) + bytes(3))
            bare = packet(FXP_WRITE, 4, b"")
            trailing = packet(FXP_WRITE, 5, body[5:] + b"!")
            await raw.send(truncated + no_offset + bare + trailing)
            for pktid in (2, 3, 4, 5):
                answer = await raw.status(pktid)
                assert int.from_bytes(answer[:4], "big") == FX_BAD_MESSAGE, (pktid, answer)
            await raw.send(write(6, handle, 0, b"ok"))
            assert await raw.status(6) == _OK
            await raw.close(7, handle)

    asyncio.run(run())
    assert Path(account.volume / "short.bin").read_bytes() == b"ok"
