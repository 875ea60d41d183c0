"""Archives in every flavour lightd must read: tar as gnu, pax, ustar and v7, and zip.

Python's tarfile writes gnu, pax and ustar; v7 (no magic, no user names, no prefix) is
written here by hand, as old tools and some game-server packs still make it. Entries are
given once as :class:`Item` and rendered in any format, so a hostile case is tried in
all of them.
"""

from __future__ import annotations

import io
import stat
import tarfile
import zipfile
from dataclasses import dataclass
from typing import Literal

Kind = Literal["file", "dir", "symlink", "hardlink"]
TAR_FORMATS = {"gnu": tarfile.GNU_FORMAT, "pax": tarfile.PAX_FORMAT, "ustar": tarfile.USTAR_FORMAT}
ALL_TAR = ("gnu", "pax", "ustar", "v7")
ALL = (*ALL_TAR, "zip")


@dataclass(frozen=True)
class Item:
    name: str
    kind: Kind = "file"
    data: bytes = b"x"
    link: str = ""


def file(name: str, data: bytes = b"x") -> Item:
    return Item(name, "file", data)


def folder(name: str) -> Item:
    return Item(name, "dir", b"")


def symlink(name: str, target: str) -> Item:
    return Item(name, "symlink", b"", target)


def hardlink(name: str, target: str) -> Item:
    return Item(name, "hardlink", b"", target)


def _tar_info(item: Item) -> tarfile.TarInfo:
    info = tarfile.TarInfo(item.name)
    info.mode = 0o755 if item.kind == "dir" else 0o644
    info.mtime = 1_700_000_000
    if item.kind == "file":
        info.size = len(item.data)
    else:
        info.type = {"dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE}.get(
            item.kind, tarfile.LNKTYPE
        )
        info.linkname = item.link
    return info


def _v7_block(item: Item) -> bytes:
    name = item.name + ("/" if item.kind == "dir" and not item.name.endswith("/") else "")
    flag = {"file": b"0", "dir": b"5", "symlink": b"2", "hardlink": b"1"}[item.kind]
    size = len(item.data) if item.kind == "file" else 0
    mode = 0o755 if item.kind == "dir" else 0o644

    def octal(value: int, width: int) -> bytes:
        return f"{value:0{width - 1}o}".encode() + b"\x00"

    head = (
        name.encode().ljust(100, b"\x00")
        + octal(mode, 8)
        + octal(0, 8)
        + octal(0, 8)
        + octal(size, 12)
        + octal(1_700_000_000, 12)
        + b" " * 8
        + flag
        + item.link.encode().ljust(100, b"\x00")
    ).ljust(512, b"\x00")
    checksum = f"{sum(head):06o}".encode() + b"\x00 "
    return head[:148] + checksum + head[156:]


def v7_header(name: str = "a.txt") -> bytes:
    """One v7 header block (and its data block) alone, for format detection."""
    return _v7_block(file(name)) + b"x".ljust(512, b"\x00")


def tar_archive(items: list[Item], fmt: str) -> bytes:
    """``items`` as an uncompressed tar of flavour ``fmt`` (gnu, pax, ustar or v7)."""
    if fmt == "v7":
        out = bytearray()
        for item in items:
            out += _v7_block(item)
            if item.kind == "file" and item.data:
                out += item.data.ljust(-(-len(item.data) // 512) * 512, b"\x00")
        return bytes(out + b"\x00" * 1024)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=TAR_FORMATS[fmt]) as tar:
        for item in items:
            tar.addfile(_tar_info(item), io.BytesIO(item.data) if item.kind == "file" else None)
    return buffer.getvalue()


def zip_archive(items: list[Item]) -> bytes:
    """``items`` as a zip; symlinks as Unix-mode entries whose content is the target."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for item in items:
            entry = zipfile.ZipInfo(item.name + ("/" if item.kind == "dir" else ""))
            entry.create_system = 3
            if item.kind == "symlink":
                entry.external_attr = (stat.S_IFLNK | 0o777) << 16
                archive.writestr(entry, item.link)
            elif item.kind == "dir":
                entry.external_attr = (stat.S_IFDIR | 0o755) << 16 | 0x10
                archive.writestr(entry, b"")
            elif item.kind == "file":
                entry.external_attr = (stat.S_IFREG | 0o644) << 16
                archive.writestr(entry, item.data)
            # zip has no hard links: such items are left out
    return buffer.getvalue()


def archive(items: list[Item], fmt: str) -> bytes:
    return zip_archive(items) if fmt == "zip" else tar_archive(items, fmt)
