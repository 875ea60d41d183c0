"""The executor: applies one planned action to the engine and says what it observed.

Side effects on the engine (through the :class:`~lightd.engine.base.Engine` seam), the
install scripts and logs on disk, and the console readers live here. The executor does
not write observed state: :meth:`Executor.apply` returns an :class:`Outcome` carrying an
:class:`~lightd.spec.observed.ObservedPatch` for the controller to apply, and reports the
states a long action passes through (``stopping`` while a stop waits) through the
``report`` callback the controller gives it. It must not decide what to do next (that is
the planner's job); it reports failures as lightd errors for the controller to classify.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from lightd.engine.base import Engine
from lightd.engine.records import (
    INSTALL_SCRIPT_DIR,
    SHELL_PICKER,
    Actual,
    CreateRequest,
    Role,
    container_name,
)
from lightd.errors import EngineError, EngineNotFound, ImageNotFound, SpecInvalid
from lightd.fs import ops
from lightd.fs.beneath import Root
from lightd.fs.configs import rewrite_config_files
from lightd.reconcile.actions import (
    Action,
    Adopt,
    ApplyDiskLimit,
    ClearConflict,
    ClearRefusal,
    CreateMain,
    EnsureImage,
    FinishInstall,
    Forget,
    HandVolume,
    KillInstall,
    KillMain,
    RecordDiskOver,
    RecordEngineBack,
    RecordExit,
    RecordKillHandled,
    RecordRestartHandled,
    RemoveInstall,
    RemoveMain,
    ReportBlocked,
    ReportRefused,
    RestartMain,
    RewriteConfigs,
    SkipInstall,
    StartInstall,
    StartMain,
    StopForDisk,
    StopMain,
    UpdateLimits,
    describe,
)
from lightd.reconcile.planner import Policy, resources_of
from lightd.runtime.console import ConsoleHub
from lightd.spec.container import ContainerSpec, Power, install_image_of, numeric_owner
from lightd.spec.observed import (
    UNSET,
    InstallState,
    ObservedContainer,
    ObservedPatch,
    RuntimeState,
)
from lightd.store.install_logs import InstallLogs
from lightd.templates.configfiles import ServerFacts, placeholder_values

log = logging.getLogger("lightd.executor")

INSTALL_TAIL_LINES = 20
IMAGE_SEEN_SECONDS = 10.0

__all__ = ["Executor", "NewConsole", "Outcome", "SpecInvalid"]

Report = Callable[[ObservedPatch], Awaitable[None]]
# Apply a disk limit to a volume (its reference, the limit, whether a container runs on it).
ApplyDisk = Callable[[str, int, bool], Awaitable[None]]


async def no_disk(volume_ref: str, limit: int, in_use: bool) -> None:
    raise SpecInvalid("Disk limits are not available")


class ObservedReader(Protocol):
    def get(self, internal_id: str) -> ObservedContainer | None: ...


@dataclass(frozen=True, slots=True)
class NewConsole:
    """A container (re)started: the controller starts a fresh console reader on it."""

    container_id: str
    since: float | None
    pattern: str | None


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one action changed: the observed patch, a console to follow, or a forget."""

    patch: ObservedPatch | None = None
    console: NewConsole | None = None
    forget: bool = False


NO_CHANGE = Outcome()


class Executor:
    def __init__(
        self,
        *,
        engine: Engine,
        observed: ObservedReader,
        consoles: ConsoleHub,
        policy: Policy,
        data_dir: Path,
        interrupted: Callable[[str], asyncio.Event],
        clock: Callable[[], float] = time.time,
        apply_disk: ApplyDisk = no_disk,
    ) -> None:
        self._clock = clock
        self._apply_disk = apply_disk
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
        report: Report,
    ) -> Outcome:
        """Apply ``action``; ``report`` records the states it passes on the way."""
        log.info(
            "%s: %s",
            internal_id,
            describe(action),
            extra={"fields": {"container": internal_id, "action": action.kind}},
        )
        match action:
            case Forget():
                await self._forget(internal_id)
                return Outcome(forget=True)
            case RemoveInstall():
                if actual.install is not None:
                    await self._engine.remove(actual.install.id)
                return NO_CHANGE
            case RemoveMain():
                return await self._remove_main(internal_id, desired, actual, report)
            case ReportBlocked(reason=reason) | ReportRefused(reason=reason):
                return Outcome(ObservedPatch(blocked_reason=reason, last_error=reason))
            case ClearRefusal():
                return Outcome(ObservedPatch(blocked_reason=None, last_error=None))
            case ClearConflict():
                return Outcome(ObservedPatch(blocked_reason=None))
            case RecordKillHandled(kill_handled=handled):
                return Outcome(ObservedPatch(kill_handled=handled))
            case RecordRestartHandled(restart_handled=handled):
                return Outcome(ObservedPatch(restart_handled=handled))
            case RecordEngineBack():
                return Outcome(ObservedPatch(engine_available=True))
            case Adopt(starting=starting):
                state = RuntimeState.STARTING if starting else RuntimeState.RUNNING
                return Outcome(ObservedPatch(state=state, engine_available=True))
            case RecordExit():
                return Outcome(_exit_patch(action))
            case RecordDiskOver(message=message):
                return Outcome(ObservedPatch(last_error=message))
            case StopForDisk(message=message):
                log.warning("%s: %s", internal_id, message)
                stopped = await self._stop_main(internal_id, desired, actual, report, graceful=True)
                return Outcome((stopped or ObservedPatch()).then(ObservedPatch(last_error=message)))
            case KillMain(kill_handled=handled):
                patch = await self._stop_main(internal_id, desired, actual, report, graceful=False)
                if handled is not None:
                    patch = (patch or ObservedPatch()).then(ObservedPatch(kill_handled=handled))
                return Outcome(patch)
            case StopMain():
                return Outcome(
                    await self._stop_main(internal_id, desired, actual, report, graceful=True)
                )
            case UpdateLimits():
                assert actual.main is not None and desired is not None
                await self._engine.update_limits(actual.main.id, resources_of(desired))
                return NO_CHANGE
            case KillInstall():
                assert actual.install is not None
                await self._engine.kill(actual.install.id)
                error = f"Install timed out after {int(self._policy.install_timeout_seconds)} s"
                return await self._finish_install(internal_id, actual.install.id, None, error=error)
            case FinishInstall(exit_code=code):
                assert actual.install is not None
                return await self._finish_install(internal_id, actual.install.id, code)
        assert desired is not None and volume_path is not None, f"{action.kind} needs a spec"
        match action:
            case ApplyDiskLimit(limit=limit):
                running = actual.main is not None and actual.main.running
                await self._apply_disk(desired.volume_id, limit, running)
                return NO_CHANGE
            case EnsureImage(phase=phase):
                await self._ensure_image(internal_id, desired, phase=phase, report=report)
                return NO_CHANGE
            case SkipInstall(install_key=key):
                return Outcome(
                    ObservedPatch(
                        install_state=InstallState.READY,
                        install_key=key,
                        install_image=install_image_of(desired),
                        install_exit_code=None,
                        last_error=None,
                    )
                )
            case StartInstall(install_key=key):
                return await self._start_install(internal_id, desired, volume_path, key, report)
            case CreateMain(spec_hash=spec_hash, user=user):
                return await self._create_main(
                    internal_id, desired, volume_path, spec_hash, user, report
                )
            case HandVolume(owner=owner):
                return await self._hand_volume(internal_id, volume_path, owner)
            case RewriteConfigs():
                return Outcome(await self._rewrite_configs(internal_id, desired, volume_path))
            case StartMain(restart_handled=handled):
                return await self._start_main(internal_id, desired, actual, handled, report)
            case RestartMain(restart_handled=handled, rewrite_configs=rewrite_configs):
                stopped = await self._stop_main(internal_id, desired, actual, report, graceful=True)
                if stopped is not None:
                    await report(stopped)
                if rewrite_configs:
                    await report(await self._rewrite_configs(internal_id, desired, volume_path))
                fresh = await self._observe_main(internal_id)
                return await self._start_main(internal_id, desired, fresh, handled, report)
        raise AssertionError(f"unhandled action {action}")  # pragma: no cover

    async def _observe_main(self, internal_id: str) -> Actual:
        main = await self._engine.inspect(container_name(internal_id, Role.MAIN))
        return Actual(main=main, install=None)

    async def _ensure_image(
        self, internal_id: str, desired: ContainerSpec, *, phase: str, report: Report
    ) -> None:
        image = install_image_of(desired) if phase == "install" else desired.image
        seen = self._images_seen.get(image)
        if seen is not None and time.monotonic() - seen < IMAGE_SEEN_SECONDS:
            return  # many containers of one image converge at once: ask the engine once
        if await self._engine.image_present(image):
            self._images_seen[image] = time.monotonic()
            return
        try:
            await self._engine.pull(image)
        except EngineError as exc:
            log.warning("%s: pulling %s failed: %s", internal_id, image, exc.message)
            if phase == "install":
                await report(
                    ObservedPatch(
                        install_state=InstallState.FAILED,
                        install_image=install_image_of(desired),
                        last_error=ImageNotFound.message,
                    )
                )
            raise SpecInvalid(ImageNotFound.message) from exc
        if not await self._engine.image_present(image):
            raise SpecInvalid(ImageNotFound.message)

    async def _start_install(
        self,
        internal_id: str,
        desired: ContainerSpec,
        volume_path: str,
        key: str,
        report: Report,
    ) -> Outcome:
        script_dir = self._install_dir / internal_id
        await asyncio.to_thread(_write_script, script_dir, desired.install_script or "")
        stale = await self._engine.inspect(container_name(internal_id, Role.INSTALL))
        if stale is not None and stale.managed:
            await self._engine.remove(stale.id)
        request = CreateRequest(
            internal_id=internal_id,
            role=Role.INSTALL,
            image=install_image_of(desired),
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
        await report(
            ObservedPatch(
                install_state=InstallState.INSTALLING,
                install_key=key,
                install_image=install_image_of(desired),
                install_started_at=self._clock(),
                install_exit_code=None,
                install_output_tail=None,
                last_error=None,
                blocked_reason=None,
            )
        )
        container_id = await self._engine.create(request)
        await self._engine.start(container_id)
        return Outcome(console=NewConsole(container_id=container_id, since=None, pattern=None))

    async def _finish_install(
        self, internal_id: str, container_id: str, code: int | None, *, error: str | None = None
    ) -> Outcome:
        try:
            output = await self._engine.logs(container_id)
        except EngineNotFound:
            output = b""
        text = output.decode("utf-8", "replace")
        await asyncio.to_thread(self.install_logs.write, internal_id, text)
        tail = "\n".join(text.splitlines()[-INSTALL_TAIL_LINES:])
        await self._engine.remove(container_id)
        if error is None and code == 0:
            return Outcome(
                ObservedPatch(
                    install_state=InstallState.READY,
                    install_exit_code=0,
                    install_output_tail=tail,
                    last_error=None,
                    # The install ran as root: hand the volume to the user again.
                    volume_owner=None,
                )
            )
        return Outcome(
            ObservedPatch(
                install_state=InstallState.FAILED,
                install_exit_code=code,
                install_output_tail=tail,
                last_error=error or f"Install script failed with exit code {code}",
            )
        )

    async def _hand_volume(self, internal_id: str, volume_path: str, owner: str) -> Outcome:
        ids = numeric_owner(owner)
        assert ids is not None, "the planner hands volumes to numeric users only"

        def work() -> int:
            with Root(Path(volume_path)) as root:
                return ops.hand_root(root, ids)

        changed = await asyncio.to_thread(work)
        log.info("%s: volume handed to %s (%d entries changed)", internal_id, owner, changed)
        return Outcome(ObservedPatch(volume_owner=owner))

    async def _rewrite_configs(
        self, internal_id: str, desired: ContainerSpec, volume_path: str
    ) -> ObservedPatch:
        observed = self._observed.get(internal_id)
        owner = numeric_owner(observed.run_user if observed is not None else None)
        first = desired.ports[0] if desired.ports else None
        facts = ServerFacts(
            internal_id=internal_id,
            ip=first.ip if first is not None else "0.0.0.0",
            port=first.port if first is not None else None,
            memory_mib=(desired.limits.memory or 0) // (1024 * 1024),
            cpu=desired.limits.cpu or 0.0,
            swap_mib=max(desired.limits.swap or 0, 0) // (1024 * 1024),
            environment=desired.environment,
        )
        report = await asyncio.to_thread(
            rewrite_config_files,
            Path(volume_path),
            desired.config_files,
            placeholder_values(facts),
            owner=owner,
        )
        if report.written:
            log.info("%s: config files rewritten: %s", internal_id, ", ".join(report.written))
        if report.error:
            log.warning("%s: %s", internal_id, report.error)
        return ObservedPatch(config_error=report.error)

    async def _create_main(
        self,
        internal_id: str,
        desired: ContainerSpec,
        volume_path: str,
        spec_hash: str,
        user: str | None,
        report: Report,
    ) -> Outcome:
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
            spec_hash=spec_hash,
            stdin=True,
            user=user,
            # A container left on the image's user (made before users) keeps its powers.
            cap_drop=self._policy.cap_drop if user is not None else (),
            read_only=desired.read_only_rootfs,
        )
        try:
            container_id = await self._engine.create(request)
        except ImageNotFound:
            # The image went away since it was last seen: make sure of it once more.
            self._images_seen.pop(desired.image, None)
            await self._ensure_image(internal_id, desired, phase="create", report=report)
            try:
                container_id = await self._engine.create(request)
            except ImageNotFound as exc:
                raise SpecInvalid(ImageNotFound.message) from exc
        return Outcome(
            ObservedPatch(
                container_id=container_id,
                spec_hash=spec_hash,
                state=RuntimeState.OFFLINE,
                blocked_reason=None,
                run_user=user,
                user_recorded=True,
            )
        )

    def _main_id(self, internal_id: str, actual: Actual) -> str:
        """The main container: as observed, or as created earlier in this same step."""
        if actual.main is not None:
            return actual.main.id
        observed = self._observed.get(internal_id)
        assert observed is not None and observed.container_id is not None
        return observed.container_id

    async def _start_main(
        self,
        internal_id: str,
        desired: ContainerSpec,
        actual: Actual,
        restart_handled: float | None,
        report: Report,
    ) -> Outcome:
        container_id = self._main_id(internal_id, actual)
        observed = self._observed.get(internal_id)
        # A config file that could not be rewritten does not stop the start: it is shown.
        config_error = observed.config_error if observed is not None else None
        before = ObservedPatch(
            state=RuntimeState.STARTING, stop_requested=False, last_error=config_error
        )
        if restart_handled is not None:
            before = before.then(
                ObservedPatch(
                    restart_handled=restart_handled, gave_up=False, crash_times=(), crash_count=0
                )
            )
        await report(before)
        # The engine runs on this host: its start time is ours, give or take a moment, and
        # the console reader follows from a second before (no extra inspect on the way).
        started_at = self._clock() - 1.0
        try:
            await self._engine.start(container_id)
        except EngineError:
            # Not started at all (a port taken, the engine gone): that is no crash.
            await report(ObservedPatch(state=RuntimeState.OFFLINE))
            raise
        state = RuntimeState.STARTING if desired.start_pattern else RuntimeState.RUNNING
        return Outcome(
            ObservedPatch(
                state=state, started_at=started_at, container_id=container_id, exit_code=None
            ),
            console=NewConsole(
                container_id=container_id, since=started_at, pattern=desired.start_pattern
            ),
        )

    async def _stop_main(
        self,
        internal_id: str,
        desired: ContainerSpec | None,
        actual: Actual,
        report: Report,
        *,
        graceful: bool,
    ) -> ObservedPatch | None:
        """Stop the main container; the patch recording that it is offline, if it was there."""
        main = actual.main
        if main is None:
            return None
        await report(ObservedPatch(state=RuntimeState.STOPPING, stop_requested=True))
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
        return ObservedPatch(
            state=RuntimeState.OFFLINE, exit_code=final.exit_code if final is not None else None
        )

    def _kill_wanted(self, desired: ContainerSpec, internal_id: str) -> bool:
        observed = self._observed.get(internal_id)
        return (
            desired.power is Power.STOPPED
            and desired.kill_requested_at is not None
            and (observed is None or observed.kill_handled != desired.kill_requested_at)
        )

    async def _remove_main(
        self, internal_id: str, desired: ContainerSpec | None, actual: Actual, report: Report
    ) -> Outcome:
        main = actual.main
        if main is None:
            return NO_CHANGE
        if main.running:
            stopped = await self._stop_main(
                internal_id, desired, actual, report, graceful=desired is not None
            )
            if stopped is not None:
                await report(stopped)
        self._consoles.stop(internal_id)
        await self._engine.remove(main.id)
        if self._observed.get(internal_id) is None:
            return NO_CHANGE
        return Outcome(ObservedPatch(container_id=None, spec_hash=None, state=RuntimeState.OFFLINE))

    async def _forget(self, internal_id: str) -> None:
        self._consoles.forget(internal_id)
        await asyncio.to_thread(shutil.rmtree, self._install_dir / internal_id, True)
        await asyncio.to_thread(self.install_logs.remove, internal_id)


def _exit_patch(action: RecordExit) -> ObservedPatch:
    patch = ObservedPatch(
        state=RuntimeState.OFFLINE,
        exit_code=action.exit_code,
        engine_available=True,
        stop_requested=False,
    )
    crash = action.crash
    if crash is None:
        return patch
    return patch.then(
        ObservedPatch(
            crash_times=crash.times,
            crash_count=crash.count,
            gave_up=True if crash.gave_up else UNSET,
            last_error=crash.message,
        )
    )


def _write_script(folder: Path, script: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "install.sh"
    target.write_text(script if script.endswith("\n") else script + "\n", encoding="utf-8")
    target.chmod(0o755)
