"""Streams of a stored backup turned into what a reader needs: zstd decoded, gzip encoded.

A ``tar.zst`` backup is decoded to its plain tar for a restore (the hardened extractor
reads tar, tar.gz, tar.bz2, tar.xz and zip) and every download is a ``tar.gz`` whatever
was stored, so ``tar.zst`` and restic's plain tar are gzipped on the fly. Decoding is
bounded: output comes in pieces of at most ``CHUNK`` bytes (a small zstd bomb never
becomes one huge buffer) and stops with ``ArchiveRejected`` past ``limit`` bytes. Blocking
iterators: read them from a worker thread. This module must not touch files or volumes.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator
from typing import IO, cast

import zstandard

from lightd.errors import ArchiveRejected

CHUNK = 1024 * 1024


class _ChunkReader:
    """A ``read(size)`` file over an iterator of byte chunks (what zstandard reads)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._buffer = b""

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            self._buffer += chunk
        if size < 0:
            size = len(self._buffer)
        out, self._buffer = self._buffer[:size], self._buffer[size:]
        return out


def zst_decoded(chunks: Iterable[bytes], *, limit: int) -> Iterator[bytes]:
    """The plain bytes of a zstd stream, at most ``limit`` of them."""
    produced = 0
    reader = zstandard.ZstdDecompressor().stream_reader(
        cast(IO[bytes], _ChunkReader(chunks)), read_across_frames=True
    )
    try:
        while True:
            try:
                piece = reader.read(CHUNK)
            except zstandard.ZstdError as exc:
                raise ArchiveRejected(f"Backup is not a valid tar.zst: {exc}") from exc
            if not piece:
                return
            produced += len(piece)
            if produced > limit:
                raise ArchiveRejected(
                    f"Archive expands past {limit} bytes "
                    "(backups.restore_max_total_bytes, volumes.archive_max_ratio)"
                )
            yield piece
    finally:
        reader.close()  # type: ignore[no-untyped-call]


def gzipped(chunks: Iterable[bytes], *, level: int) -> Iterator[bytes]:
    """``chunks`` as one gzip stream."""
    compressor = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    for chunk in chunks:
        if out := compressor.compress(chunk):
            yield out
    yield compressor.flush()
