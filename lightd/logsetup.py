"""Structured logging to stderr, plain or JSON lines, set from the ``logging`` section.

Callers log with ``extra={"fields": {...}}`` to add structured fields. This module must
never be handed a token: request lines carry the path without its query string.
"""

from __future__ import annotations

import atexit
import io
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson

from lightd.config import LoggingSettings

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class PlainFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = getattr(record, "fields", None)
        # Request lines already say everything in their message.
        if isinstance(fields, dict) and fields and record.name != "lightd.http":
            text += " " + " ".join(f"{key}={value}" for key, value in fields.items())
        return text


class BatchedStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes records without a flush (a system call) each; :func:`flush_logs` flushes.

    The daemon flushes twice a second and at exit, so lines still appear at once
    for a person while a busy API does not pay a write per request.
    """

    def flush(self) -> None:
        return

    def really_flush(self) -> None:
        self.acquire()
        try:
            if self.stream and hasattr(self.stream, "flush"):
                self.stream.flush()
        finally:
            self.release()

    def emit(self, record: logging.LogRecord) -> None:
        super().emit(record)
        if record.levelno >= logging.WARNING:
            self.really_flush()
        else:
            _written()


_handler: BatchedStreamHandler | None = None
# Told (once per batch) that unflushed lines wait; an idle daemon then never wakes up
# just to flush nothing.
_waker: Callable[[], None] | None = None
_unflushed = False


def set_flush_waker(waker: Callable[[], None] | None) -> None:
    """Install what is called when the first line after a flush has been written."""
    global _waker
    _waker = waker


def _written() -> None:
    global _unflushed
    if _unflushed:
        return
    _unflushed = True
    waker = _waker
    if waker is not None:
        waker()


def _buffered_stderr() -> Any:
    """A buffered text stream over file descriptor 2.

    ``sys.stderr`` writes through on every call (one system call per line), which
    would undo the batching. When ``sys.stderr`` was replaced (a test capturing it),
    the replacement is used as it is.
    """
    stream: Any = sys.stderr
    if stream is None or sys.stderr is not sys.__stderr__:
        return stream
    try:
        descriptor = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return stream
    raw = io.FileIO(descriptor, "w", closefd=False)
    return io.TextIOWrapper(
        io.BufferedWriter(raw, buffer_size=1 << 16),
        encoding="utf-8",
        errors="backslashreplace",
        line_buffering=False,
        write_through=False,
    )


def configure_logging(settings: LoggingSettings) -> None:
    """Install the one stderr handler on the root logger (idempotent)."""
    global _handler
    root = logging.getLogger()
    if _handler is None:
        _handler = BatchedStreamHandler(_buffered_stderr())
        root.addHandler(_handler)
        atexit.register(flush_logs)
    _handler.setFormatter(JsonFormatter() if settings.format == "json" else PlainFormatter())
    set_level(settings.level)


_HTTP_LOG = logging.getLogger("lightd.http")  # looked up once: getLogger takes a lock
_stamp_cache: tuple[int, str] = (-1, "")


def _local_stamp(second: int) -> str:
    """``YYYY-mm-dd HH:MM:SS`` in local time, formatted once per second."""
    global _stamp_cache
    cached_second, stamp = _stamp_cache
    if cached_second != second:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        _stamp_cache = (second, stamp)
    return stamp


def log_request(method: str, path: str, status: int, duration_ms: float) -> None:
    """The one line per HTTP request, in the configured format.

    Written straight to the handler's stream: this runs for every request, and the
    general logging machinery (record, filters, formatter) costs more than the request
    itself on the fastest routes. Same shape as other lines; never a query string.
    """
    handler = _handler
    http = _HTTP_LOG
    if handler is None or not http.isEnabledFor(logging.INFO) or http.disabled:
        http.info("%s %s %d %.1fms", method, path, status, duration_ms)
        return
    now = time.time()
    if isinstance(handler.formatter, JsonFormatter):
        line = orjson.dumps(
            {
                "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
                + f".{int(now % 1 * 1000):03d}Z",
                "level": "info",
                "logger": "lightd.http",
                "message": f"{method} {path} {status} {duration_ms:.1f}ms",
                "method": method,
                "path": path,
                "status": status,
                "duration_ms": round(duration_ms, 2),
            }
        ).decode()
    else:
        line = (
            f"{_local_stamp(int(now))},{int(now % 1 * 1000):03d} INFO    lightd.http: "
            f"{method} {path} {status} {duration_ms:.1f}ms"
        )
    handler.acquire()
    try:
        handler.stream.write(line + "\n")
    finally:
        handler.release()
    _written()


def flush_logs() -> None:
    global _unflushed
    _unflushed = False
    if _handler is not None:
        _handler.really_flush()


def set_level(level: str) -> None:
    logging.getLogger().setLevel(_LEVELS.get(level, logging.INFO))
    # Hypercorn's own access log would print query strings (tokens): lightd logs requests.
    logging.getLogger("hypercorn.access").disabled = True
    # httpx logs every panel request at info; lightd logs what matters about them.
    logging.getLogger("httpx").setLevel(logging.WARNING)
