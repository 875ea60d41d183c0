"""The transfer's tar subset, written and parsed without :mod:`tarfile`'s per-entry cost.

A transfer tar is POSIX (PAX) tar: every entry is a ``x`` extended header carrying its
``mtime`` to the nanosecond (and ``path``, ``linkpath``, ``size``, ``uid``, ``gid``
where the ustar fields cannot hold them) followed by its ustar header block, then a
regular file's data padded to 512 bytes; two zero blocks end it. :mod:`tarfile` reads
it as it reads its own PAX output, and :class:`Reader` reads what :mod:`tarfile` writes
in that format (the previous lightd did), so both ends of a transfer may be either.

:func:`entry_header` builds the blocks of one entry; :class:`Reader` parses decompressed
bytes handed to it in pieces of any size and gives each entry (:class:`Member`) and then
its data as views of those pieces, never copying them. It checks what a parser must
(block checksums, octal and base-256 numbers, PAX record lengths, sizes, the end); what
an entry may do to the disk (names, kinds) is for its caller
(:func:`lightd.transfer.stream.unpack`). Nothing here touches files.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass

BLOCK = 512
END = bytes(2 * BLOCK)
REGULAR = b"0"
DIRECTORY = b"5"
SYMLINK = b"2"
PAX = b"x"
GLOBAL = b"g"
MAX_PAX = 1024 * 1024  # an extended header's records, at most
PAX_NAME = b"././@PaxHeader"
MAGIC = b"ustar\x0000"
SPACES = b" " * 8
ADLER_MOD = 65521


class TarError(ValueError):
    """The bytes are not a well-formed transfer tar."""


def _pax_record(key: str, value: str) -> bytes:
    body = f" {key}={value}\n".encode("utf-8", "surrogateescape")
    length = len(body) + 1
    while len(str(length)) + len(body) != length:
        length = len(str(length)) + len(body)
    return str(length).encode() + body


def _octal(value: int, width: int) -> bytes:
    return b"%0*o\x00" % (width - 1, value)


def _block(
    name: bytes, mode: int, uid: int, gid: int, size: int, mtime: int, kind: bytes, link: bytes
) -> bytes:
    fields = (
        _octal(mode, 8),
        _octal(uid, 8),
        _octal(gid, 8),
        _octal(size, 12),
        _octal(mtime, 12),
    )
    # The checksum counts its own field as eight spaces; zeros add nothing.
    checksum = sum(name) + sum(b"".join(fields)) + 8 * 32 + kind[0] + sum(link) + sum(MAGIC)
    head = b"".join(
        (
            name.ljust(100, b"\x00"),
            *fields,
            b"%06o\x00 " % checksum,
            kind,
            link.ljust(100, b"\x00"),
            MAGIC,
        )
    )
    return head.ljust(BLOCK, b"\x00")


def _fits(text: bytes, width: int) -> bool:
    return len(text) <= width and text.isascii()


def entry_header(
    name: str,
    *,
    kind: bytes,
    mode: int,
    uid: int,
    gid: int,
    size: int,
    mtime_ns: int,
    link: str = "",
) -> bytes:
    """The extended header and the ustar block of one entry (its data follows)."""
    raw_name = name.encode("utf-8", "surrogateescape")
    raw_link = link.encode("utf-8", "surrogateescape")
    seconds, nanos = divmod(mtime_ns, 1_000_000_000)
    records = [_pax_record("mtime", f"{seconds}.{nanos:09d}")]
    if not _fits(raw_name, 100):
        records.append(_pax_record("path", name))
        raw_name = raw_name[:100].decode("ascii", "replace").encode("ascii", "replace")
    if not _fits(raw_link, 100):
        records.append(_pax_record("linkpath", link))
        raw_link = b""
    if size >= 8**11:
        records.append(_pax_record("size", str(size)))
        size = 0
    if not 0 <= uid < 8**7:
        records.append(_pax_record("uid", str(uid)))
        uid = 0
    if not 0 <= gid < 8**7:
        records.append(_pax_record("gid", str(gid)))
        gid = 0
    pax = b"".join(records)
    padding = -len(pax) % BLOCK
    return b"".join(
        (
            _block(PAX_NAME, 0o644, 0, 0, len(pax), 0, PAX, b""),
            pax,
            bytes(padding),
            _block(raw_name, mode, uid, gid, size, max(seconds, 0), kind, raw_link),
        )
    )


def padding(size: int) -> int:
    """The zero bytes after ``size`` bytes of file data."""
    return -size % BLOCK


@dataclass(frozen=True)
class Member:
    """One parsed entry: its name as written, kind (``0``, ``5``, ``2`` or another type
    byte, for the caller to refuse), permission bits, mtime, data size, link text."""

    name: str
    kind: bytes
    mode: int
    mtime_ns: int
    size: int
    link: str


def _number(field: bytes) -> int:
    if field and field[0] & 0x80:  # base-256 (GNU): a large size or a negative time
        value = int.from_bytes(field[1:], "big")
        return value - (1 << (8 * (len(field) - 1))) if field[0] == 0xFF else value
    text = field.split(b"\x00", 1)[0].strip(b" ")
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise TarError(f"bad number field {bytes(field)!r}") from None


def _text(field: bytes) -> str:
    return field.split(b"\x00", 1)[0].decode("utf-8", "surrogateescape")


def _check(block: bytes) -> None:
    stored = _number(block[148:156])
    # adler32's low half is 1 + the byte sum modulo 65521: the sum, in C.
    total = zlib.adler32(block[156:], zlib.adler32(SPACES, zlib.adler32(block[:148])))
    if (total & 0xFFFF) != (1 + stored) % ADLER_MOD:
        raise TarError("bad header checksum")


def _pax(records: bytes) -> dict[str, str]:
    found: dict[str, str] = {}
    position = 0
    while position < len(records):
        space = records.find(b" ", position, position + 20)
        if space < 0:
            raise TarError("bad extended header")
        try:
            length = int(records[position:space])
        except ValueError:
            raise TarError("bad extended header") from None
        end = position + length
        if length <= 0 or end > len(records) or records[end - 1 : end] != b"\n":
            raise TarError("bad extended header")
        key, equals, value = records[space + 1 : end - 1].partition(b"=")
        if not equals:
            raise TarError("bad extended header")
        found[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        position = end
    return found


def _pax_mtime(text: str) -> int | None:
    whole, _, fraction = text.partition(".")
    if whole.lstrip("-").isdigit() and (not fraction or fraction.isdigit()):
        # As lightd writes it: the floor of the seconds, then the nanoseconds past it.
        return int(whole) * 1_000_000_000 + int((fraction + "000000000")[:9])
    return None


class Reader:
    """Parses a transfer tar from decompressed pieces of any size.

    :meth:`feed` takes the next piece and yields ``Member`` for each entry and then
    ``memoryview`` pieces of its data (views into the pieces fed: use them before the
    next :meth:`feed`); :attr:`ended` turns true at the end blocks, after which
    further bytes are ignored. :meth:`close` raises TarError when the bytes stopped
    inside an entry.
    """

    def __init__(self) -> None:
        self._partial = bytearray()  # an incomplete header (or extended records)
        self._want = BLOCK  # bytes the header or records being assembled still needs
        self._data_left = 0  # file data of the current entry still to come
        self._skip = 0  # padding (or ignored data) still to come
        self._pax_size = 0  # >0: assembling an extended header's records
        self._pax_global = False
        self._pax: dict[str, str] = {}
        self.ended = False

    def feed(self, piece: memoryview) -> Iterator[Member | memoryview]:
        view = piece
        while view and not self.ended:
            if self._data_left:
                take = min(self._data_left, len(view))
                self._data_left -= take
                yield view[:take]
                view = view[take:]
                continue
            if self._skip:
                take = min(self._skip, len(view))
                self._skip -= take
                view = view[take:]
                continue
            if not self._partial and len(view) >= self._want:
                whole, view = view[: self._want], view[self._want :]
                member = self._complete(bytes(whole))
            else:
                take = min(self._want - len(self._partial), len(view))
                self._partial += view[:take]
                view = view[take:]
                if len(self._partial) < self._want:
                    return
                member = self._complete(bytes(self._partial))
                self._partial = bytearray()
            if member is not None:
                yield member

    def _complete(self, data: bytes) -> Member | None:
        """A whole header block (or extended records) arrived; the member it starts."""
        if self._pax_size:
            records = _pax(data[: self._pax_size])
            if not self._pax_global:
                self._pax.update(records)
            self._pax_size, self._want = 0, BLOCK
            return None
        if data == END[:BLOCK]:
            self.ended = True  # as tarfile: the first zero block ends the archive
            return None
        _check(data)
        kind = data[156:157] or b"\x00"
        size = _number(data[124:136])
        if kind in (PAX, GLOBAL):
            if not 0 < size <= MAX_PAX:
                if size == 0:
                    return None
                raise TarError("extended header too large")
            self._pax_size, self._pax_global = size, kind == GLOBAL
            self._want = size + padding(size)
            return None
        pax, self._pax = self._pax, {}
        name = _text(data[0:100])
        if data[257:263] == b"ustar\x00" and data[345] != 0:
            name = f"{_text(data[345:500])}/{name}"
        name = pax.get("path", name)
        link = pax.get("linkpath", _text(data[157:257]))
        if "size" in pax:
            try:
                size = int(pax["size"])
            except ValueError:
                raise TarError("bad size record") from None
        if size < 0:
            raise TarError("negative size")
        stamp = _pax_mtime(pax.get("mtime", ""))
        if stamp is None:
            stamp = _number(data[136:148]) * 1_000_000_000
        if kind == b"\x00":
            kind = REGULAR
        if kind == REGULAR:
            self._data_left, self._skip = size, padding(size)
        elif size:
            raise TarError(f"entry {name!r} of kind {kind!r} carries data")
        return Member(
            name=name,
            kind=kind,
            mode=_number(data[100:108]),
            mtime_ns=stamp,
            size=size,
            link=link,
        )

    def close(self) -> None:
        if self.ended:
            return
        if self._data_left or self._skip or self._partial or self._pax_size:
            raise TarError("unexpected end of data")
