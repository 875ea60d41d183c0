"""Fixtures of the SFTP tests: a container with SFTP credentials, clients to reach it.

``account`` makes a container on the shared daemon (through the test's lab, so it is
removed afterwards) and issues credentials for it; ``session`` opens an asyncssh SFTP
client; ``openssh`` runs Debian's real ``sftp`` client with a password (SSH_ASKPASS)
or a key, with its known-hosts file in the test's temp folder.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh
import httpx
import pytest

from tests.support.daemon import DaemonProcess
from tests.support.lab import Lab


@dataclass
class Account:
    container: str
    username: str
    password: str | None
    volume: Path
    port: int


def issue(api: httpx.Client, container: str, **body: Any) -> dict[str, Any]:
    answer = api.post(f"/containers/{container}/sftp/credentials", json=body)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def make_account(lab: Lab, api: httpx.Client, name: str = "sftp", **body: Any) -> Account:
    container = lab.create(name)
    volume = Path(lab.volume_path(lab.get(container)["volume_id"]))
    issued = issue(api, container, **body)
    return Account(
        container=container,
        username=issued["username"],
        password=issued.get("password") or body.get("password"),
        volume=volume,
        port=int(issued["port"]),
    )


@pytest.fixture
def account(lab: Lab, api: httpx.Client, daemon: DaemonProcess) -> Account:
    assert daemon.sftp_port, "the shared daemon must run SFTP"
    return make_account(lab, api)


@contextlib.asynccontextmanager
async def session(
    port: int,
    username: str,
    password: str | None = None,
    *,
    client_keys: list[asyncssh.SSHKey] | None = None,
    **options: Any,
) -> AsyncIterator[asyncssh.SFTPClient]:
    """An asyncssh SFTP session as that user; ``options`` go to ``asyncssh.connect``."""
    async with (
        connect(port, username, password, client_keys=client_keys, **options) as conn,
        conn.start_sftp_client() as sftp,
    ):
        yield sftp


def connect(
    port: int,
    username: str,
    password: str | None = None,
    *,
    client_keys: list[asyncssh.SSHKey] | None = None,
    **options: Any,
) -> asyncssh.SSHClientConnection:
    """An asyncssh connection to lightd's SFTP server as that user (``async with``)."""
    return asyncssh.connect(
        "127.0.0.1",
        port,
        username=username,
        password=password,
        client_keys=client_keys or None,
        known_hosts=None,
        agent_path=None,
        preferred_auth="publickey" if client_keys else "password",
        **options,
    )


def session_of(account: Account) -> contextlib.AbstractAsyncContextManager[asyncssh.SFTPClient]:
    return session(account.port, account.username, account.password)


@dataclass
class OpenSSH:
    """Debian's ``sftp`` client, commands on standard input (``-b`` drops passwords)."""

    home: Path

    def run(
        self,
        port: int,
        username: str,
        commands: str,
        *,
        password: str | None = None,
        key: Path | None = None,
        cwd: Path | None = None,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[str]:
        args, env = self.command(port, username, password=password, key=key)
        return subprocess.run(
            args,
            input=commands,
            capture_output=True,
            text=True,
            env=env,
            cwd=cwd or self.home,
            timeout=timeout,
            start_new_session=True,
        )

    def command(
        self, port: int, username: str, *, password: str | None = None, key: Path | None = None
    ) -> tuple[list[str], dict[str, str]]:
        """The ``sftp`` command line and environment for one login."""
        args = [
            "sftp",
            "-P",
            str(port),
            "-o",
            "StrictHostKeyChecking=accept-new",
            "-o",
            f"UserKnownHostsFile={self.home / 'known_hosts'}",
            "-o",
            "BatchMode=no",
            "-o",
            "NumberOfPasswordPrompts=1",
            "-o",
            "IdentityAgent=none",
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("SSH_")}
        if key is not None:
            args += [
                "-i",
                str(key),
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "PreferredAuthentications=publickey",
            ]
        else:
            askpass = self.home / "askpass.sh"
            askpass.write_text(f"#!/bin/sh\nprintf '%s\\n' '{password}'\n")
            askpass.chmod(0o700)
            env.update(
                {"SSH_ASKPASS": str(askpass), "SSH_ASKPASS_REQUIRE": "force", "DISPLAY": ":0"}
            )
            args += ["-o", "PreferredAuthentications=password", "-o", "PubkeyAuthentication=no"]
        args.append(f"{username}@127.0.0.1")
        return args, env


@pytest.fixture
def openssh(tmp_path: Path) -> Iterator[OpenSSH]:
    home = tmp_path / "openssh"
    home.mkdir()
    yield OpenSSH(home)
