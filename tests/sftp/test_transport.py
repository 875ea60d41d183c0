"""lightd.sftp.transport's receive openers against asyncssh's own ciphers, no network.

A packet sealed by asyncssh's encryption object must open to the same bytes through
lightd's opener; a tampered one must not open, and after the opener's ``rewind`` asyncssh's
own decryption of the same bytes (the fallback the connection takes) must agree with the
sender, so the nonce sequence of both directions stays in step.
"""

from __future__ import annotations

import os

import pytest
from asyncssh.encryption import ChachaEncryption, GCMEncryption

from lightd.sftp import transport


def _pair(kind: str) -> tuple[object, object]:
    """(sender, receiver) asyncssh encryption objects for one direction of one key."""
    if kind == "gcm":
        key, iv = os.urandom(16), os.urandom(12)
        return GCMEncryption.new("aes128-gcm", key, iv), GCMEncryption.new("aes128-gcm", key, iv)
    key = os.urandom(64)
    return (
        ChachaEncryption.new("chacha20-poly1305", key, b""),
        ChachaEncryption.new("chacha20-poly1305", key, b""),
    )


def _seal(sender: object, seq: int, body: bytes) -> bytes:
    header = (len(body)).to_bytes(4, "big")
    packet, mac = sender.encrypt_packet(seq, header, body)  # type: ignore[attr-defined]
    return bytes(packet) + bytes(mac)


@pytest.mark.parametrize("kind", ["gcm", "chacha"])
def test_opener_agrees_with_asyncssh_and_rewinds_in_step(kind: str) -> None:
    sender, receiver = _pair(kind)
    opener = transport.install_fast(receiver)
    assert opener is not None
    bodies = [os.urandom(size) for size in (32, 1024, 32 * 1024 + 16, 48)]
    for seq, body in enumerate(bodies):
        wire = _seal(sender, seq, body)
        assert opener.packet_length(seq, wire[:4]) == len(body)
        if seq % 2:
            # The fallback: lightd opens it, decides asyncssh must handle it, rewinds;
            # asyncssh's own decrypt_packet (installed as lightd's) opens the same bytes.
            assert opener.open_packet(seq, memoryview(wire)) == body
            opener.rewind()
            got = receiver.decrypt_packet(  # type: ignore[attr-defined]
                seq, wire[:16], wire[16:-16], 4, wire[-16:]
            )
            assert got == body
        else:
            assert opener.open_packet(seq, memoryview(wire)) == body


@pytest.mark.parametrize("kind", ["gcm", "chacha"])
def test_a_tampered_packet_does_not_open(kind: str) -> None:
    sender, receiver = _pair(kind)
    opener = transport.install_fast(receiver)
    assert opener is not None
    wire = bytearray(_seal(sender, 0, os.urandom(64)))
    wire[20] ^= 1
    assert opener.open_packet(0, memoryview(wire)) is None
    opener.rewind()
    # asyncssh, given the same bytes after the rewind, refuses them too (MAC error).
    raw = bytes(wire)
    assert receiver.decrypt_packet(0, raw[:16], raw[16:-16], 4, raw[-16:]) is None  # type: ignore[attr-defined]
