"""Quart request class for a JSON API: bodies parse as JSON whatever their Content-Type.

An empty body reads as ``{}`` (so optional bodies work and required fields are named
as missing); anything unparsable is :class:`~lightd.errors.MalformedBody`. The raw
bytes go straight to orjson, never through a text decode: a body that is not UTF-8
(UTF-16, Latin-1, a lone surrogate, a byte order mark) is malformed JSON like any other,
not an unexpected error. A number without a fraction (``80.0``) is an integer, as in
JSON Schema, so the strict models take it where the description promises an integer. Routes that
stream a raw body (file uploads) get their own size limit instead of the JSON one,
because Quart fixes a body's limit when the request object is built. A transfer's body
(a whole volume, read as a stream) is kept as the pieces that arrived
(:class:`PieceBody`): Quart's own body copies every piece twice on the event loop.
"""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Generator
from typing import Any, ClassVar

import orjson
from quart import Request
from quart.wrappers.request import Body
from werkzeug.exceptions import RequestEntityTooLarge

from lightd.errors import MalformedBody

STREAMED_UPLOADS = (("PUT", re.compile(r"^/volumes/[^/]+/files/content$")),)
STREAMED_METHODS = frozenset(verb for verb, _ in STREAMED_UPLOADS)
TRANSFER_PATH = "/transfers"


def parse_json_body(data: bytes | str) -> Any:
    """The JSON value of a request body or message: ``{}`` when blank, else strict orjson.

    ``data`` is parsed as it came (bytes are never decoded first), so anything that is
    not UTF-8 JSON is :class:`~lightd.errors.MalformedBody`.
    """
    if not data.strip():
        return {}
    try:
        return _integral(orjson.loads(data))
    except orjson.JSONDecodeError as exc:
        raise MalformedBody() from exc


def _integral(value: Any) -> Any:
    """``value`` with every float that has no fraction made an int (JSON has one number).

    In place and without recursion: orjson accepts nesting deeper than Python's stack.
    """
    if isinstance(value, float):
        return int(value) if value.is_integer() else value
    stack = [value] if isinstance(value, list | dict) else []
    while stack:
        node = stack.pop()  # only lists and dicts are ever pushed
        keys: Any = range(len(node)) if isinstance(node, list) else list(node)
        for key in keys:
            item = node[key]
            if isinstance(item, float):
                if item.is_integer():
                    node[key] = int(item)
            elif isinstance(item, list | dict):
                stack.append(item)
    return value


class PieceBody(Body):
    """A request body iterated as the pieces the server received, never joined or
    copied (Quart's :class:`Body` appends each to one buffer and copies that out)."""

    def __init__(self, expected_content_length: int | None, max_content_length: int | None) -> None:
        super().__init__(expected_content_length, max_content_length)
        self._pieces: deque[bytes] = deque()
        self._size = 0

    async def __anext__(self) -> bytes:
        if self._must_raise is not None:
            raise self._must_raise
        if not self._pieces and not self._complete.is_set():
            self._has_data.clear()
            await self._has_data.wait()
        if self._must_raise is not None:
            raise self._must_raise
        if not self._pieces:
            raise StopAsyncIteration()
        return self._pieces.popleft()

    def __await__(self) -> Generator[Any, None, Any]:
        if self._must_raise is not None:
            raise self._must_raise
        yield from self._complete.wait().__await__()
        if self._must_raise is not None:
            raise self._must_raise
        return b"".join(self._pieces)

    def append(self, data: bytes) -> None:
        if not data or self._must_raise is not None:
            return
        self._pieces.append(data)
        self._size += len(data)
        self._has_data.set()
        if self._max_content_length is not None and self._size > self._max_content_length:
            self._must_raise = RequestEntityTooLarge()
            self.set_complete()

    def clear(self) -> None:
        self._pieces.clear()


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
        elif method == "POST" and path == TRANSFER_PATH:
            # A transfer's body is a whole volume, verified by its own checksums.
            kwargs["max_content_length"] = None
            kwargs["body_timeout"] = None
            self.body_class = PieceBody
        super().__init__(method, scheme, path, *args, **kwargs)

    @classmethod
    def with_upload_limit(cls, limit: int) -> type[JsonApiRequest]:
        """This class with ``limit`` as the body limit of the streamed upload routes."""
        return type("LightdRequest", (cls,), {"upload_limit": limit})

    async def get_json(self, force: bool = False, silent: bool = False, cache: bool = True) -> Any:
        if cache and self._cached_json[silent] is not Ellipsis:
            return self._cached_json[silent]
        data = await self.get_data(cache=cache, as_text=False)
        try:
            result = parse_json_body(data)
        except MalformedBody:
            if not silent:
                raise
            result = None
        if cache:
            self._cached_json[silent] = result
        return result

    def on_json_loading_failed(self, error: Exception) -> Any:
        raise MalformedBody()
