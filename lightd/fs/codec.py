"""Compression streams that run the codec in a second thread, like ``tar | gzip``.

``zlib``, ``bz2`` and ``lzma`` release the GIL while they work, so building or parsing
the tar stream in one thread while another compresses or decompresses uses two cores,
as GNU tar does with its gzip child. Queues are bounded, so memory stays at a few
megabytes whatever the archive size, and decompression output is produced in bounded
pieces (a small bomb never becomes one huge buffer). This module must not know about
volumes or paths: it moves bytes between a descriptor and a file-like object.
"""

from __future__ import annotations

import bz2
import io
import lzma
import os
import queue
import threading
import zlib
from collections.abc import Callable
from typing import Protocol

from lightd.errors import ArchiveRejected

CHUNK = 1024 * 1024
OUT_PIECE = 4 * 1024 * 1024
QUEUE_DEPTH = 8


class Compressor(Protocol):
    def compress(self, data: bytes, /) -> bytes: ...
    def flush(self) -> bytes: ...


def compressor_for(kind: str, level: int = 6) -> Compressor | None:
    """A fresh compressor for ``kind`` (``gz``, ``bz2``, ``xz``), None for plain tar."""
    if kind == "gz":
        return zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    if kind == "bz2":
        return bz2.BZ2Compressor(9)
    if kind == "xz":
        return lzma.LZMACompressor(format=lzma.FORMAT_XZ, preset=level)
    return None


def write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class CompressingWriter:
    """A write-only file object: data is compressed in a worker thread and written to ``fd``.

    ``tell()`` counts uncompressed bytes (all :mod:`tarfile` needs). :meth:`close` flushes,
    waits for the worker and re-raises its error, if any.
    """

    def __init__(self, fd: int, compressor: Compressor | None) -> None:
        self.fd = fd
        self._compressor = compressor
        self._buffer = bytearray()
        self._position = 0
        self._queue: queue.Queue[bytes | None] = queue.Queue(QUEUE_DEPTH)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="lightd-compress", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        try:
            while (chunk := self._queue.get()) is not None:
                out = self._compressor.compress(chunk) if self._compressor else chunk
                if out:
                    write_all(self.fd, out)
            if self._compressor is not None:
                write_all(self.fd, self._compressor.flush())
        except BaseException as exc:
            self._error = exc
            # Keep draining so the producer never blocks on a full queue.
            while self._queue.get() is not None:
                pass

    def _put(self, data: bytes) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(data)

    def write(self, data: bytes) -> int:
        size = len(data)
        self._position += size
        if self._buffer or size < CHUNK:
            self._buffer += data
            if len(self._buffer) >= CHUNK:
                self._put(bytes(self._buffer))
                self._buffer.clear()
        else:
            self._put(bytes(data))
        return size

    def tell(self) -> int:
        return self._position

    def flush(self) -> None:
        """Buffered bytes stay until close: compressing tiny pieces would waste time."""

    def close(self) -> None:
        if self._buffer:
            self._put(bytes(self._buffer))
            self._buffer.clear()
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error

    def abort(self) -> None:
        """Stop the worker without raising (used when the producer failed)."""
        self._buffer.clear()
        self._queue.put(None)
        self._thread.join()


class _Decoder(Protocol):
    def feed(self, data: bytes) -> bytes: ...
    def more(self) -> bytes: ...
    @property
    def eof(self) -> bool: ...
    @property
    def unused(self) -> bytes: ...


class _ZlibDecoder:
    def __init__(self) -> None:
        self._d = zlib.decompressobj(16 + zlib.MAX_WBITS)

    def feed(self, data: bytes) -> bytes:
        return self._d.decompress(data, OUT_PIECE)

    def more(self) -> bytes:
        tail = self._d.unconsumed_tail
        return self._d.decompress(tail, OUT_PIECE) if tail else b""

    @property
    def eof(self) -> bool:
        return self._d.eof

    @property
    def unused(self) -> bytes:
        return self._d.unused_data


class _StdDecoder:
    """bz2 and lzma share one interface (``max_length``, ``needs_input``)."""

    def __init__(self, factory: Callable[[], bz2.BZ2Decompressor | lzma.LZMADecompressor]):
        self._d = factory()

    def feed(self, data: bytes) -> bytes:
        return self._d.decompress(data, OUT_PIECE)

    def more(self) -> bytes:
        if self._d.eof or self._d.needs_input:
            return b""
        return self._d.decompress(b"", OUT_PIECE)

    @property
    def eof(self) -> bool:
        return self._d.eof

    @property
    def unused(self) -> bytes:
        return self._d.unused_data


def decoder_for(kind: str) -> Callable[[], _Decoder] | None:
    if kind == "gz":
        return _ZlibDecoder
    if kind == "bz2":
        return lambda: _StdDecoder(bz2.BZ2Decompressor)
    if kind == "xz":
        return lambda: _StdDecoder(lzma.LZMADecompressor)
    return None


class DecompressingReader:
    """A read-only file object over ``fd``, decompressed in a worker thread.

    Concatenated members (``pigz``, ``pbzip2`` output) are read one after another. A
    damaged stream is :class:`~lightd.errors.ArchiveRejected`.
    """

    def __init__(self, fd: int, kind: str, *, check: Callable[[int], None] | None = None) -> None:
        self.fd = fd
        self._check = check
        self._produced = 0
        self._factory = decoder_for(kind)
        self._queue: queue.Queue[bytes | BaseException | None] = queue.Queue(QUEUE_DEPTH)
        self._pending = b""
        self._pos = 0
        self._offset = 0
        self._done = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, name="lightd-decompress", daemon=True)
        self._thread.start()

    def _emit(self, data: bytes | BaseException | None) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(data, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _work(self) -> None:
        try:
            self._decode()
        except (OSError, EOFError, zlib.error, lzma.LZMAError, ValueError) as exc:
            self._emit_error(ArchiveRejected(f"Archive is damaged: {exc}"))
        except BaseException as exc:
            self._emit_error(exc)
        else:
            self._emit_end()

    def _emit_error(self, exc: BaseException) -> None:
        self._emit(exc)

    def _emit_end(self) -> None:
        self._emit(None)

    def _decode(self) -> None:
        factory = self._factory
        decoder = factory() if factory else None
        started = False
        while not self._stop.is_set():
            data = os.read(self.fd, CHUNK)
            if not data:
                break
            if decoder is None or factory is None:
                if not self._emit(data):
                    return
                continue
            while data:
                if decoder.eof:
                    # Another member follows; ignore trailing zero padding.
                    if not data.strip(b"\x00"):
                        break
                    decoder = factory()
                out = decoder.feed(data)
                started = True
                while out:
                    if not self._emit(out):
                        return
                    out = decoder.more()
                data = decoder.unused if decoder.eof else b""
        if decoder is not None and started and not decoder.eof:
            raise EOFError("compressed stream ends early")

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            parts = [self._pending[self._pos :]]
            while (piece := self._next()) is not None:
                parts.append(piece)
            self._pending, self._pos = b"", 0
            data = b"".join(parts)
        elif self._pos + size <= len(self._pending):
            data = self._pending[self._pos : self._pos + size]
            self._pos += size
        else:
            parts = [self._pending[self._pos :]]
            have = len(parts[0])
            self._pending, self._pos = b"", 0
            while have < size:
                piece = self._next()
                if piece is None:
                    break
                need = size - have
                if len(piece) > need:
                    parts.append(piece[:need])
                    self._pending, self._pos = piece, need
                    have = size
                else:
                    parts.append(piece)
                    have += len(piece)
            data = b"".join(parts)
        self._offset += len(data)
        return data

    def _next(self) -> bytes | None:
        if self._done:
            return None
        item = self._queue.get()
        if item is None:
            self._done = True
            return None
        if isinstance(item, BaseException):
            self._done = True
            raise item
        self._produced += len(item)
        if self._check is not None:
            self._check(self._produced)
        return item

    def tell(self) -> int:
        return self._offset

    def seek(self, position: int, whence: int = os.SEEK_SET) -> int:
        """Forward only (skips data): enough for :class:`tarfile.TarFile` reading in order."""
        if whence == os.SEEK_CUR:
            position += self._offset
        elif whence != os.SEEK_SET:
            raise io.UnsupportedOperation("can only seek from the start or the current position")
        if position < self._offset:
            raise io.UnsupportedOperation("cannot seek backwards in a compressed stream")
        while self._offset < position:
            if not self.read(min(position - self._offset, CHUNK)):
                break
        return self._offset

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
