"""Runs a real lightd process for tests: own data and desired folders, a free port.

The process is started with ``python -m lightd serve`` and stopped with SIGTERM (or
SIGKILL when asked), so tests exercise the same code path as ``make run``.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

VENDOR = "application/vnd.pkglatv1+json"
LISTENING = re.compile(r"lightd listening on (\S+):(\d+)")
SFTP_LISTENING = re.compile(r"sftp listening on (\S+):(\d+)")
REPO = Path(__file__).resolve().parents[2]


class DaemonProcess:
    """One lightd process and an HTTP client for it."""

    def __init__(
        self,
        root: Path,
        *,
        env: dict[str, str] | None = None,
        config: dict[str, Any] | None = None,
        token: str = "lightd_" + "ab" * 16,
    ) -> None:
        self.root = root
        self.data_dir = root / "var"
        self.desired_dir = root / "desired"
        self.log_path = root / "lightd.log"
        self.config_path = root / "config.json"
        self.token = token
        self.extra_env = env or {}
        self.config = config
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.sftp_port = 0  # 0 while SFTP is disabled
        self._log_offset = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LIGHTD_")}
        env.update(
            {
                "LIGHTD_SERVER__HOST": "127.0.0.1",
                "LIGHTD_SERVER__PORT": "0",
                # Many daemons run at once: each SFTP server takes any free port.
                "LIGHTD_SFTP__PORT": "0",
                "LIGHTD_STORAGE__DATA_DIR": str(self.data_dir),
                "LIGHTD_STORAGE__DESIRED_DIR": str(self.desired_dir),
                "PYTHONUNBUFFERED": "1",
            }
        )
        if self.token:
            env["LIGHTD_AUTHORIZATION__TOKEN"] = self.token
        env.update(self.extra_env)
        return env

    def start(self, *, timeout: float = 30.0) -> DaemonProcess:
        self.spawn()
        return self.wait_started(timeout=timeout)

    def spawn(self) -> None:
        """Start the process without waiting for it to listen (:meth:`wait_started`):
        two daemons started side by side import at the same time."""
        self.root.mkdir(parents=True, exist_ok=True)
        args = [sys.executable, "-m", "lightd", "serve"]
        if self.config is not None:
            self.config_path.write_bytes(orjson.dumps(self.config))
            args += ["--config", str(self.config_path)]
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            args, cwd=REPO, env=self.environment(), stdout=log, stderr=subprocess.STDOUT
        )
        log.close()

    def wait_started(self, *, timeout: float = 30.0) -> DaemonProcess:
        """Until the spawned daemon says where it listens (killed after ``timeout``)."""
        assert self.proc is not None, "spawn() first"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.new_log()
            found = LISTENING.search(text)
            if found:
                self.port = int(found.group(2))
                sftp = SFTP_LISTENING.search(text)
                self.sftp_port = int(sftp.group(2)) if sftp else 0
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"lightd exited early ({self.proc.returncode}):\n{self.log()}")
            time.sleep(0.05)
        self.stop(kill=True)
        raise RuntimeError(f"lightd did not start in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def new_log(self) -> str:
        """Log text written since the last start."""
        return self.log()[self._log_offset :]

    def stop(self, *, kill: bool = False, timeout: float = 20.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        self.proc = None
        return code

    def restart(self) -> DaemonProcess:
        self.stop()
        return self.start()

    def client(self, *, token: str | None = None, vendor: bool = True, **kw: Any) -> httpx.Client:
        headers = {}
        used = self.token if token is None else token
        if used:
            headers["Authorization"] = f"Bearer {used}"
        if vendor:
            headers["Accept"] = VENDOR
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=30.0, **kw)

    def __enter__(self) -> DaemonProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_for(
    predicate: Any, *, timeout: float = 30.0, interval: float = 0.1, what: str = ""
) -> Any:
    """Poll ``predicate`` until it returns a truthy value; fail with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}: {last!r}")
