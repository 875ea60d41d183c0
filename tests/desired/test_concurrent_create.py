"""Concurrent creates through the container service: each is admitted under the pool's
lock and written outside it (group commit), yet two never bind one port, every answered
create is on disk, and a failed write gives its port and id back."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from lightd.desired.documents import DesiredContainers
from lightd.desired.service import ContainerExists, ContainerService
from lightd.errors import PortBound, StoreError
from lightd.pool import PortPool
from lightd.spec.container import ContainerSpec
from lightd.store import DocumentStore

PORTS = list(range(27000, 27020))


def body(internal_id: str, port: int) -> dict[str, Any]:
    return {
        "internal_id": internal_id,
        "image": "lightd-test/busybox:latest",
        "volume_id": "0123456789abcdef",
        "startup_command": "sleep 1000",
        "ports": [{"ip": "127.0.0.1", "port": port, "protocol": "tcp"}],
    }


def service(tmp_path: Path) -> tuple[ContainerService, DesiredContainers, PortPool, list[str]]:
    store = DocumentStore(tmp_path)
    store.write(
        "ports.json",
        {
            "ports": [
                {"ip": "127.0.0.1", "port": port, "protocol": "tcp", "reserved": port == PORTS[0]}
                for port in PORTS
            ]
        },
    )
    desired = DesiredContainers(store)
    pool = PortPool(store, bindings=desired.bindings)
    hinted: list[str] = []
    containers = ContainerService(
        desired=desired,
        observed=lambda _key: None,
        pool=pool,
        resolve_volume=lambda ref: ref,
        hint=hinted.append,
        allowed_mount_roots=[tmp_path],
    )
    return containers, desired, pool, hinted


async def gather(*calls: Any) -> list[Any]:
    return await asyncio.gather(*calls, return_exceptions=True)


def test_concurrent_creates_are_all_durable_and_hinted(tmp_path: Path) -> None:
    containers, desired, pool, hinted = service(tmp_path)

    async def run() -> list[Any]:
        await pool.load()
        return await gather(
            *(containers.create(body(f"c{i:02d}", port)) for i, port in enumerate(PORTS))
        )

    results = asyncio.run(run())
    assert all(isinstance(found, ContainerSpec) for found in results), results
    assert sorted(hinted) == [f"c{i:02d}" for i in range(len(PORTS))]
    fresh = DesiredContainers(DocumentStore(tmp_path))
    fresh.scan()
    assert fresh.ids() == sorted(hinted)  # every answered create is on disk
    assert not any(desired.staged(key) for key in hinted)
    # The reservation of the first port was released by its binding.
    entry = pool.lookup("127.0.0.1", PORTS[0])
    assert entry is not None and entry.reserved is False


def test_two_creates_never_bind_one_port_nor_one_id(tmp_path: Path) -> None:
    containers, desired, pool, _hinted = service(tmp_path)

    async def run() -> tuple[list[Any], list[Any]]:
        await pool.load()
        same_port = await gather(*(containers.create(body(f"p{i}", PORTS[1])) for i in range(6)))
        same_id = await gather(*(containers.create(body("twin", PORTS[2])) for _ in range(6)))
        return same_port, same_id

    same_port, same_id = asyncio.run(run())
    assert sum(isinstance(found, ContainerSpec) for found in same_port) == 1
    assert all(isinstance(found, ContainerSpec | PortBound) for found in same_port), same_port
    assert sum(isinstance(found, ContainerSpec) for found in same_id) == 1
    assert all(isinstance(found, ContainerSpec | ContainerExists) for found in same_id)
    bound = desired.bindings()
    assert [owner for key, owner in bound.items() if key[1] == PORTS[1]] != []


def test_a_failed_write_gives_back_its_port_and_loses_no_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    containers, desired, pool, hinted = service(tmp_path)
    real_write = DesiredContainers.write

    def write(self: DesiredContainers, spec: ContainerSpec) -> bool:
        if spec.internal_id == "broken":
            raise StoreError("Database operation failed: cannot write (test)")
        return real_write(self, spec)

    monkeypatch.setattr(DesiredContainers, "write", write)

    async def run() -> tuple[list[Any], Any]:
        await pool.load()
        results = await gather(
            *(containers.create(body(f"c{i:02d}", PORTS[i])) for i in range(3, 10)),
            containers.create(body("broken", PORTS[10])),
        )
        again = await containers.create(body("retry", PORTS[10]))  # the port is free again
        return results, again

    results, again = asyncio.run(run())
    assert isinstance(results[-1], StoreError)
    assert all(isinstance(found, ContainerSpec) for found in results[:-1]), results
    assert isinstance(again, ContainerSpec)
    assert "broken" not in hinted and not desired.staged("broken")
    assert desired.get("broken") is None
    fresh = DesiredContainers(DocumentStore(tmp_path))
    fresh.scan()
    assert fresh.ids() == sorted([*(f"c{i:02d}" for i in range(3, 10)), "retry"])
