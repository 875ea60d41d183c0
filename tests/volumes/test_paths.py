"""The pure path parser: what callers type becomes parts below the root, or an error."""

from __future__ import annotations

import pytest

from lightd.errors import ArchiveRejected, InvalidField, PathTraversal
from lightd.fs.archive import detect_format, entry_parts
from lightd.fs.paths import parse_path, resolve_link_target


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


def test_link_targets() -> None:
    assert resolve_link_target(("a", "l"), "b") == ("a", "b")
    assert resolve_link_target(("a", "l"), "../b") == ("b",)
    assert resolve_link_target(("a", "l"), "../../b") is None
    assert resolve_link_target(("l",), "/etc") is None
    assert resolve_link_target(("l",), ".") == ()


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
    with pytest.raises(ArchiveRejected):
        detect_format(b"Rar!\x1a\x07")
