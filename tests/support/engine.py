"""Direct Docker access for tests: inspect and clean up what a test made, by label and name.

Tests use it to check what lightd did (``docker inspect``) and to act behind lightd's
back; cleanup removes only containers whose names carry the test's own prefix.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import docker
import docker.errors

from lightd.engine.records import CreateRequest, Resources, Role

TEST_IMAGE = os.environ.get("LIGHTD_TEST_IMAGE", "lightd-test/busybox:latest")


def sleeping_request(internal_id: str, volume: str, command: str) -> CreateRequest:
    """An engine-level create of a main container of the test image running ``command``
    (a shell line), the volume mounted, no ports, mounts or environment."""
    return CreateRequest(
        internal_id=internal_id,
        role=Role.MAIN,
        image=TEST_IMAGE,
        command=[command],
        entrypoint=["/bin/sh", "-c"],
        volume_path=volume,
        mounts={},
        extra_binds={},
        ports=[],
        environment={},
        resources=Resources(memory=0, memory_swap=0, nano_cpus=0, pids_limit=64),
        spec_hash="h",
        stdin=False,
    )


@contextmanager
def client() -> Iterator[docker.DockerClient]:
    handle = docker.from_env(timeout=60)
    try:
        yield handle
    finally:
        handle.close()


def inspect(name: str) -> dict[str, Any] | None:
    with client() as c:
        try:
            return dict(c.api.inspect_container(name))
        except docker.errors.NotFound:
            return None


def managed_names(prefix: str, node: str | None = None) -> list[str]:
    """Names of lightd-managed containers whose internal_id starts with ``prefix`` (of
    the node ``node`` only, when given: two daemons share the engine in some tests)."""
    labels = ["io.lightd.managed=true"] + ([f"io.lightd.node={node}"] if node else [])
    with client() as c:
        found = c.api.containers(all=True, filters={"label": labels})
    names = [str(entry["Names"][0]).lstrip("/") for entry in found]
    return sorted(name for name in names if name.startswith(f"lightd-{prefix}"))


def remove_prefixed(prefix: str, node: str | None = None) -> None:
    """Force-remove the containers named ``lightd-<prefix>...`` (of ``node`` only, when
    given)."""
    filters = {"label": [f"io.lightd.node={node}"]} if node else {}
    with client() as c:
        for entry in c.api.containers(all=True, filters=filters):
            name = str(entry["Names"][0]).lstrip("/")
            if name.startswith(f"lightd-{prefix}"):
                with suppress(docker.errors.NotFound):
                    c.api.remove_container(entry["Id"], force=True)
