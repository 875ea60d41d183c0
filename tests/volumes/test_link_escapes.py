"""Links lightd creates (extraction, move, copy) never resolve outside, as the kernel sees it.

lightd itself never follows a link, but host tools do (``tar -h``, ``rsync -L``, a
container mounting the volume elsewhere). So every link lightd makes is checked here
with the kernel's own resolution (``os.path.realpath`` over the real tree), for archives
in every format (tar as gnu, pax, ustar and v7, compressed tar, zip) and for links that a
move or copy places somewhere new. The CVE-2025-4138 chains (``link -> .`` then
``link/link/../../x``) and their relatives are in the tables.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import httpx
import pytest

from tests.support.canary import Canary
from tests.volumes.conftest import Vol
from tests.volumes.tarformats import ALL, ALL_TAR, Item, archive, file, folder, hardlink, symlink

TRAVERSAL = {"error": "Invalid path: path traversal detected"}


def _links(top: Path) -> dict[str, str]:
    found = {}
    for path in top.rglob("*"):
        if path.is_symlink():
            found[path.relative_to(top).as_posix()] = os.readlink(path)
    return found


def assert_links_stay_inside(top: Path) -> None:
    """Every link below ``top`` resolves (as the kernel follows it) to ``top`` or below."""
    real_top = os.path.realpath(top)
    for name, text in _links(top).items():
        resolved = os.path.realpath(top / name)
        assert resolved == real_top or resolved.startswith(real_top + os.sep), (
            name,
            text,
            resolved,
        )


# (archive entries, names skipped, links created with the text written)
EXTRACTIONS: list[object] = [
    pytest.param(
        [symlink("link", "./"), symlink("escape", "link/link/../../x")],
        {"escape"},
        {"link": "."},
        id="the CVE-2025-4138 chain through a dot link is skipped",
    ),
    pytest.param(
        [symlink("link", "."), symlink("token", "link/link/link/../../../master.token")],
        {"token"},
        {"link": "."},
        id="one more hop towards the data folder is skipped too",
    ),
    pytest.param(
        [symlink("current", "."), symlink("parent", "current/..")],
        {"parent"},
        {"current": "."},
        id="a parent link through a dot link at the top is skipped",
    ),
    pytest.param(
        [folder("d"), symlink("d/current", "."), symlink("d/parent", "current/..")],
        set(),
        {"d/current": ".", "d/parent": ".."},
        id="the same parent link one folder down stays inside and is kept",
    ),
    pytest.param(
        [folder("d"), symlink("d/up", ".."), symlink("x", "d/up/../y")],
        {"x"},
        {"d/up": ".."},
        id="dot-dot after a link to the parent is skipped",
    ),
    pytest.param(
        [folder("d"), symlink("d/a", "sub/../y"), symlink("d/sub", "..")],
        set(),
        {"d/a": "y", "d/sub": ".."},
        id="a later link cannot redirect an earlier one because the checked text is written",
    ),
    pytest.param(
        [file("lib64/x.so"), symlink("lib", "lib64"), symlink("so", "lib/x.so")],
        set(),
        {"lib": "lib64", "so": "lib64/x.so"},
        id="links on the way are written resolved",
    ),
    pytest.param(
        [file("d/e/f.txt"), symlink("d/e/g", "../../d/e/f.txt")],
        set(),
        {"d/e/g": "f.txt"},
        id="a detour through the top is written as the short way",
    ),
    pytest.param(
        [symlink("abs", "/etc"), symlink("up", ".."), symlink("deep", "a/b/../../../x")],
        {"abs", "up", "deep"},
        {},
        id="absolute and climbing targets are skipped",
    ),
    pytest.param(
        [symlink("loop", "loop"), symlink("a", "b"), symlink("b", "a")],
        set(),
        {"loop": "loop", "a": "b", "b": "b"},
        id="loops stay loops inside",
    ),
    pytest.param(
        [file("ok.txt"), symlink("l", "ok.txt"), hardlink("d/h", "l")],
        set(),
        {"l": "ok.txt", "d/h": "ok.txt"},
        id="a hard link to a symlink becomes a symlink judged from its own folder",
    ),
    pytest.param(
        [file("ok.txt"), folder("d"), symlink("d/l", "../ok.txt"), hardlink("h", "d/l")],
        {"h"},
        {"d/l": "../ok.txt"},
        id="a hard link to a symlink that would climb out from its folder is skipped",
    ),
    pytest.param(
        [symlink("dot", "."), hardlink("d/h", "dot"), symlink("d/x", "h/../../y")],
        {"d/x"},
        {"dot": ".", "d/h": "."},
        id="a hard-linked dot link then dot-dot through it is skipped",
    ),
]


def _decompress(api: httpx.Client, vol: Vol, data: bytes) -> httpx.Response:
    (vol.path / "in.bin").write_bytes(data)
    return api.post(f"{vol.url}/decompress", json={"archive_path": "in.bin", "destination": "dest"})


@pytest.mark.parametrize("fmt", [*ALL, "tar.gz"])
@pytest.mark.parametrize(("items", "skipped", "links"), EXTRACTIONS)
def test_extracted_links_resolve_inside_the_destination(
    api: httpx.Client,
    volume: Vol,
    canary: Canary,
    fmt: str,
    items: list[Item],
    skipped: set[str],
    links: dict[str, str],
) -> None:
    if fmt == "zip" and any(item.kind == "hardlink" for item in items):
        pytest.skip("zip has no hard links")
    data = gzip.compress(archive(items, "gnu")) if fmt == "tar.gz" else archive(items, fmt)
    answer = _decompress(api, volume, data)
    assert answer.status_code == 200, answer.text
    assert {s["name"] for s in answer.json()["skipped"]} == skipped
    dest = volume.path / "dest"
    assert _links(dest) == links
    assert_links_stay_inside(dest)
    assert sorted(p.name for p in volume.path.iterdir()) == ["dest", "in.bin"]


@pytest.mark.parametrize("fmt", ALL_TAR)
def test_every_tar_format_round_trips_files_folders_and_links(
    api: httpx.Client, volume: Vol, fmt: str
) -> None:
    items = [
        folder("a"),
        file("a/b.txt", b"hello"),
        file("a/" + "n" * 90 + ".txt", b"long"),
        symlink("a/l", "b.txt"),
        hardlink("a/h", "a/b.txt"),
    ]
    answer = _decompress(api, volume, archive(items, fmt))
    assert answer.status_code == 200, answer.text
    dest = volume.path / "dest"
    assert (dest / "a/b.txt").read_bytes() == b"hello"
    assert os.readlink(dest / "a/l") == "b.txt"
    assert (dest / "a/h").stat().st_ino == (dest / "a/b.txt").stat().st_ino


def test_overwrite_merge_keeps_links_inside(api: httpx.Client, volume: Vol) -> None:
    first = [folder("d"), symlink("d/dot", ".")]
    assert _decompress(api, volume, archive(first, "pax")).status_code == 200
    second = [folder("d"), symlink("d/dot", "."), symlink("d/esc", "dot/dot/../../../x")]
    (volume.path / "in.bin").write_bytes(archive(second, "pax"))
    answer = api.post(
        f"{volume.url}/decompress",
        json={"archive_path": "in.bin", "destination": "dest", "overwrite": True},
    )
    assert answer.status_code == 200, answer.text
    assert {s["name"] for s in answer.json()["skipped"]} == {"d/esc"}
    assert_links_stay_inside(volume.path / "dest")


@pytest.mark.parametrize(
    ("planted", "items", "skipped"),
    [
        pytest.param(
            {"evil": "/"},
            [folder("n"), symlink("n/l", "../evil/etc")],
            {"n/l"},
            id="a new folder's link through a container's absolute link is skipped",
        ),
        pytest.param(
            {"up": ".."},
            [symlink("l", "up/x")],
            {"l"},
            id="a link through a container's parent link is skipped",
        ),
        pytest.param(
            {"sub": "."},
            [symlink("l", "sub/x")],
            set(),
            id="a link through a container's link that stays inside is kept",
        ),
    ],
)
def test_merged_links_are_judged_with_what_the_destination_holds(
    api: httpx.Client,
    volume: Vol,
    planted: dict[str, str],
    items: list[Item],
    skipped: set[str],
) -> None:
    dest = volume.path / "dest"
    dest.mkdir()
    for name, text in planted.items():
        os.symlink(text, dest / name)  # as a container would
    (volume.path / "in.bin").write_bytes(archive(items, "pax"))
    answer = api.post(
        f"{volume.url}/decompress",
        json={"archive_path": "in.bin", "destination": "dest", "overwrite": True},
    )
    assert answer.status_code == 200, answer.text
    assert {s["name"] for s in answer.json()["skipped"]} == skipped
    for name in skipped:
        assert not (dest / name).is_symlink()
    made = {name: text for name, text in _links(dest).items() if name not in planted}
    for name in made:
        resolved = os.path.realpath(dest / name)
        assert resolved.startswith(os.path.realpath(dest)), (name, resolved)


# -- links placed by move and copy ------------------------------------------------------


def _plant(vol: Path) -> None:
    """Links as a container would make them (lightd never made these)."""
    (vol / "d/e/f").mkdir(parents=True)
    (vol / "x").write_text("x")
    os.symlink("../../x", vol / "d/e/a")  # inside: d/e -> d -> top
    os.symlink("..", vol / "d/up")  # inside: the top
    os.symlink("/etc", vol / "d/abs")  # absolute: the same wherever it is
    os.symlink("x", vol / "inside")


# (route, body, status): 400 answers must leave everything as it was.
PLACEMENTS: list[object] = [
    pytest.param("move", {"from": "d/e/a", "to": "a"}, 400, id="moving a link up a level"),
    pytest.param("copy", {"source": "d/e/a", "destination": "a"}, 400, id="copying it up"),
    pytest.param("move", {"from": "d/e", "to": "e"}, 400, id="moving its folder up"),
    pytest.param("copy", {"source": "d/e", "destination": "e"}, 400, id="copying its folder up"),
    pytest.param("move", {"from": "d/up", "to": "up"}, 400, id="moving a parent link to the top"),
    pytest.param(
        "copy", {"source": "d", "destination": "z"}, 200, id="copying a folder at the same depth"
    ),
    pytest.param(
        "move", {"from": "d/e/a", "to": "d/e/f/a"}, 200, id="moving a link down stays inside"
    ),
    pytest.param("move", {"from": "d", "to": "q/d"}, 200, id="moving a whole folder down"),
    pytest.param("copy", {"source": "inside", "destination": "i2"}, 200, id="copying a plain link"),
    pytest.param(
        "move", {"from": "d/abs", "to": "abs"}, 200, id="an absolute link keeps its meaning"
    ),
]


@pytest.mark.parametrize(("route", "body", "status"), PLACEMENTS)
def test_move_and_copy_never_place_a_link_that_leads_outside(
    api: httpx.Client, volume: Vol, route: str, body: dict[str, str], status: int
) -> None:
    _plant(volume.path)
    before = {**_links(volume.path)}
    answer = api.post(f"{volume.url}/{route}", json=body)
    assert answer.status_code == status, answer.text
    after = _links(volume.path)
    if status == 400:
        assert answer.json() == TRAVERSAL
        assert after == before
    for name, text in after.items():
        if not text.startswith("/"):
            resolved = os.path.realpath(volume.path / name)
            assert resolved.startswith(os.path.realpath(volume.path)), (name, text, resolved)
    assert not [p for p in volume.path.iterdir() if p.name.startswith(".lightd-tmp-")]


def test_a_copied_tree_has_the_same_links(api: httpx.Client, volume: Vol) -> None:
    _plant(volume.path)
    answer = api.post(f"{volume.url}/copy", json={"source": "d", "destination": "z"})
    assert answer.status_code == 200, answer.text
    assert _links(volume.path / "z") == _links(volume.path / "d")
    single = api.post(f"{volume.url}/copy", json={"source": "d/up", "destination": "z/up2"})
    assert single.status_code == 200, single.text
    assert os.readlink(volume.path / "z/up2") == ".."
    again = api.post(
        f"{volume.url}/copy", json={"source": "d", "destination": "z", "overwrite": True}
    )
    assert again.status_code == 200, again.text
    assert _links(volume.path / "z") == _links(volume.path / "d")
    assert not [p for p in volume.path.iterdir() if p.name.startswith(".lightd-tmp-")]
