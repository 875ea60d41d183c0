"""Archives: round trips of every format, and hostile archives built here that must not hurt.

Each hostile extraction must leave no partial result (the destination does not appear,
no temporary folder remains) and never touch the canary outside the volume.
"""

from __future__ import annotations

import io
import os
import tarfile
import zipfile
from pathlib import Path

import httpx
import pytest

from lightd.errors import ArchiveRejected
from lightd.fs.archive import ArchiveLimits, compress, extract
from lightd.fs.beneath import Root
from lightd.fs.paths import parse_path
from tests.support.canary import Canary
from tests.volumes.conftest import Vol

FORMATS = ["tar.gz", "tar", "zip", "tar.bz2", "tar.xz"]


def reg(name: str, data: bytes = b"x", mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    return info, data


def special(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.devmajor, info.devminor = 1, 3
    return info, None


def tar_bytes(entries: list[tuple[tarfile.TarInfo, bytes | None]], mode: str = "w:gz") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as tar:  # type: ignore[call-overload]
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def zip_bytes(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def no_leftovers(root: Path) -> None:
    assert not [p.name for p in root.iterdir() if p.name.startswith(".lightd-tmp-")]


def decompress(api: httpx.Client, vol: Vol, data: bytes, name: str = "in.bin") -> httpx.Response:
    (vol.path / name).write_bytes(data)
    return api.post(f"{vol.url}/decompress", json={"archive_path": name, "destination": "dest"})


# -- round trips -----------------------------------------------------------------------


def _tree(root: Path) -> dict[str, object]:
    found: dict[str, object] = {}
    for dirpath, dirs, files in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        for name in dirs + files:
            path = Path(dirpath) / name
            key = os.path.normpath(os.path.join(rel, name))
            if path.is_symlink():
                found[key] = ("link", os.readlink(path))
            elif path.is_dir():
                found[key] = "dir"
            else:
                found[key] = (path.read_bytes(), path.stat().st_mode & 0o777)
    return found


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip(api: httpx.Client, volume: Vol, fmt: str) -> None:
    src = volume.path / "src"
    (src / "deep/er").mkdir(parents=True)
    (src / "empty").mkdir()
    (src / "a.txt").write_text("hello\n")
    (src / "deep/er/blob.bin").write_bytes(os.urandom(300_000))
    (src / "deep/zeros").write_bytes(b"\0" * 100_000)
    (src / "run.sh").write_text("#!/bin/sh\n")
    (src / "run.sh").chmod(0o755)
    os.symlink("deep/er/blob.bin", src / "link")
    answer = api.post(
        f"{volume.url}/compress", json={"format": fmt, "output_name": "out/bk", "paths": ["src"]}
    )
    assert answer.status_code == 200, answer.text
    archive = answer.json()["archive_path"]
    assert archive == f"out/bk.{fmt}"
    back = api.post(
        f"{volume.url}/decompress", json={"archive_path": archive, "destination": "restored"}
    )
    assert back.status_code == 200, back.text
    assert back.json()["skipped"] == []
    assert _tree(volume.path / "restored/src") == _tree(src)
    no_leftovers(volume.path)


def test_format_is_detected_from_content(api: httpx.Client, volume: Vol) -> None:
    (volume.path / "f.txt").write_text("x")
    for fmt in FORMATS:
        made = api.post(
            f"{volume.url}/compress", json={"format": fmt, "output_name": "a", "paths": ["f.txt"]}
        )
        assert made.status_code == 200
        moved = api.post(f"{volume.url}/move", json={"from": f"a.{fmt}", "to": "mystery.zip"})
        assert moved.status_code == 200
        back = api.post(
            f"{volume.url}/decompress",
            json={"archive_path": "mystery.zip", "destination": f"r-{fmt}"},
        )
        assert back.status_code == 200, (fmt, back.text)
        assert (volume.path / f"r-{fmt}/f.txt").read_text() == "x"
        (volume.path / "mystery.zip").unlink()


def test_whole_volume_archive_never_contains_itself(api: httpx.Client, volume: Vol) -> None:
    (volume.path / "a.txt").write_text("a")
    for _ in range(2):
        answer = api.post(
            f"{volume.url}/compress", json={"format": "tar", "output_name": "b", "overwrite": True}
        )
        assert answer.status_code == 200
    with tarfile.open(volume.path / "b.tar") as tar:
        assert tar.getnames() == ["a.txt"]


def test_compress_missing_source_is_404(api: httpx.Client, volume: Vol) -> None:
    answer = api.post(f"{volume.url}/compress", json={"output_name": "b", "paths": ["nope"]})
    assert (answer.status_code, answer.json()) == (404, {"error": "File not found"})
    assert not (volume.path / "b.tar.gz").exists()


# -- hostile archives through the API --------------------------------------------------


@pytest.mark.parametrize(
    ("entries", "reason"),
    [
        pytest.param([reg("ok.txt"), reg("../../evil.txt")], "'..'", id="zip-slip-tar"),
        pytest.param([reg("a/../../evil.txt")], "'..'", id="inner-dotdot"),
        pytest.param([reg("/tmp/evil.txt")], "absolute", id="absolute"),
        pytest.param(
            [special("link", tarfile.SYMTYPE, "sub"), reg("sub/x"), reg("link/pwned.txt")],
            "symlink",
            id="inside-link-then-file",
        ),
        pytest.param([reg("f"), reg("f/x")], "in the way", id="file-then-through-it"),
    ],
)
def test_hostile_tar_is_refused(
    api: httpx.Client,
    volume: Vol,
    canary: Canary,
    entries: list[tuple[tarfile.TarInfo, bytes | None]],
    reason: str,
) -> None:
    answer = decompress(api, volume, tar_bytes(entries))
    assert answer.status_code == 400, answer.text
    assert reason in answer.json()["error"]
    assert not (volume.path / "dest").exists()
    assert not (volume.path.parent / "evil.txt").exists()
    no_leftovers(volume.path)


def test_zip_slip_is_refused(api: httpx.Client, volume: Vol, canary: Canary) -> None:
    answer = decompress(api, volume, zip_bytes({"ok.txt": b"1", "../../evil.txt": b"2"}))
    assert answer.status_code == 400
    assert "'..'" in answer.json()["error"]
    assert not (volume.path / "dest").exists()
    no_leftovers(volume.path)


def test_links_outside_are_skipped_and_reported(
    api: httpx.Client, volume: Vol, canary: Canary
) -> None:
    entries = [
        special("out", tarfile.SYMTYPE, str(canary.dir)),
        reg("out/pwned.txt", b"p"),
        special("rel", tarfile.SYMTYPE, "../../../../../../../.."),
        special("hard", tarfile.LNKTYPE, str(canary.secret)),
        special("hard2", tarfile.LNKTYPE, "../../secret.txt"),
        reg("ok.txt", b"ok"),
        special("hard-ok", tarfile.LNKTYPE, "ok.txt"),
        special("soft-ok", tarfile.SYMTYPE, "ok.txt"),
    ]
    answer = decompress(api, volume, tar_bytes(entries))
    assert answer.status_code == 200, answer.text
    skipped = {s["name"]: s["reason"] for s in answer.json()["skipped"]}
    assert set(skipped) == {"out", "rel", "hard", "hard2"}
    dest = volume.path / "dest"
    # The outside link was never created, so the file landed in a real folder inside.
    assert not (dest / "out").is_symlink()
    assert (dest / "out/pwned.txt").read_bytes() == b"p"
    assert (dest / "hard-ok").stat().st_ino == (dest / "ok.txt").stat().st_ino
    assert os.readlink(dest / "soft-ok") == "ok.txt"
    secret_inode = os.lstat(canary.secret).st_ino
    for path in dest.rglob("*"):
        assert os.lstat(path).st_ino != secret_inode
    no_leftovers(volume.path)


def test_devices_and_fifos_are_skipped(api: httpx.Client, volume: Vol) -> None:
    entries = [
        special("dev/null2", tarfile.CHRTYPE),
        special("dev/sda9", tarfile.BLKTYPE),
        special("pipe", tarfile.FIFOTYPE),
        reg("keep.txt"),
    ]
    answer = decompress(api, volume, tar_bytes(entries))
    assert answer.status_code == 200
    assert {s["name"] for s in answer.json()["skipped"]} == {"dev/null2", "dev/sda9", "pipe"}
    assert sorted(p.name for p in (volume.path / "dest").iterdir()) == ["keep.txt"]


@pytest.mark.parametrize("kind", ["tar.gz", "zip"])
def test_ratio_bomb_is_refused(api: httpx.Client, volume: Vol, kind: str) -> None:
    zeros = b"\0" * (48 * 1024 * 1024)
    data = tar_bytes([reg("bomb", zeros)]) if kind == "tar.gz" else zip_bytes({"bomb": zeros})
    assert len(data) < 200_000
    answer = decompress(api, volume, data)
    assert answer.status_code == 400
    assert "200:1" in answer.json()["error"]
    assert not (volume.path / "dest").exists()
    no_leftovers(volume.path)


def test_garbage_and_truncated_archives_are_400(api: httpx.Client, volume: Vol) -> None:
    answer = decompress(api, volume, os.urandom(4096))
    assert answer.status_code == 400
    assert "Unsupported archive format" in answer.json()["error"]
    whole = tar_bytes([reg("a", os.urandom(200_000))])
    answer = decompress(api, volume, whole[: len(whole) // 2])
    assert answer.status_code == 400
    assert "damaged" in answer.json()["error"]
    answer = decompress(api, volume, b"PK\x03\x04" + os.urandom(100))
    assert answer.status_code == 400
    missing = api.post(f"{volume.url}/decompress", json={"archive_path": "none.zip"})
    assert (missing.status_code, missing.json()) == (404, {"error": "File not found"})
    no_leftovers(volume.path)


# -- limits at the fs layer (small limits keep these fast) -----------------------------


def _extract(tmp_path: Path, data: bytes, limits: ArchiveLimits) -> Path:
    vol = tmp_path / "vol"
    vol.mkdir(exist_ok=True)
    (vol / "a.bin").write_bytes(data)
    with Root(vol) as root:
        extract(root, archive=("a.bin",), destination=("dest",), limits=limits, overwrite=False)
    return vol


def test_too_many_entries_stops_extraction(tmp_path: Path) -> None:
    data = tar_bytes([reg(f"f{i}") for i in range(60)])
    limits = ArchiveLimits(max_total_bytes=10**9, max_entries=50, max_ratio=200)
    with pytest.raises(ArchiveRejected, match="more than 50 entries"):
        _extract(tmp_path, data, limits)
    assert sorted(p.name for p in (tmp_path / "vol").iterdir()) == ["a.bin"]
    zipped = zip_bytes({f"f{i}": b"x" for i in range(60)})
    with pytest.raises(ArchiveRejected, match="more than 50 entries"):
        _extract(tmp_path, zipped, limits)
    assert _extract(tmp_path, data, ArchiveLimits(10**9, 60, 200)).joinpath("dest/f59").exists()


def test_total_size_limit(tmp_path: Path) -> None:
    data = tar_bytes([reg("a", os.urandom(300_000)), reg("b", os.urandom(300_000))], mode="w")
    with pytest.raises(ArchiveRejected, match="expands past 500000 bytes"):
        _extract(
            tmp_path, data, ArchiveLimits(max_total_bytes=500_000, max_entries=10, max_ratio=200)
        )
    assert sorted(p.name for p in (tmp_path / "vol").iterdir()) == ["a.bin"]


def test_compress_temp_file_is_renamed_into_place(tmp_path: Path) -> None:
    vol = tmp_path / "vol"
    (vol / "d").mkdir(parents=True)
    (vol / "d/x").write_bytes(b"x" * 1000)
    with Root(vol) as root:
        target, size = compress(
            root,
            sources=[parse_path("d")],
            output=parse_path("o/arch"),
            fmt="tar.xz",
            overwrite=False,
        )
    assert target == ("o", "arch.tar.xz")
    assert (vol / "o/arch.tar.xz").stat().st_size == size
    assert sorted(p.name for p in vol.iterdir()) == ["d", "o"]
