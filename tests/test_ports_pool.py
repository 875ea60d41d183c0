"""The pool service in process, with container bindings injected (no container API yet).

What only a container can cause (a port bound by a container document) is exercised
here through the ``bindings`` callable the Daemon will wire to container documents.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

from lightd.errors import (
    InvalidRequest,
    NoAvailablePorts,
    PoolDocumentInvalid,
    PortBound,
    PortInUse,
    PortNotInPool,
)
from lightd.pool import PortPool
from lightd.spec.ports import BindingKey, PortEntry
from lightd.store import DocumentStore

IP = "127.0.0.1"


def make_pool(tmp_path: Path, bound: dict[BindingKey, str]) -> PortPool:
    store = DocumentStore(tmp_path)
    return PortPool(store, bindings=lambda: bound, prober=lambda keys: next(iter(keys), None))


def entries(*ports: int, protocol: str = "tcp") -> list[PortEntry]:
    return [PortEntry.model_validate({"ip": IP, "port": p, "protocol": protocol}) for p in ports]


def test_a_bound_port_is_in_use_and_names_its_container(tmp_path: Path) -> None:
    bound: dict[BindingKey, str] = {(IP, 7001, "tcp"): "mc-1"}
    pool = make_pool(tmp_path, bound)

    async def scenario() -> None:
        await pool.load()
        await pool.add(entries(7001, 7002))
        view = await pool.get(IP, 7001)
        assert (view.in_use, view.reserved, view.container) == (True, False, "mc-1")
        assert not (await pool.get(IP, 7002)).in_use
        with pytest.raises(PortInUse):
            await pool.set_reserved(IP, 7001, reserved=True)
        with pytest.raises(PortBound, match="Port is in use by container mc-1"):
            await pool.set_reserved(IP, 7001, reserved=False)
        with pytest.raises(PortBound, match="Port is in use by container mc-1"):
            await pool.delete(IP, 7001)
        deleted, skipped = await pool.delete_many([(IP, 7001), (IP, 7002)])
        assert deleted == 1
        assert [(s.port, s.reason) for s in skipped] == [(7001, "Port is in use by container mc-1")]
        # Only the bound port is left, so nothing can be picked.
        with pytest.raises(NoAvailablePorts):
            await pool.random(protocol=None, ip=IP, reserve=False)

    asyncio.run(scenario())


def test_a_binding_of_the_other_protocol_does_not_count(tmp_path: Path) -> None:
    pool = make_pool(tmp_path, {(IP, 7003, "udp"): "mc-2"})

    async def scenario() -> None:
        await pool.load()
        await pool.add(entries(7003))
        assert not (await pool.get(IP, 7003)).in_use

    asyncio.run(scenario())


def test_check_bindings_for_container_creation(tmp_path: Path) -> None:
    bound: dict[BindingKey, str] = {(IP, 7011, "tcp"): "other"}
    pool = make_pool(tmp_path, bound)

    async def scenario() -> None:
        await pool.load()
        await pool.add([*entries(7010, 7011), *entries(7012, protocol="udp")])
        await pool.set_reserved(IP, 7010, reserved=True)
        async with pool.lock:
            await pool.refresh()
            # A reservation does not block the container the panel reserved it for.
            found = pool.check_bindings([(IP, 7010, "tcp")], container="mine")
            assert [entry.port for entry in found] == [7010]
            with pytest.raises(PortBound, match="container other"):
                pool.check_bindings([(IP, 7010, "tcp"), (IP, 7011, "tcp")], container="mine")
            assert pool.check_bindings([(IP, 7011, "tcp")], container="other")
            with pytest.raises(PortNotInPool, match="port not in network pool"):
                pool.check_bindings([(IP, 7012, "tcp")], container="mine")
            with pytest.raises(PortNotInPool):
                pool.check_bindings([(IP, 7999, "tcp")], container="mine")
            with pytest.raises(PortNotInPool):
                pool.check_bindings([("not-an-ip", 7010, "tcp")], container="mine")
            with pytest.raises(InvalidRequest, match="listed twice"):
                pool.check_bindings([(IP, 7010, "tcp"), (IP, 7010, "tcp")], container="mine")
            assert pool.check_bindings([(" 127.0.0.1 ", 7010, "tcp")], container="x") == found
            with pytest.raises(PortNotInPool, match="not in network pool"):
                pool.check_bindings([("::ffff:127.0.0.1", 7010, "tcp")], container="mine")
            assert pool.lookup(IP, 7012) == PortEntry(ip=IP, port=7012, protocol="udp")
            assert pool.lookup(IP, 7999) is None

    asyncio.run(scenario())


def test_an_unreadable_document_keeps_the_last_good_pool_and_is_not_overwritten(
    tmp_path: Path,
) -> None:
    pool = make_pool(tmp_path, {})
    document = tmp_path / "ports.json"

    async def scenario() -> None:
        await pool.load()
        await pool.add(entries(7020))
        document.write_text('{"ports": [')
        listing = await pool.listing()
        assert [view.port for view in listing.ports] == [7020]
        assert listing.document_error is not None
        assert "not valid JSON" in listing.document_error
        with pytest.raises(PoolDocumentInvalid):
            await pool.add(entries(7021))
        with pytest.raises(PoolDocumentInvalid):
            await pool.random(protocol=None, ip=None, reserve=True)
        assert document.read_text() == '{"ports": ['
        document.write_bytes(orjson.dumps({"ports": [{"ip": IP, "port": 7022}]}))
        await pool.reload()
        assert pool.document_error is None
        assert [view.port for view in (await pool.listing()).ports] == [7022]

    asyncio.run(scenario())
