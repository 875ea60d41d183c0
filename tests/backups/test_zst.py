"""``backups.archive_format: zst``: tar.zst archives, local and on S3, restored and
downloaded (always as tar.gz: transcoded on the fly), and a tampered tar.zst refused.

A daemon of this module stores its archive and s3 backups as ``tar.zst`` (read back with
the ``zstandard`` package, the one lightd writes them with); the backups of the
module-wide daemon (``bk``, the default ``gz``) say ``tar.gz``.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from collections.abc import Iterator

import httpx
import pytest
import zstandard

from tests.backups.conftest import (
    BUCKET,
    S3Server,
    Vol,
    backup_config,
    make_tree,
    make_volume,
    run_backup,
    run_restore,
    snapshot,
)
from tests.conftest import FAST_RECONCILER
from tests.support.daemon import DaemonProcess

ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


@pytest.fixture(scope="module")
def zst(tmp_path_factory: pytest.TempPathFactory, s3: S3Server) -> Iterator[DaemonProcess]:
    root = tmp_path_factory.mktemp("zst-daemon")
    config = backup_config(root, s3, archive_format="zst", restore_max_total_bytes=64 << 20)
    proc = DaemonProcess(root, env=dict(FAST_RECONCILER), config=config)
    proc.start()
    try:
        yield proc
    finally:
        proc.stop(kill=False)


@pytest.fixture
def api(zst: DaemonProcess) -> Iterator[httpx.Client]:
    with zst.client() as client:
        yield client


@pytest.fixture
def zvol(api: httpx.Client) -> Iterator[Vol]:
    made = make_volume(api)
    try:
        yield made
    finally:
        api.delete(made.url)


def _members(gz: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(gz), mode="r:gz") as tar:
        return {member.name: member for member in tar.getmembers()}


@pytest.mark.parametrize("adapter", ["archive", "s3"])
def test_zst_backup_restore_and_download(
    zst: DaemonProcess, s3: S3Server, api: httpx.Client, zvol: Vol, adapter: str
) -> None:
    make_tree(zvol.path)
    before = snapshot(zvol.path)
    done = run_backup(api, zvol, adapter=adapter)
    assert done["state"] == "done", done
    assert done["format"] == "tar.zst"
    if adapter == "archive":
        stored = (zst.root / "backups" / f"{done['backup_id']}.tar.zst").read_bytes()
    else:
        key = f"node-a/{zvol.id}/{done['backup_id']}.tar.zst"
        stored = (s3.folder / BUCKET / key).read_bytes()
    assert stored[:4] == ZSTD_MAGIC
    assert done["size"] == len(stored)
    assert done["checksum"] == hashlib.sha256(stored).hexdigest()
    plain = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(stored)).read()
    with tarfile.open(fileobj=io.BytesIO(plain), mode="r:") as tar:
        assert set(tar.getnames()) == set(before)

    # The download is a tar.gz of the same entries (transcoded, not the stored bytes).
    answer = api.get(f"{zvol.url}/backups/{done['backup_id']}/download")
    assert answer.status_code == 200, answer.text
    assert answer.content[:2] == b"\x1f\x8b"
    members = _members(answer.content)
    assert set(members) == set(before)
    assert members["link-to-dir"].issym() and members["link-to-dir"].linkname == "dir1"

    # Restores, with and without truncate, give the tree back byte for byte.
    (zvol.path / "server.properties").write_text("changed")
    (zvol.path / "extra.txt").write_text("extra")
    restored = run_restore(api, zvol, done["backup_id"], truncate=True)
    assert restored["restore"]["state"] == "done", restored
    assert snapshot(zvol.path) == before
    (zvol.path / "server.properties").write_text("changed again")
    (zvol.path / "extra.txt").write_text("stays")
    restored = run_restore(api, zvol, done["backup_id"])
    assert restored["restore"]["state"] == "done", restored
    after = snapshot(zvol.path)
    assert after.pop("extra.txt")[0] == "file" and after == before
    assert restored["restore"]["progress"]["bytes_done"] == len(stored)
    assert api.delete(f"{zvol.url}/backups/{done['backup_id']}").status_code == 200
    if adapter == "archive":
        assert not (zst.root / "backups" / f"{done['backup_id']}.tar.zst").exists()


def test_tampered_and_bomb_tar_zst_are_refused(
    zst: DaemonProcess, api: httpx.Client, zvol: Vol
) -> None:
    (zvol.path / "world.txt").write_text("precious")
    done = run_backup(api, zvol)
    stored = zst.root / "backups" / f"{done['backup_id']}.tar.zst"
    hostile = io.BytesIO()
    with tarfile.open(fileobj=hostile, mode="w") as tar:
        for name in ("ok.txt", "../escaped.txt"):
            info = tarfile.TarInfo(name)
            info.size = 2
            tar.addfile(info, io.BytesIO(b"hi"))
    cases = {
        "refused": zstandard.ZstdCompressor().compress(hostile.getvalue()),
        "not a valid tar.zst": b"\x28\xb5\x2f\xfd" + os.urandom(4096),
        # 256 MiB of zeros in a few KiB: past restore_max_total_bytes (64 MiB).
        "expands past": zstandard.ZstdCompressor(level=3).compress(bytes(256 << 20)),
    }
    for words, data in cases.items():
        stored.write_bytes(data)
        for truncate in (False, True):
            result = run_restore(api, zvol, done["backup_id"], truncate=truncate)
            assert result["restore"]["state"] == "failed", (words, truncate, result)
            assert words in result["restore"]["error"], result
            assert sorted(os.listdir(zvol.path)) == ["world.txt"]
            assert (zvol.path / "world.txt").read_text() == "precious"
            assert not (zvol.path.parent / "escaped.txt").exists()


def test_gz_is_the_default_and_says_so(bk: DaemonProcess, bk_api: httpx.Client, vol: Vol) -> None:
    (vol.path / "a.txt").write_text("a")
    done = run_backup(bk_api, vol)
    assert done["format"] == "tar.gz"
    assert (bk.root / "backups" / f"{done['backup_id']}.tar.gz").read_bytes()[:2] == b"\x1f\x8b"
    restic = run_backup(bk_api, vol, adapter="restic")
    assert restic["state"] == "done" and restic["format"] is None
