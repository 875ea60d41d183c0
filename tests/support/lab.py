"""A test's own corner of the shared daemon: volumes, pool ports and containers it made.

Every internal_id a test creates starts with the test's prefix, so cleanup (through the
API, then by force on the engine) removes exactly what the test made, even on failure.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx

from tests.support import engine
from tests.support.daemon import DaemonProcess, wait_for


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Lab:
    def __init__(self, daemon: DaemonProcess, api: httpx.Client, prefix: str) -> None:
        self.daemon = daemon
        self.api = api
        self.prefix = prefix
        self.created: list[str] = []
        self.ports: list[int] = []

    def volume(self) -> str:
        answer = self.api.post("/volumes")
        assert answer.status_code == 201, answer.text
        return str(answer.json()["volume_id"])

    def volume_path(self, volume_id: str) -> str:
        return str(self.daemon.data_dir / "volumes" / volume_id)

    def pool_port(self) -> dict[str, Any]:
        port = free_port()
        answer = self.api.post(
            "/network/ports", json={"ip": "127.0.0.1", "port": port, "protocol": "tcp"}
        )
        assert answer.status_code == 200, answer.text
        self.ports.append(port)
        return {"ip": "127.0.0.1", "port": port, "protocol": "tcp"}

    def body(self, name: str, **changes: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "internal_id": f"{self.prefix}-{name}",
            "image": engine.TEST_IMAGE,
            "volume_id": changes.pop("volume_id", None) or self.volume(),
            "startup_command": "echo starting; echo 'Done (0.1s)! For help'; exec sleep 1000",
            "limits": {"memory": 64 * 1024 * 1024, "cpu": 0.5},
        }
        body.update(changes)
        return body

    def create(self, name: str, **changes: Any) -> str:
        body = self.body(name, **changes)
        answer = self.api.post("/containers", json=body)
        assert answer.status_code == 200, answer.text
        self.created.append(body["internal_id"])
        return str(body["internal_id"])

    def get(self, internal_id: str) -> dict[str, Any]:
        answer = self.api.get(f"/containers/{internal_id}")
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    def wait(
        self,
        internal_id: str,
        predicate: Callable[[dict[str, Any]], bool],
        *,
        what: str,
        timeout: float = 30.0,
    ) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            current = self.get(internal_id)
            return current if predicate(current) else None

        try:
            return dict(wait_for(check, timeout=timeout, interval=0.2, what=what))
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nlast: {self.get(internal_id)}") from None

    def wait_state(self, internal_id: str, state: str, *, timeout: float = 30.0) -> dict[str, Any]:
        return self.wait(
            internal_id, lambda c: c["state"] == state, what=f"state {state}", timeout=timeout
        )

    def wait_gone(self, internal_id: str, timeout: float = 30.0) -> None:
        wait_for(
            lambda: not engine.managed_names(internal_id),
            timeout=timeout,
            what=f"no Docker object for {internal_id}",
        )

    def _state_left(self) -> bool:
        folder = self.daemon.data_dir / "state" / "containers"
        return any(folder.glob(f"{self.prefix}-*.json")) if folder.is_dir() else False

    def _node(self) -> str | None:
        """This daemon's node id: the engine may hold another node's namesakes."""
        try:
            return (self.daemon.data_dir / "node.id").read_text().strip() or None
        except FileNotFoundError:
            return None

    def cleanup(self) -> None:
        for internal_id in self.created:
            self.api.delete(f"/containers/{internal_id}")
        node = self._node()
        deadline = time.monotonic() + 30
        quiet_since: float | None = None
        # Quiet twice in a row: a reconcile that read the document before its deletion
        # may still create the container, then remove it on its next look.
        while time.monotonic() < deadline:
            if engine.managed_names(self.prefix, node) or self._state_left():
                quiet_since = None
            elif quiet_since is None:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since > 1.0:
                break
            time.sleep(0.2)
        engine.remove_prefixed(self.prefix, node)
        for port in self.ports:
            self.api.delete(f"/network/ports/127.0.0.1/{port}")


USED_PREFIXES: list[str] = []


def new_prefix() -> str:
    """A fresh prefix, remembered so the session can sweep what a late reconcile made."""
    prefix = "t" + uuid.uuid4().hex[:8]
    USED_PREFIXES.append(prefix)
    return prefix
