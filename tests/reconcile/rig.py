"""A controller wired to the FakeEngine, in-memory desired documents and a tmp data dir."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightd.engine.fake import FakeEngine
from lightd.reconcile.controller import Controller, ControllerSettings
from lightd.reconcile.planner import Policy, plan
from lightd.reconcile.workqueue import Backoff, WorkQueue
from lightd.runtime.console import ConsoleHub
from lightd.spec.container import ContainerSpec
from lightd.store import DocumentStore
from lightd.store.observed import ObservedStore

IMAGE = "lightd-test/busybox:latest"
VOLUME_ID = "0123456789abcdef"


def spec(internal_id: str = "mc-1", **changes: Any) -> ContainerSpec:
    base: dict[str, Any] = {
        "internal_id": internal_id,
        "image": IMAGE,
        "volume_id": VOLUME_ID,
        "startup_command": "sleep 1000",
        "limits": {"memory": 64 * 1024 * 1024, "cpu": 0.5},
    }
    base.update(changes)
    return ContainerSpec.model_validate(base)


@dataclass
class Desired:
    """What the controller reads of the desired side (documents, revisions, the guard)."""

    specs: dict[str, ContainerSpec] = field(default_factory=dict)
    held: set[str] = field(default_factory=set)

    def put(self, desired: ContainerSpec) -> None:
        self.specs[desired.internal_id] = desired

    def get(self, internal_id: str) -> ContainerSpec | None:
        return self.specs.get(internal_id)

    def ids(self) -> list[str]:
        return sorted(self.specs)

    def digest(self, internal_id: str) -> str | None:
        found = self.specs.get(internal_id)
        if found is None:
            return None
        return hashlib.sha256(found.model_dump_json().encode()).hexdigest()

    def deletion_held(self, internal_id: str) -> bool:
        return internal_id in self.held


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Rig:
    fake: FakeEngine
    desired: Desired
    observed: ObservedStore
    consoles: ConsoleHub
    controller: Controller
    clock: Clock
    volumes: Path
    refusals: dict[str, str]

    @property
    def queue(self) -> WorkQueue:
        assert self.controller.queue is not None
        return self.controller.queue

    def advance(self, seconds: float) -> None:
        self.clock.now += seconds
        self.fake.now = self.clock.now

    async def drain(self, key: str, *, limit: int = 60) -> list[str]:
        """Work ``key`` like a worker would, while it is queued at once; the outcomes."""
        outcomes: list[str] = []
        self.queue.add(key)
        while len(self.queue) and len(outcomes) < limit:
            got = await self.queue.get()
            assert got is not None
            try:
                outcomes.append(await self.controller.work(got))
            finally:
                self.queue.done(got)
        return outcomes

    async def replan(self, key: str) -> tuple[Any, ...]:
        """A fresh look and a fresh plan: the actions still wanted."""
        actual = await self.controller.observe(key)
        desired = self.desired.get(key)
        volume = self.volume_path(desired.volume_id) if desired is not None else None
        return plan(
            desired=desired,
            observed=self.observed.get(key),
            actual=actual,
            volume_path=volume,
            now=self.clock.now,
            policy=self.controller.policy,
            gates=self.controller.gates(key, desired),
        ).actions

    def volume_path(self, volume_id: str) -> str | None:
        path = self.volumes / volume_id
        return str(path) if path.is_dir() else None

    async def close(self) -> None:
        if self.controller.queue is not None:
            await self.controller.queue.close()
        self.consoles.stop_all()
        self.fake.close()


def make_rig(tmp_path: Path, *, policy: Policy | None = None) -> Rig:
    clock = Clock()
    fake = FakeEngine(images=(IMAGE,))
    fake.now = clock.now
    desired = Desired()
    observed = ObservedStore(DocumentStore(tmp_path / "data"))
    volumes = tmp_path / "volumes"
    (volumes / VOLUME_ID).mkdir(parents=True)
    refusals: dict[str, str] = {}
    holder: dict[str, Controller] = {}
    consoles = ConsoleHub(
        fake,
        on_match=lambda key, cid: holder["c"].on_console_match(key, cid),
        on_end=lambda key: None,
    )
    rig_policy = policy or Policy(crash_grace_seconds=0.0)
    controller = Controller(
        engine=fake,
        desired=desired,
        observed=observed,
        consoles=consoles,
        volume_path=lambda volume_id: (
            str(volumes / volume_id) if (volumes / volume_id).is_dir() else None
        ),
        data_dir=tmp_path / "data",
        settings=ControllerSettings(
            workers=1,
            policy=rig_policy,
            backoff=Backoff(initial_seconds=0.01, max_seconds=0.05),
        ),
        admit=lambda s: refusals.get(s.internal_id),
        clock=clock,
    )
    holder["c"] = controller
    controller.queue = WorkQueue(controller.settings.backoff)
    consoles.bind_loop(asyncio.get_running_loop())
    return Rig(
        fake=fake,
        desired=desired,
        observed=observed,
        consoles=consoles,
        controller=controller,
        clock=clock,
        volumes=volumes,
        refusals=refusals,
    )
