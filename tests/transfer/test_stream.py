"""The transfer tar on real folders: a full pass, then a final pass of only the changes.

Hostile archives (absolute names, ``..``, a file through a link the archive made) are
refused; special files are not sent.
"""

from __future__ import annotations

import io
import itertools
import os
import tarfile
from pathlib import Path

import pytest

from lightd.errors import ArchiveRejected, PathTraversal
from lightd.fs.beneath import Root
from lightd.transfer import stream
from lightd.transfer.stream import (
    MAX_DATA_FRAME,
    MAX_PIECE,
    WRITEBACK_STEP,
    Compression,
    Folder,
    FrameReader,
    Signature,
    finish_folders,
    frame,
    pack,
    pack_entries,
    plan,
    remove,
    split,
    unpack,
    zstd_threads,
)


def snapshot(top: Path) -> dict[str, tuple[object, ...]]:
    found: dict[str, tuple[object, ...]] = {}
    for folder, dirs, files in os.walk(top):
        for name in dirs + files:
            path = Path(folder) / name
            info = os.lstat(path)
            key = str(path.relative_to(top))
            if path.is_symlink():
                found[key] = ("link", os.readlink(path), info.st_mtime_ns)
            elif path.is_dir():
                found[key] = ("dir", info.st_mode, info.st_mtime_ns)
            elif not path.is_file():
                found[key] = ("special",)
            else:
                found[key] = ("file", info.st_mode, info.st_mtime_ns, path.read_bytes())
    return found


def send(
    source: Path, target: Path, compression: Compression, **kw: dict[str, Signature] | None
) -> tuple[int, list[str]]:
    data = bytearray()
    with Root(source) as root:
        gone = pack(root, data.extend, compression=compression, **kw)
    with Root(target) as root:
        remove(root, gone)
        return unpack(io.BytesIO(bytes(data)), root, compression), gone


@pytest.mark.parametrize("compression", ["zstd", "gzip"])
def test_two_passes_give_an_identical_tree(tmp_path: Path, compression: Compression) -> None:
    source, target = tmp_path / "src", tmp_path / "dst"
    (source / "world" / "region").mkdir(parents=True)
    target.mkdir()
    (source / "world" / "region" / "r.mca").write_bytes(os.urandom(300_000))
    (source / "keep.txt").write_bytes(b"same")
    (source / "gone.txt").write_bytes(b"soon deleted")
    (source / "gone-dir" / "deep").mkdir(parents=True)
    (source / "gone-dir" / "deep" / "x").write_bytes(b"x")
    (source / "becomes-dir").write_bytes(b"file first")
    os.symlink("world/region/r.mca", source / "latest")
    os.mkfifo(source / "fifo")
    os.chmod(source / "keep.txt", 0o604)
    seen: dict[str, Signature] = {}
    first, _ = send(source, target, compression, seen=seen)
    assert first == len(snapshot(source)) - 1  # everything but the FIFO
    # The server keeps running: it changes, adds, deletes and swaps kinds.
    (source / "world" / "region" / "r.mca").write_bytes(os.urandom(300_000))
    (source / "new.log").write_bytes(b"new")
    (source / "gone.txt").unlink()
    (source / "gone-dir" / "deep" / "x").unlink()
    (source / "gone-dir" / "deep").rmdir()
    (source / "gone-dir").rmdir()
    (source / "becomes-dir").unlink()
    (source / "becomes-dir").mkdir()
    (source / "latest").unlink()
    os.symlink("keep.txt", source / "latest")
    os.utime(source / "world", (1_500_000_000, 1_500_000_000))
    second, gone = send(source, target, compression, since=seen)
    assert sorted(gone) == ["gone-dir", "gone-dir/deep", "gone-dir/deep/x", "gone.txt"]
    unchanged = {"keep.txt"}
    assert second == len(snapshot(source)) - len(unchanged) - 1  # the FIFO is never sent
    expected = snapshot(source)
    del expected["fifo"]
    assert snapshot(target) == expected


def owners(top: Path) -> set[tuple[int, int]]:
    """The (uid, gid) of ``top`` and of every entry below it, links themselves."""
    found = {(os.lstat(top).st_uid, os.lstat(top).st_gid)}
    for folder, dirs, files in os.walk(top):
        for name in dirs + files:
            info = os.lstat(Path(folder) / name)
            found.add((info.st_uid, info.st_gid))
    return found


@pytest.mark.skipif(os.geteuid() != 0, reason="giving entries to another user needs root")
def test_unpacking_gives_every_entry_to_the_owner(tmp_path: Path) -> None:
    """With an owner every entry written (the root, folders, files, empty files, links,
    on the second stream too) goes to it as it is made, whatever owners the archive
    names; modes and mtimes stay the archive's. Without one, lightd's own stay."""
    source, target, plain = tmp_path / "src", tmp_path / "dst", tmp_path / "plain"
    for top in (source, target, plain):
        top.mkdir()
    tricky_tree(source)
    (source / "a" / "b").mkdir(parents=True)
    (source / "a" / "b" / "big").write_bytes(os.urandom(200_000))
    (source / "a" / "empty").write_bytes(b"")
    os.chown(source / "a" / "empty", 4321, 4321)
    os.chmod(source / "a", 0o750)
    os.utime(source / "a", ns=(1, 1_500_000_000_000_000_007))
    owner = (12345, 23456)
    with Root(source) as root:
        entries, _ = plan(root)
        streams = [bytearray(), bytearray()]
        for data, group in zip(streams, split(entries, 2), strict=True):
            pack_entries(root, group, data.extend, "zstd", threads=zstd_threads(2, 2))
    for top, given in ((target, owner), (plain, None)):
        folders: list[Folder] = []
        with Root(top) as root:
            for data in streams:
                unpack(io.BytesIO(bytes(data)), root, "zstd", folders=folders, owner=given)
            finish_folders(root, folders, owner=given)
    assert owners(target) == {owner}
    assert os.stat("/etc/passwd").st_uid == 0  # a link's target is never touched
    assert owners(plain) == {(os.getuid(), os.getgid())}
    expected = snapshot(source)
    assert snapshot(target) == expected == snapshot(plain)


def test_large_files_start_their_writeback_in_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unpacking starts the writeback of a large file's bytes every WRITEBACK_STEP, in
    ranges that cover the whole file once; small files are left to the final flush."""
    started: list[tuple[str, int, int]] = []
    real = stream.start_writeback

    def spy(fd: int, offset: int, length: int) -> None:
        started.append((Path(os.readlink(f"/proc/self/fd/{fd}")).name, offset, length))
        real(fd, offset, length)

    monkeypatch.setattr(stream, "start_writeback", spy)
    source, target = tmp_path / "src", tmp_path / "dst"
    source.mkdir()
    target.mkdir()
    size = 2 * WRITEBACK_STEP + WRITEBACK_STEP // 2 + 123
    (source / "big").write_bytes(os.urandom(size))
    (source / "step").write_bytes(os.urandom(WRITEBACK_STEP))
    for index in range(5):
        (source / f"small{index}").write_bytes(os.urandom(5000))
    send(source, target, "zstd")
    assert snapshot(target) == snapshot(source)
    assert {name for name, _, _ in started} == {"big", "step"}
    for name, length in (("big", size), ("step", WRITEBACK_STEP)):
        ranges = [(offset, count) for found, offset, count in started if found == name]
        ends = itertools.accumulate(count for _, count in ranges[:-1])
        assert [offset for offset, _ in ranges] == [0, *ends]
        assert sum(count for _, count in ranges) == length
        assert all(count >= WRITEBACK_STEP for _, count in ranges[:-1])
    assert len([name for name, _, _ in started if name == "big"]) == 3


def test_zstd_workers_share_the_cores() -> None:
    """One stream compresses on every core; concurrent streams share them out, and
    compress in their own thread once they alone fill the cores."""
    assert zstd_threads(1, 2) == -1
    assert zstd_threads(2, 2) == 0
    assert zstd_threads(4, 4) == 0
    assert zstd_threads(3, 8) == 2
    assert zstd_threads(2, 8) == 4


def hostile(entries: list[tuple[str, bytes | str]]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for name, content in entries:
            info = tarfile.TarInfo(name)
            if isinstance(content, str):
                info.type = tarfile.SYMTYPE
                info.linkname = content
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return raw.getvalue()


@pytest.mark.parametrize(
    ("entries", "error"),
    [
        pytest.param([("/etc/x", b"a")], ArchiveRejected, id="an absolute name is refused"),
        pytest.param([("a/../../x", b"a")], ArchiveRejected, id="a climbing name is refused"),
        pytest.param(
            [("out", "/"), ("out/etc/x", b"a")], PathTraversal, id="writing through a link"
        ),
    ],
)
def test_hostile_archives_are_refused(
    tmp_path: Path, entries: list[tuple[str, bytes | str]], error: type[Exception]
) -> None:
    with Root(tmp_path) as root, pytest.raises(error):
        unpack(io.BytesIO(hostile(entries)), root, "gzip")
    assert not Path("/etc/x").exists()


def test_frames_in_any_pieces() -> None:
    body = frame(b"M", b"{}") + frame(b"D", b"x" * 1000) + frame(b"E", b"{}")
    reader = FrameReader()
    got = []
    for index in range(0, len(body), 7):
        got.extend(reader.feed(body[index : index + 7]))
    assert [(kind, len(payload)) for kind, payload in got] == [(b"M", 2), (b"D", 1000), (b"E", 2)]
    with pytest.raises(ValueError, match="bad frame header"):
        list(FrameReader().feed(b"Z" + b"\x00" * 8))


def test_pieces_stay_under_the_frame_limit(tmp_path: Path) -> None:
    """A multi-threaded zstd job hands out several MiB at once: pieces are cut smaller."""
    source = tmp_path / "src"
    source.mkdir()
    (source / "random.bin").write_bytes(os.urandom(40 * 1024 * 1024))
    sizes: list[int] = []
    with Root(source) as root:
        pack(root, lambda piece: sizes.append(len(piece)))
    assert sum(sizes) > 40 * 1024 * 1024
    assert max(sizes) <= MAX_PIECE < MAX_DATA_FRAME - 1


def tricky_tree(source: Path) -> None:
    """Long and non-ASCII names, a long link, big ids, odd modes, exact mtimes."""
    deep = source / ("d" * 90) / ("e" * 90) / "f"
    deep.mkdir(parents=True)
    (deep / ("n" * 150)).write_bytes(os.urandom(5000))
    (source / "héllo wörld.txt").write_bytes(b"")
    (source / "exact").write_bytes(b"x" * 512)
    os.utime(source / "exact", ns=(1, 1_600_000_000_123_456_789))
    os.chmod(source / "exact", 0o751)
    os.symlink("x" * 200, source / "long-link")
    os.symlink("/etc/passwd", source / "out-link")


@pytest.mark.parametrize("compression", ["zstd", "gzip"])
def test_the_lean_tar_is_read_by_tarfile(tmp_path: Path, compression: Compression) -> None:
    """The writer's PAX tar is what tarfile reads (an older lightd unpacks with it)."""
    import zlib

    import zstandard

    source = tmp_path / "src"
    source.mkdir()
    tricky_tree(source)
    data = bytearray()
    with Root(source) as root:
        pack(root, data.extend, compression=compression)
    raw = (
        zstandard.ZstdDecompressor().decompressobj().decompress(bytes(data))
        if compression == "zstd"
        else zlib.decompress(bytes(data), 31)
    )
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
        members = {member.name: member for member in tar}
        name = f"{'d' * 90}/{'e' * 90}/f/{'n' * 150}"
        assert tar.extractfile(members[name]).read() == (source / name).read_bytes()  # type: ignore[union-attr]
    assert members["long-link"].linkname == "x" * 200
    assert members["out-link"].issym()
    assert members["exact"].pax_headers["mtime"] == "1600000000.123456789"
    assert members["exact"].mode == 0o751
    assert "héllo wörld.txt" in members


def test_a_tarfile_pax_archive_is_unpacked(tmp_path: Path) -> None:
    """What an older lightd sent (tarfile's PAX, exact mtimes in the headers) arrives
    whole, long names, links and modes included."""
    source, target = tmp_path / "src", tmp_path / "dst"
    source.mkdir()
    target.mkdir()
    tricky_tree(source)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for folder, dirs, files in os.walk(source):
            for name in sorted(dirs + files):
                path = Path(folder) / name
                info = tar.gettarinfo(str(path), str(path.relative_to(source)))
                stamp = os.lstat(path).st_mtime_ns
                info.pax_headers = {"mtime": f"{stamp // 10**9}.{stamp % 10**9:09d}"}
                if info.isreg():
                    with path.open("rb") as handle:
                        tar.addfile(info, handle)
                else:
                    tar.addfile(info)
    with Root(target) as root:
        unpack(io.BytesIO(raw.getvalue()), root, "gzip")
    assert snapshot(target) == snapshot(source)


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda raw: raw[:700], id="cut inside an entry"),
        pytest.param(lambda raw: raw[:1024] + b"x" + raw[1025:], id="a header byte changed"),
    ],
)
def test_damaged_tars_are_refused(tmp_path: Path, damage: object) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "a.txt").write_bytes(b"a" * 3000)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.add(str(source / "a.txt"), "a.txt")
    import gzip

    broken = gzip.compress(damage(raw.getvalue()))  # type: ignore[operator]
    (tmp_path / "dst").mkdir()
    with Root(tmp_path / "dst") as root, pytest.raises(ArchiveRejected, match="damaged"):
        unpack(io.BytesIO(broken), root, "gzip")
