"""Hostile paths through every file route, with symlinks to a watched canary in the volume.

After every single request the canary must be untouched (inotify sees no open, read,
listing, write, attribute change or deletion), no answer may be a 5xx, and nothing
outside the volume may appear.
"""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.canary import SECRET, Canary, plant_links
from tests.volumes.conftest import Vol

TRAVERSAL = {"error": "Invalid path: path traversal detected"}

# (path, what a read of it must answer)
HOSTILE: list[tuple[str, int]] = [
    ("..", 400),
    ("../", 400),
    ("../../../../etc/passwd", 400),
    ("/../etc/passwd", 400),
    ("a/../../x", 400),
    ("sub/../../canary/secret.txt", 400),
    ("./../x", 400),
    ("out", 400),
    ("out/secret.txt", 400),
    ("out/../out/secret.txt", 400),
    ("out_file", 400),
    ("rel/secret.txt", 400),
    ("rel/sub/inner.txt", 400),
    ("sub/deep/inner.txt", 400),
    ("loop/x", 400),
    ("inside/real.txt", 400),
    ("/etc/passwd", 404),
    ("%2e%2e/%2e%2e/etc/passwd", 404),
    ("..%2f..%2fetc%2fpasswd", 404),
    ("..\\..\\etc\\passwd", 404),
    ("\u2025/etc/passwd", 404),
    ("\uff0e\uff0e/\uff0e\uff0e/etc/passwd", 404),
    ("\u2024\u2024/x", 404),
    ("x\x00y", 400),
    ("a" * 256, 400),
    ("a/" * 2100, 400),
]
IDS = [
    "dotdot",
    "dotdot-slash",
    "deep-dotdot",
    "abs-dotdot",
    "inner-dotdot",
    "climb-to-canary",
    "dot-dotdot",
    "link-dir",
    "through-link",
    "lexical-link",
    "link-file",
    "relative-link",
    "relative-link-deep",
    "nested-link",
    "self-loop",
    "inside-link",
    "absolute",
    "percent-encoded",
    "percent-slash",
    "backslashes",
    "two-dot-leader",
    "fullwidth-dots",
    "one-dot-leaders",
    "nul",
    "long-name",
    "long-path",
]


@pytest.fixture
def hostile(api: httpx.Client, volume: Vol, canary: Canary) -> Iterator[tuple[Vol, Canary]]:
    plant_links(volume.path, canary)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("payload.txt")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"data"))
    (volume.path / "payload.tar.gz").write_bytes(buffer.getvalue())
    yield volume, canary
    for leftover in volume.path.iterdir():
        assert not leftover.name.startswith(".lightd-tmp-"), leftover


def _operations(
    api: httpx.Client, vol: Vol, path: str
) -> list[tuple[str, Callable[[], httpx.Response]]]:
    url = vol.url
    return [
        ("list", lambda: api.get(f"{url}/files", params={"path": path})),
        ("read", lambda: api.get(f"{url}/files/content", params={"path": path})),
        ("write", lambda: api.post(f"{url}/files", json={"path": path, "content": "pwned"})),
        (
            "upload",
            lambda: api.put(f"{url}/files/content", params={"path": path}, content=b"pwned"),
        ),
        ("mkdir", lambda: api.post(f"{url}/folders", json={"path": f"{path}/newdir"})),
        ("copy-from", lambda: api.post(f"{url}/copy", json={"source": path, "destination": "cp"})),
        ("copy-to", lambda: api.post(f"{url}/copy", json={"source": "sub", "destination": path})),
        (
            "move-to",
            lambda: api.post(f"{url}/move", json={"from": "sub/real.txt", "to": f"{path}/m"}),
        ),
        ("chmod", lambda: api.post(f"{url}/chmod", json={"path": path, "mode": "777"})),
        (
            "compress-paths",
            lambda: api.post(
                f"{url}/compress", json={"output_name": "c1", "paths": [path], "overwrite": True}
            ),
        ),
        (
            "compress-output",
            lambda: api.post(
                f"{url}/compress", json={"output_name": f"{path}/c2", "paths": ["sub"]}
            ),
        ),
        (
            "decompress-to",
            lambda: api.post(
                f"{url}/decompress",
                json={
                    "archive_path": "payload.tar.gz",
                    "destination": f"{path}/d",
                    "overwrite": True,
                },
            ),
        ),
        (
            "decompress-from",
            lambda: api.post(f"{url}/decompress", json={"archive_path": path, "destination": "d2"}),
        ),
        ("move-from", lambda: api.post(f"{url}/move", json={"from": f"{path}/x", "to": "mv"})),
        ("delete-inner", lambda: api.delete(f"{url}/files", params={"path": f"{path}/secret.txt"})),
    ]


@pytest.mark.parametrize(("path", "read_status"), HOSTILE, ids=IDS)
def test_hostile_path_never_escapes(
    api: httpx.Client, hostile: tuple[Vol, Canary], path: str, read_status: int
) -> None:
    vol, canary = hostile
    for name, call in _operations(api, vol, path):
        answer = call()
        canary.assert_untouched(f"by {name} {path!r}")
        assert answer.status_code < 500, f"{name} {path!r}: {answer.status_code} {answer.text}"
        assert SECRET not in answer.content, f"{name} {path!r} leaked the canary"
        if name == "read":
            assert answer.status_code == read_status, f"read {path!r}: {answer.text}"
            if read_status == 400 and ".." in path.split("/"):
                assert answer.json() == TRAVERSAL
    assert (
        SECRET not in api.get(f"{vol.url}/files/content", params={"path": "sub/real.txt"}).content
    )


def test_links_are_handled_as_links(api: httpx.Client, hostile: tuple[Vol, Canary]) -> None:
    vol, canary = hostile
    listed = api.get(f"{vol.url}/files").json()["files"]
    kinds = {f["name"]: f["type"] for f in listed}
    assert kinds["out"] == kinds["out_file"] == kinds["rel"] == "symlink"
    assert api.post(f"{vol.url}/move", json={"from": "out", "to": "moved-link"}).status_code == 200
    assert (vol.path / "moved-link").is_symlink()
    # A relative link is copied only where it still resolves inside the volume.
    copied = api.post(f"{vol.url}/copy", json={"source": "rel", "destination": "copied"})
    assert (copied.status_code, copied.json()) == (400, TRAVERSAL)
    assert not (vol.path / "copied").exists() and not (vol.path / "copied").is_symlink()
    copied = api.post(f"{vol.url}/copy", json={"source": "inside", "destination": "copied"})
    assert copied.status_code == 200
    assert os.readlink(vol.path / "copied") == "sub"
    assert api.delete(f"{vol.url}/files", params={"path": "moved-link"}).status_code == 200
    canary.assert_untouched("by link operations")
    # Writing at a link's path is refused like any other path that meets a link.
    wrote = api.post(f"{vol.url}/files", json={"path": "out_file", "content": "new"})
    assert (wrote.status_code, wrote.json()) == (400, TRAVERSAL)
    assert os.readlink(vol.path / "out_file") == str(canary.secret)
    canary.assert_untouched("by writing at a link")
    assert api.delete(f"{vol.url}/files", params={"path": "sub"}).status_code == 200
    whole = api.post(f"{vol.url}/compress", json={"output_name": "all", "format": "zip"})
    assert whole.status_code == 200
    canary.assert_untouched("by compressing a volume with links")
    whole = api.post(f"{vol.url}/compress", json={"output_name": "all", "format": "tar"})
    answer = api.post(f"{vol.url}/decompress", json={"archive_path": "all.tar", "destination": "r"})
    assert answer.status_code == 200
    skipped = {s["name"] for s in answer.json()["skipped"]}
    assert {"out_file", "rel"} <= skipped
    assert os.readlink(vol.path / "r/copied") == "sub"  # inside: kept as it was
    canary.assert_untouched("by extracting links")


def test_canary_watch_sees_other_processes(tmp_path: Path) -> None:
    """The check above means something: a read or a listing by another process is seen."""
    watched = Canary(tmp_path)
    watched.watch()
    try:
        watched.assert_untouched("before")
        subprocess.run(["cat", str(watched.inner)], check=True, capture_output=True)
        assert watched.events()
        subprocess.run(["ls", str(watched.dir)], check=True, capture_output=True)
        assert watched.events()
        with pytest.raises(AssertionError):
            os.utime(watched.secret)
            watched.assert_untouched("after a touch")
    finally:
        watched.close()


def _write_calls(api: httpx.Client, vol: Vol, path: str) -> list[tuple[str, httpx.Response]]:
    return [
        ("write", api.post(f"{vol.url}/files", json={"path": path, "content": "new"})),
        (
            "write-base64",
            api.post(
                f"{vol.url}/files", json={"path": path, "content": "bmV3", "encoding": "base64"}
            ),
        ),
        ("upload", api.put(f"{vol.url}/files/content", params={"path": path}, content=b"new")),
        (
            "upload-empty",
            api.put(f"{vol.url}/files/content", params={"path": path}, content=b""),
        ),
    ]


@pytest.mark.parametrize(
    ("link", "target"),
    [
        pytest.param("out_file", None, id="a link to a file outside is not written through"),
        pytest.param("out", None, id="a link to a folder outside is not written through"),
        pytest.param("inside", "sub", id="a link to a folder inside is not replaced"),
        pytest.param("to_real", "sub/real.txt", id="a link to a file inside is not replaced"),
        pytest.param("dangling", "nothing-here", id="a dangling link is not replaced"),
        pytest.param("loop", "loop", id="a looping link is not replaced"),
        pytest.param("sub/deep", None, id="a link in a folder is not replaced"),
    ],
)
def test_writing_at_a_link_is_refused(
    api: httpx.Client, hostile: tuple[Vol, Canary], link: str, target: str | None
) -> None:
    vol, canary = hostile
    os.symlink("sub/real.txt", vol.path / "to_real")
    os.symlink("nothing-here", vol.path / "dangling")
    before = os.readlink(vol.path / link)
    if target is not None:
        assert before == target
    for name, answer in _write_calls(api, vol, link):
        assert (answer.status_code, answer.json()) == (400, TRAVERSAL), (name, answer.text)
        assert os.readlink(vol.path / link) == before, name
    assert (vol.path / "sub/real.txt").read_bytes() == b"real\n"
    assert not (vol.path / "nothing-here").exists()
    canary.assert_untouched(f"by writing at {link}")
