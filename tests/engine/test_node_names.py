"""Two lightd nodes on one engine holding one internal_id: node-scoped names, real engine.

The first node keeps the plain ``lightd-<id>``; the second, finding that name held by
another node's container, creates ``lightd-<id>.n-<node>`` and finds it again by the
plain name, before and after the first one is gone. A plain name held by a container
that no lightd manages stays a conflict (answered as it is).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from lightd.config import DockerSettings
from lightd.engine.docker import DockerEngine
from lightd.engine.records import (
    CreateRequest,
    Role,
    container_name,
    node_scoped_name,
)
from tests.support import engine as test_engine


def request(internal_id: str, volume: Path) -> CreateRequest:
    return test_engine.sleeping_request(internal_id, str(volume), "sleep 30")


def test_second_node_gets_a_scoped_name(prefix: str, tmp_path: Path) -> None:
    internal_id = f"{prefix}-mc"
    name = container_name(internal_id, Role.MAIN)

    async def scenario() -> None:
        first = DockerEngine(DockerSettings(), node_id=f"{prefix}aaaa")
        second = DockerEngine(DockerSettings(), node_id=f"{prefix}bbbb")
        try:
            assert await second.inspect(name) is None
            one = await first.create(request(internal_id, tmp_path))
            seen = await second.inspect(name)
            assert seen is None  # another node's container is not this node's, nor a conflict
            two = await second.create(request(internal_id, tmp_path))
            mine = await second.inspect(name)
            assert mine is not None and mine.id == two and mine.managed
            assert mine.name == node_scoped_name(name, f"{prefix}bbbb")
            assert mine.name.startswith(f"{name}.n-{prefix}")
            theirs = await first.inspect(name)
            assert theirs is not None and theirs.id == one and theirs.name == name
            await first.remove(one)
            again = await second.inspect(name)
            assert again is not None and again.id == two  # still found once the name is free
            assert {c.id for c in await second.list_managed()} == {two}
        finally:
            first.close()
            second.close()

    asyncio.run(scenario())


def test_a_plain_name_held_outside_lightd_stays_a_conflict(prefix: str, tmp_path: Path) -> None:
    internal_id = f"{prefix}-x"
    name = container_name(internal_id, Role.MAIN)
    with test_engine.client() as docker_client:
        docker_client.api.create_container(test_engine.TEST_IMAGE, "true", name=name)

    async def scenario() -> None:
        node = DockerEngine(DockerSettings(), node_id=f"{prefix}cccc")
        try:
            found = await node.inspect(name)
            assert found is not None and not found.managed and found.name == name
        finally:
            node.close()

    asyncio.run(scenario())


def test_a_node_that_has_listed_still_finds_its_scoped_copy(prefix: str, tmp_path: Path) -> None:
    """After a list (which tells the node it has no scoped copy), a copy it creates itself
    is still looked up by the plain name, also once the other node's container is gone."""
    internal_id = f"{prefix}-ls"
    name = container_name(internal_id, Role.MAIN)

    async def scenario() -> None:
        first = DockerEngine(DockerSettings(), node_id=f"{prefix}dddd")
        second = DockerEngine(DockerSettings(), node_id=f"{prefix}eeee")
        try:
            assert await second.list_managed() == []
            assert await second.inspect(name) is None  # known without the scoped look
            one = await first.create(request(internal_id, tmp_path))
            two = await second.create(request(internal_id, tmp_path))
            mine = await second.inspect(name)
            assert mine is not None and mine.id == two
            await first.remove(one)
            again = await second.inspect(name)
            assert again is not None and again.id == two
            third = DockerEngine(DockerSettings(), node_id=f"{prefix}eeee")
            try:  # a new process of that node learns of the copy from its list
                assert {c.id for c in await third.list_managed()} == {two}
                found = await third.inspect(name)
                assert found is not None and found.id == two
            finally:
                third.close()
        finally:
            first.close()
            second.close()

    asyncio.run(scenario())


def test_every_request_shares_one_connection_pool(prefix: str, tmp_path: Path) -> None:
    """docker-py's own adapter keeps one pool per URL (25 at most); lightd's keeps one."""

    async def scenario() -> None:
        node = DockerEngine(DockerSettings(), node_id=f"{prefix}ffff")
        try:
            for index in range(30):
                assert await node.inspect(f"{prefix}-absent-{index}") is None
            adapter = node._api().get_adapter("http+docker://localhost")
            assert len(adapter.pools) == 1
        finally:
            node.close()

    asyncio.run(scenario())
