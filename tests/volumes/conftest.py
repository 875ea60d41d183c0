"""Fixtures of the volume tests: a fresh volume on the shared daemon, a watched canary."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.canary import Canary


@dataclass(frozen=True)
class Vol:
    id: str
    path: Path

    @property
    def url(self) -> str:
        return f"/volumes/{self.id}"


@pytest.fixture
def volume(api: httpx.Client) -> Iterator[Vol]:
    answer = api.post("/volumes")
    assert answer.status_code == 201, answer.text
    body = answer.json()
    made = Vol(id=body["volume_id"], path=Path(body["path"]))
    try:
        yield made
    finally:
        gone = api.delete(made.url)
        assert gone.status_code in (200, 404), gone.text


@pytest.fixture(scope="module")
def canary_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("canary-home")


@pytest.fixture
def canary(canary_root: Path) -> Iterator[Canary]:
    """A watched canary; the test fails if anything touched it."""
    watched = Canary(canary_root)
    watched.watch()
    try:
        yield watched
        watched.assert_untouched("during the test")
    finally:
        watched.close()
