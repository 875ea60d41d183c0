"""Checks shared by the backends' tests: every lightd writer refused at the limit, and
usage reads that never walk the volume.

The walk check is timing-independent: every folder of the volume gets an atime far in
the past (older than its mtime), so any ``readdir`` of it (a walk) would move its atime
(relatime and strictatime both do); after reading usage many ways (show, list, metrics,
the daemon's periodic refresh) no atime may have moved, and one ``scandir`` by the test
itself then proves the detector sees a walk.
"""

from __future__ import annotations

import io
import os
import stat
import tarfile
import time
from pathlib import Path

from tests.limits.rig import DiskRig, MiB

FAR_PAST = 1_000_000_000.0
LIMIT_ERROR = {"error": "Disk limit exceeded"}


def folders(top: Path) -> list[Path]:
    found = [top]
    for parent, names, _files in os.walk(top):
        found.extend(Path(parent) / name for name in names)
    return found


def assert_reads_do_not_walk(rig: DiskRig, volume_id: str) -> None:
    path = Path(rig.show(volume_id)["path"])
    for index in range(40):
        answer = rig.http.post(
            f"/volumes/{volume_id}/files",
            json={"path": f"tree/d{index}/sub/f.txt", "content": "x" * 100},
        )
        assert answer.status_code == 200, answer.text
    time.sleep(1.5)  # let the daemon's refresh see the tree once
    tree = folders(path)
    assert len(tree) > 80
    for folder in tree:
        info = os.stat(folder)
        os.utime(folder, (FAR_PAST, info.st_mtime))
    for _ in range(5):
        assert rig.http.get(f"/volumes/{volume_id}").status_code == 200
    assert rig.http.get("/volumes").status_code == 200
    metrics = rig.http.get("/metrics")
    assert metrics.status_code == 200
    assert f'lightd_volume_disk_usage_bytes{{volume_id="{volume_id}"}}' in metrics.text
    time.sleep(1.5)  # at least two periodic refreshes of every volume's usage
    assert rig.http.get(f"/volumes/{volume_id}").json()["disk_usage"] > 0
    walked = [str(folder) for folder in tree if os.stat(folder).st_atime != FAR_PAST]
    assert walked == [], f"usage reads walked {len(walked)} folders: {walked[:3]}"
    with os.scandir(tree[-1]) as entries:  # the detector sees a walk
        list(entries)
    assert os.stat(tree[-1]).st_atime != FAR_PAST


def random_tar(size: int) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = tarfile.TarInfo("payload.bin")
        info.size = size
        archive.addfile(info, io.BytesIO(os.urandom(size)))
    return buffer.getvalue()


def root_names(path: Path) -> set[str]:
    return set(os.listdir(path))


def apparent_size(top: Path) -> int:
    """The soft backend's measure, computed here: ``st_size`` of the regular files."""
    total = 0
    for parent, _names, files in os.walk(top):
        for name in files:
            info = os.lstat(Path(parent) / name)
            if stat.S_ISREG(info.st_mode):
                total += info.st_size
    return total


def assert_every_writer_refused(rig: DiskRig, volume_id: str, *, limit: int) -> None:
    url = f"/volumes/{volume_id}"
    path = Path(rig.show(volume_id)["path"])
    archive = rig.http.put(
        f"{url}/files/content", params={"path": "in.tar"}, content=random_tar(MiB)
    )
    assert archive.status_code == 200, archive.text
    # Fill it with incompressible 512 KiB files until the upload path itself refuses one.
    refused = None
    for index in range(4 * limit // MiB):
        answer = rig.http.put(
            f"{url}/files/content",
            params={"path": f"fill/{index}.bin"},
            content=os.urandom(512 * 1024),
        )
        if answer.status_code != 200:
            refused = answer
            break
    assert refused is not None, "the volume took more than its limit"
    assert refused.status_code == 507 and refused.json() == LIMIT_ERROR, refused.text
    assert not (path / "fill" / f"{index}.bin").exists()
    before = root_names(path)
    filled = rig.show(volume_id)["disk_usage"]

    def streamed():  # type: ignore[no-untyped-def]
        for _ in range(8):
            yield os.urandom(256 * 1024)

    attempts = {
        "upload": rig.http.put(
            f"{url}/files/content", params={"path": "up.bin"}, content=streamed()
        ),
        "write": rig.http.post(f"{url}/files", json={"path": "w.txt", "content": "x" * 900_000}),
        "copy": rig.http.post(f"{url}/copy", json={"source": "fill", "destination": "fill2"}),
        "compress": rig.http.post(
            f"{url}/compress", json={"format": "tar", "output_name": "out", "paths": ["fill"]}
        ),
        "decompress": rig.http.post(
            f"{url}/decompress", json={"archive_path": "in.tar", "destination": "ex"}
        ),
    }
    for writer, answer in attempts.items():
        assert answer.status_code == 507, f"{writer}: {answer.status_code} {answer.text}"
        assert answer.json() == LIMIT_ERROR, f"{writer}: {answer.text}"
    assert root_names(path) == before  # nothing written, no temporary entry left
    for name in ("up.bin", "w.txt", "fill2", "out.tar", "ex"):
        assert not (path / name).exists(), name
    usage = rig.show(volume_id)["disk_usage"]
    assert usage <= limit, f"usage {usage} over the limit {limit}"
    assert usage <= filled + 64 * 1024  # nothing of the refused writes was kept
