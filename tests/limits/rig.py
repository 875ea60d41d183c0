"""A daemon of one disk backend, and its containers, for the disk-limit tests.

:class:`DiskRig` starts a real lightd on a given folder with ``volumes.disk_backend``
set, makes containers through the API and reads their console from the engine; its
``close`` deletes every container it made (through the API, then by force by prefix)
and stops the daemon, so the caller's file-system fixture can unmount afterwards.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import FAST_RECONCILER
from tests.support import engine
from tests.support.daemon import DaemonProcess, wait_for
from tests.support.lab import new_prefix

MiB = 1024 * 1024


class DiskRig:
    def __init__(self, root: Path, backend: str, **env: str) -> None:
        settings = dict(FAST_RECONCILER)
        settings["LIGHTD_VOLUMES__DISK_BACKEND"] = backend
        settings["LIGHTD_VOLUMES__DISK_CHECK_SECONDS"] = "0.5"
        settings.update(env)
        self.daemon = DaemonProcess(root, env=settings)
        self.prefix = new_prefix()
        self.made: list[str] = []
        self.api: httpx.Client | None = None

    def start(self) -> DiskRig:
        if self.api is not None:
            self.api.close()
        self.daemon.start()
        self.api = self.daemon.client()
        return self

    def restart(self, *, kill: bool = False) -> None:
        assert self.api is not None
        self.api.close()
        self.daemon.stop(kill=kill)
        self.start()

    @property
    def http(self) -> httpx.Client:
        assert self.api is not None
        return self.api

    def volume(self, limit: int | None = None) -> str:
        body = {"disk_limit": limit} if limit is not None else None
        answer = self.http.post("/volumes", json=body) if body else self.http.post("/volumes")
        assert answer.status_code == 201, answer.text
        return str(answer.json()["volume_id"])

    def show(self, volume_id: str) -> dict[str, Any]:
        answer = self.http.get(f"/volumes/{volume_id}")
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    def container(self, name: str, volume_id: str, command: str, **extra: Any) -> str:
        internal_id = f"{self.prefix}-{name}"
        body = {
            "internal_id": internal_id,
            "image": engine.TEST_IMAGE,
            "volume_id": volume_id,
            "startup_command": command,
            "limits": {"memory": 64 * MiB, "cpu": 0.5, **extra.pop("limits", {})},
            **extra,
        }
        answer = self.http.post("/containers", json=body)
        assert answer.status_code == 200, answer.text
        self.made.append(internal_id)
        return internal_id

    def get(self, internal_id: str) -> dict[str, Any]:
        answer = self.http.get(f"/containers/{internal_id}")
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    def console(self, internal_id: str) -> str:
        with engine.client() as client:
            try:
                found = client.containers.get(f"lightd-{internal_id}")
            except Exception:
                return ""
            return str(found.logs().decode("utf-8", "replace"))

    def wait_console(self, internal_id: str, text: str, timeout: float = 60.0) -> str:
        return str(
            wait_for(
                lambda: (out := self.console(internal_id)) and text in out and out,
                timeout=timeout,
                interval=0.25,
                what=f"{text!r} on {internal_id}'s console",
            )
        )

    def close(self) -> None:
        try:
            if self.api is not None and self.daemon.proc is not None:
                for internal_id in self.made:
                    self.http.delete(f"/containers/{internal_id}")
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline and engine.managed_names(self.prefix):
                    time.sleep(0.2)
        finally:
            engine.remove_prefixed(self.prefix)
            if self.api is not None:
                self.api.close()
            self.daemon.stop()
