"""The restic adapter: one snapshot per backup, tagged with the backup id.

Two ways to read a volume, neither following a symlink. As root (:meth:`backup_tree`):
lightd's walk lists the paths and restic reads them through a read-only ``nosymfollow``
bind mount that exists only in restic's own mount namespace, so unchanged files are
skipped against the parent snapshot. Otherwise (:meth:`backup`): lightd's no-follow walk
produces a tar stream that restic stores as ``/<volume_id>.tar`` with ``--stdin``,
deduplicated by restic's content-defined chunks. Downloads and restores are
``restic dump`` (a tar either way), so restores go through the same hardened extractor
as archives. Output is parsed from ``--json``. A locked repository
is retried with backoff (Debian's restic 0.14 has no ``--retry-lock``; 0.14 is the
minimum: ``--json`` and compressed repositories). Children die with lightd
(``PR_SET_PDEATHSIG``), so a killed daemon never leaves a backup finishing behind it.
The password is generated into the data folder (0600) on first use. Blocking: run in a
worker thread. This module must not read volumes or know about HTTP.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import secrets
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from lightd.errors import InsufficientStorage, LightdError

MINIMUM = (0, 14, 0)
LOCKED = ("repository is already locked", "unable to create lock")
CHUNK = 1024 * 1024


class ResticError(LightdError):
    message = "restic failed"


def _die_with_parent() -> None:  # pragma: no cover (runs in the child)
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def probe_private_mount(folder: Path) -> bool:
    """Whether ``unshare`` can make the private, read-only ``nosymfollow`` bind mount
    :meth:`Restic.backup_tree` reads volumes through (root, Linux 5.10+)."""
    if os.geteuid() != 0:
        return False
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        source = folder / ".probe-source"
        target = folder / ".probe-target"
        source.mkdir(exist_ok=True)
        target.mkdir(exist_ok=True)
        done = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
             'mount --bind "$1" "$2" && mount -o remount,bind,ro,nosymfollow "$2"',
             "sh", str(source), str(target)],
            capture_output=True, check=False, timeout=30,
        )  # fmt: skip
        source.rmdir()
        target.rmdir()
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def parse_version(text: str) -> tuple[int, int, int] | None:
    found = re.search(r"restic (\d+)\.(\d+)\.(\d+)", text)
    if not found:
        return None
    major, minor, patch = (int(x) for x in found.groups())
    return major, minor, patch


def ensure_password(path: Path) -> str:
    """The repository password kept at ``path`` (generated with mode 0600 if missing)."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    value = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
    return value


@dataclass(frozen=True)
class ResticConfig:
    binary: str
    repository: str
    password_file: Path
    env: dict[str, str]
    lock_retries: int = 8
    lock_retry_initial_seconds: float = 0.5
    lock_retry_max_seconds: float = 10.0


@dataclass(frozen=True)
class Summary:
    snapshot_id: str
    data_added: int
    total_bytes_processed: int


class _Drain(threading.Thread):
    """Reads a child's pipe to the end so it can never block on a full pipe."""

    def __init__(self, pipe: IO[bytes]) -> None:
        super().__init__(daemon=True, name="lightd-restic-pipe")
        self.pipe = pipe
        self.data = bytearray()
        self.start()

    def run(self) -> None:
        while chunk := self.pipe.read(65536):
            self.data += chunk
            if len(self.data) > 16 * 1024 * 1024:  # keep the tail only
                del self.data[: len(self.data) - 4 * 1024 * 1024]


def _problem(stderr: bytes) -> str:
    lines = [line.strip() for line in stderr.decode("utf-8", "replace").splitlines()]
    useful = [line for line in lines if line and not line.startswith("{")]
    return useful[-1] if useful else "no output"


class Restic:
    def __init__(self, config: ResticConfig, *, sleep: Callable[[float], None] = time.sleep):
        self.config = config
        self.sleep = sleep
        self._initialized = False

    def _env(self) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/root"),
            "RESTIC_REPOSITORY": self.config.repository,
            "RESTIC_PASSWORD_FILE": str(self.config.password_file),
            "RESTIC_CACHE_DIR": str(self.config.password_file.parent / "restic-cache"),
            "RESTIC_PROGRESS_FPS": "2",
        }
        env.update(self.config.env)
        return env

    def _spawn(
        self, args: list[str], *, stdin: bool = False, wrapper: list[str] | None = None
    ) -> subprocess.Popen[bytes]:
        try:
            return subprocess.Popen(
                [*(wrapper or []), self.config.binary, *args],
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=self._env(),
                preexec_fn=_die_with_parent,
            )
        except FileNotFoundError as exc:
            raise ResticError(f"restic is not installed ({self.config.binary})") from exc

    def _retrying(self, attempt: Callable[[], bytes], what: str) -> bytes:
        """Run ``attempt`` again with backoff while the repository is locked."""
        delay = self.config.lock_retry_initial_seconds
        for tries in range(self.config.lock_retries + 1):
            try:
                return attempt()
            except ResticError as exc:
                locked = any(word in exc.message for word in LOCKED)
                if not locked or tries == self.config.lock_retries:
                    raise
            self.sleep(delay)
            delay = min(delay * 2, self.config.lock_retry_max_seconds)
        raise AssertionError("unreachable")

    def run(self, args: list[str], what: str) -> bytes:
        def attempt() -> bytes:
            child = self._spawn(args)
            out, err = child.communicate()
            if child.returncode != 0:
                raise self._failure(what, err)
            return out

        return self._retrying(attempt, what)

    def _failure(self, what: str, stderr: bytes) -> ResticError:
        problem = _problem(stderr)
        if "no space left on device" in problem.lower():
            return InsufficientStorage()  # type: ignore[return-value]
        return ResticError(f"restic {what} failed: {problem}")

    # -- commands --------------------------------------------------------------------

    def version(self) -> str | None:
        try:
            out = subprocess.run(
                [self.config.binary, "version"], capture_output=True, check=False, timeout=30
            ).stdout.decode()
        except (OSError, subprocess.TimeoutExpired):
            return None
        found = parse_version(out)
        return ".".join(str(x) for x in found) if found else None

    def check_version(self) -> str:
        version = self.version()
        if version is None:
            raise ResticError(f"restic is not installed ({self.config.binary})")
        if tuple(int(x) for x in version.split(".")) < MINIMUM:
            raise ResticError(f"restic {version} is too old (lightd needs 0.14.0 or newer)")
        return version

    def ensure_repository(self) -> None:
        if self._initialized:
            return
        self.check_version()
        ensure_password(self.config.password_file)
        try:
            self.run(["cat", "config", "--no-lock"], "open")
        except ResticError:
            self.run(["init"], "init")
        self._initialized = True

    def backup(
        self, backup_id: str, filename: str, produce: Callable[[Callable[[bytes], None]], None]
    ) -> Summary:
        """One snapshot of what ``produce`` writes (a tar stream), tagged ``backup_id``."""
        self.ensure_repository()
        args = [
            "backup", "--json", "--quiet", "--stdin", "--stdin-filename", filename,
            "--tag", backup_id, "--host", "lightd",
        ]  # fmt: skip

        def attempt() -> bytes:
            child = self._spawn(args, stdin=True)
            assert child.stdin is not None and child.stdout is not None
            assert child.stderr is not None
            out, err = _Drain(child.stdout), _Drain(child.stderr)
            pipe = child.stdin

            def write(data: bytes) -> None:
                try:
                    pipe.write(data)
                except BrokenPipeError:
                    raise ResticError("restic backup stopped reading") from None

            try:
                produce(write)
                pipe.close()
            except BaseException as exc:
                child.kill()
                child.wait()
                err.join()
                if isinstance(exc, ResticError) and child.returncode not in (0, -9):
                    raise self._failure("backup", bytes(err.data)) from exc
                raise
            child.wait()
            out.join()
            err.join()
            if child.returncode != 0:
                raise self._failure("backup", bytes(err.data))
            return bytes(out.data)

        return self._summary(self._retrying(attempt, "backup"))

    def backup_tree(
        self,
        backup_id: str,
        *,
        volume: Path,
        mountpoint: Path,
        paths: list[str],
        parent: str | None,
        progress: Callable[[int, int], None],
        cancelled: threading.Event,
        limit_kib_s: int = 0,
    ) -> Summary:
        """One snapshot of ``paths`` (relative to the volume), read through a private,
        read-only, ``nosymfollow`` bind mount of the volume at ``mountpoint``.

        The mount lives in a mount namespace of restic's own (``unshare --mount``), so it
        disappears with restic, even after a kill -9; with ``nosymfollow`` the kernel
        follows no symlink anywhere below it, whatever the container swaps in meanwhile.
        """
        self.ensure_repository()
        mountpoint.mkdir(parents=True, exist_ok=True, mode=0o700)
        listing = mountpoint.parent / f".paths-{backup_id}"
        listing.write_bytes(b"".join(os.fsencode(p) + b"\0" for p in paths or ["."]))
        wrapper = [
            "unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
            'mount --bind "$1" "$2" && mount -o remount,bind,ro,nosymfollow "$2"'
            ' && cd "$2" && shift 2 && exec "$@"',
            "sh", str(volume), str(mountpoint),
        ]  # fmt: skip
        args = [
            "backup", "--json", "--files-from-raw", str(listing),
            "--tag", backup_id, "--host", "lightd",
        ]  # fmt: skip
        if parent:
            args += ["--parent", parent]
        if limit_kib_s > 0:
            args += ["--limit-upload", str(limit_kib_s)]

        def attempt() -> bytes:
            child = self._spawn(args, wrapper=wrapper)
            assert child.stdout is not None and child.stderr is not None
            err = _Drain(child.stderr)
            summary = bytearray()
            stdout = child.stdout

            def read_status() -> None:
                for line in stdout:
                    if line.startswith(b'{"message_type":"summary"'):
                        summary.extend(line)
                        continue
                    with contextlib.suppress(orjson.JSONDecodeError, KeyError, TypeError):
                        status = orjson.loads(line)
                        if status.get("message_type") == "status":
                            progress(
                                int(status.get("bytes_done", 0)),
                                int(status.get("total_bytes", 0)),
                            )

            reader = threading.Thread(target=read_status, daemon=True, name="lightd-restic-out")
            reader.start()
            while True:
                try:
                    child.wait(timeout=0.2)
                    break
                except subprocess.TimeoutExpired:
                    if cancelled.is_set():
                        child.kill()
            reader.join()
            err.join()
            if cancelled.is_set():
                raise ResticError("Cancelled")
            if child.returncode != 0:
                raise self._failure("backup", bytes(err.data))
            return bytes(summary)

        try:
            output = self._retrying(attempt, "backup")
        finally:
            with contextlib.suppress(OSError):
                listing.unlink()
        return self._summary(output)

    def _summary(self, output: bytes) -> Summary:
        for line in output.splitlines():
            with contextlib.suppress(orjson.JSONDecodeError):
                message: Any = orjson.loads(line)
                if isinstance(message, dict) and message.get("message_type") == "summary":
                    return Summary(
                        snapshot_id=str(message["snapshot_id"]),
                        data_added=int(message.get("data_added", 0)),
                        total_bytes_processed=int(message.get("total_bytes_processed", 0)),
                    )
        raise ResticError("restic backup gave no summary")

    def snapshots(self, tag: str | None = None) -> list[dict[str, Any]]:
        args = ["snapshots", "--json"] + (["--tag", tag] if tag else [])
        found = orjson.loads(self.run(args, "snapshots") or b"[]")
        return found if isinstance(found, list) else []

    def forget(self, snapshot_ids: list[str], *, prune: bool = True) -> None:
        if snapshot_ids:
            self.run(["forget", *(["--prune"] if prune else []), *snapshot_ids], "forget")

    def forget_tagged(self, backup_id: str) -> None:
        """Remove every snapshot tagged ``backup_id`` (a killed backup may have made one)."""
        self.ensure_repository()
        ids = [str(s["id"]) for s in self.snapshots(backup_id) if "id" in s]
        self.forget(ids)

    def unlock(self) -> None:
        with contextlib.suppress(ResticError):
            self.run(["unlock"], "unlock")

    def dump(self, snapshot_id: str, filename: str) -> Iterator[bytes]:
        """``filename`` of the snapshot: a file's content, or a folder as a tar stream."""
        self.ensure_repository()
        child = self._spawn(["dump", snapshot_id, f"/{filename}".replace("//", "/")])
        assert child.stdout is not None and child.stderr is not None
        err = _Drain(child.stderr)
        try:
            while chunk := child.stdout.read(CHUNK):
                yield chunk
        finally:
            if child.poll() is None:
                child.kill()
            child.wait()
            err.join()
        if child.returncode != 0:
            raise self._failure("dump", bytes(err.data))
