"""Admission as a table: one document, this host and the pool in; a refusal (or None) out."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from lightd.desired.admission import admit
from lightd.pool import PortPool
from lightd.spec.container import ContainerSpec
from lightd.store import DocumentStore

ALLOWED = Path("/srv/lightd-mounts")


def spec(**changes: object) -> ContainerSpec:
    base: dict[str, object] = {
        "internal_id": "mc-1",
        "image": "lightd-test/busybox:latest",
        "volume_id": "0123456789abcdef",
        "startup_command": "sleep 1000",
    }
    base.update(changes)
    return ContainerSpec.model_validate(base)


@pytest.fixture
def pool(tmp_path: Path) -> PortPool:
    store = DocumentStore(tmp_path)
    store.write(
        "ports.json",
        {
            "ports": [
                {"ip": "0.0.0.0", "port": 25565, "protocol": "tcp", "reserved": False},
                {"ip": "0.0.0.0", "port": 25566, "protocol": "tcp", "reserved": True},
                {"ip": "0.0.0.0", "port": 25567, "protocol": "tcp", "reserved": False},
            ]
        },
    )
    found = PortPool(store, bindings=lambda: {("0.0.0.0", 25567, "tcp"): "other"})
    asyncio.run(found.load())
    return found


@pytest.mark.parametrize(
    ("changes", "check", "message"),
    [
        pytest.param({}, None, None, id="a-plain-document-is-admitted"),
        pytest.param({"limits": {"cpu": 2}}, None, None, id="cpu-within-the-cores-is-admitted"),
        pytest.param(
            {"limits": {"cpu": 3}},
            "host",
            "Invalid field 'limits.cpu': at most 2 (the host's cores), not 3.0",
            id="more-cpu-than-the-host-has-is-refused",
        ),
        pytest.param(
            {"mount": {str(ALLOWED / "maps"): "/maps"}},
            None,
            None,
            id="a-mount-under-an-allowed-folder-is-admitted",
        ),
        pytest.param(
            {"mount": {"/etc": "/host-etc"}},
            "host",
            "Invalid field 'mount': /etc is not under an allowed folder "
            "(containers.allowed_mount_roots)",
            id="a-mount-elsewhere-is-refused",
        ),
        pytest.param(
            {"mount": {str(ALLOWED): "/data"}},
            None,
            None,
            id="the-allowed-folder-itself-is-admitted",
        ),
        pytest.param(
            {"mount": {"/srv/lightd-mounts-evil": "/x"}},
            "host",
            None,
            id="a-sibling-sharing-the-prefix-is-refused",
        ),
        pytest.param({"ports": [{"port": 25565}]}, None, None, id="a-free-pooled-port-is-admitted"),
        pytest.param({"ports": [{"port": 25566}]}, None, None, id="a-reserved-port-does-not-block"),
        pytest.param(
            {"ports": [{"port": 8080}]},
            "ports",
            "Invalid port binding: port not in network pool",
            id="a-port-outside-the-pool-is-refused",
        ),
        pytest.param(
            {"ports": [{"port": 25565, "protocol": "udp"}]},
            "ports",
            "Invalid port binding: port not in network pool",
            id="the-pooled-protocol-must-match",
        ),
        pytest.param(
            {"ports": [{"port": 25567}]},
            "ports",
            "Port is in use by container other",
            id="a-port-another-container-binds-is-refused",
        ),
        pytest.param(
            {"limits": {"cpu": 3}, "ports": [{"port": 8080}]},
            "host",
            None,
            id="the-host-is-checked-before-the-ports",
        ),
    ],
)
def test_admit(
    pool: PortPool, changes: dict[str, object], check: str | None, message: str | None
) -> None:
    refusal = admit(spec(**changes), roots=[ALLOWED], cpus=2, pool=pool)
    if check is None:
        assert refusal is None
        return
    assert refusal is not None
    assert refusal.check == check
    if message is not None:
        assert refusal.message == message
