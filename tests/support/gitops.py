"""A test's own container documents in a daemon's desired folder, and the CLI.

Documents are written straight into ``desired/containers/`` (GitOps: no API call makes
them); every internal_id starts with the test's prefix. Cleanup deletes through the API
(which is not subject to the deletion guard), waits for the engine, then removes by
prefix whatever is left, even when the test failed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import orjson

from tests.support import engine
from tests.support.daemon import REPO, DaemonProcess, wait_for
from tests.support.lab import Lab

MIB = 1024 * 1024


def run_cli(
    daemon: DaemonProcess | None, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m lightd ARGS`` against ``daemon`` (its URL, token and folders)."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("LIGHTD_")}
    command = [sys.executable, "-m", "lightd", *args]
    if daemon is not None:
        environment.update(
            {
                "LIGHTD_TOKEN": daemon.token,
                "LIGHTD_STORAGE__DATA_DIR": str(daemon.data_dir),
                "LIGHTD_STORAGE__DESIRED_DIR": str(daemon.desired_dir),
            }
        )
        if daemon.port and "--url" not in args and args[0] in ("plan", "status", "apply"):
            command += ["--url", daemon.base_url]
    environment.update(env or {})
    return subprocess.run(
        command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=60
    )


class Docs(Lab):
    """A :class:`Lab` whose containers are documents written into the desired folder."""

    def __init__(self, daemon: DaemonProcess, api: httpx.Client, prefix: str) -> None:
        super().__init__(daemon, api, prefix)
        self.folder = daemon.desired_dir / "containers"

    def id(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    def path(self, name: str) -> Path:
        return self.folder / f"{self.id(name)}.json"

    def document(self, name: str, **changes: Any) -> dict[str, Any]:
        document: dict[str, Any] = {
            "internal_id": self.id(name),
            "image": engine.TEST_IMAGE,
            "volume_id": self.volume(),
            "startup_command": "exec sleep 1000",
            "limits": {"memory": 64 * MIB},
        }
        document.update(changes)
        return document

    def write(self, document: dict[str, Any], *, name: str | None = None) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        stem = name or document["internal_id"]
        path = self.folder / f"{stem}.json"
        path.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
        return path

    def inspect(self, name: str) -> dict[str, Any] | None:
        return engine.inspect(f"lightd-{self.id(name)}")

    def wait_engine(self, name: str, predicate: Any, *, what: str, timeout: float = 30) -> Any:
        def check() -> Any:
            found = self.inspect(name)
            return found if found is not None and predicate(found) else None

        return wait_for(check, timeout=timeout, interval=0.05, what=f"{self.id(name)}: {what}")

    def wait_running(self, name: str, timeout: float = 30) -> dict[str, Any]:
        return dict(
            self.wait_engine(name, lambda c: c["State"]["Running"], what="running", timeout=timeout)
        )

    def wait_removed(self, name: str, timeout: float = 30) -> None:
        wait_for(lambda: self.inspect(name) is None, timeout=timeout, what=f"{name} removed")

    def desired(self) -> dict[str, Any]:
        answer = self.api.get("/desired")
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    def container(self, name: str) -> httpx.Response:
        return self.api.get(f"/containers/{self.id(name)}")

    def cleanup(self) -> None:
        if self.folder.is_dir():
            for path in self.folder.glob(f"{self.prefix}-*.json"):
                internal_id = path.name[: -len(".json")]
                if self.api.delete(f"/containers/{internal_id}").status_code != 200:
                    path.unlink(missing_ok=True)
            for path in self.folder.glob(f"{self.prefix}*"):
                path.unlink(missing_ok=True)
        self.api.post("/desired/apply", json={"allow_mass_delete": True})
        super().cleanup()
