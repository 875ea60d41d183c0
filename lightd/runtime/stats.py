"""One stats reader per running container that has watchers, shared by all of them.

A thread follows the engine's stats stream and turns each sample into the contract's
``stats`` event (``cpu_usage`` where 100 means one full core), plus the volume's
``disk_usage`` and ``disk_limit`` (bytes, 0: none) from the disk limits' memory.
Readers start with the first subscriber and stop with the last one or when the
container stops. It must not change any state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lightd.engine.base import Engine
from lightd.engine.records import Stream
from lightd.runtime.threads import start_soon

log = logging.getLogger("lightd.stats")

StatsSink = Callable[[dict[str, Any]], None]


def stats_event(sample: dict[str, Any]) -> dict[str, Any]:
    """The contract's stats event from one engine sample (pure)."""
    cpu = sample.get("cpu_stats") or {}
    pre = sample.get("precpu_stats") or {}
    cpu_total = (cpu.get("cpu_usage") or {}).get("total_usage", 0)
    pre_total = (pre.get("cpu_usage") or {}).get("total_usage", 0)
    system = cpu.get("system_cpu_usage") or 0
    pre_system = pre.get("system_cpu_usage") or 0
    online = (
        cpu.get("online_cpus") or len((cpu.get("cpu_usage") or {}).get("percpu_usage") or []) or 1
    )
    cpu_delta = cpu_total - pre_total
    system_delta = system - pre_system
    cpu_usage = (
        (cpu_delta / system_delta) * online * 100.0 if cpu_delta > 0 and system_delta > 0 else 0.0
    )
    memory = sample.get("memory_stats") or {}
    details = memory.get("stats") or {}
    cache = details.get(
        "inactive_file", details.get("total_inactive_file", details.get("cache", 0))
    )
    usage = max(int(memory.get("usage") or 0) - int(cache or 0), 0)
    rx = tx = 0
    for network in (sample.get("networks") or {}).values():
        rx += int(network.get("rx_bytes") or 0)
        tx += int(network.get("tx_bytes") or 0)
    read = write = 0
    for entry in (sample.get("blkio_stats") or {}).get("io_service_bytes_recursive") or []:
        op = str(entry.get("op", "")).lower()
        if op == "read":
            read += int(entry.get("value") or 0)
        elif op == "write":
            write += int(entry.get("value") or 0)
    return {
        "event": "stats",
        "cpu_usage": round(cpu_usage, 2),
        "memory_usage": usage,
        "memory_limit": int(memory.get("limit") or 0),
        "network_rx": rx,
        "network_tx": tx,
        "block_read": read,
        "block_write": write,
    }


@dataclass
class _Reader:
    container_id: str
    sinks: set[StatsSink] = field(default_factory=set)
    stream: Stream[dict[str, Any]] | None = None
    stopped: threading.Event = field(default_factory=threading.Event)


class StatsHub:
    def __init__(
        self, engine: Engine, *, extra: Callable[[str], dict[str, Any]] | None = None
    ) -> None:
        self._engine = engine
        # Fields added to each event of a container (its volume's disk_usage, disk_limit).
        self._extra = extra or (lambda _internal_id: {})
        self._readers: dict[str, _Reader] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def readers(self) -> int:
        return sum(1 for r in self._readers.values() if not r.stopped.is_set())

    def subscribe(self, internal_id: str, container_id: str, sink: StatsSink) -> None:
        reader = self._readers.get(internal_id)
        if reader is None or reader.stopped.is_set() or reader.container_id != container_id:
            sinks = reader.sinks if reader is not None else set()
            if reader is not None:
                self._halt(reader)
            reader = _Reader(container_id=container_id, sinks=sinks)
            self._readers[internal_id] = reader
            start_soon(
                threading.Thread(
                    target=self._read,
                    args=(internal_id, reader),
                    name=f"stats-{internal_id}",
                    daemon=True,
                )
            )
        reader.sinks.add(sink)

    def unsubscribe(self, internal_id: str, sink: StatsSink) -> None:
        reader = self._readers.get(internal_id)
        if reader is None:
            return
        reader.sinks.discard(sink)
        if not reader.sinks:
            self._halt(reader)
            self._readers.pop(internal_id, None)

    def stop(self, internal_id: str) -> None:
        reader = self._readers.get(internal_id)
        if reader is not None:
            self._halt(reader)

    def stop_all(self) -> None:
        for reader in list(self._readers.values()):
            self._halt(reader)

    async def once(self, container_id: str, *, internal_id: str | None = None) -> dict[str, Any]:
        sample = await self._engine.stats_once(container_id)
        event = stats_event(sample)
        if internal_id is not None:
            event.update(self._extra(internal_id))
        return event

    def _halt(self, reader: _Reader) -> None:
        reader.stopped.set()
        if reader.stream is not None:
            with contextlib.suppress(Exception):
                reader.stream.close()

    def _read(self, internal_id: str, reader: _Reader) -> None:
        try:
            stream = self._engine.follow_stats(reader.container_id)
            reader.stream = stream
            if reader.stopped.is_set():
                stream.close()
                return
            for sample in stream:
                if reader.stopped.is_set():
                    break
                if not sample.get("read") or not (sample.get("memory_stats") or {}):
                    continue  # a stopped container answers empty samples
                event = stats_event(sample)
                event.update(self._extra(internal_id))
                if self._loop is not None:
                    self._loop.call_soon_threadsafe(self._fan_out, reader, event)
        except Exception as exc:
            if not reader.stopped.is_set():
                log.debug("stats of %s ended: %s", internal_id, exc)
        finally:
            reader.stopped.set()

    def _fan_out(self, reader: _Reader, event: dict[str, Any]) -> None:
        for sink in list(reader.sinks):
            try:
                sink(event)
            except Exception:
                log.exception("stats sink failed")
