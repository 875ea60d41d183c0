"""Parsing of token lifetimes such as ``90s``, ``1h30m`` or ``7d``.

Pure functions only; no clock, no I/O.
"""

from __future__ import annotations

import re

MAX_TTL_SECONDS = 30 * 24 * 3600

_TTL = re.compile(r"(?:(\d{1,7})d)?(?:(\d{1,7})h)?(?:(\d{1,7})m)?(?:(\d{1,9})s)?")
_UNIT_SECONDS = (86400, 3600, 60, 1)


def parse_ttl(text: str) -> int:
    """Seconds in ``text`` (units d, h, m, s in that order, e.g. ``1h30m``).

    Raises ValueError with a reason for an empty, malformed, zero or too long TTL.
    """
    match = _TTL.fullmatch(text.strip().lower()) if text else None
    if not text or match is None or not any(match.groups()):
        raise ValueError(
            "must be a duration such as '30s', '15m', '1h30m' or '7d' (units d, h, m, s)"
        )
    pairs = zip(match.groups(), _UNIT_SECONDS, strict=True)
    seconds = sum(int(value) * unit for value, unit in pairs if value)
    if seconds <= 0:
        raise ValueError("must be longer than zero")
    if seconds > MAX_TTL_SECONDS:
        raise ValueError("must be at most 30 days")
    return seconds
