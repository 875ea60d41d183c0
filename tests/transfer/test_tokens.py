"""Transfer tokens: the use rule as a table, the store on a real folder, the route."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from lightd.store import DocumentStore
from lightd.transfer.tokens import DOCUMENT, TransferGrant, TransferTokens, judge

NOW = 1_000_000.0
GRANT = TransferGrant(internal_id="mc-1", expires_at=NOW + 60, created_at=NOW)


@pytest.mark.parametrize(
    ("grant", "internal_id", "now", "reason"),
    [
        pytest.param(GRANT, "mc-1", NOW, None, id="a live token for its container may be used"),
        pytest.param(None, "mc-1", NOW, "unknown or already used", id="an unknown token is not"),
        pytest.param(GRANT, "mc-1", NOW + 60, "expired", id="a token at its expiry is not"),
        pytest.param(GRANT, "mc-2", NOW, "another container", id="a token is scoped to its id"),
    ],
)
def test_judge(
    grant: TransferGrant | None, internal_id: str, now: float, reason: str | None
) -> None:
    found = judge(grant, internal_id, now)
    if reason is None:
        assert found is None
    else:
        assert found is not None and reason in found


def test_tokens_are_single_use_scoped_and_survive_a_restart(tmp_path: Path) -> None:
    async def scenario() -> None:
        tokens = TransferTokens(DocumentStore(tmp_path))
        token, expires_at = await tokens.mint("mc-1", 900)
        assert abs(expires_at - (time.time() + 900)) < 5
        stored = (tmp_path / DOCUMENT).read_text()
        assert token not in stored  # only its hash is kept
        assert await tokens.consume(token, "mc-2") is not None  # wrong id: refused, kept
        again = TransferTokens(DocumentStore(tmp_path))
        again.load()
        assert await again.consume(token, "mc-1") is None  # survives a restart
        reused = await again.consume(token, "mc-1")
        assert reused is not None and "already used" in reused
        short, _ = await again.mint("mc-1", 1)
        await asyncio.sleep(1.1)
        expired = await again.consume(short, "mc-1")
        assert expired is not None and "expired" in expired
        assert len(again) == 0  # the expired one is gone too
        assert json.loads((tmp_path / DOCUMENT).read_text()) == {"tokens": []}

    asyncio.run(scenario())


def test_mint_route(api: httpx.Client) -> None:
    answer = api.post("/transfers/tokens", json={"internal_id": "mc-1"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert set(body) == {"token", "expires_at"}
    assert body["token"].startswith("lightd_transfer_")
    expires = datetime.strptime(body["expires_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert abs(expires.timestamp() - (time.time() + 15 * 60)) < 10  # default 15 minutes
    custom = api.post("/transfers/tokens", json={"internal_id": "mc-1", "ttl": "2h"})
    assert custom.status_code == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({}, "internal_id", id="the id is required"),
        pytest.param({"internal_id": "../x"}, "internal_id", id="the id is validated"),
        pytest.param({"internal_id": "a", "ttl": "25h"}, "ttl", id="at most a day"),
        pytest.param({"internal_id": "a", "ttl": "soon"}, "ttl", id="a ttl must parse"),
    ],
)
def test_mint_route_refuses(api: httpx.Client, body: dict[str, str], field: str) -> None:
    answer = api.post("/transfers/tokens", json=body)
    assert answer.status_code == 400
    assert field in answer.json()["error"]


def test_mint_needs_the_master_token(api: httpx.Client, daemon: object) -> None:
    anonymous = httpx.post(
        f"{api.base_url}/transfers/tokens",
        json={"internal_id": "mc-1"},
        headers={"Accept": "application/vnd.pkglatv1+json"},
    )
    assert anonymous.status_code == 401
