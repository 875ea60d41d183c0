"""The pure path parser: what callers type becomes parts below the root, or an error."""

from __future__ import annotations

import pytest

from lightd.errors import ArchiveRejected, InvalidField, PathTraversal
from lightd.fs.archive import detect_format, entry_parts
from lightd.fs.paths import (
    FOLDER,
    OTHER,
    Found,
    Parts,
    parse_path,
    relative_target,
    resolve_link,
)
from tests.volumes.tarformats import v7_header


@pytest.mark.parametrize(
    ("raw", "parts"),
    [
        pytest.param("", (), id="empty-is-root"),
        pytest.param("/", (), id="slash-is-root"),
        pytest.param("/a/b", ("a", "b"), id="leading-slash"),
        pytest.param("a//b/./c/", ("a", "b", "c"), id="redundant"),
        pytest.param("a/../b", ("b",), id="inner-dotdot-stays-inside"),
        pytest.param("..a/b..", ("..a", "b.."), id="dots-in-names"),
        pytest.param("%2e%2e", ("%2e%2e",), id="percent-is-literal"),
        pytest.param("\uff0e\uff0e", ("\uff0e\uff0e",), id="fullwidth-is-a-name"),
    ],
)
def test_parse(raw: str, parts: tuple[str, ...]) -> None:
    assert parse_path(raw) == parts


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        pytest.param("..", PathTraversal, id="dotdot"),
        pytest.param("/..", PathTraversal, id="abs-dotdot"),
        pytest.param("a/../..", PathTraversal, id="climb"),
        pytest.param("a\x00", InvalidField, id="nul"),
        pytest.param("n" * 256, InvalidField, id="long-name"),
        pytest.param("é" * 128, InvalidField, id="long-name-in-bytes"),
        pytest.param("a/" * 2049, InvalidField, id="long-path"),
        pytest.param(".lightd-tmp-x", InvalidField, id="reserved"),
    ],
)
def test_parse_refuses(raw: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        parse_path(raw)


def _tree(entries: dict[str, str | None]) -> dict[Parts, Found]:
    """A tree for resolve_link: name -> link text, or None for a folder."""
    return {
        tuple(name.split("/")): FOLDER if text is None else Found("link", text)
        for name, text in entries.items()
    }


# (tree, folder of the new link, its text, where it leads or None, the text written)
LINKS: list[object] = [
    pytest.param({}, "a", "b", "a/b", "b", id="a name beside the link stays beside it"),
    pytest.param({}, "a", "../b", "b", "../b", id="one level up from a folder is inside"),
    pytest.param({}, "a", "../../b", None, None, id="two levels up from one folder is outside"),
    pytest.param({}, "", "/etc", None, None, id="an absolute target is outside"),
    pytest.param({}, "", "", None, None, id="an empty target is refused"),
    pytest.param({}, "", "a\x00b", None, None, id="a NUL in the target is refused"),
    pytest.param({}, "", ".", "", ".", id="the top itself is inside"),
    pytest.param({}, "a/b", "..", "a", "..", id="the parent folder is inside"),
    pytest.param({}, "", "x/../y", "y", "y", id="dot-dot after a missing name is textual"),
    pytest.param(
        {"link": "."}, "", "link/link/../../x", None, None, id="the CVE-2025-4138 chain escapes"
    ),
    pytest.param(
        {"link": "."},
        "",
        "link/link/link/../../../master.token",
        None,
        None,
        id="one more hop reaches the data folder and escapes too",
    ),
    pytest.param(
        {"d": None, "d/current": "."},
        "d",
        "current/..",
        "",
        "..",
        id="parent through a dot link from a folder is the top, inside",
    ),
    pytest.param(
        {"current": "."}, "", "current/..", None, None, id="parent through a dot link escapes"
    ),
    pytest.param(
        {"d": None, "d/up": ".."},
        "",
        "d/up/../x",
        None,
        None,
        id="a link to the parent then dot-dot climbs out",
    ),
    pytest.param(
        {"lib": "lib64", "lib64": None},
        "",
        "lib/x.so",
        "lib64/x.so",
        "lib64/x.so",
        id="links on the way are written resolved",
    ),
    pytest.param({"l": "l"}, "", "l", None, None, id="a link loop is refused"),
    pytest.param({"a": "b", "b": "a"}, "", "a/x", None, None, id="a loop of two links is refused"),
    pytest.param(
        {"abs": "/etc"}, "", "abs/passwd", None, None, id="through an absolute link escapes"
    ),
    pytest.param(
        {"d": None, "d/e": None},
        "d/e",
        "../../d/e/f",
        "d/e/f",
        "f",
        id="a detour through the top is written short",
    ),
]


@pytest.mark.parametrize(("tree", "folder", "target", "leads", "written"), LINKS)
def test_links_resolve_as_the_kernel_follows_them(
    tree: dict[str, str | None], folder: str, target: str, leads: str | None, written: str | None
) -> None:
    known = _tree(tree)
    where = tuple(folder.split("/")) if folder else ()
    resolved = resolve_link(where, target, lambda parts: known.get(parts, OTHER))
    if leads is None:
        assert resolved is None
        return
    assert resolved == (tuple(leads.split("/")) if leads else ())
    assert relative_target(where, resolved) == written


@pytest.mark.parametrize("name", ["/x", "\\x", "C:/x", "../x", "a/../../x", "a\x00"])
def test_entry_names_refused(name: str) -> None:
    with pytest.raises(ArchiveRejected):
        entry_parts(name)


def test_detect_format() -> None:
    assert detect_format(b"\x1f\x8b\x08") == "tar.gz"
    assert detect_format(b"BZh91AY") == "tar.bz2"
    assert detect_format(b"\xfd7zXZ\x00\x00") == "tar.xz"
    assert detect_format(b"PK\x03\x04") == "zip"
    assert detect_format(b"\0" * 257 + b"ustar\x00") == "tar"
    assert detect_format(v7_header()) == "tar"
    with pytest.raises(ArchiveRejected):
        detect_format(b"b" + v7_header()[1:])  # a v7 header whose checksum is wrong
    with pytest.raises(ArchiveRejected):
        detect_format(b"Rar!\x1a\x07")
