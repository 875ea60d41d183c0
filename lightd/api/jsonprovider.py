"""orjson as Quart's JSON provider (faster encoding, strict decoding).

It only encodes and decodes; it must not shape responses.
"""

from __future__ import annotations

from typing import Any

import orjson
from quart.json.provider import DefaultJSONProvider


def _default(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, set | frozenset):
        return sorted(value)
    return str(value)


class OrjsonProvider(DefaultJSONProvider):
    def dumps(self, obj: Any, **kwargs: Any) -> str:
        return orjson.dumps(obj, default=_default, option=orjson.OPT_NON_STR_KEYS).decode()

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return orjson.loads(s)
