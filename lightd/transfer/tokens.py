"""Transfer tokens: what a target node mints so that one source may send it one container.

``POST /transfers/tokens {internal_id, ttl?}`` (master token) mints a token scoped to
that ``internal_id``, valid for ``ttl`` (default :data:`DEFAULT_TTL_SECONDS`, at most
:data:`MAX_TTL_SECONDS`) and usable once: the transfer that presents it consumes it,
whatever its outcome. Only SHA-256 hashes are stored (``<data_dir>/transfer-tokens.json``,
written atomically), so tokens survive a restart and a leaked data folder leaks none.

:func:`judge` decides whether a presented token may be used, without clock or disk (the
caller passes ``now``), and is table-tested. This module must not log tokens and must
not know about HTTP.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from dataclasses import dataclass

from lightd.store import DocumentStore

DOCUMENT = "transfer-tokens.json"
DEFAULT_TTL_SECONDS = 15 * 60
MAX_TTL_SECONDS = 24 * 3600
PREFIX = "lightd_transfer_"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class TransferGrant:
    internal_id: str
    expires_at: float
    created_at: float


def judge(grant: TransferGrant | None, internal_id: str, now: float) -> str | None:
    """Why a token with ``grant`` may not carry ``internal_id`` at ``now``; None: it may.

    An unknown token and one already used look the same (both have no grant left).
    """
    if grant is None:
        return "unknown or already used transfer token"
    if grant.expires_at <= now:
        return "transfer token expired"
    if grant.internal_id != internal_id:
        return "transfer token was minted for another container"
    return None


class TransferTokens:
    """Hashes of live transfer tokens, persisted after every change."""

    def __init__(self, store: DocumentStore) -> None:
        self._store = store
        self._grants: dict[str, TransferGrant] = {}
        self._lock = asyncio.Lock()

    def load(self) -> None:
        raw = self._store.read(DOCUMENT) or {}
        now = time.time()
        self._grants = {
            str(entry["hash"]): TransferGrant(
                internal_id=str(entry["internal_id"]),
                expires_at=float(entry["expires_at"]),
                created_at=float(entry["created_at"]),
            )
            for entry in raw.get("tokens", [])
            if float(entry["expires_at"]) > now
        }

    async def _persist(self) -> None:
        document = {
            "tokens": [
                {
                    "hash": key,
                    "internal_id": grant.internal_id,
                    "expires_at": grant.expires_at,
                    "created_at": grant.created_at,
                }
                for key, grant in sorted(self._grants.items())
            ]
        }
        await asyncio.to_thread(self._store.write, DOCUMENT, document)

    async def mint(self, internal_id: str, ttl_seconds: int) -> tuple[str, float]:
        """A new token for ``internal_id`` and its expiry (epoch seconds)."""
        now = time.time()
        token = f"{PREFIX}{secrets.token_hex(24)}"
        grant = TransferGrant(internal_id=internal_id, expires_at=now + ttl_seconds, created_at=now)
        async with self._lock:
            for key in [k for k, g in self._grants.items() if g.expires_at <= now]:
                del self._grants[key]
            self._grants[token_hash(token)] = grant
            await self._persist()
        return token, grant.expires_at

    async def consume(self, token: str, internal_id: str) -> str | None:
        """Use ``token`` for ``internal_id``: None when allowed (it is then gone), else why.

        An expired token is removed; one presented for another container is kept (its
        rightful transfer may still come).
        """
        key = token_hash(token)
        async with self._lock:
            grant = self._grants.get(key)
            reason = judge(grant, internal_id, time.time())
            if reason is None or (grant is not None and grant.expires_at <= time.time()):
                self._grants.pop(key, None)
                await self._persist()
            return reason

    def check(self, token: str, internal_id: str) -> str | None:
        """Whether ``token`` may carry ``internal_id`` now, without using it up."""
        return judge(self._grants.get(token_hash(token)), internal_id, time.time())

    def __len__(self) -> int:
        return len(self._grants)
