"""A loopback HTTP server the pull tests run: files, redirects, headers, slow bodies.

It binds ``127.0.0.1`` on a free port only (the tests never contact anything else) and
counts the requests it served per path, so a test can tell whether a refused address
was ever contacted. Routes:

- ``/files/<name>``: the bytes registered with :meth:`LoopbackServer.put` (Content-Length)
- ``/chunked/<size>``: ``size`` bytes, chunked, no Content-Length
- ``/redirect/<n>``: a 302 to ``/redirect/<n-1>``; ``/redirect/0`` is ``/files/target``
- ``/to?url=<u>``: a 302 to ``u``
- ``/named?name=<n>``: ``/files/target`` with ``Content-Disposition: attachment; filename="n"``
- ``/slow``: a large Content-Length, then one byte every 0.2 s until the client leaves
- ``/status/<code>``: an empty answer with that status
"""

from __future__ import annotations

import http.server
import threading
import time
import urllib.parse
from collections import Counter
from typing import Any


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, code: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        split = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(split.query))
        path = split.path
        self.server.hits[path] += 1
        self.server.hosts.append(self.headers.get("Host", ""))
        if path.startswith("/files/"):
            data = self.server.files.get(path.removeprefix("/files/"))
            if data is None:
                self._send(404)
            else:
                self._send(200, data)
        elif path.startswith("/chunked/"):
            size = int(path.removeprefix("/chunked/"))
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            block = b"z" * 65536
            left = size
            while left > 0:
                part = block[: min(left, len(block))]
                self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
                left -= len(part)
            self.wfile.write(b"0\r\n\r\n")
        elif path.startswith("/redirect/"):
            count = int(path.removeprefix("/redirect/"))
            where = f"/redirect/{count - 1}" if count > 0 else "/files/target"
            self._send(302, headers={"Location": where})
        elif path == "/to":
            self._send(302, headers={"Location": query["url"]})
        elif path == "/named":
            data = self.server.files.get("target", b"")
            disposition = f'attachment; filename="{query["name"]}"'
            self._send(200, data, {"Content-Disposition": disposition})
        elif path == "/slow":
            self.send_response(200)
            self.send_header("Content-Length", str(10**9))
            self.end_headers()
            try:
                while not self.server.closing.is_set():
                    self.wfile.write(b"s")
                    self.wfile.flush()
                    time.sleep(0.2)
            except OSError:
                return
        elif path.startswith("/status/"):
            self._send(int(path.removeprefix("/status/")))
        else:
            self._send(404)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files: dict[str, bytes] = {}
        self.hits: Counter[str] = Counter()
        self.hosts: list[str] = []
        self.closing = threading.Event()


class LoopbackServer:
    """Started by :meth:`start`, stopped by :meth:`stop` (also as a context manager)."""

    def __init__(self) -> None:
        self._server = _Server()
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def hits(self) -> Counter[str]:
        return self._server.hits

    @property
    def hosts(self) -> list[str]:
        return self._server.hosts

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def put(self, name: str, data: bytes) -> None:
        self._server.files[name] = data

    def start(self) -> LoopbackServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
