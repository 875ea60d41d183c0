"""The pull guard as tables: URLs, addresses, redirects and file names."""

from __future__ import annotations

import ipaddress

import pytest

from lightd.errors import PullRefused
from lightd.transfer.guard import (
    MAX_REDIRECTS,
    PullUrl,
    file_name,
    follow,
    parse_networks,
    parse_url,
    pick_address,
    refusal,
    safe_name,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(
            "http://example.com/a.jar",
            PullUrl("http", "example.com", 80, "/a.jar"),
            id="a plain http URL keeps its path on the default port",
        ),
        pytest.param(
            "HTTPS://Example.COM:8443/x?y=1",
            PullUrl("https", "example.com", 8443, "/x?y=1"),
            id="scheme and host are lowercased, the query kept",
        ),
        pytest.param(
            "http://[0:0::1]:81",
            PullUrl("http", "::1", 81, "/"),
            id="an IPv6 literal is canonical and the path defaults to /",
        ),
        pytest.param(
            "http://example.com./x",
            PullUrl("http", "example.com", 80, "/x"),
            id="a trailing dot of the host is dropped",
        ),
        pytest.param(
            "https://bücher.example/x",
            PullUrl("https", "xn--bcher-kva.example", 443, "/x"),
            id="an international name is sent as IDNA",
        ),
    ],
)
def test_parse_url(raw: str, expected: PullUrl) -> None:
    assert parse_url(raw) == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        pytest.param("ftp://example.com/a", "only http and https", id="ftp is refused"),
        pytest.param("file:///etc/passwd", "only http and https", id="file is refused"),
        pytest.param("gopher://x/", "only http and https", id="gopher is refused"),
        pytest.param("http://user:pw@example.com/", "credentials", id="credentials are refused"),
        pytest.param("http:///path", "no host", id="a URL without host is refused"),
        pytest.param("http://exa mple.com/", "spaces", id="a space is refused"),
        pytest.param("http://example.com/\r\nX: y", "control", id="CRLF injection is refused"),
        pytest.param("http://example.com:99999/", "does not parse", id="a bad port is refused"),
        pytest.param("http://example.com:0/", "port 0", id="port 0 is refused"),
        pytest.param("http://0x7f.1/", "not valid", id="a hex dotted host is refused"),
        pytest.param("http://127.1/", "not valid", id="a short dotted IPv4 is refused"),
        pytest.param("http://2130706433/", "not valid", id="a decimal IPv4 is refused"),
        pytest.param("http://ex$ample.com/", "not valid", id="odd host characters are refused"),
        pytest.param("http://e.com/" + "a" * 9000, "longer", id="a huge URL is refused"),
    ],
)
def test_parse_url_refuses(raw: str, reason: str) -> None:
    with pytest.raises(PullRefused) as caught:
        parse_url(raw)
    assert reason in caught.value.message
    assert caught.value.message.startswith("Pull refused: ")


NOTHING: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        pytest.param("127.0.0.1", "loopback", id="IPv4 loopback is refused"),
        pytest.param("127.0.0.2", "loopback", id="all of 127/8 is loopback"),
        pytest.param("::1", "loopback", id="IPv6 loopback is refused"),
        pytest.param("::ffff:127.0.0.1", "loopback", id="IPv4-mapped loopback is refused"),
        pytest.param("169.254.169.254", "link-local", id="the metadata address is refused"),
        pytest.param("fe80::1", "link-local", id="IPv6 link-local is refused"),
        pytest.param("10.0.0.1", "private", id="10/8 is refused"),
        pytest.param("172.16.5.4", "private", id="172.16/12 is refused"),
        pytest.param("192.168.1.1", "private", id="192.168/16 is refused"),
        pytest.param("fd00::1", "private", id="IPv6 unique local is refused"),
        pytest.param("224.0.0.1", "multicast", id="IPv4 multicast is refused"),
        pytest.param("ff02::1", "multicast", id="IPv6 multicast is refused"),
        pytest.param("0.0.0.0", "unspecified", id="0.0.0.0 is refused"),
        pytest.param("::", "unspecified", id="the IPv6 unspecified address is refused"),
        pytest.param("100.64.0.1", "not globally routable", id="shared address space is refused"),
        pytest.param("192.0.2.1", "private", id="a documentation range is refused"),
    ],
)
def test_refusal_of_internal_addresses(address: str, kind: str) -> None:
    reason = refusal(ipaddress.ip_address(address), NOTHING)
    assert reason is not None and kind in reason


@pytest.mark.parametrize(
    ("address", "allow", "allowed"),
    [
        pytest.param("93.184.216.34", [], True, id="a public IPv4 address is allowed"),
        pytest.param("2606:4700::1111", [], True, id="a public IPv6 address is allowed"),
        pytest.param("127.0.0.1", ["127.0.0.1"], True, id="an allowed loopback address passes"),
        pytest.param("127.0.0.2", ["127.0.0.1/32"], False, id="the allowance is exact"),
        pytest.param("10.1.2.3", ["10.0.0.0/8"], True, id="an allowed private network passes"),
        pytest.param("::ffff:10.1.2.3", ["10.0.0.0/8"], True, id="a mapped address is unmapped"),
        pytest.param("::1", ["127.0.0.0/8"], False, id="an IPv4 allowance does not cover ::1"),
    ],
)
def test_allow_networks(address: str, allow: list[str], allowed: bool) -> None:
    reason = refusal(ipaddress.ip_address(address), parse_networks(allow))
    assert (reason is None) is allowed


@pytest.mark.parametrize(
    ("addresses", "allow", "picked"),
    [
        pytest.param(["93.184.216.34"], [], "93.184.216.34", id="the one public address"),
        pytest.param(
            ["127.0.0.1", "93.184.216.34"], [], "93.184.216.34", id="a refused one is skipped"
        ),
        pytest.param(["fe80::1%eth0"], ["fe80::/10"], "fe80::1", id="a scope id is dropped"),
    ],
)
def test_pick_address(addresses: list[str], allow: list[str], picked: str) -> None:
    assert pick_address("h.example", addresses, parse_networks(allow)) == picked


@pytest.mark.parametrize(
    ("addresses", "reason"),
    [
        pytest.param(["127.0.0.1", "::1"], "loopback", id="a name resolving to loopback"),
        pytest.param(["10.0.0.7"], "private", id="a name resolving to a private address"),
        pytest.param([], "does not resolve", id="a name resolving to nothing"),
    ],
)
def test_pick_address_refuses(addresses: list[str], reason: str) -> None:
    with pytest.raises(PullRefused) as caught:
        pick_address("h.example", addresses, NOTHING)
    assert reason in caught.value.message


HERE = PullUrl("https", "files.example", 443, "/dl/a.jar?x=1")


@pytest.mark.parametrize(
    ("status", "location", "hops", "expected"),
    [
        pytest.param(302, "/b.jar", 1, "https://files.example/b.jar", id="a relative redirect"),
        pytest.param(301, "c.jar", 1, "https://files.example/dl/c.jar", id="a path-relative one"),
        pytest.param(
            307, "http://127.0.0.1:8080/x", 1, "http://127.0.0.1:8080/x", id="an absolute one"
        ),
        pytest.param(
            308, "//cdn.example/z", MAX_REDIRECTS, "https://cdn.example/z", id="the tenth redirect"
        ),
    ],
)
def test_follow(status: int, location: str, hops: int, expected: str) -> None:
    assert follow(HERE, status, location, hops).url == expected


@pytest.mark.parametrize(
    ("status", "location", "hops", "reason"),
    [
        pytest.param(302, "/x", MAX_REDIRECTS + 1, "more than 10", id="the eleventh redirect"),
        pytest.param(302, None, 1, "without a Location", id="a redirect without Location"),
        pytest.param(302, "ftp://x/y", 1, "only http", id="a redirect to another scheme"),
        pytest.param(302, "file:///etc/passwd", 1, "only http", id="a redirect to a file"),
        pytest.param(200, "/x", 1, "not a redirect", id="a 200 is no redirect"),
    ],
)
def test_follow_refuses(status: int, location: str | None, hops: int, reason: str) -> None:
    with pytest.raises(PullRefused) as caught:
        follow(HERE, status, location, hops)
    assert reason in caught.value.message


@pytest.mark.parametrize(
    ("candidate", "expected"),
    [
        pytest.param("server.jar", "server.jar", id="a plain name is kept"),
        pytest.param("../../etc/passwd", "passwd", id="only the last component counts"),
        pytest.param("..\\..\\boot.ini", "boot.ini", id="backslashes separate too"),
        pytest.param("..", None, id="dot-dot is nothing"),
        pytest.param(".", None, id="dot is nothing"),
        pytest.param("a/", None, id="a trailing slash leaves nothing"),
        pytest.param("evil\x00.jar", "evil.jar", id="NUL is dropped"),
        pytest.param("line\r\nbreak.txt", "linebreak.txt", id="control characters are dropped"),
        pytest.param("\u202etxt.exe", "txt.exe", id="bidi overrides are dropped"),
        pytest.param(".lightd-tmp-abc", None, id="lightd's reserved prefix is refused"),
        pytest.param("  spaced.txt  ", "spaced.txt", id="surrounding spaces are trimmed"),
        pytest.param("name.", "name", id="trailing dots are trimmed"),
        pytest.param("x" * 300 + ".jar", "x" * 251 + ".jar", id="a long name keeps its extension"),
        pytest.param("é" * 200, "é" * 127, id="a long name is cut on a character boundary"),
    ],
)
def test_safe_name(candidate: str, expected: str | None) -> None:
    assert safe_name(candidate) == expected


@pytest.mark.parametrize(
    ("disposition", "use_header", "expected"),
    [
        pytest.param('attachment; filename="mods.zip"', True, "mods.zip", id="quoted filename"),
        pytest.param("attachment; filename=plain.zip", True, "plain.zip", id="bare filename"),
        pytest.param(
            "attachment; filename=\"fallback.zip\"; filename*=UTF-8''%C3%A9t%C3%A9.zip",
            True,
            "été.zip",
            id="filename* wins and is decoded",
        ),
        pytest.param('attachment; filename="../../x.sh"', True, "x.sh", id="a path is cut"),
        pytest.param('attachment; filename=".."', True, "a.jar", id="a useless name falls back"),
        pytest.param('attachment; filename="mods.zip"', False, "a.jar", id="ignored unless asked"),
        pytest.param(None, True, "a.jar", id="no header gives the URL's name"),
    ],
)
def test_file_name(disposition: str | None, use_header: bool, expected: str) -> None:
    url = PullUrl("https", "files.example", 443, "/dl/a.jar?x=1")
    assert file_name(url, disposition, use_header=use_header) == expected


def test_file_name_defaults_when_the_url_has_none() -> None:
    url = PullUrl("https", "files.example", 443, "/")
    assert file_name(url, None, use_header=True) == "download"
