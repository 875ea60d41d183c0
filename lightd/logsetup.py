"""Structured logging to stderr, plain or JSON lines, set from the ``logging`` section.

Callers log with ``extra={"fields": {...}}`` to add structured fields. This module must
never be handed a token: request lines carry the path without its query string.
"""

from __future__ import annotations

import logging
import sys
import time
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
        if isinstance(fields, dict) and fields:
            text += " " + " ".join(f"{key}={value}" for key, value in fields.items())
        return text


def configure_logging(settings: LoggingSettings) -> None:
    """Install the one stderr handler on the root logger (idempotent)."""
    root = logging.getLogger()
    handler = next((h for h in root.handlers if getattr(h, "_lightd", False)), None)
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler._lightd = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    handler.setFormatter(JsonFormatter() if settings.format == "json" else PlainFormatter())
    set_level(settings.level)


def set_level(level: str) -> None:
    logging.getLogger().setLevel(_LEVELS.get(level, logging.INFO))
    # Hypercorn's own access log would print query strings (tokens): lightd logs requests.
    logging.getLogger("hypercorn.access").disabled = True
    # httpx logs every panel request at info; lightd logs what matters about them.
    logging.getLogger("httpx").setLevel(logging.WARNING)
