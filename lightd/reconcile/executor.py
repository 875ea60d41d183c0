"""The executor: applies one planned action to the engine and records what it saw.

Side effects live here and only here: engine calls (through the ``Engine`` seam), observed
state updates, install logs on disk. It must not decide what to do next (that is the
planner's job); it reports failures as lightd errors for the controller to classify.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from lightd.engine.base import Engine
from lightd.engine.records import (
    INSTALL_SCRIPT_DIR,
    SHELL_PICKER,
    Actual,
    CreateRequest,
    Role,
    container_name,
)
from lightd.errors import EngineError, EngineNotFound, ImageNotFound
from lightd.reconcile.model import Action, ActionKind
from lightd.reconcile.planner import Policy, resources_of
from lightd.reconcile.state import ObservedStore
from lightd.runtime.console import ConsoleHub
from lightd.spec.container import ContainerSpec, Power
from lightd.spec.observed import InstallState, RuntimeState
from lightd.store.install_logs import InstallLogs

log = logging.getLogger("lightd.executor")

INSTALL_TAIL_LINES = 20
IMAGE_SEEN_SECONDS = 10.0


class SpecInvalid(Exception):
    """The spec cannot be applied as it is; wait for it to change."""

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


class Executor:
    def __init__(
        self,
        *,
        engine: Engine,
        observed: ObservedStore,
        consoles: ConsoleHub,
        policy: Policy,
        data_dir: Path,
        interrupted: Callable[[str], asyncio.Event],
    ) -> None:
        self._images_seen: dict[str, float] = {}
        self._engine = engine
        self._observed = observed
        self._consoles = consoles
        self._policy = policy
        self._install_dir = data_dir / "install"
        self.install_logs = InstallLogs.in_data_dir(data_dir)
        self._interrupted = interrupted

    async def apply(
        self,
        action: Action,
        *,
        internal_id: str,
        desired: ContainerSpec | None,
        actual: Actual,
        volume_path: str | None,
    ) -> None:
        log.info(
            "%s: %s",
            internal_id,
            action,
            extra={"fields": {"container": internal_id, "action": action.kind.value}},
        )
        kind = action.kind
        if kind is ActionKind.FORGET:
            await self._forget(internal_id)
            return
        if kind is ActionKind.REMOVE_INSTALL:
            if actual.install is not None:
                await self._engine.remove(actual.install.id)
            return
        if kind is ActionKind.REMOVE_MAIN:
            await self._remove_main(internal_id, desired, actual)
            return
        if kind is ActionKind.REPORT_BLOCKED:
            await self._observed.update(
                internal_id, blocked_reason=action.reason, last_error=action.reason
            )
            return
        if kind is ActionKind.MARK_STATE:
            await self._mark(internal_id, desired, action)
            return
        if kind is ActionKind.RECORD_EXIT:
            await self._record_exit(internal_id, action)
            return
        assert desired is not None and volume_path is not None, f"{kind} needs a spec"
        if kind is ActionKind.ENSURE_IMAGE:
            await self._ensure_image(internal_id, desired, phase=action.reason)
        elif kind is ActionKind.SKIP_INSTALL:
            await self._observed.update(
                internal_id,
                install_state=InstallState.READY,
                install_key=str(action.detail["install_key"]),
                install_image=desired.image,
                install_exit_code=None,
                last_error=None,
            )
        elif kind is ActionKind.START_INSTALL:
            await self._start_install(internal_id, desired, volume_path, action)
        elif kind is ActionKind.FINISH_INSTALL:
            assert actual.install is not None
            await self._finish_install(
                internal_id, actual.install.id, action.detail.get("exit_code")
            )
        elif kind is ActionKind.KILL_INSTALL:
            assert actual.install is not None
            await self._engine.kill(actual.install.id)
            await self._finish_install(
                internal_id,
                actual.install.id,
                None,
                error=f"Install timed out after {int(self._policy.install_timeout_seconds)} s",
            )
        elif kind is ActionKind.CREATE_MAIN:
            await self._create_main(internal_id, desired, volume_path, action)
        elif kind is ActionKind.START_MAIN:
            await self._start_main(internal_id, desired, actual, action)
        elif kind is ActionKind.STOP_MAIN:
            await self._stop_main(internal_id, desired, actual, graceful=True)
        elif kind is ActionKind.KILL_MAIN:
            await self._stop_main(internal_id, desired, actual, graceful=False)
            if "kill_handled" in action.detail:
                await self._observed.update(internal_id, kill_handled=action.detail["kill_handled"])
        elif kind is ActionKind.RESTART_MAIN:
            await self._stop_main(internal_id, desired, actual, graceful=True)
            fresh = await self._observe_main(internal_id)
            await self._start_main(internal_id, desired, fresh, action)
        elif kind is ActionKind.UPDATE_LIMITS:
            assert actual.main is not None
            await self._engine.update_limits(actual.main.id, resources_of(desired))
        else:  # pragma: no cover - every kind is handled above
            raise AssertionError(f"unhandled action {kind}")

    async def _observe_main(self, internal_id: str) -> Actual:
        name = container_name(internal_id, Role.MAIN)
        main = await self._engine.inspect(name)
        return Actual(main=main, install=None)

    async def _ensure_image(self, internal_id: str, desired: ContainerSpec, *, phase: str) -> None:
        seen = self._images_seen.get(desired.image)
        if seen is not None and time.monotonic() - seen < IMAGE_SEEN_SECONDS:
            return  # many containers of one image converge at once: ask the engine once
        if await self._engine.image_present(desired.image):
            self._images_seen[desired.image] = time.monotonic()
            return
        try:
            await self._engine.pull(desired.image)
        except EngineError as exc:
            log.warning("%s: pulling %s failed: %s", internal_id, desired.image, exc.message)
            if phase == "install":
                await self._observed.update(
                    internal_id,
                    install_state=InstallState.FAILED,
                    install_image=desired.image,
                    last_error=ImageNotFound.message,
                )
            raise SpecInvalid(ImageNotFound.message) from exc
        if not await self._engine.image_present(desired.image):
            raise SpecInvalid(ImageNotFound.message)

    async def _start_install(
        self, internal_id: str, desired: ContainerSpec, volume_path: str, action: Action
    ) -> None:
        script_dir = self._install_dir / internal_id
        await asyncio.to_thread(_write_script, script_dir, desired.install_script or "")
        name = container_name(internal_id, Role.INSTALL)
        stale = await self._engine.inspect(name)
        if stale is not None and stale.managed:
            await self._engine.remove(stale.id)
        request = CreateRequest(
            internal_id=internal_id,
            role=Role.INSTALL,
            image=desired.image,
            entrypoint=["/bin/sh", "-c"],
            command=[SHELL_PICKER.format(script=f"{INSTALL_SCRIPT_DIR}/install.sh")],
            volume_path=volume_path,
            mounts={},
            extra_binds={str(script_dir): INSTALL_SCRIPT_DIR},
            ports=[],
            environment=desired.environment,
            resources=resources_of(desired),
            spec_hash=None,
            stdin=False,
        )
        now = time.time()
        await self._observed.update(
            internal_id,
            install_state=InstallState.INSTALLING,
            install_key=str(action.detail["install_key"]),
            install_image=desired.image,
            install_started_at=now,
            install_exit_code=None,
            install_output_tail=None,
            last_error=None,
            blocked_reason=None,
        )
        container_id = await self._engine.create(request)
        await self._engine.start(container_id)
        self._consoles.new_run(internal_id, container_id=container_id, since=None, pattern=None)

    async def _finish_install(
        self, internal_id: str, container_id: str, exit_code: object, *, error: str | None = None
    ) -> None:
        try:
            output = await self._engine.logs(container_id)
        except EngineNotFound:
            output = b""
        text = output.decode("utf-8", "replace")
        await asyncio.to_thread(self.install_logs.write, internal_id, text)
        tail = "\n".join(text.splitlines()[-INSTALL_TAIL_LINES:])
        await self._engine.remove(container_id)
        code = exit_code if isinstance(exit_code, int) else None
        if error is None and code == 0:
            await self._observed.update(
                internal_id,
                install_state=InstallState.READY,
                install_exit_code=0,
                install_output_tail=tail,
                last_error=None,
            )
            return
        message = error or f"Install script failed with exit code {code}"
        await self._observed.update(
            internal_id,
            install_state=InstallState.FAILED,
            install_exit_code=code,
            install_output_tail=tail,
            last_error=message,
        )

    async def _create_main(
        self, internal_id: str, desired: ContainerSpec, volume_path: str, action: Action
    ) -> None:
        command = [desired.startup_command] if desired.startup_command else None
        request = CreateRequest(
            internal_id=internal_id,
            role=Role.MAIN,
            image=desired.image,
            entrypoint=["/bin/sh", "-c"] if command else None,
            command=command,
            volume_path=volume_path,
            mounts=desired.mount,
            extra_binds={},
            ports=[(p.ip, p.port, p.protocol) for p in desired.ports],
            environment=desired.environment,
            resources=resources_of(desired),
            spec_hash=str(action.detail["spec_hash"]),
            stdin=True,
        )
        try:
            container_id = await self._engine.create(request)
        except ImageNotFound:
            # The image went away since it was last seen: make sure of it once more.
            self._images_seen.pop(desired.image, None)
            await self._ensure_image(internal_id, desired, phase="create")
            try:
                container_id = await self._engine.create(request)
            except ImageNotFound as exc:
                raise SpecInvalid(ImageNotFound.message) from exc
        await self._observed.update(
            internal_id,
            container_id=container_id,
            spec_hash=request.spec_hash,
            state=RuntimeState.OFFLINE,
            blocked_reason=None,
        )

    def _main_id(self, internal_id: str, actual: Actual) -> str:
        """The main container: as observed, or as created earlier in this same step."""
        if actual.main is not None:
            return actual.main.id
        observed = self._observed.get(internal_id)
        assert observed is not None and observed.container_id is not None
        return observed.container_id

    async def _start_main(
        self, internal_id: str, desired: ContainerSpec, actual: Actual, action: Action
    ) -> None:
        container_id = self._main_id(internal_id, actual)
        changes: dict[str, object] = {"stop_requested": False, "last_error": None}
        if "restart_handled" in action.detail:
            changes.update(
                restart_handled=action.detail["restart_handled"],
                gave_up=False,
                crash_times=[],
                crash_count=0,
            )
        await self._observed.update(internal_id, state=RuntimeState.STARTING, **changes)
        # The engine runs on this host: its start time is ours, give or take a moment, and
        # the console reader follows from a second before (no extra inspect on the way).
        started_at = time.time() - 1.0
        try:
            await self._engine.start(container_id)
        except EngineError:
            # Not started at all (a port taken, the engine gone): that is no crash.
            await self._observed.update(internal_id, state=RuntimeState.OFFLINE)
            raise
        state = RuntimeState.STARTING if desired.start_pattern else RuntimeState.RUNNING
        await self._observed.update(
            internal_id,
            state=state,
            started_at=started_at,
            container_id=container_id,
            exit_code=None,
        )
        self._consoles.new_run(
            internal_id,
            container_id=container_id,
            since=started_at,
            pattern=desired.start_pattern,
        )

    async def _stop_main(
        self, internal_id: str, desired: ContainerSpec | None, actual: Actual, *, graceful: bool
    ) -> None:
        main = actual.main
        if main is None:
            return
        await self._observed.update(internal_id, state=RuntimeState.STOPPING, stop_requested=True)
        if graceful and desired is not None:
            policy = desired.stop
            interrupted = self._interrupted(internal_id)
            interrupted.clear()
            if policy.command:
                await self._engine.send_line(main.id, policy.command)
            else:
                await self._engine.signal(main.id, policy.signal)
            deadline = time.monotonic() + policy.timeout_seconds
            while time.monotonic() < deadline:
                current = await self._engine.inspect(main.id)
                if current is None or not current.running:
                    break
                if interrupted.is_set() and self._kill_wanted(desired, internal_id):
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(interrupted.wait(), timeout=0.25)
        await self._engine.kill(main.id)
        await self._engine.wait_exit(main.id, seconds=30)
        final = await self._engine.inspect(main.id)
        await self._observed.update(
            internal_id,
            state=RuntimeState.OFFLINE,
            exit_code=final.exit_code if final is not None else None,
        )

    def _kill_wanted(self, desired: ContainerSpec, internal_id: str) -> bool:
        observed = self._observed.get(internal_id)
        return (
            desired.power is Power.STOPPED
            and desired.kill_requested_at is not None
            and (observed is None or observed.kill_handled != desired.kill_requested_at)
        )

    async def _remove_main(
        self, internal_id: str, desired: ContainerSpec | None, actual: Actual
    ) -> None:
        main = actual.main
        if main is None:
            return
        if main.running:
            await self._stop_main(internal_id, desired, actual, graceful=desired is not None)
        self._consoles.stop(internal_id)
        await self._engine.remove(main.id)
        if self._observed.get(internal_id) is not None:
            await self._observed.update(
                internal_id, container_id=None, spec_hash=None, state=RuntimeState.OFFLINE
            )

    async def _mark(self, internal_id: str, desired: ContainerSpec | None, action: Action) -> None:
        changes = dict(action.detail)
        if changes.pop("state", None) == "adopt":
            console = self._consoles.watching(internal_id)
            matched = console is not None and console.matched
            pattern = desired.start_pattern if desired is not None else None
            changes["state"] = (
                RuntimeState.STARTING if pattern and not matched else RuntimeState.RUNNING
            )
            changes["engine_available"] = True
        await self._observed.update(internal_id, **changes)

    async def _record_exit(self, internal_id: str, action: Action) -> None:
        exit_code = action.detail.get("exit_code")
        changes: dict[str, object] = {
            "state": RuntimeState.OFFLINE,
            "exit_code": exit_code,
            "engine_available": True,
            "stop_requested": False,
        }
        if action.detail.get("crash"):
            observed = self._observed.get(internal_id)
            now = time.time()
            times = [
                t
                for t in (observed.crash_times if observed else [])
                if now - t <= self._policy.crash_window_seconds
            ] + [now]
            changes["crash_times"] = times
            changes["crash_count"] = (observed.crash_count if observed else 0) + 1
            if action.detail.get("give_up"):
                changes["gave_up"] = True
                changes["last_error"] = (
                    f"Crashed {len(times)} times within "
                    f"{int(self._policy.crash_window_seconds)} s; not restarting again "
                    "(start or restart it to try again)"
                )
            else:
                changes["last_error"] = f"Crashed with exit code {exit_code}"
        await self._observed.update(internal_id, **changes)

    async def _forget(self, internal_id: str) -> None:
        self._consoles.forget(internal_id)
        await asyncio.to_thread(shutil.rmtree, self._install_dir / internal_id, True)
        await asyncio.to_thread(self.install_logs.remove, internal_id)
        await self._observed.forget(internal_id)


def _write_script(folder: Path, script: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "install.sh"
    target.write_text(script if script.endswith("\n") else script + "\n", encoding="utf-8")
    target.chmod(0o755)
