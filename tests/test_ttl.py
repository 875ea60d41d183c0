"""TTL parsing: a table of valid and invalid lifetimes (pure)."""

from __future__ import annotations

import pytest

from lightd.auth.ttl import MAX_TTL_SECONDS, parse_ttl


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1s", 1),
        ("90s", 90),
        ("15m", 900),
        ("1h", 3600),
        ("1h30m", 5400),
        ("2d", 172800),
        ("1d2h3m4s", 93784),
        ("30d", MAX_TTL_SECONDS),
        ("1H", 3600),
        (" 5m ", 300),
    ],
)
def test_valid_ttls(text: str, seconds: int) -> None:
    assert parse_ttl(text) == seconds


@pytest.mark.parametrize(
    "text",
    [
        "",
        "0s",
        "0h0m",
        "31d",
        "720h1s",
        "1",
        "h",
        "1x",
        "1m1h",
        "-1h",
        "1.5h",
        "1h 30m",
        "1hh",
        "forever",
        "99999999999d",
    ],
)
def test_invalid_ttls(text: str) -> None:
    with pytest.raises(ValueError):
        parse_ttl(text)
