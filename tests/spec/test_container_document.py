"""Container documents as pydantic reads them: one row per accepted or refused document."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pydantic import ValidationError

from lightd.spec.container import ContainerSpec, Power

BASE: dict[str, Any] = {
    "internal_id": "mc-1",
    "image": "lightd-test/busybox:latest",
    "volume_id": "0123456789abcdef",
}


def doc(**changes: Any) -> dict[str, Any]:
    return {**BASE, **changes}


ACCEPTED = [
    pytest.param(doc(), lambda d: d.power, Power.RUNNING, id="power-defaults-to-running"),
    pytest.param(
        doc(start_pattern=""), lambda d: d.start_pattern, None, id="an-empty-pattern-means-none"
    ),
    pytest.param(
        doc(ports=[{"ip": "[::1]", "port": 25565}]),
        lambda d: (d.ports[0].ip, d.ports[0].protocol),
        ("::1", "tcp"),
        id="a-bracketed-ipv6-address-is-accepted-and-tcp-is-the-default",
    ),
    pytest.param(
        doc(limits={"swap": -1}), lambda d: d.limits.swap, -1, id="unlimited-swap-is-minus-one"
    ),
    pytest.param(
        {**doc(), "$schema": "./schema/container.schema.json"},
        lambda d: d.schema_uri,
        "./schema/container.schema.json",
        id="the-schema-key-is-kept",
    ),
    pytest.param(
        doc(environment={"_X1": "a"}),
        lambda d: d.environment,
        {"_X1": "a"},
        id="env-names-may-start-with-an-underscore",
    ),
    pytest.param(
        doc(),
        lambda d: (d.stop.signal, d.stop.timeout_seconds),
        ("SIGTERM", 30.0),
        id="a-stop-is-sigterm-then-30-seconds-by-default",
    ),
]


@pytest.mark.parametrize(("document", "read", "value"), ACCEPTED)
def test_accepted(
    document: dict[str, Any], read: Callable[[ContainerSpec], Any], value: Any
) -> None:
    assert read(ContainerSpec.model_validate(document)) == value


REFUSED = [
    pytest.param(doc(unknown=1), ("unknown",), id="an-unknown-key-is-refused"),
    pytest.param(doc(volume_id="xyz"), ("volume_id",), id="a-volume-id-must-be-hex"),
    pytest.param(doc(power="paused"), ("power",), id="power-is-running-or-stopped"),
    pytest.param(doc(start_pattern="("), ("start_pattern",), id="a-pattern-must-compile"),
    pytest.param(
        doc(ports=[{"port": 1}, {"port": 1}]), ("ports",), id="a-port-listed-twice-is-refused"
    ),
    pytest.param(doc(ports=[{"port": 70000}]), ("ports", 0, "port"), id="ports-end-at-65535"),
    pytest.param(
        doc(ports=[{"ip": "example.org", "port": 1}]),
        ("ports", 0, "ip"),
        id="a-port-ip-must-be-an-address",
    ),
    pytest.param(
        doc(ports=[{"port": 1, "protocol": "sctp"}]),
        ("ports", 0, "protocol"),
        id="protocols-are-tcp-or-udp",
    ),
    pytest.param(doc(limits={"cpu": 0}), ("limits", "cpu"), id="cpu-must-be-positive"),
    pytest.param(doc(limits={"pids": 1}), ("limits", "pids"), id="too-few-pids-is-refused"),
    pytest.param(
        doc(mount={"relative": "/data"}), ("mount",), id="a-mount-source-must-be-absolute"
    ),
    pytest.param(
        doc(mount={"/srv": "/home/container"}),
        ("mount",),
        id="the-volume-target-cannot-be-mounted-over",
    ),
    pytest.param(doc(mount={"/srv/../etc": "/data"}), ("mount",), id="a-mount-source-cannot-climb"),
    pytest.param(doc(environment={"1X": "a"}), ("environment",), id="env-names-are-identifiers"),
    pytest.param(
        doc(stop={"signal": "TERM"}), ("stop", "signal"), id="a-stop-signal-is-named-sig-something"
    ),
    pytest.param(
        doc(stop={"timeout_seconds": 7200}),
        ("stop", "timeout_seconds"),
        id="a-stop-waits-an-hour-at-most",
    ),
]


@pytest.mark.parametrize(("document", "location"), REFUSED)
def test_refused(document: dict[str, Any], location: tuple[Any, ...]) -> None:
    with pytest.raises(ValidationError) as caught:
        ContainerSpec.model_validate(document)
    assert location in [tuple(error["loc"]) for error in caught.value.errors()]
