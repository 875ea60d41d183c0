"""A real WebSocket client for tests (the ``websockets`` package, sync API)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from tests.support.daemon import DaemonProcess

Event = dict[str, Any]


def open_socket(url: str, **kwargs: Any) -> ClientConnection:
    """A connected client; entered as a context manager, as websockets 17 expects."""
    return connect(url, open_timeout=10, **kwargs).__enter__()


class Watcher:
    def __init__(self, daemon: DaemonProcess, path: str, **kwargs: Any) -> None:
        self.conn: ClientConnection = open_socket(f"{daemon.ws_url}{path}", **kwargs)
        self.seen: list[Event] = []

    def send(self, message: Any) -> None:
        self.conn.send(message if isinstance(message, str) else orjson.dumps(message).decode())

    def recv(self, timeout: float = 10.0) -> Event:
        event: Event = orjson.loads(self.conn.recv(timeout=timeout))
        self.seen.append(event)
        return event

    def until(
        self, predicate: Callable[[Event], bool], *, timeout: float = 20.0, what: str = ""
    ) -> Event:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"no event {what or predicate} in {timeout}s; saw {self.seen[-8:]}"
                )
            try:
                event = self.recv(timeout=left)
            except TimeoutError:
                continue
            if predicate(event):
                return event

    def console_text(self) -> str:
        return "".join(e["data"] for e in self.seen if e.get("event") == "console")

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Watcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def refused_status(daemon: DaemonProcess, path: str) -> int:
    """The HTTP status of a refused upgrade (fails if the upgrade is accepted)."""
    try:
        conn = open_socket(f"{daemon.ws_url}{path}")
    except InvalidStatus as exc:
        return int(exc.response.status_code)
    conn.close()
    raise AssertionError(f"upgrade to {path} was accepted")


__all__ = ["ConnectionClosed", "Watcher", "open_socket", "refused_status"]
