"""File operations inside one volume: list, read, write, mkdir, copy, move, delete, chmod.

Every function takes an open :class:`~lightd.fs.beneath.Root` and parsed parts, and
reaches its target through the descriptor walk, so no symlink is ever followed: a link
is listed, moved, copied and deleted as the link itself. Writes and copies go to a
temporary name in the volume root and are renamed into place, so a failure leaves the
old content intact. A file write never replaces a symlink (400, as for any path that
meets one). A move or copy places links where they were not: each relative link it
would place is first resolved from its new folder as the kernel would follow it, and the
whole operation is refused (400 path traversal) if one would lead outside the volume;
absolute links mean the same wherever they are and are kept as they are. A copy makes
its links only once it is in place. Functions here are blocking (callers run them in
threads) and must not know about HTTP.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

from lightd.errors import (
    FileExists,
    FileNotFound,
    InvalidRequest,
    LightdError,
    PathTraversal,
)
from lightd.fs.beneath import (
    DIR_FLAGS,
    DIR_MODE,
    FILE_MODE,
    PATH_FLAGS,
    READ_FLAGS,
    Root,
    closing_fd,
    lstat_at,
    translate,
)
from lightd.fs.paths import (
    FOLDER,
    OTHER,
    TEMP_PREFIX,
    Found,
    Lookup,
    Parts,
    display,
    is_within,
    resolve_link,
    shown,
)

CHUNK = 1024 * 1024
WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

EntryType = Literal["file", "directory", "symlink"]


@dataclass(frozen=True)
class Entry:
    name: str
    type: EntryType
    size: int
    mode: str
    modified_at: int


def temp_name() -> str:
    return f"{TEMP_PREFIX}{secrets.token_hex(8)}"


def entry_type(mode: int) -> EntryType:
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISLNK(mode):
        return "symlink"
    return "file"


def mode_text(mode: int) -> str:
    return f"{stat.S_IMODE(mode):04o}"


@contextlib.contextmanager
def guarded(parts: Parts, *, writing: bool = True) -> Iterator[None]:
    """Turn an ``OSError`` raised inside into the lightd error for ``parts``."""
    try:
        yield
    except OSError as exc:
        raise translate(exc, parts, writing=writing) from exc
    except RecursionError as exc:
        raise InvalidRequest(f"Folder tree too deep: {display(parts)}") from exc


def stat_of(root: Root, parts: Parts) -> os.stat_result:
    with guarded(parts, writing=False):
        found = root.lstat(parts)
    if found is None:
        raise FileNotFound()
    return found


# -- listing and reading ---------------------------------------------------------------


def list_dir(root: Root, parts: Parts) -> list[Entry]:
    """Entries of the folder at ``parts``: folders first, then by name."""
    entries: list[Entry] = []
    with guarded(parts, writing=False), root.dir(parts) as fd, os.scandir(fd) as found:
        for item in found:
            if not parts and item.name.startswith(TEMP_PREFIX):
                continue
            try:
                info = item.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            kind = entry_type(info.st_mode)
            entries.append(
                Entry(
                    name=shown(item.name),
                    type=kind,
                    size=0 if kind == "directory" else info.st_size,
                    mode=mode_text(info.st_mode),
                    modified_at=int(info.st_mtime),
                )
            )
    entries.sort(key=lambda e: (e.type != "directory", e.name))
    return entries


def hand_tree(root: Root, parts: Parts, owner: tuple[int, int]) -> int:
    """Give ``parts`` and everything below it to ``owner``; links are changed, never followed.

    Returns how many entries were changed. The walk goes by descriptors from the volume
    root, so a link planted meanwhile leads nowhere outside.
    """
    if not parts:
        return hand_root(root, owner)
    uid, gid = owner
    changed = 0
    with guarded(parts), root.parent(parts) as (dir_fd, name):
        info = lstat_at(dir_fd, name)
        if info is None:
            return 0
        if (info.st_uid, info.st_gid) != owner:
            os.chown(name, uid, gid, dir_fd=dir_fd, follow_symlinks=False)
            changed += 1
        if not stat.S_ISDIR(info.st_mode):
            return changed
        top = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
    with closing_fd(top):
        for _path, dirs, files, walk_fd in os.fwalk(".", dir_fd=top, follow_symlinks=False):
            for entry in (*dirs, *files):
                found = lstat_at(walk_fd, entry)
                if found is not None and (found.st_uid, found.st_gid) != owner:
                    os.chown(entry, uid, gid, dir_fd=walk_fd, follow_symlinks=False)
                    changed += 1
    return changed


def hand_new(root: Root, parts: Parts, owner: tuple[int, int] | None) -> None:
    """After lightd made ``parts``: its folders on the way and it (whole) go to ``owner``."""
    if owner is None or not parts:
        return
    uid, gid = owner
    for depth in range(1, len(parts)):
        with guarded(parts[:depth]), root.parent(parts[:depth]) as (dir_fd, name):
            found = lstat_at(dir_fd, name)
            if found is not None and stat.S_ISDIR(found.st_mode) and found.st_uid != uid:
                os.chown(name, uid, gid, dir_fd=dir_fd, follow_symlinks=False)
    hand_tree(root, parts, owner)


def hand_root(root: Root, owner: tuple[int, int]) -> int:
    """Give the whole volume (its root folder included) to ``owner``."""
    uid, gid = owner
    changed = 0
    info = os.fstat(root.fd)
    if (info.st_uid, info.st_gid) != owner:
        os.fchown(root.fd, uid, gid)
        changed += 1
    for _path, dirs, files, walk_fd in os.fwalk(".", dir_fd=root.fd, follow_symlinks=False):
        for entry in (*dirs, *files):
            found = lstat_at(walk_fd, entry)
            if found is not None and (found.st_uid, found.st_gid) != owner:
                os.chown(entry, uid, gid, dir_fd=walk_fd, follow_symlinks=False)
                changed += 1
    return changed


def read_limited(root: Root, parts: Parts, limit: int) -> bytes | None:
    """The regular file's bytes (None when it is missing); refuses one larger than ``limit``."""
    try:
        fd, size = open_for_read(root, parts)
    except FileNotFound:
        return None
    with closing_fd(fd):
        if size > limit:
            raise InvalidRequest(f"{display(parts)} is larger than {limit} bytes")
        chunks: list[bytes] = []
        remaining = size
        while remaining > 0:
            chunk = read_chunk(fd, remaining)
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)


def open_for_read(root: Root, parts: Parts) -> tuple[int, int]:
    """A descriptor of the regular file at ``parts`` and its size (the caller closes it)."""
    with guarded(parts, writing=False), root.parent(parts) as (dir_fd, name):
        fd = os.open(name, READ_FLAGS, dir_fd=dir_fd)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InvalidRequest(f"Invalid path: {display(parts)} is not a file")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd, info.st_size


def read_chunk(fd: int, remaining: int) -> bytes:
    return os.read(fd, min(CHUNK, remaining))


# -- writing ---------------------------------------------------------------------------


def _refuse_over(found: os.stat_result | None, parts: Parts) -> None:
    """A file write may replace a regular file only: never a folder, never a symlink.

    Writing at a link's path is a write through the link as far as the caller can tell,
    so it is refused like any other path that meets a link (checked again just before
    the rename, in case a container planted the link meanwhile).
    """
    if found is None:
        return
    if stat.S_ISLNK(found.st_mode):
        raise PathTraversal()
    if stat.S_ISDIR(found.st_mode):
        raise FileExists(f"A folder exists at {display(parts)}")


class AtomicWriter:
    """A new file written under a temporary name in the volume root, renamed on commit.

    Until :meth:`commit` the target is untouched; :meth:`abort` (or a crash, and the
    sweep at the next start) removes the temporary file. Subclasses (the SFTP upload
    of :mod:`lightd.fs.handles`) change the open ``flags``, whether a commit makes
    missing folders, the mode given at commit and how the entry is put in place.
    """

    flags = WRITE_FLAGS
    create_parents = True

    def __init__(
        self,
        root: Root,
        parts: Parts,
        *,
        replace: bool = True,
        owner: tuple[int, int] | None = None,
    ) -> None:
        self.root = root
        self.parts = parts
        self.replace = replace
        self.owner = owner  # uid, gid the file is handed to (the container's user)
        self._check_target()
        self.temp = temp_name()
        with guarded(parts):
            self.fd = os.open(self.temp, self.flags, FILE_MODE, dir_fd=root.fd)
        self.written = 0

    def _check_target(self) -> None:
        try:
            with self.root.parent(self.parts) as (dir_fd, name):
                found = lstat_at(dir_fd, name)
        except FileNotFound:
            return
        except PathTraversal:
            raise
        except InvalidRequest as exc:
            # A file where a folder of the path should be: the path is taken.
            raise FileExists(
                exc.message.replace("Invalid path: ", "A file is in the way: ")
            ) from exc
        except OSError as exc:
            raise translate(exc, self.parts) from exc
        _refuse_over(found, self.parts)
        if found is not None and not self.replace:
            raise FileExists()

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        with guarded(self.parts):
            while view:
                done = os.write(self.fd, view)
                view = view[done:]
                self.written += done

    def commit(self) -> None:
        try:
            with guarded(self.parts):
                os.fsync(self.fd)
                with self.root.parent(self.parts, create=self.create_parents) as (dir_fd, name):
                    old = lstat_at(dir_fd, name)
                    _refuse_over(old, self.parts)
                    if old is not None and not self.replace:
                        raise FileExists()
                    os.fchmod(self.fd, self.final_mode(old))
                    if self.owner is not None:
                        os.fchown(self.fd, *self.owner)
                    self.place(dir_fd, name)
        except BaseException:
            self.abort()
            raise
        os.close(self.fd)
        self.fd = -1

    def final_mode(self, old: os.stat_result | None) -> int:
        """The file's mode at commit: the replaced file's, else the default."""
        if old is not None and stat.S_ISREG(old.st_mode):
            return stat.S_IMODE(old.st_mode)
        return FILE_MODE

    def place(self, dir_fd: int, name: str) -> None:
        """Put the temporary entry at ``name`` (replacing what may be there)."""
        os.rename(self.temp, name, src_dir_fd=self.root.fd, dst_dir_fd=dir_fd)

    def abort(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        with contextlib.suppress(OSError):
            os.unlink(self.temp, dir_fd=self.root.fd)


def write_file(
    root: Root, parts: Parts, data: bytes, *, owner: tuple[int, int] | None = None
) -> None:
    writer = AtomicWriter(root, parts, owner=owner)
    try:
        writer.write(data)
    except BaseException:
        writer.abort()
        raise
    writer.commit()


def make_folder(root: Root, parts: Parts) -> None:
    with guarded(parts), root.parent(parts, create=True) as (dir_fd, name):
        try:
            os.mkdir(name, DIR_MODE, dir_fd=dir_fd)
        except FileExistsError:
            raise FileExists("File already exists") from None


# -- delete, move, chmod ---------------------------------------------------------------


def _clear_target(dir_fd: int, name: str, *, overwrite: bool) -> None:
    """Make room for a move or copy onto ``name``: FileExists unless ``overwrite``."""
    existing = lstat_at(dir_fd, name)
    if existing is None:
        return
    if not overwrite:
        raise FileExists()
    _remove_at(dir_fd, name, existing)


def _remove_at(dir_fd: int, name: str, info: os.stat_result) -> None:
    if stat.S_ISDIR(info.st_mode):
        # rmtree with dir_fd walks by descriptors and never follows a symlink (Linux).
        shutil.rmtree(name, dir_fd=dir_fd)
    else:
        os.unlink(name, dir_fd=dir_fd)


def delete(root: Root, parts: Parts) -> None:
    if not parts:
        raise InvalidRequest("Invalid path: the volume root cannot be deleted")
    with guarded(parts), root.parent(parts) as (dir_fd, name):
        found = lstat_at(dir_fd, name)
        if found is None:
            raise FileNotFound()
        _remove_at(dir_fd, name, found)


# -- links placed by a move or copy ----------------------------------------------------


def volume_lookup(root: Root) -> Lookup:
    """:func:`~lightd.fs.paths.resolve_link`'s view of the volume as it is on disk."""

    def lookup(parts: Parts) -> Found:
        try:
            with root.parent(parts) as (dir_fd, name):
                found = lstat_at(dir_fd, name)
                if found is not None and stat.S_ISLNK(found.st_mode):
                    return Found("link", os.readlink(name, dir_fd=dir_fd))
        except FileNotFound:
            return OTHER
        if found is not None and stat.S_ISDIR(found.st_mode):
            return FOLDER
        return OTHER

    return lookup


def placed_lookup(root: Root, source: Parts, target: Parts, *, moving: bool) -> Lookup:
    """The volume as it will be once ``source`` is at ``target`` (and gone, if moved)."""
    on_disk = volume_lookup(root)

    def lookup(parts: Parts) -> Found:
        if is_within(parts, target):
            return on_disk((*source, *parts[len(target) :]))
        if moving and is_within(parts, source):
            return OTHER
        return on_disk(parts)

    return lookup


LinkCheck = Callable[[Parts, str], None]


def link_check(root: Root, source: Parts, target: Parts, *, moving: bool) -> LinkCheck:
    """A check of one link at ``inner`` below ``source`` with text ``text``, once placed.

    PathTraversal when the link, at ``target`` + ``inner``, would resolve outside the
    volume through the links there (the placed tree's own included).
    """
    view = placed_lookup(root, source, target, moving=moving)

    def check(inner: Parts, text: str) -> None:
        if text.startswith("/"):
            return  # the same outside place wherever the link is: nothing new is reached
        if resolve_link((*target, *inner)[:-1], text, view) is None:
            raise PathTraversal()

    return check


def links_below(root: Root, parts: Parts) -> Iterator[tuple[Parts, str]]:
    """Every symlink at or below ``parts``: its parts relative to ``parts``, and its text."""
    with root.parent(parts) as (dir_fd, name):
        info = lstat_at(dir_fd, name)
        if info is None:
            raise FileNotFound()
        if stat.S_ISLNK(info.st_mode):
            yield (), os.readlink(name, dir_fd=dir_fd)
            return
        if not stat.S_ISDIR(info.st_mode):
            return
        top = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
    stack: list[tuple[int, Parts]] = [(top, ())]
    try:
        while stack:
            fd, inner = stack.pop()
            with closing_fd(fd), os.scandir(fd) as found:
                for item in found:
                    if item.is_symlink():
                        yield (*inner, item.name), os.readlink(item.name, dir_fd=fd)
                    elif item.is_dir(follow_symlinks=False):
                        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                            child = os.open(item.name, DIR_FLAGS, dir_fd=fd)
                            stack.append((child, (*inner, item.name)))
    finally:
        for fd, _ in stack:
            os.close(fd)


def move(root: Root, source: Parts, target: Parts, *, overwrite: bool) -> None:
    if not source or not target:
        raise InvalidRequest("Invalid path: the volume root cannot be moved")
    stat_of(root, source)
    if source == target:
        return
    if is_within(target, source):
        raise InvalidRequest("Cannot move a folder into itself")
    with guarded(source, writing=False):
        check = link_check(root, source, target, moving=True)
        for inner, text in links_below(root, source):
            check(inner, text)
    with guarded(target), root.parent(target, create=True) as (dst_fd, dst_name):
        _clear_target(dst_fd, dst_name, overwrite=overwrite)
        with root.parent(source) as (src_fd, src_name):
            os.rename(src_name, dst_name, src_dir_fd=src_fd, dst_dir_fd=dst_fd)


def change_mode(root: Root, parts: Parts, mode: int) -> None:
    with (
        guarded(parts),
        root.parent(parts) as (dir_fd, name),
        closing_fd(os.open(name, PATH_FLAGS, dir_fd=dir_fd)) as fd,
    ):
        if stat.S_ISLNK(os.fstat(fd).st_mode):
            raise InvalidRequest("Cannot change the mode of a symlink")
        # fchmod refuses O_PATH descriptors; the /proc link names this very inode.
        os.chmod(f"/proc/self/fd/{fd}", mode)


# -- copy ------------------------------------------------------------------------------


def copy_data(src: int, dst: int) -> None:
    """Copy all of ``src`` to ``dst`` (kernel-side where the filesystem allows)."""
    try:
        while os.copy_file_range(src, dst, 1 << 30):
            pass
        return
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
            raise
    while chunk := os.read(src, CHUNK):
        view = memoryview(chunk)
        while view:
            view = view[os.write(dst, view) :]


def copy_entry(
    src_dir: int,
    name: str,
    dst_dir: int,
    dst_name: str,
    *,
    check: LinkCheck | None = None,
    inner: Parts = (),
    deferred: list[tuple[Parts, str]] | None = None,
) -> None:
    """Copy one entry (recursively); symlinks are copied as links, special files skipped.

    ``check`` sees every link (its parts below the copied entry, and the very text that
    is copied) before it is made, and raises to stop the copy. With ``deferred``, links
    are listed there instead of made, for the caller to make at their final place.
    """
    info = lstat_at(src_dir, name)
    if info is None:
        return
    if stat.S_ISLNK(info.st_mode):
        text = os.readlink(name, dir_fd=src_dir)
        if check is not None:
            check(inner, text)
        if deferred is not None:
            deferred.append((inner, text))
        else:
            os.symlink(text, dst_name, dir_fd=dst_dir)
    elif stat.S_ISDIR(info.st_mode):
        os.mkdir(dst_name, stat.S_IMODE(info.st_mode) | 0o700, dir_fd=dst_dir)
        with (
            closing_fd(os.open(name, DIR_FLAGS, dir_fd=src_dir)) as sfd,
            closing_fd(os.open(dst_name, DIR_FLAGS, dir_fd=dst_dir)) as dfd,
            os.scandir(sfd) as children,
        ):
            for child in children:
                copy_entry(
                    sfd,
                    child.name,
                    dfd,
                    child.name,
                    check=check,
                    inner=(*inner, child.name),
                    deferred=deferred,
                )
    elif stat.S_ISREG(info.st_mode):
        with closing_fd(os.open(name, READ_FLAGS, dir_fd=src_dir)) as sfd:
            if not stat.S_ISREG(os.fstat(sfd).st_mode):
                return
            os.set_blocking(sfd, True)
            with closing_fd(
                os.open(dst_name, WRITE_FLAGS, stat.S_IMODE(info.st_mode), dir_fd=dst_dir)
            ) as dfd:
                copy_data(sfd, dfd)


def copy(root: Root, source: Parts, target: Parts, *, overwrite: bool) -> None:
    if not target:
        raise InvalidRequest("Invalid path: the volume root cannot be replaced")
    stat_of(root, source)
    if is_within(target, source):
        raise InvalidRequest("Cannot copy a folder into itself")
    if not overwrite and root_lstat(root, target) is not None:
        raise FileExists()
    temp = temp_name()
    # Links are made only once the copy is in place: in the temporary folder at the
    # volume root a relative link would lead somewhere else (outside, even) meanwhile.
    links: list[tuple[Parts, str]] = []
    try:
        with guarded(source), root.parent(source) as (src_fd, src_name):
            check = link_check(root, source, target, moving=False)
            copy_entry(src_fd, src_name, root.fd, temp, check=check, deferred=links)
        with guarded(target), root.parent(target, create=True) as (dst_fd, dst_name):
            _clear_target(dst_fd, dst_name, overwrite=overwrite)
            if links and not links[0][0]:  # the source is a link itself
                os.symlink(links[0][1], dst_name, dir_fd=dst_fd)
                return
            os.rename(temp, dst_name, src_dir_fd=root.fd, dst_dir_fd=dst_fd)
    except BaseException:
        discard(root, temp)
        raise
    with guarded(target):
        for inner, text in links:
            with root.parent((*target, *inner)) as (dir_fd, name):
                os.symlink(text, name, dir_fd=dir_fd)


def size_of(root: Root, parts: Parts) -> int:
    """Bytes a copy of ``parts`` will write: file sizes plus a block per folder and link."""
    with guarded(parts, writing=False), root.parent(parts) as (dir_fd, name):
        info = lstat_at(dir_fd, name)
        if info is None:
            raise FileNotFound()
        if not stat.S_ISDIR(info.st_mode):
            return info.st_size if stat.S_ISREG(info.st_mode) else 4096
        top = os.open(name, DIR_FLAGS, dir_fd=dir_fd)
    total = 4096
    stack = [top]
    try:
        while stack:
            with closing_fd(stack.pop()) as fd, os.scandir(fd) as found:
                for item in found:
                    entry = item.stat(follow_symlinks=False)
                    if stat.S_ISREG(entry.st_mode):
                        total += entry.st_size
                    else:
                        total += 4096
                        if stat.S_ISDIR(entry.st_mode):
                            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                                stack.append(os.open(item.name, DIR_FLAGS, dir_fd=fd))
    finally:
        for fd in stack:
            os.close(fd)
    return total


def regular_size(root: Root, parts: Parts) -> int:
    """The size of the regular file at ``parts`` (0 when none is there)."""
    try:
        found = root_lstat(root, parts)
    except LightdError:
        return 0
    return found.st_size if found is not None and stat.S_ISREG(found.st_mode) else 0


def root_lstat(root: Root, parts: Parts) -> os.stat_result | None:
    with guarded(parts, writing=False):
        return root.lstat(parts)


def discard(root: Root, name: str) -> None:
    """Remove a temporary entry of the volume root, whatever it is; errors are ignored."""
    with contextlib.suppress(OSError, LightdError):
        found = lstat_at(root.fd, name)
        if found is not None:
            _remove_at(root.fd, name, found)


def sweep_temp(root: Root) -> int:
    """Remove what an interrupted operation left in the volume root; returns how many."""
    removed = 0
    with os.scandir(root.fd) as found:
        names = [item.name for item in found if item.name.startswith(TEMP_PREFIX)]
    for name in names:
        discard(root, name)
        removed += 1
    return removed
