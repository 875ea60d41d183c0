"""Quart request class for a JSON API: bodies parse as JSON whatever their Content-Type.

An empty body reads as ``{}`` (so optional bodies work and required fields are named
as missing); anything unparsable is :class:`~lightd.errors.MalformedBody`.
"""

from __future__ import annotations

from typing import Any

from quart import Request

from lightd.errors import MalformedBody


class JsonApiRequest(Request):
    async def get_json(self, force: bool = False, silent: bool = False, cache: bool = True) -> Any:
        data = await self.get_data(cache=cache, as_text=False)
        if not data.strip():
            return {}
        return await super().get_json(force=True, silent=silent, cache=cache)

    def on_json_loading_failed(self, error: Exception) -> Any:
        raise MalformedBody()
