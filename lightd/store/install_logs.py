"""Install logs: the whole output of a container's last install script, one text per container.

Kept under ``<data dir>/state/install-logs/<internal_id>.log`` through the document store
(atomic replace, the data folder's file mode). The executor writes one when an install
ends and removes it when the container is forgotten; ``GET .../install-log`` reads it.
It must not decide anything about installs, nor talk to the engine.
"""

from __future__ import annotations

from pathlib import Path

from lightd.store.documents import DocumentStore

FOLDER = "state/install-logs"


class InstallLogs:
    """Blocking reads and writes (callers run them in a thread)."""

    def __init__(self, store: DocumentStore) -> None:
        self._store = store

    @classmethod
    def in_data_dir(cls, data_dir: Path) -> InstallLogs:
        return cls(DocumentStore(data_dir, file_mode=0o600))

    @staticmethod
    def name_of(internal_id: str) -> str:
        return f"{FOLDER}/{internal_id}.log"

    def write(self, internal_id: str, text: str) -> None:
        # Not fsynced: a log is a record lightd can lose on power failure, never a spec.
        self._store.write_bytes(self.name_of(internal_id), text.encode("utf-8"), durable=False)

    def read(self, internal_id: str) -> str:
        """The last install's output; empty when the container has not installed yet."""
        raw = self._store.read_bytes(self.name_of(internal_id))
        return "" if raw is None else raw.decode("utf-8", "replace")

    def remove(self, internal_id: str) -> None:
        self._store.delete(self.name_of(internal_id))
