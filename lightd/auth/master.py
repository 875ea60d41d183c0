"""The master token: taken from the config, else from the data folder, else generated.

A generated token is stored in ``<data_dir>/master.token`` with mode 0600. This module
must never log a token.
"""

from __future__ import annotations

import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

TOKEN_PREFIX = "lightd_"  # noqa: S105 (a prefix, not a secret)
MASTER_TOKEN_FILE = "master.token"  # noqa: S105 (a file name)


def new_token() -> str:
    """``lightd_`` followed by 32 hex characters from a cryptographic source."""
    return TOKEN_PREFIX + secrets.token_hex(16)


def tokens_equal(given: str, expected: str) -> bool:
    """Constant-time comparison of two tokens."""
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


@dataclass(frozen=True)
class MasterToken:
    value: str
    generated: bool  # True only on the start that created the file
    path: Path | None  # where it is kept, None when it comes from the config


def master_token_path(data_dir: Path) -> Path:
    return data_dir / MASTER_TOKEN_FILE


def ensure_master_token(*, configured: str, data_dir: Path) -> MasterToken:
    """The configured token, or the stored one, or a new one written with mode 0600."""
    if configured:
        return MasterToken(value=configured, generated=False, path=None)
    path = master_token_path(data_dir)
    try:
        value = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        value = ""
    if value:
        return MasterToken(value=value, generated=False, path=path)
    data_dir.mkdir(parents=True, exist_ok=True)
    value = new_token()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, (value + "\n").encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    return MasterToken(value=value, generated=True, path=path)
