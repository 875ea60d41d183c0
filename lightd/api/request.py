"""Quart request class for a JSON API: bodies parse as JSON whatever their Content-Type.

An empty body reads as ``{}`` (so optional bodies work and required fields are named
as missing); anything unparsable is :class:`~lightd.errors.MalformedBody`. Routes that
stream a raw body (file uploads) get their own size limit instead of the JSON one,
because Quart fixes a body's limit when the request object is built.
"""

from __future__ import annotations

import re
import time
from typing import Any, ClassVar

from quart import Request

from lightd.errors import MalformedBody

STREAMED_UPLOADS = (("PUT", re.compile(r"^/volumes/[^/]+/files/content$")),)
STREAMED_METHODS = frozenset(verb for verb, _ in STREAMED_UPLOADS)


class JsonApiRequest(Request):
    upload_limit: ClassVar[int | None] = None

    def __init__(self, method: str, scheme: str, path: str, *args: Any, **kwargs: Any) -> None:
        self.started = time.perf_counter()  # for the request log line and metrics
        if (
            self.upload_limit is not None
            and method in STREAMED_METHODS
            and any(method == verb and pattern.match(path) for verb, pattern in STREAMED_UPLOADS)
        ):
            kwargs["max_content_length"] = self.upload_limit
        super().__init__(method, scheme, path, *args, **kwargs)

    @classmethod
    def with_upload_limit(cls, limit: int) -> type[JsonApiRequest]:
        """This class with ``limit`` as the body limit of the streamed upload routes."""
        return type("LightdRequest", (cls,), {"upload_limit": limit})

    async def get_json(self, force: bool = False, silent: bool = False, cache: bool = True) -> Any:
        data = await self.get_data(cache=cache, as_text=False)
        if not data.strip():
            return {}
        return await super().get_json(force=True, silent=silent, cache=cache)

    def on_json_loading_failed(self, error: Exception) -> Any:
        raise MalformedBody()
