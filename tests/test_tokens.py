"""Minting, expiry, revocation and persistence of tokens against a real daemon."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from lightd.auth.tokens import TokenStore
from lightd.store import DocumentStore
from tests.support.daemon import DaemonProcess


@pytest.mark.parametrize(
    ("ttl", "seconds"), [("30s", 30), ("1h", 3600), ("1h30m", 5400), ("30d", 30 * 86400)]
)
def test_expires_at_matches_ttl(api: httpx.Client, ttl: str, seconds: int) -> None:
    before = time.time()
    answer = api.post("/auth/tokens", json={"ttl": ttl, "remove_on_use": False})
    after = time.time()
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["token"].startswith("lightd_")
    assert len(body["token"]) == len("lightd_") + 32
    int(body["token"][len("lightd_") :], 16)
    assert body["expires_at"].endswith("Z")
    expires = datetime.strptime(body["expires_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert before + seconds - 2 <= expires.timestamp() <= after + seconds + 1


@pytest.mark.parametrize("ttl", ["0s", "31d", "1x", "", "abc", "1m1h"])
def test_invalid_ttl_is_400(api: httpx.Client, ttl: str) -> None:
    answer = api.post("/auth/tokens", json={"ttl": ttl})
    assert answer.status_code == 400
    assert "'ttl'" in answer.json()["error"]


def test_minting_needs_master_token(daemon: DaemonProcess, api: httpx.Client) -> None:
    minted = api.post("/auth/tokens", json={"ttl": "1h"}).json()["token"]
    with daemon.client(token=minted) as as_minted:
        assert as_minted.post("/auth/tokens", json={"ttl": "1h"}).status_code == 401
        assert as_minted.get("/system").status_code == 401
    with daemon.client(token="") as anonymous:
        assert anonymous.post("/auth/tokens", json={"ttl": "1h"}).status_code == 401


def test_tokens_are_unique(api: httpx.Client) -> None:
    tokens = {api.post("/auth/tokens", json={"ttl": "1m"}).json()["token"] for _ in range(20)}
    assert len(tokens) == 20


def test_revoke(api: httpx.Client) -> None:
    token = api.post("/auth/tokens", json={"ttl": "1h"}).json()["token"]
    assert api.delete(f"/auth/tokens/{token}").json() == {"message": "Token revoked"}
    gone = api.delete(f"/auth/tokens/{token}")
    assert gone.status_code == 404
    assert gone.json() == {"error": "Token not found"}


def test_only_hashes_are_stored(daemon: DaemonProcess, api: httpx.Client) -> None:
    token = api.post("/auth/tokens", json={"ttl": "1h"}).json()["token"]
    stored = (daemon.data_dir / "tokens.json").read_text()
    assert token not in stored
    assert token[len("lightd_") :] not in stored
    assert (daemon.data_dir / "tokens.json").stat().st_mode & 0o077 == 0


def test_minted_tokens_survive_restart(fresh_daemon: DaemonProcess) -> None:
    fresh_daemon.start()
    with fresh_daemon.client() as api:
        keep = api.post("/auth/tokens", json={"ttl": "1h", "container": "mc-1"}).json()["token"]
    fresh_daemon.restart()
    with fresh_daemon.client() as api:
        assert api.delete(f"/auth/tokens/{keep}").status_code == 200
        assert api.delete("/auth/tokens/lightd_" + "0" * 32).status_code == 404


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


def test_remove_on_use_works_once(tmp_path: Path) -> None:
    async def scenario() -> None:
        tokens = TokenStore(DocumentStore(tmp_path))
        token, _ = await tokens.mint(ttl_seconds=60, remove_on_use=True, container=None)
        assert await tokens.use(token, container="a") is not None
        assert await tokens.use(token, container="a") is None
        reloaded = TokenStore(DocumentStore(tmp_path))
        reloaded.load()
        assert await reloaded.use(token, container="a") is None

    run(scenario())


def test_scoped_token_only_for_its_container(tmp_path: Path) -> None:
    async def scenario() -> None:
        tokens = TokenStore(DocumentStore(tmp_path))
        token, _ = await tokens.mint(ttl_seconds=60, remove_on_use=False, container="a")
        assert await tokens.use(token, container="b") is None
        assert await tokens.use(token, container="a") is not None
        assert await tokens.use(token, container="a") is not None

    run(scenario())


def test_expired_tokens_are_refused_and_pruned(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = DocumentStore(tmp_path)
        tokens = TokenStore(store)
        token, _ = await tokens.mint(ttl_seconds=1, remove_on_use=False, container=None)
        await asyncio.sleep(1.1)
        assert await tokens.use(token, container=None) is None
        assert store.read("tokens.json") == {"tokens": []}

    run(scenario())
