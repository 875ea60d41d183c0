"""Identifier rules shared by documents, routes and the engine naming.

Pure validation only.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import StringConstraints

INTERNAL_ID_RE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}$")

InternalId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}$")]


def is_internal_id(value: str) -> bool:
    return bool(INTERNAL_ID_RE.fullmatch(value))
