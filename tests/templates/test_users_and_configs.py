"""Non-root main containers, file ownership in volumes, config files rewritten before starts."""

from __future__ import annotations

import io
import os
import tarfile
import time
from pathlib import Path

from tests.support import engine
from tests.support.daemon import wait_for
from tests.support.lab import Lab
from tests.templates.test_templates_api import import_egg, template_body

DROPPED = {"setpcap", "mknod", "audit_write", "net_raw", "dac_override", "fowner", "fsetid",
           "net_bind_service", "sys_chroot", "setfcap"}  # fmt: skip


def owner(path: Path) -> tuple[int, int]:
    info = os.lstat(path)
    return info.st_uid, info.st_gid


def test_main_container_runs_as_the_user_with_capabilities_dropped(tlab: Lab) -> None:
    internal_id = tlab.create("user", startup_command="id -u; id -g; exec sleep 1000")
    tlab.wait_state(internal_id, "running")
    found = engine.inspect(f"lightd-{internal_id}")
    assert found is not None
    assert found["Config"]["User"] == "988:988"
    dropped = {cap.lower().removeprefix("cap_") for cap in found["HostConfig"]["CapDrop"]}
    assert dropped == DROPPED
    assert "no-new-privileges" in found["HostConfig"]["SecurityOpt"]
    assert found["HostConfig"]["ReadonlyRootfs"] is False
    logs = wait_for(
        lambda: (
            (t := tlab.api.get(f"/containers/{internal_id}/logs").json()["data"])
            and "988" in t
            and t
        ),
        timeout=20,
        what="id output",
    )
    assert logs.split()[:2] == ["988", "988"]


def test_document_user_and_read_only_root(tlab: Lab) -> None:
    internal_id = tlab.create(
        "ro",
        user="2000:2001",
        read_only_rootfs=True,
        startup_command="touch /ro-test 2>/dev/null || echo read-only; touch /tmp/ok && "
        "echo tmp-ok; exec sleep 1000",
    )
    tlab.wait_state(internal_id, "running")
    found = engine.inspect(f"lightd-{internal_id}")
    assert found is not None
    assert found["Config"]["User"] == "2000:2001"
    assert found["HostConfig"]["ReadonlyRootfs"] is True
    wait_for(
        lambda: "tmp-ok" in tlab.api.get(f"/containers/{internal_id}/logs").json()["data"],
        timeout=20,
        what="a writable /tmp on a read-only root",
    )
    assert "read-only" in tlab.api.get(f"/containers/{internal_id}/logs").json()["data"]


def test_install_upload_and_extraction_belong_to_the_user(tlab: Lab) -> None:
    volume_id = tlab.volume()
    internal_id = tlab.create(
        "own",
        volume_id=volume_id,
        install_script="mkdir -p /mnt/server/data && echo hi > /mnt/server/data/made-by-install",
    )
    tlab.wait_state(internal_id, "running")
    volume = Path(tlab.volume_path(volume_id))
    assert owner(volume) == (988, 988)
    assert owner(volume / "data" / "made-by-install") == (988, 988), "handed over after install"
    answer = tlab.api.put(
        f"/volumes/{volume_id}/files/content", params={"path": "up/loaded.txt"}, content=b"x"
    )
    assert answer.status_code == 200, answer.text
    assert owner(volume / "up") == owner(volume / "up" / "loaded.txt") == (988, 988)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name in ("pack/a.txt", "pack/deep/b.txt"):
            info = tarfile.TarInfo(name)
            info.size = 1
            info.uid = info.gid = 0
            archive.addfile(info, io.BytesIO(b"y"))
    answer = tlab.api.put(
        f"/volumes/{volume_id}/files/content",
        params={"path": "pack.tar.gz"},
        content=buffer.getvalue(),
    )
    assert answer.status_code == 200, answer.text
    answer = tlab.api.post(
        f"/volumes/{volume_id}/decompress",
        json={"archive_path": "pack.tar.gz", "destination": "out"},
    )
    assert answer.status_code == 200, answer.text
    for path in ("out", "out/pack", "out/pack/a.txt", "out/pack/deep/b.txt"):
        assert owner(volume / path) == (988, 988), path
    answer = tlab.api.post(
        f"/volumes/{volume_id}/files", json={"path": "written.txt", "content": "z"}
    )
    assert answer.status_code == 200
    assert owner(volume / "written.txt") == (988, 988)


def test_config_files_rewritten_before_every_start(tlab: Lab) -> None:
    name = f"{tlab.prefix}-paper"
    import_egg(tlab, "egg-paper.json", as_name=name)
    body = template_body(tlab, "cfg", name, variables={"MOTD": "Hello | world"})
    assert tlab.api.post("/containers", json=body).status_code == 200
    internal_id = body["internal_id"]
    tlab.created.append(internal_id)
    tlab.wait_state(internal_id, "running", timeout=60)
    port = body["ports"][0]["port"]
    properties = Path(tlab.volume_path(body["volume_id"])) / "server.properties"
    expected = (
        f"# Minecraft server properties\nmotd=Hello | world\nserver-port={port}\n"
        f"server-ip=0.0.0.0\nquery.port={port}\n"
    )
    assert properties.read_text() == expected
    assert owner(properties) == (988, 988)
    logs = tlab.api.get(f"/containers/{internal_id}/logs").json()["data"]
    assert f"server-port={port}" in logs, "the server read the rewritten file"
    before = properties.stat().st_mtime_ns
    time.sleep(0.05)
    assert tlab.api.post(f"/containers/{internal_id}/restart").status_code == 200
    tlab.wait(
        internal_id,
        lambda c: c["state"] == "running" and c["last_error"] is None,
        what="running again",
        timeout=60,
    )
    wait_for(
        lambda: tlab.api.get(f"/containers/{internal_id}/logs").json()["data"].count("Done") >= 2,
        timeout=30,
        what="the second start",
    )
    assert properties.stat().st_mtime_ns == before, "an unchanged file is not written"
    properties.write_text("# Minecraft server properties\n\\u broken line\nserver-port=1\n")
    assert tlab.api.post(f"/containers/{internal_id}/restart").status_code == 200
    wait_for(
        lambda: f"server-port={port}" in properties.read_text(),
        timeout=30,
        what="rewritten again at the restart",
    )
    tlab.api.delete(f"/containers/{internal_id}")
    tlab.wait_gone(internal_id)
    tlab.api.delete(f"/templates/{name}")


def test_a_config_file_that_does_not_parse_shows_in_last_error(tlab: Lab) -> None:
    name = f"{tlab.prefix}-valheim"
    import_egg(tlab, "egg-pelican-valheim.json", as_name=name)
    volume_id = tlab.volume()
    volume = Path(tlab.volume_path(volume_id))
    (volume / "settings.toml").write_text("port = = 1\n")
    body = template_body(tlab, "bad", name, volume_id=volume_id)
    assert tlab.api.post("/containers", json=body).status_code == 200
    internal_id = body["internal_id"]
    tlab.created.append(internal_id)
    view = tlab.wait(
        internal_id,
        lambda c: c["state"] == "running" and bool(c["last_error"]),
        what="running with the config error shown",
        timeout=60,
    )
    assert "settings.toml" in view["last_error"] and "TOML" in view["last_error"]
    assert (volume / "settings.toml").read_text() == "port = = 1\n"
    assert "port: " in (volume / "config.yml").read_text()
    assert "# the game port" in (volume / "config.yml").read_text(), "comments kept"
    xml = (volume / "Config" / "ServerSettings.xml").read_text()
    assert f"<Port>{body['ports'][0]['port']}</Port>" in xml, "a missing file is created"
    tlab.api.delete(f"/containers/{internal_id}")
    tlab.wait_gone(internal_id)
    tlab.api.delete(f"/templates/{name}")
