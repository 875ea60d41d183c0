"""Volume and file routes against the shared daemon: contract shapes, extras, bad input."""

from __future__ import annotations

import base64
import os
import subprocess
from pathlib import Path

import httpx
import pytest

from lightd.api.errors import status_for
from lightd.errors import VolumeInUse
from lightd.fs import ArchiveLimits, VolumeManager
from lightd.store import DocumentStore
from tests.support.daemon import DaemonProcess
from tests.volumes.conftest import Vol


def write(api: httpx.Client, vol: Vol, path: str, content: str = "x") -> httpx.Response:
    return api.post(f"{vol.url}/files", json={"path": path, "content": content})


# -- volumes ---------------------------------------------------------------------------


def test_create_volume_matches_contract(api: httpx.Client, daemon: DaemonProcess) -> None:
    answer = api.post("/volumes")
    assert answer.status_code == 201
    body = answer.json()
    assert set(body) == {"volume_id", "path"}
    try:
        assert body["path"] == str(daemon.data_dir / "volumes" / body["volume_id"])
        assert Path(body["path"]).is_dir()
    finally:
        assert api.delete(f"/volumes/{body['volume_id']}").status_code == 200
    assert not Path(body["path"]).exists()


def test_list_show_and_prefix(api: httpx.Client, volume: Vol) -> None:
    assert write(api, volume, "a.txt", "hello").status_code == 200
    listed = api.get("/volumes").json()["volumes"]
    mine = [v for v in listed if v["volume_id"] == volume.id]
    assert len(mine) == 1
    assert set(mine[0]) == {
        "volume_id",
        "path",
        "size",
        "created_at",
        "disk_limit",
        "disk_usage",
    }
    assert mine[0]["size"] > 0
    assert mine[0]["disk_limit"] is None
    assert mine[0]["disk_usage"] == mine[0]["size"]
    shown = api.get(f"/volumes/{volume.id[:8]}")
    assert shown.status_code == 200
    assert shown.json()["volume_id"] == volume.id
    assert api.get(f"/volumes/{volume.id.upper()}").status_code == 200


@pytest.mark.parametrize(
    "ref",
    ["abc", "d6764075-", "../../etc", "zzzzzzzz", "d6764075c5f1", "d6764075_c5f1", "%2e%2e"],
)
def test_malformed_volume_id_is_400(api: httpx.Client, ref: str) -> None:
    answer = api.get(f"/volumes/{ref}/files")
    assert answer.status_code in (400, 404)
    if answer.status_code == 400:
        assert "volume_id" in answer.json()["error"]


def test_unknown_volume_is_404(api: httpx.Client) -> None:
    for url in ("/volumes/00000000", "/volumes/00000000-0000-4000-8000-000000000000/files"):
        answer = api.get(url)
        assert answer.status_code == 404
        assert answer.json() == {"error": "Volume not found"}
    answer = api.post("/volumes/00000000/files", json={"path": "a", "content": "b"})
    assert answer.json() == {"error": "Volume not found"}


def test_ambiguous_prefix_is_400(api: httpx.Client, daemon: DaemonProcess) -> None:
    root = daemon.data_dir / "volumes"
    made = [root / f"abcdef12-0000-4000-8000-00000000000{i}" for i in (1, 2)]
    for path in made:
        path.mkdir(parents=True)
    try:
        answer = api.get("/volumes/abcdef12/files")
        assert answer.status_code == 400
        assert "Ambiguous" in answer.json()["error"]
        assert api.get(f"/volumes/{made[0].name}/files").status_code == 200
    finally:
        for path in made:
            path.rmdir()


def test_delete_refused_while_a_container_uses_it(tmp_path: Path) -> None:
    """Containers are not built yet: the 409 is checked through the injected callable."""
    manager = VolumeManager(
        tmp_path / "volumes",
        meta=DocumentStore(tmp_path),
        limits=ArchiveLimits(max_total_bytes=1, max_entries=1, max_ratio=2),
        users_of=lambda volume_id: ["minecraft-001"],
    )
    try:
        volume = manager.create()
        with pytest.raises(VolumeInUse) as caught:
            manager.delete(volume.id[:8])
        assert status_for(caught.value) == 409
        assert "minecraft-001" in caught.value.message
        assert volume.path.is_dir()
        manager.users_of = lambda volume_id: []
        manager.delete(volume.id)
        assert not volume.path.exists()
    finally:
        manager.close()


# -- contract routes -------------------------------------------------------------------


def test_contract_file_routes(api: httpx.Client, volume: Vol) -> None:
    url = volume.url[: len("/volumes/") + 8]  # the contract's examples use an 8-character prefix
    answer = api.post(
        f"{url}/files",
        json={"path": "config/server.properties", "content": "server-port=25565\nmax-players=20"},
    )
    assert answer.status_code == 200
    assert answer.json() == {
        "message": "File written successfully",
        "path": "config/server.properties",
    }
    assert (volume.path / "config/server.properties").read_text() == (
        "server-port=25565\nmax-players=20"
    )
    answer = api.post(f"{url}/folders", json={"path": "plugins/MyPlugin"})
    assert answer.json() == {"message": "Folder created successfully", "path": "plugins/MyPlugin"}
    write(api, volume, "plugins/config.yml", "a" * 1024)
    answer = api.post(f"{url}/copy", json={"source": "plugins", "destination": "backup/plugins"})
    assert answer.status_code == 200
    assert answer.json() == {
        "message": "Copied successfully",
        "source": "plugins",
        "destination": "backup/plugins",
    }
    listing = api.get(f"{url}/files", params={"path": "backup/plugins"})
    assert listing.status_code == 200
    files = listing.json()["files"]
    assert [(f["name"], f["type"], f["size"]) for f in files] == [
        ("MyPlugin", "directory", 0),
        ("config.yml", "file", 1024),
    ]
    assert set(files[1]) == {"name", "type", "size", "mode", "modified_at"}
    assert files[1]["mode"] == "0644"
    answer = api.post(f"{url}/compress", json={"format": "tar.gz", "output_name": "backup"})
    assert answer.status_code == 200
    body = answer.json()
    assert body["message"] == "Compression successful"
    assert body["archive_path"] == "backup.tar.gz"
    assert body["size"] == (volume.path / "backup.tar.gz").stat().st_size
    answer = api.post(
        f"{url}/decompress", json={"archive_path": "backup.tar.gz", "destination": "restored"}
    )
    assert answer.status_code == 200
    assert answer.json() == {
        "message": "Decompression successful",
        "destination": "restored",
        "skipped": [],
    }
    assert (volume.path / "restored/config/server.properties").is_file()
    assert (volume.path / "restored/backup/plugins/MyPlugin").is_dir()
    assert not (volume.path / "restored/backup.tar.gz").exists()


def test_listing_orders_folders_first_and_reports_symlinks(api: httpx.Client, volume: Vol) -> None:
    for name in ("b.txt", "a.txt"):
        write(api, volume, name)
    for name in ("zdir", "cdir"):
        api.post(f"{volume.url}/folders", json={"path": name})
    os.symlink("/etc", volume.path / "link")
    files = api.get(f"{volume.url}/files", params={"path": "/"}).json()["files"]
    assert [(f["name"], f["type"]) for f in files] == [
        ("cdir", "directory"),
        ("zdir", "directory"),
        ("a.txt", "file"),
        ("b.txt", "file"),
        ("link", "symlink"),
    ]


def test_base64_write_and_streamed_read(api: httpx.Client, volume: Vol) -> None:
    data = bytes(range(256)) * 10
    answer = api.post(
        f"{volume.url}/files",
        json={
            "path": "bin/blob.png",
            "content": base64.b64encode(data).decode(),
            "encoding": "base64",
        },
    )
    assert answer.status_code == 200
    read = api.get(f"{volume.url}/files/content", params={"path": "bin/blob.png"})
    assert read.status_code == 200
    assert read.content == data
    assert read.headers["content-type"] == "image/png"
    assert read.headers["content-length"] == str(len(data))
    bad = api.post(
        f"{volume.url}/files", json={"path": "x", "content": "%%%", "encoding": "base64"}
    )
    assert bad.status_code == 400
    assert "content" in bad.json()["error"]


def test_upload_is_streamed_past_the_json_limit(api: httpx.Client, volume: Vol) -> None:
    data = os.urandom(5 * 1024 * 1024)
    answer = api.put(f"{volume.url}/files/content", params={"path": "big/world.dat"}, content=data)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"message": "File uploaded successfully", "path": "big/world.dat"}
    assert (volume.path / "big/world.dat").read_bytes() == data

    def chunks() -> object:
        for _ in range(4):
            yield b"z" * 300_000

    answer = api.put(
        f"{volume.url}/files/content", params={"path": "big/world.dat"}, content=chunks()
    )
    assert answer.status_code == 200
    assert (volume.path / "big/world.dat").read_bytes() == b"z" * 1_200_000
    assert not [p for p in volume.path.iterdir() if p.name.startswith(".lightd-tmp-")]


def test_upload_limit_keeps_the_old_file(fresh_daemon: DaemonProcess) -> None:
    fresh_daemon.config = {"volumes": {"max_upload_bytes": 100_000}}
    fresh_daemon.start()
    with fresh_daemon.client() as api:
        vol = api.post("/volumes").json()
        url, path = f"/volumes/{vol['volume_id']}", Path(vol["path"])
        assert (
            api.put(f"{url}/files/content", params={"path": "f"}, content=b"old").status_code == 200
        )
        too_big = api.put(f"{url}/files/content", params={"path": "f"}, content=b"n" * 100_001)
        assert too_big.status_code == 413
        assert too_big.json() == {"error": "Request body too large"}

        def chunks() -> object:
            for _ in range(10):
                yield b"n" * 30_000

        streamed = api.put(f"{url}/files/content", params={"path": "f"}, content=chunks())
        assert streamed.status_code == 413
        assert (path / "f").read_bytes() == b"old"
        assert sorted(p.name for p in path.iterdir()) == ["f"]


def test_delete_move_chmod(api: httpx.Client, volume: Vol) -> None:
    write(api, volume, "a/one.txt", "1")
    write(api, volume, "b.txt", "2")
    moved = api.post(f"{volume.url}/move", json={"from": "a/one.txt", "to": "c/one.txt"})
    assert moved.status_code == 200
    assert moved.json() == {"message": "Moved successfully", "from": "a/one.txt", "to": "c/one.txt"}
    assert (volume.path / "c/one.txt").read_text() == "1"
    missing = api.post(f"{volume.url}/move", json={"from": "nope", "to": "x"})
    assert (missing.status_code, missing.json()) == (404, {"error": "File not found"})
    taken = api.post(f"{volume.url}/move", json={"from": "b.txt", "to": "c/one.txt"})
    assert taken.status_code == 409
    replaced = api.post(
        f"{volume.url}/move", json={"from": "b.txt", "to": "c/one.txt", "overwrite": True}
    )
    assert replaced.status_code == 200
    assert (volume.path / "c/one.txt").read_text() == "2"
    into_itself = api.post(f"{volume.url}/move", json={"from": "c", "to": "c/d"})
    assert into_itself.status_code == 400
    assert (
        api.post(f"{volume.url}/copy", json={"source": "c", "destination": "c/d"}).status_code
        == 400
    )
    copied = api.post(f"{volume.url}/copy", json={"source": "c", "destination": "a"})
    assert copied.status_code == 409
    assert (
        api.post(f"{volume.url}/copy", json={"source": "zz", "destination": "q"}).status_code == 404
    )

    chmod = api.post(f"{volume.url}/chmod", json={"path": "c/one.txt", "mode": "600"})
    assert chmod.json() == {
        "message": "Mode changed successfully",
        "path": "c/one.txt",
        "mode": "0600",
    }
    assert (volume.path / "c/one.txt").stat().st_mode & 0o7777 == 0o600
    assert (
        api.post(f"{volume.url}/chmod", json={"path": "c/one.txt", "mode": "4755"}).status_code
        == 400
    )
    assert (
        api.post(f"{volume.url}/chmod", json={"path": "c/one.txt", "mode": "rwx"}).status_code
        == 400
    )
    assert api.post(f"{volume.url}/chmod", json={"path": "nope", "mode": "644"}).status_code == 404

    gone = api.delete(f"{volume.url}/files", params={"path": "c"})
    assert gone.json() == {"message": "Deleted successfully", "path": "c"}
    assert not (volume.path / "c").exists()
    again = api.delete(f"{volume.url}/files", params={"path": "c"})
    assert (again.status_code, again.json()) == (404, {"error": "File not found"})
    assert api.delete(f"{volume.url}/files", params={"path": "/"}).status_code == 400
    assert api.delete(f"{volume.url}/files").status_code == 400


def test_conflicts_are_409(api: httpx.Client, volume: Vol) -> None:
    write(api, volume, "f.txt")
    assert api.post(f"{volume.url}/folders", json={"path": "f.txt"}).status_code == 409
    assert api.post(f"{volume.url}/folders", json={"path": "f.txt/sub"}).status_code == 409
    api.post(f"{volume.url}/folders", json={"path": "d"})
    assert api.post(f"{volume.url}/folders", json={"path": "d"}).status_code == 409
    assert write(api, volume, "d").status_code == 409
    assert write(api, volume, "f.txt/x").status_code == 409
    api.post(f"{volume.url}/compress", json={"output_name": "b"})
    again = api.post(f"{volume.url}/compress", json={"output_name": "b"})
    assert again.status_code == 409
    replaced = api.post(f"{volume.url}/compress", json={"output_name": "b", "overwrite": True})
    assert replaced.status_code == 200
    api.post(f"{volume.url}/decompress", json={"archive_path": "b.tar.gz", "destination": "out"})
    clash = api.post(
        f"{volume.url}/decompress", json={"archive_path": "b.tar.gz", "destination": "out"}
    )
    assert clash.status_code == 409
    merged = api.post(
        f"{volume.url}/decompress",
        json={"archive_path": "b.tar.gz", "destination": "out", "overwrite": True},
    )
    assert merged.status_code == 200


@pytest.mark.parametrize(
    ("route", "body", "field"),
    [
        pytest.param("files", {"content": "x"}, "Missing field 'path'", id="files-no-path"),
        pytest.param("files", {"path": "a", "content": 3}, "content", id="files-bad-content"),
        pytest.param(
            "files",
            {"path": "a", "content": "x", "mode": 1},
            "Unknown field 'mode'",
            id="files-extra",
        ),
        pytest.param(
            "files",
            {"path": "a", "content": "x", "encoding": "hex"},
            "encoding",
            id="files-encoding",
        ),
        pytest.param("folders", {}, "Missing field 'path'", id="folders-empty"),
        pytest.param("folders", {"path": "/"}, "path", id="folders-root"),
        pytest.param(
            "copy", {"source": "a"}, "Missing field 'destination'", id="copy-no-destination"
        ),
        pytest.param("move", {"from": "a"}, "Missing field 'to'", id="move-no-to"),
        pytest.param("chmod", {"path": "a", "mode": 755}, "mode", id="chmod-int"),
        pytest.param(
            "compress", {"format": "rar", "output_name": "x"}, "format", id="compress-format"
        ),
        pytest.param(
            "compress", {"format": "zip"}, "Missing field 'output_name'", id="compress-no-name"
        ),
        pytest.param(
            "compress", {"output_name": "x", "paths": "a"}, "paths", id="compress-paths-type"
        ),
        pytest.param(
            "decompress", {"destination": "x"}, "Missing field 'archive_path'", id="decompress"
        ),
        pytest.param("files", {"path": "a\u0000b", "content": "x"}, "NUL", id="files-nul"),
        pytest.param(
            "copy", {"source": "a" * 256, "destination": "b"}, "'source'", id="copy-long-name"
        ),
    ],
)
def test_malformed_bodies_name_the_field(
    api: httpx.Client, volume: Vol, route: str, body: dict[str, object], field: str
) -> None:
    answer = api.post(f"{volume.url}/{route}", json=body)
    assert answer.status_code == 400, answer.text
    assert field in answer.json()["error"]


def test_malformed_json_is_400(api: httpx.Client, volume: Vol) -> None:
    answer = api.post(f"{volume.url}/files", content=b"{not json")
    assert answer.status_code == 400
    assert answer.json() == {"error": "Malformed JSON body"}


def test_disk_full_is_507(api: httpx.Client, volume: Vol) -> None:
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(volume.path)],
        capture_output=True,
    )
    if mounted.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        answer = api.put(
            f"{volume.url}/files/content", params={"path": "big"}, content=b"x" * (1024 * 1024)
        )
        assert answer.status_code == 507
        assert answer.json() == {"error": "Insufficient storage"}
        assert os.listdir(volume.path) == []
    finally:
        subprocess.run(["umount", str(volume.path)], check=True)
