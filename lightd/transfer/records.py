"""Transfer records: what ``GET /transfers/<id>`` shows, kept across restarts.

One JSON document per transfer under ``<data_dir>/state/transfers/<transfer_id>.json``
(atomic replace), written at every phase and at the end, never for progress (which
lives in memory). A record also holds what recovery needs: the role, the container's
desired power on the source when it began, its volume, and (target) whether anything
was published; for the commit step (:mod:`lightd.transfer.commit`) the source keeps the
target's URL, the commit secret it chose and the target's commit window, the target
only the secret's SHA-256 (the secret is never in :meth:`Transfer.view`). At start,
records a killed daemon left ``running`` are returned so the service can end them
``failed`` (``Interrupted``); ended records older than :data:`KEEP_SECONDS` are
dropped, at most :data:`KEEP_ENDED` are kept. Blocking: call from a thread. This module
must not touch volumes, containers or the network.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from lightd.store import DocumentStore

FOLDER = "state/transfers"
INTERRUPTED = "Interrupted"
KEEP_SECONDS = 7 * 24 * 3600
KEEP_ENDED = 200
TransferState = Literal["running", "completed", "failed", "cancelled"]
Role = Literal["source", "target"]
STATES: tuple[TransferState, ...] = ("running", "completed", "failed", "cancelled")


@dataclass
class Transfer:
    id: str
    internal_id: str
    role: Role
    state: TransferState = "running"
    phase: str = "starting"
    bytes_done: int = 0
    bytes_total: int | None = None
    error: str | None = None
    started_at: float = field(default_factory=time.time)
    ended_at: float | None = None
    # Recovery: the source's desired power when it began, the volume, keep_source, the
    # backups that travel; on the target, whether the volume or document was published.
    power: str | None = None
    volume_id: str | None = None
    keep_source: bool = False
    backups: list[str] = field(default_factory=list)
    published: bool = False
    # The commit step: source (URL, secret, the target's window) and target (its hash).
    target_url: str | None = None
    commit_secret: str | None = field(default=None, repr=False)
    commit_seconds: float | None = None
    commit_hash: str | None = None
    task: asyncio.Task[Any] | None = field(default=None, repr=False)
    reported_at: float = field(default=0.0, repr=False)

    def view(self) -> dict[str, Any]:
        return {
            "transfer_id": self.id,
            "internal_id": self.internal_id,
            "role": self.role,
            "state": self.state,
            "phase": self.phase,
            "bytes_done": self.bytes_done,
            "bytes_total": self.bytes_total,
            "error": self.error,
        }

    def document(self) -> dict[str, Any]:
        return {
            **self.view(),
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "power": self.power,
            "volume_id": self.volume_id,
            "keep_source": self.keep_source,
            "backups": list(self.backups),
            "published": self.published,
            "target_url": self.target_url,
            "commit_secret": self.commit_secret,
            "commit_seconds": self.commit_seconds,
            "commit_hash": self.commit_hash,
        }


def from_document(name: str, raw: object) -> Transfer | None:
    """The record of a document, or None when it is not one (it is then ignored).

    A record of an older lightd (``{internal_id, power}``, named by the transfer id)
    reads as a source record still running.
    """
    if not isinstance(raw, dict) or not isinstance(raw.get("internal_id"), str):
        return None
    transfer_id = str(raw.get("transfer_id") or name.rsplit("/", 1)[-1].removesuffix(".json"))
    state = raw.get("state", "running")
    role = raw.get("role", "source")
    if state not in STATES or role not in ("source", "target"):
        return None
    total = raw.get("bytes_total")
    ended = raw.get("ended_at")
    seconds = raw.get("commit_seconds")
    return Transfer(
        id=transfer_id,
        internal_id=raw["internal_id"],
        role=role,
        state=state,
        phase=str(raw.get("phase", "starting")),
        bytes_done=int(raw.get("bytes_done") or 0),
        bytes_total=int(total) if isinstance(total, int) else None,
        error=raw.get("error") if isinstance(raw.get("error"), str) else None,
        started_at=float(raw.get("started_at") or 0.0),
        ended_at=float(ended) if isinstance(ended, int | float) else None,
        power=raw.get("power") if isinstance(raw.get("power"), str) else None,
        volume_id=raw.get("volume_id") if isinstance(raw.get("volume_id"), str) else None,
        keep_source=bool(raw.get("keep_source", False)),
        backups=[str(b) for b in raw.get("backups") or [] if isinstance(b, str)],
        published=bool(raw.get("published", False)),
        target_url=_text(raw.get("target_url")),
        commit_secret=_text(raw.get("commit_secret")),
        commit_seconds=float(seconds) if isinstance(seconds, int | float) else None,
        commit_hash=_text(raw.get("commit_hash")),
    )


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


class TransferRecords:
    """Records mirrored to their documents."""

    def __init__(self, data: DocumentStore) -> None:
        self.data = data

    def save(self, transfer: Transfer) -> None:
        self.data.write(f"{FOLDER}/{transfer.id}.json", transfer.document())

    def load(self, now: float | None = None) -> list[Transfer]:
        """Every record kept (old ended ones are deleted), oldest first."""
        stamp = time.time() if now is None else now
        found: list[Transfer] = []
        for name in self.data.names(FOLDER):
            record = from_document(name, self.data.read(name))
            if record is None:
                continue
            found.append(record)
        found.sort(key=lambda r: r.started_at)
        ended = [r for r in found if r.state != "running"]
        stale = {
            r.id
            for index, r in enumerate(ended)
            if (r.ended_at or r.started_at) < stamp - KEEP_SECONDS
            or index < len(ended) - KEEP_ENDED
        }
        for transfer_id in stale:
            with contextlib.suppress(OSError):
                self.data.delete(f"{FOLDER}/{transfer_id}.json")
        return [r for r in found if r.id not in stale]
