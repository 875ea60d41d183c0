"""Volume search: the name and content rules as tables, then the route on the shared daemon.

Symlinks planted towards a watched canary outside the volume must be reported as links
and never entered nor read; every cap (limit, depth, bytes read per file, answer size)
is reached on real files and answered with ``truncated``.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from lightd.errors import InvalidField
from lightd.fs import search as search_module
from lightd.fs.beneath import Root
from lightd.fs.search import SearchQuery, find_in, name_matcher, search
from tests.support.canary import Canary
from tests.volumes.conftest import Vol


@pytest.mark.parametrize(
    ("pattern", "name", "matches"),
    [
        pytest.param("server", "server.properties", True, id="a substring matches"),
        pytest.param("SERVER", "my-Server.jar", True, id="a substring ignores case"),
        pytest.param("server", "srv.properties", False, id="a missing substring does not match"),
        pytest.param("*.jar", "paper-1.20.jar", True, id="a glob matches the whole name"),
        pytest.param("*.jar", "paper.jar.bak", False, id="a glob is anchored at the end"),
        pytest.param("*.JAR", "paper.jar", True, id="a glob ignores case"),
        pytest.param("log?.txt", "log1.txt", True, id="a question mark is one character"),
        pytest.param("log[0-9].txt", "logx.txt", False, id="a class limits the character"),
        pytest.param("a*b", "a\nb", True, id="a star crosses any character"),
    ],
)
def test_name_matcher(pattern: str, name: str, matches: bool) -> None:
    assert name_matcher(pattern)(name) is matches


@pytest.mark.parametrize(
    "pattern",
    [
        pytest.param("ab", id="a pattern under three characters is refused"),
        pytest.param("a/b/c", id="a pattern with a slash is refused"),
        pytest.param("abc\x00", id="a pattern with NUL is refused"),
        pytest.param("x" * 256, id="a pattern over 255 characters is refused"),
    ],
)
def test_name_matcher_refuses(pattern: str) -> None:
    with pytest.raises(InvalidField) as caught:
        name_matcher(pattern)
    assert "pattern" in caught.value.message


@pytest.mark.parametrize(
    ("head", "needle", "line"),
    [
        pytest.param(b"hello", b"hello", 1, id="a match on the first line is line 1"),
        pytest.param(b"a\nb\nmotd=x\n", b"motd", 3, id="lines are counted before the match"),
        pytest.param(b"a\nb\n", b"zzz", None, id="an absent needle is None"),
        pytest.param(b"\x00\xffneedle", b"needle", 1, id="binary content is searched"),
    ],
)
def test_find_in(head: bytes, needle: bytes, line: int | None) -> None:
    assert find_in(head, needle) == line


# -- on real files ---------------------------------------------------------------------


def run(folder: Path, query: SearchQuery) -> search_module.SearchResult:
    with Root(folder) as root:
        return search(root, (), query)


def test_content_across_read_chunks_counts_lines(tmp_path: Path) -> None:
    chunk = search_module.READ_CHUNK
    body = b"x" * (chunk - 3) + b"\n" + b"y" * 10 + b"\nNEEDLE"  # straddles the boundary
    (tmp_path / "big.log").write_bytes(b"line\n" * 5 + body)
    found = run(tmp_path, SearchQuery(pattern="big", content=b"NEEDLE"))
    assert [(m.path, m.line) for m in found.matches] == [("big.log", 8)]


def test_answer_cap_truncates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for index in range(50):
        (tmp_path / f"match-{index:03}.txt").write_bytes(b"")
    per_match = len("match-000.txt") + search_module.MATCH_OVERHEAD
    monkeypatch.setattr(search_module, "ANSWER_MAX_BYTES", per_match * 10)
    found = run(tmp_path, SearchQuery(pattern="match", limit=1000))
    assert len(found.matches) == 10
    assert found.truncated


def test_entry_cap_truncates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for index in range(30):
        (tmp_path / f"f{index:02}-abc").write_bytes(b"")
    monkeypatch.setattr(search_module, "ENTRIES_MAX", 12)
    found = run(tmp_path, SearchQuery(pattern="abc"))
    assert len(found.matches) == 12
    assert found.truncated


# -- the route -------------------------------------------------------------------------


def plant(vol: Vol, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        target = vol.path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


def find(api: httpx.Client, vol: Vol, **params: str | int | bool) -> httpx.Response:
    return api.get(f"{vol.url}/search", params=params)


def test_search_by_name(api: httpx.Client, volume: Vol) -> None:
    plant(
        volume,
        {
            "server.properties": b"motd=hi\n",
            "config/Server.yml": b"a: 1\n",
            "plugins/x.jar": b"PK",
            "logs/latest.log": b"",
        },
    )
    (volume.path / "serverdata").mkdir()
    answer = find(api, volume, pattern="server")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["truncated"] is False
    by_path = {m["path"]: m for m in body["matches"]}
    assert set(by_path) == {"server.properties", "serverdata", "config/Server.yml"}
    assert by_path["server.properties"]["type"] == "file"
    assert by_path["server.properties"]["size"] == 8
    assert by_path["serverdata"]["type"] == "directory"
    stamp = int(os.lstat(volume.path / "server.properties").st_mtime)
    assert by_path["server.properties"]["modified_at"] == stamp
    assert by_path["server.properties"]["line"] is None
    glob = find(api, volume, pattern="*.jar").json()["matches"]
    assert [m["path"] for m in glob] == ["plugins/x.jar"]


def test_search_by_content_gives_the_line(api: httpx.Client, volume: Vol) -> None:
    plant(
        volume,
        {
            "a.txt": b"one\ntwo\nlevel-seed=42\n",
            "b.txt": b"nothing here\n",
            "sub/c.cfg": b"level-seed=1",
        },
    )
    body = find(api, volume, content="level-seed").json()
    assert sorted((m["path"], m["line"]) for m in body["matches"]) == [
        ("a.txt", 3),
        ("sub/c.cfg", 1),
    ]
    both = find(api, volume, pattern="*.txt", content="level-seed").json()["matches"]
    assert [(m["path"], m["line"]) for m in both] == [("a.txt", 3)]


def test_symlinks_are_reported_never_followed(
    api: httpx.Client, volume: Vol, canary: Canary
) -> None:
    """Links to a canary outside the volume: named as links, never entered nor read."""
    os.symlink(canary.dir, volume.path / "secret-dir")
    os.symlink(canary.secret, volume.path / "secret.txt")
    plant(volume, {"inside/secret-notes.txt": b"canary secret\n"})
    os.symlink("../..", volume.path / "inside" / "up")
    by_name = find(api, volume, pattern="secret").json()
    assert sorted((m["path"], m["type"]) for m in by_name["matches"]) == [
        ("inside/secret-notes.txt", "file"),
        ("secret-dir", "symlink"),
        ("secret.txt", "symlink"),
    ]
    by_content = find(api, volume, content="canary secret").json()
    assert [m["path"] for m in by_content["matches"]] == ["inside/secret-notes.txt"]
    deep = find(api, volume, pattern="inner").json()
    assert deep["matches"] == []
    # The start folder itself may not be a link either.
    through = find(api, volume, pattern="inner", path="secret-dir")
    assert through.status_code == 400
    assert through.json() == {"error": "Invalid path: path traversal detected"}


def test_skipped_folders_unless_asked(api: httpx.Client, volume: Vol) -> None:
    plant(
        volume,
        {
            "node_modules/left-pad/index.js": b"",
            ".git/config-index": b"",
            "src/index.js": b"",
        },
    )
    default = find(api, volume, pattern="index").json()["matches"]
    assert [m["path"] for m in default] == ["src/index.js"]
    every = find(api, volume, pattern="index", include_skipped=True).json()["matches"]
    assert sorted(m["path"] for m in every) == [
        ".git/config-index",
        "node_modules/left-pad/index.js",
        "src/index.js",
    ]


def test_limit_and_depth_caps(api: httpx.Client, volume: Vol) -> None:
    plant(volume, {f"many/file-{i:03}.dat": b"" for i in range(120)})
    default = find(api, volume, pattern="file-").json()
    assert len(default["matches"]) == 100
    assert default["truncated"] is True
    small = find(api, volume, pattern="file-", limit=7).json()
    assert len(small["matches"]) == 7 and small["truncated"] is True
    exact = find(api, volume, pattern="file-", limit=120).json()
    assert len(exact["matches"]) == 120 and exact["truncated"] is False
    deep = "/".join(f"d{i}" for i in range(1, 11))
    plant(volume, {f"{deep}/target-file": b""})
    levels = [f"d{i}" for i in range(1, 11)]
    names = find(api, volume, pattern="d[0-9]*", max_depth=8).json()["matches"]
    assert max(len(m["path"].split("/")) for m in names) == 8
    assert find(api, volume, pattern="target-file").json()["matches"] == []
    shallow = find(api, volume, pattern="target-file", path="/".join(levels[:5])).json()
    assert [m["path"] for m in shallow["matches"]] == [f"{deep}/target-file"]
    assert find(api, volume, pattern="d1", max_depth=9).status_code == 400


def test_content_is_read_up_to_the_cap(api: httpx.Client, volume: Vol) -> None:
    # The shared daemon reads at most 5 MiB of a file for a content search.
    cap = 5 * 1024 * 1024
    plant(
        volume,
        {
            "early.bin": b"NEEDLE" + b"\x00" * 100,
            "late.bin": b"\x00" * cap + b"NEEDLE",
            "edge.bin": b"\x00" * (cap - 6) + b"NEEDLE",
        },
    )
    found = find(api, volume, content="NEEDLE").json()["matches"]
    assert sorted(m["path"] for m in found) == ["early.bin", "edge.bin"]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        pytest.param({"pattern": "ab"}, "pattern", id="a short pattern is 400"),
        pytest.param({}, "pattern", id="neither pattern nor content is 400"),
        pytest.param({"pattern": "abc", "limit": 0}, "limit", id="a zero limit is 400"),
        pytest.param({"pattern": "abc", "max_depth": 0}, "max_depth", id="a zero depth is 400"),
        pytest.param({"pattern": "abc", "bogus": 1}, "bogus", id="an unknown query is 400"),
    ],
)
def test_bad_queries(
    api: httpx.Client, volume: Vol, params: dict[str, str | int], field: str
) -> None:
    answer = find(api, volume, **params)
    assert answer.status_code == 400
    assert field in answer.json()["error"]


def test_unknown_volume(api: httpx.Client) -> None:
    answer = api.get("/volumes/00000000/search", params={"pattern": "abc"})
    assert answer.status_code == 404
    assert answer.json() == {"error": "Volume not found"}
