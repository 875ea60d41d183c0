"""Minted tokens: ``POST /auth/tokens`` creates them, WebSocket connections use them.

Only a SHA-256 hash of each token is kept (``<data_dir>/tokens.json`` through the
document store), so a leaked data folder does not leak usable tokens. Tokens survive a
restart; expired ones are pruned. A ``remove_on_use`` token is consumed by its first
successful use. This module must not log tokens and must not know about HTTP.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass

from lightd.auth.master import new_token
from lightd.store import DocumentStore

TOKENS_DOCUMENT = "tokens.json"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Grant:
    """What a minted token allows."""

    expires_at: float
    remove_on_use: bool
    container: str | None
    created_at: float


class TokenStore:
    """Hashes of minted tokens with their grants, persisted after every change."""

    def __init__(self, store: DocumentStore) -> None:
        self._store = store
        self._grants: dict[str, Grant] = {}
        self._lock = asyncio.Lock()

    def load(self) -> None:
        raw = self._store.read(TOKENS_DOCUMENT) or {}
        now = time.time()
        grants = {}
        for entry in raw.get("tokens", []):
            grant = Grant(
                expires_at=float(entry["expires_at"]),
                remove_on_use=bool(entry.get("remove_on_use", False)),
                container=entry.get("container"),
                created_at=float(entry.get("created_at", now)),
            )
            if grant.expires_at > now:
                grants[str(entry["hash"])] = grant
        self._grants = grants

    async def _persist(self) -> None:
        document = {
            "tokens": [
                {
                    "hash": key,
                    "expires_at": grant.expires_at,
                    "remove_on_use": grant.remove_on_use,
                    "container": grant.container,
                    "created_at": grant.created_at,
                }
                for key, grant in sorted(self._grants.items())
            ]
        }
        await asyncio.to_thread(self._store.write, TOKENS_DOCUMENT, document)

    def _prune(self, now: float) -> bool:
        expired = [key for key, grant in self._grants.items() if grant.expires_at <= now]
        for key in expired:
            del self._grants[key]
        return bool(expired)

    async def mint(
        self, *, ttl_seconds: int, remove_on_use: bool, container: str | None
    ) -> tuple[str, float]:
        """A new token and its expiry (epoch seconds)."""
        now = time.time()
        token = new_token()
        grant = Grant(
            expires_at=now + ttl_seconds,
            remove_on_use=remove_on_use,
            container=container,
            created_at=now,
        )
        async with self._lock:
            self._prune(now)
            self._grants[token_hash(token)] = grant
            await self._persist()
        return token, grant.expires_at

    def peek(self, token: str) -> Grant | None:
        """The grant of a live token without consuming it."""
        grant = self._grants.get(token_hash(token))
        if grant is None or grant.expires_at <= time.time():
            return None
        return grant

    async def use(self, token: str, *, container: str | None) -> Grant | None:
        """Authenticate ``token`` for ``container``; consumes a single-use token.

        None when the token is unknown, expired or limited to another container.
        """
        key = token_hash(token)
        async with self._lock:
            grant = self._grants.get(key)
            if grant is None:
                return None
            if grant.expires_at <= time.time():
                del self._grants[key]
                await self._persist()
                return None
            if grant.container is not None and grant.container != container:
                return None
            if grant.remove_on_use:
                del self._grants[key]
                await self._persist()
            return grant

    async def revoke(self, token: str) -> bool:
        key = token_hash(token)
        async with self._lock:
            if self._grants.pop(key, None) is None:
                return False
            await self._persist()
            return True

    async def prune(self) -> None:
        async with self._lock:
            if self._prune(time.time()):
                await self._persist()

    def __len__(self) -> int:
        return len(self._grants)
