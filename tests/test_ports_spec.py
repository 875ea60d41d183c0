"""The pool document's pure parsing: addresses, entries, duplicates, whole documents, ranges."""

from __future__ import annotations

from typing import Any

import pytest

from lightd.spec.ports import (
    InvalidEntry,
    PoolDocumentError,
    PortEntry,
    parse_entry,
    parse_pool,
    parse_pool_bytes,
    parse_port_range,
    pool_document,
)
from lightd.spec.ports import normalise_ip as normalise


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        pytest.param("0.0.0.0", "0.0.0.0", id="ipv4-any"),
        pytest.param("192.168.1.10", "192.168.1.10", id="ipv4"),
        pytest.param(" 10.0.0.1 ", "10.0.0.1", id="ipv4-spaces"),
        pytest.param("::", "::", id="ipv6-any"),
        pytest.param("0:0:0:0:0:0:0:1", "::1", id="ipv6-long-form"),
        pytest.param("2001:DB8::0001", "2001:db8::1", id="ipv6-case-and-zeros"),
        pytest.param("[::1]", "::1", id="ipv6-brackets"),
        pytest.param("::ffff:127.0.0.1", "::ffff:7f00:1", id="ipv4-mapped"),
    ],
)
def test_addresses_are_normalised(given: str, expected: str) -> None:
    assert normalise(given) == expected


@pytest.mark.parametrize(
    "given",
    [
        pytest.param("", id="empty"),
        pytest.param("localhost", id="hostname"),
        pytest.param("1.2.3", id="three-octets"),
        pytest.param("256.1.1.1", id="octet-too-big"),
        pytest.param("01.2.3.4", id="leading-zero"),
        pytest.param("1.2.3.4/24", id="network"),
        pytest.param("fe80::1%eth0", id="zone-index"),
        pytest.param(":::1", id="bad-ipv6"),
    ],
)
def test_bad_addresses_are_refused(given: str) -> None:
    with pytest.raises(ValueError, match=r"address|zone"):
        normalise(given)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(
            {"ip": "0.0.0.0", "port": 25565},
            PortEntry(ip="0.0.0.0", port=25565, protocol="tcp", reserved=False),
            id="defaults",
        ),
        pytest.param(
            {"ip": "::1", "port": 1, "protocol": "udp", "reserved": True},
            PortEntry(ip="::1", port=1, protocol="udp", reserved=True),
            id="all-fields",
        ),
        pytest.param(
            {"ip": "0:0::1", "port": 65535},
            PortEntry(ip="::1", port=65535),
            id="normalised-max-port",
        ),
    ],
)
def test_valid_entries(raw: dict[str, Any], expected: PortEntry) -> None:
    assert parse_entry(raw) == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        pytest.param({"ip": "nope", "port": 1}, "ip: 'nope' is not a valid", id="bad-address"),
        pytest.param({"ip": "1.1.1.1", "port": 0}, "port: Input should be greater", id="port-0"),
        pytest.param({"ip": "1.1.1.1", "port": 65536}, "port: Input should be less", id="port-max"),
        pytest.param(
            {"ip": "1.1.1.1", "port": "80"}, "port: Input should be a valid int", id="str"
        ),
        pytest.param(
            {"ip": "1.1.1.1", "port": True}, "port: Input should be a valid int", id="bool"
        ),
        pytest.param(
            {"ip": "1.1.1.1", "port": 8.5}, "port: Input should be a valid int", id="float"
        ),
        pytest.param(
            {"ip": "1.1.1.1", "port": 80, "protocol": "sctp"},
            "protocol: Input should be",
            id="proto",
        ),
        pytest.param(
            {"ip": "1.1.1.1", "port": 80, "reserved": "yes"}, "reserved: Input should be", id="resv"
        ),
        pytest.param({"port": 80}, "missing field 'ip'", id="no-ip"),
        pytest.param({"ip": "1.1.1.1"}, "missing field 'port'", id="no-port"),
        pytest.param(
            {"ip": "1.1.1.1", "port": 80, "prot": "tcp"}, "unknown field 'prot'", id="typo"
        ),
        pytest.param(["1.1.1.1", 80], "entry must be an object", id="list"),
        pytest.param(None, "entry must be an object", id="null"),
    ],
)
def test_invalid_entries_name_their_reason(raw: Any, reason: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_entry(raw)
    assert str(caught.value).startswith(reason)


def test_one_bad_entry_leaves_the_others_usable() -> None:
    items: list[Any] = [
        {"ip": "0.0.0.0", "port": 25565},
        {"ip": "0.0.0.0", "port": 99999},
        {"ip": "::1", "port": 25565, "protocol": "udp"},
        {"ip": "0:0::1", "port": 25565},
        "garbage",
        {"ip": "0.0.0.0", "port": 25566, "protocol": "udp"},
    ]
    parsed = parse_pool({"ports": items})
    assert [entry.key for entry in parsed.entries] == [
        ("0.0.0.0", 25565),
        ("::1", 25565),
        ("0.0.0.0", 25566),
    ]
    problems = {problem.index: problem.reason for problem in parsed.problems}
    assert set(problems) == {1, 3, 4}
    assert problems[1].startswith("port:")
    assert problems[3] == "duplicate of entry 2 ([::1]:25565)"
    assert problems[4] == "entry must be an object"


def test_same_port_other_protocol_is_a_duplicate() -> None:
    parsed = parse_pool(
        {"ports": [{"ip": "1.1.1.1", "port": 80}, {"ip": "1.1.1.1", "port": 80, "protocol": "udp"}]}
    )
    assert len(parsed.entries) == 1
    assert parsed.problems[0].reason.startswith("duplicate of entry 0")


def test_writing_back_keeps_invalid_entries_and_other_keys_verbatim() -> None:
    broken = {"ip": "nope", "port": "x", "note": "being edited"}
    parsed = parse_pool(
        {"$schema": "schema/ports.schema.json", "ports": [{"ip": "0:0::1", "port": 7}, broken]}
    )
    assert isinstance(parsed.slots[1], InvalidEntry)
    assert pool_document(parsed.slots, parsed.extra) == {
        "$schema": "schema/ports.schema.json",
        "ports": [{"ip": "::1", "port": 7, "protocol": "tcp", "reserved": False}, broken],
    }


@pytest.mark.parametrize(
    ("data", "count"),
    [
        pytest.param(None, 0, id="missing-file"),
        pytest.param(b"", 0, id="empty-file"),
        pytest.param(b"{}", 0, id="no-ports-key"),
        pytest.param(b'{"ports": []}', 0, id="empty-list"),
        pytest.param(b'{"ports": [{"ip": "::", "port": 1}]}', 1, id="one"),
    ],
)
def test_documents_that_parse(data: bytes | None, count: int) -> None:
    assert len(parse_pool_bytes(data).entries) == count


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        pytest.param(b'{"ports": [', "not valid JSON", id="truncated"),
        pytest.param(b"{\n  'ports': []}", "not valid JSON", id="single-quotes"),
        pytest.param(b"[]", "must be a JSON object", id="top-level-list"),
        pytest.param(b'{"ports": {"ip": "::"}}', "'ports' must be a list", id="ports-object"),
    ],
)
def test_documents_refused_as_a_whole(data: bytes, reason: str) -> None:
    with pytest.raises(PoolDocumentError, match=reason):
        parse_pool_bytes(data)


def test_json_errors_carry_line_and_column() -> None:
    with pytest.raises(PoolDocumentError, match=r"line 3 column \d+"):
        parse_pool_bytes(b'{\n  "ports": [\n    {"ip": "::", "port": 1,}\n  ]\n}')


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("25565-25600", range(25565, 25601), id="span"),
        pytest.param("25565", range(25565, 25566), id="single"),
        pytest.param(" 1 - 3 ", range(1, 4), id="spaces"),
        pytest.param("65535-65535", range(65535, 65536), id="top"),
    ],
)
def test_port_ranges(text: str, expected: range) -> None:
    assert parse_port_range(text) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        pytest.param("", "is not a range", id="empty"),
        pytest.param("a-b", "is not a range", id="letters"),
        pytest.param("0-10", "outside 1-65535", id="zero"),
        pytest.param("65000-70000", "outside 1-65535", id="too-high"),
        pytest.param("20-10", "starts after it ends", id="reversed"),
        pytest.param("1-2-3", "is not a range", id="three-parts"),
    ],
)
def test_bad_port_ranges(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_port_range(text)
