"""A panel for tests: a real HTTP server on 127.0.0.1 that records what lightd sends.

Answers ``POST /update`` and ``GET /health`` with 200, or with what the test asks
(:meth:`Panel.answer` for every request, :meth:`Panel.answer_next` for the next few
updates). It can be stopped and started again on the same port, so lightd sees a panel
that goes away and comes back. Stdlib only (threaded ``http.server``, HTTP/1.0, so no
kept-alive connection outlives a stop).
"""

from __future__ import annotations

import collections
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support.daemon import wait_for
from tests.support.lab import free_port


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    answered: int
    at: float = field(default_factory=time.monotonic)


@dataclass
class Panel:
    port: int = field(default_factory=free_port)
    requests: list[Request] = field(default_factory=list)
    status: int = 200
    _next: collections.deque[tuple[int, str | None]] = field(default_factory=collections.deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Panel:
        panel = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                panel._record(self, json.loads(raw) if raw else None)

            def do_GET(self) -> None:
                panel._record(self, None)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def answer(self, status: int) -> None:
        """Answer every request (updates and health) with ``status`` from now on."""
        self.status = status

    def answer_next(self, *statuses: int, retry_after: str | None = None) -> None:
        """Answer the next updates with these statuses, one each, then as before.

        ``retry_after``: a ``Retry-After`` header sent with each of these answers.
        """
        with self._lock:
            self._next.extend((status, retry_after) for status in statuses)

    def _record(self, handler: BaseHTTPRequestHandler, body: Any) -> None:
        with self._lock:
            status, retry_after = self.status, None
            if handler.command == "POST" and self._next:
                status, retry_after = self._next.popleft()
            self.requests.append(
                Request(handler.command, handler.path, dict(handler.headers), body, status)
            )
        payload = b'{"ok": true}' if status < 400 else b'{"error": "no"}'
        handler.send_response(status)
        if retry_after is not None:
            handler.send_header("Retry-After", retry_after)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)

    # -- what was received --------------------------------------------------

    def updates(self, server: str | None = None, *, accepted: bool = True) -> list[Request]:
        with self._lock:
            found = [r for r in self.requests if r.method == "POST" and r.path == "/update"]
        if accepted:
            found = [r for r in found if 200 <= r.answered < 300]
        return [r for r in found if server is None or r.body.get("server") == server]

    def statuses(self, server: str) -> list[str]:
        """What the panel took for ``server``: a status, or ``error:<data>``."""
        return [
            r.body["status"] if "status" in r.body else f"error:{r.body.get('data')}"
            for r in self.updates(server)
        ]

    def health_checks(self) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.method == "GET" and r.path == "/health"]

    def wait_statuses(
        self, server: str, expected: list[str], *, timeout: float = 30.0
    ) -> list[str]:
        """Wait until the panel took as many notifications as expected; the first ones."""
        wait_for(
            lambda: len(self.statuses(server)) >= len(expected),
            timeout=timeout,
            what=f"panel statuses {expected} for {server}",
        )
        return self.statuses(server)[: len(expected)]

    def __enter__(self) -> Panel:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
