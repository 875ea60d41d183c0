"""A template's ``file_denylist`` holds in the REST file API and in SFTP (as in Wings).

The decision is table-tested (gitignore rules); then a real daemon with a template that
denies ``*.so``, ``RustDedicated`` and ``secrets/`` (but lets ``keep.so`` through)
answers 403 ``File is denied by the template`` to every file route on a denied path,
leaves denied entries out of archives it makes and extracts, and its SFTP server
answers permission denied, while the rest of the volume works as before.
"""

from __future__ import annotations

import asyncio
import io
import os
import tarfile
from pathlib import Path
from typing import Any

import asyncssh
import httpx
import pytest

from lightd.spec.template import TemplateSpec
from lightd.templates.denylist import Denylist, denylist_of
from tests.sftp.conftest import issue, session
from tests.support import engine
from tests.support.daemon import DaemonProcess
from tests.support.lab import Lab

PATTERNS = ["*.so", "RustDedicated", "secrets/", "!keep.so"]
DENIED = "File is denied by the template"


@pytest.mark.parametrize(
    ("parts", "folder", "denied"),
    [
        (("lib", "native.so"), False, True),
        (("native.so",), None, True),
        (("keep.so",), False, False),  # a later ! pattern lets it through
        (("RustDedicated",), False, True),
        (("bin", "RustDedicated"), False, True),  # no slash: any depth
        (("secrets",), True, True),
        (("secrets",), None, True),  # unknown kind: the folder pattern counts
        (("secrets",), False, False),  # a file named like a folder pattern
        (("secrets", "token.txt"), False, True),  # below a denied folder
        (("server.properties",), False, False),
        ((), True, False),  # the volume root never is
    ],
)
def test_the_decision_follows_gitignore(
    parts: tuple[str, ...], folder: bool | None, denied: bool
) -> None:
    assert Denylist(PATTERNS).denies(parts, folder=folder) is denied


def test_a_volume_takes_every_pattern_of_its_templates() -> None:
    one = TemplateSpec.model_validate(
        {"name": "one", "images": {"a": "a"}, "file_denylist": ["*.so"]}
    )
    two = TemplateSpec.model_validate({"name": "two", "images": {"a": "a"}, "file_denylist": ["x"]})
    none = TemplateSpec.model_validate({"name": "none", "images": {"a": "a"}})
    both = denylist_of([one, two, None, none])
    assert both is not None and both.patterns == ("*.so", "x")
    assert denylist_of([none, None]) is None
    assert denylist_of([one]) is denylist_of([one])  # compiled once


@pytest.fixture
def denied_volume(lab: Lab, api: httpx.Client) -> Any:
    """A container whose template denies PATTERNS; its volume id, path and internal_id."""
    name = f"{lab.prefix}-deny"
    template = {
        "name": name,
        "images": {"busybox": engine.TEST_IMAGE},
        "startup": "exec sleep 1000",
        "file_denylist": PATTERNS,
    }
    answer = api.post("/templates", json=template)
    assert answer.status_code == 200, answer.text
    volume_id = lab.volume()
    path = Path(lab.volume_path(volume_id))
    # Files the game brought (an install would have): the denylist guards them.
    (path / "secrets").mkdir()
    (path / "secrets" / "token.txt").write_text("s3cret")
    (path / "native.so").write_bytes(b"\x7fELF")
    (path / "keep.so").write_bytes(b"ok")
    (path / "server.properties").write_text("motd=hi\n")
    body = lab.body("deny", template=name, volume_id=volume_id, power="stopped")
    body.pop("image")
    body.pop("startup_command")
    created = api.post("/containers", json=body)
    assert created.status_code == 200, created.text
    lab.created.append(body["internal_id"])
    try:
        yield volume_id, path, body["internal_id"]
    finally:
        api.delete(f"/containers/{body['internal_id']}")
        api.delete(f"/templates/{name}")


def _refused(answer: httpx.Response) -> None:
    assert answer.status_code == 403, answer.text
    assert answer.json() == {"error": DENIED}


def test_the_file_api_refuses_denied_paths(api: httpx.Client, denied_volume: Any) -> None:
    volume_id, path, _ = denied_volume
    base = f"/volumes/{volume_id}"
    _refused(api.get(f"{base}/files/content", params={"path": "native.so"}))
    _refused(api.get(f"{base}/files/content", params={"path": "secrets/token.txt"}))
    _refused(api.post(f"{base}/files", json={"path": "lib/new.so", "content": "x"}))
    _refused(api.put(f"{base}/files/content", params={"path": "bin/RustDedicated"}, content=b"x"))
    _refused(api.delete(f"{base}/files", params={"path": "native.so"}))
    _refused(api.delete(f"{base}/files", params={"path": "secrets"}))
    _refused(api.post(f"{base}/folders", json={"path": "secrets/more"}))
    _refused(api.post(f"{base}/move", json={"from": "native.so", "to": "native.txt"}))
    _refused(api.post(f"{base}/move", json={"from": "server.properties", "to": "p.so"}))
    _refused(api.post(f"{base}/copy", json={"source": "secrets", "destination": "open"}))
    _refused(api.post(f"{base}/copy", json={"source": "keep.so", "destination": "RustDedicated"}))
    _refused(api.post(f"{base}/chmod", json={"path": "native.so", "mode": "777"}))
    _refused(api.post(f"{base}/compress", json={"paths": ["secrets"], "output_name": "s"}))
    _refused(api.post(f"{base}/compress", json={"paths": ["keep.so"], "output_name": "secrets/k"}))
    # Nothing changed on disk.
    assert (path / "native.so").read_bytes() == b"\x7fELF"
    assert (path / "secrets" / "token.txt").read_text() == "s3cret"
    assert not (path / "lib").exists() and not (path / "bin").exists()
    assert not (path / "native.txt").exists() and not (path / "open").exists()
    assert not (path / "p.so").exists() and (path / "server.properties").exists()
    assert os.stat(path / "native.so").st_mode & 0o777 != 0o777
    # The rest of the volume works as before; listings still show denied entries.
    assert api.get(f"{base}/files/content", params={"path": "keep.so"}).content == b"ok"
    wrote = api.post(f"{base}/files", json={"path": "notes.txt", "content": "fine"})
    assert wrote.status_code == 200, wrote.text
    names = {entry["name"] for entry in api.get(f"{base}/files").json()["files"]}
    assert {"native.so", "secrets", "keep.so", "notes.txt"} <= names


def test_archives_leave_denied_entries_out(api: httpx.Client, denied_volume: Any) -> None:
    volume_id, path, _ = denied_volume
    base = f"/volumes/{volume_id}"
    made = api.post(f"{base}/compress", json={"output_name": "all", "format": "tar.gz"})
    assert made.status_code == 200, made.text
    with tarfile.open(path / made.json()["archive_path"].lstrip("/"), "r:gz") as archive:
        names = set(archive.getnames())
    assert "keep.so" in names and "server.properties" in names
    assert not {"native.so", "secrets", "secrets/token.txt"} & names
    # An archive bringing denied entries: they are skipped and reported, the rest lands.
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in (("plugins/a.so", b"so"), ("plugins/ok.txt", b"ok"),
                           ("secrets/new.txt", b"n"), ("RustDedicated", b"bin")):  # fmt: skip
            entry = tarfile.TarInfo(name)
            entry.size = len(data)
            archive.addfile(entry, io.BytesIO(data))
    (path / "bundle.tar.gz").write_bytes(buffer.getvalue())
    answer = api.post(
        f"{base}/decompress", json={"archive_path": "bundle.tar.gz", "destination": "in"}
    )
    assert answer.status_code == 200, answer.text
    assert (path / "in" / "plugins" / "ok.txt").read_bytes() == b"ok"
    assert not (path / "in" / "plugins" / "a.so").exists()
    assert not (path / "in" / "secrets").exists()
    assert not (path / "in" / "RustDedicated").exists()
    skipped = {item["name"]: item["reason"] for item in answer.json()["skipped"]}
    assert skipped["plugins/a.so"] == "denied by the template"
    assert skipped["RustDedicated"] == "denied by the template"
    into_secrets = {"archive_path": "bundle.tar.gz", "destination": "secrets"}
    _refused(api.post(f"{base}/decompress", json=into_secrets))
    _refused(api.post(f"{base}/decompress", json={"archive_path": "native.so"}))


def test_sftp_answers_permission_denied(
    api: httpx.Client, daemon: DaemonProcess, denied_volume: Any
) -> None:
    assert daemon.sftp_port, "the shared daemon must run SFTP"
    _, path, internal_id = denied_volume
    issued = issue(api, internal_id)
    (path / "link-to-secret").symlink_to("secrets/token.txt")

    async def scenario() -> list[str]:
        refused: list[str] = []

        async def expect_denied(what: str, action: Any) -> None:
            try:
                await action
            except asyncssh.SFTPPermissionDenied:
                refused.append(what)

        async with session(int(issued["port"]), issued["username"], issued["password"]) as sftp:
            await expect_denied("read", sftp.open("native.so", "rb"))
            await expect_denied("read below", sftp.open("secrets/token.txt", "rb"))
            await expect_denied("read via link", sftp.open("link-to-secret", "rb"))
            await expect_denied("write", sftp.open("lib.so", "wb"))
            await expect_denied("remove", sftp.remove("native.so"))
            await expect_denied("rmdir", sftp.rmdir("secrets"))
            await expect_denied("mkdir", sftp.mkdir("secrets/more"))
            await expect_denied("rename from", sftp.rename("native.so", "n.txt"))
            await expect_denied("rename to", sftp.rename("server.properties", "RustDedicated"))
            await expect_denied("chmod", sftp.chmod("native.so", 0o777))
            await expect_denied("symlink", sftp.symlink("keep.so", "alias.so"))
            # Allowed paths work; denied entries are still listed.
            async with sftp.open("keep.so", "rb") as handle:
                content: object = await handle.read()
            assert content == b"ok"
            async with sftp.open("notes.txt", "wb") as handle:
                await handle.write(b"fine")
            assert {"native.so", "secrets"} <= set(await sftp.listdir("."))
        return refused

    refused = asyncio.run(scenario())
    assert refused == [
        "read", "read below", "read via link", "write", "remove", "rmdir", "mkdir",
        "rename from", "rename to", "chmod", "symlink",
    ]  # fmt: skip
    assert (path / "native.so").read_bytes() == b"\x7fELF"
    assert (path / "secrets" / "token.txt").exists()
    assert not (path / "lib.so").exists() and not (path / "alias.so").exists()
    assert (path / "notes.txt").read_bytes() == b"fine"
