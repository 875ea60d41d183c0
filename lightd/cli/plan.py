"""``lightd plan``: what would change to reach a desired folder, like ``terraform plan``.

:func:`diff` is pure: it compares the folder's documents with what the node has now
(:class:`Current`, from the daemon's ``GET /desired/containers`` or read from the engine
when no daemon runs) and lists the changes: create, re-create, update, start, stop,
restart, reinstall, delete, and the pool's added, removed and changed ports. A re-create
that moves a container to another user says so (``user: 0:0 -> 988:988``): documents
written before users were known keep the image's user until an edit re-creates them,
then they run as ``containers.user``. It must not read files, call the daemon or touch
the engine.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from lightd.engine.records import ActualContainer
from lightd.reconcile.planner import limits_differ, resources_of
from lightd.spec.container import ContainerSpec, Power
from lightd.spec.ports import PortEntry, format_key

RECREATE_FIELDS = (
    "image",
    "startup_command",
    "volume_id",
    "ports",
    "mount",
    "environment",
    "user",
    "read_only_rootfs",
)
INSTALL_FIELDS = ("install_script", "install_image", "reinstall_requested_at")
QUIET_FIELDS = ("restart_requested_at", "kill_requested_at", "schema_uri")


class ChangeKind(StrEnum):
    CREATE = "create"
    RECREATE = "re-create"
    UPDATE = "update"
    REINSTALL = "reinstall"
    RESTART = "restart"
    START = "start"
    STOP = "stop"
    DELETE = "delete"
    ADD_PORT = "add port"
    REMOVE_PORT = "remove port"
    UPDATE_PORT = "update port"


SYMBOLS = {
    ChangeKind.CREATE: "+",
    ChangeKind.RECREATE: "-/+",
    ChangeKind.UPDATE: "~",
    ChangeKind.REINSTALL: "~",
    ChangeKind.RESTART: "~",
    ChangeKind.START: ">",
    ChangeKind.STOP: "<",
    ChangeKind.DELETE: "-",
    ChangeKind.ADD_PORT: "+",
    ChangeKind.REMOVE_PORT: "-",
    ChangeKind.UPDATE_PORT: "~",
}


@dataclass(frozen=True)
class Current:
    """One container as the node has it now.

    From the daemon: ``document`` (its current desired spec) and whether the main
    container exists and runs. From the engine alone: ``actual`` (no document known).
    """

    internal_id: str
    document: ContainerSpec | None = None
    exists: bool | None = None
    running: bool | None = None
    actual: ActualContainer | None = None
    # The user the main container runs as now (None: the image's), when it is known.
    user: str | None = None
    user_known: bool = False


@dataclass(frozen=True)
class Change:
    kind: ChangeKind
    target: str
    detail: str = ""

    def __str__(self) -> str:
        text = f"  {SYMBOLS[self.kind]:>3} {self.kind.value:<11} {self.target}"
        return f"{text}  ({self.detail})" if self.detail else text


def _show(value: Any) -> str:
    if isinstance(value, list | dict):
        return str(value) if len(str(value)) <= 60 else f"{str(value)[:57]}..."
    if isinstance(value, str) and len(value) > 40:
        return repr(value[:37] + "...")
    return repr(value) if isinstance(value, str) else str(value)


def _field_changes(old: dict[str, Any], new: dict[str, Any], names: tuple[str, ...]) -> list[str]:
    return [
        f"{name}: {_show(old.get(name))} -> {_show(new.get(name))}"
        for name in names
        if old.get(name) != new.get(name)
    ]


def shown_user(user: str | None) -> str:
    """A user as the plan shows it; the image's own (no user set) is root for lightd's images."""
    return "0:0" if user is None else user


def _next_user(
    spec: ContainerSpec, doc: ContainerSpec, *, recreated: bool, default_user: str | None
) -> str | None:
    """The user the container runs as after this edit (the planner's ``main_user``)."""
    if spec.user is not None:
        return spec.user
    if recreated or doc.user is not None:
        return default_user  # re-created (or its own user dropped): containers.user
    return None


def _user_change(now: str | None, then: str | None) -> str | None:
    if shown_user(now) == shown_user(then):
        return None
    return f"user: {shown_user(now)} -> {shown_user(then)}"


def _limit_changes(old: ContainerSpec, new: ContainerSpec) -> list[str]:
    before, after = old.limits.model_dump(), new.limits.model_dump()
    return [
        f"limits.{name}: {before[name]} -> {after[name]}"
        for name in after
        if before.get(name) != after[name]
    ]


def _compare_documents(
    spec: ContainerSpec, cur: Current, doc: ContainerSpec, *, default_user: str | None
) -> list[Change]:
    key = spec.internal_id
    old = doc.model_dump(mode="json")
    new = spec.model_dump(mode="json")
    old["ports"] = sorted(map(str, old["ports"]))
    new["ports"] = sorted(map(str, new["ports"]))
    changes: list[Change] = []
    if cur.user_known:
        # The user it runs as now against the one it will run as: an older document
        # keeps the image's user until an edit re-creates it as containers.user.
        recreate = _field_changes(old, new, tuple(f for f in RECREATE_FIELDS if f != "user"))
        then = _next_user(spec, doc, recreated=bool(recreate), default_user=default_user)
        moved = _user_change(cur.user, then) if then is not None or recreate else None
        if moved is not None:
            recreate.append(moved)
    else:
        recreate = _field_changes(old, new, RECREATE_FIELDS)
    if recreate:
        changes.append(Change(ChangeKind.RECREATE, key, "; ".join(recreate)))
    elif cur.exists is False:
        changes.append(Change(ChangeKind.CREATE, key, "the container does not exist yet"))
    limits = _limit_changes(doc, spec)
    if limits and not recreate:
        changes.append(Change(ChangeKind.UPDATE, key, "; ".join(limits)))
    install = _field_changes(old, new, INSTALL_FIELDS)
    if install:
        changes.append(Change(ChangeKind.REINSTALL, key, "; ".join(install)))
    other_names = tuple(
        name
        for name in new
        if name not in (*RECREATE_FIELDS, *INSTALL_FIELDS, *QUIET_FIELDS, "limits", "power")
    )
    other = _field_changes(old, new, other_names)
    if other:
        changes.append(Change(ChangeKind.UPDATE, key, "; ".join(other)))
    if spec.restart_requested_at != doc.restart_requested_at and spec.power is Power.RUNNING:
        changes.append(Change(ChangeKind.RESTART, key, "restart_requested_at changed"))
    changes.extend(_power(spec, cur, doc.power, recreated=bool(recreate)))
    return changes


def _power(
    spec: ContainerSpec, cur: Current, old_power: Power | None, *, recreated: bool
) -> list[Change]:
    key = spec.internal_id
    running = cur.running
    if spec.power is Power.RUNNING:
        if running is False or (running is None and old_power is Power.STOPPED):
            return [] if recreated else [Change(ChangeKind.START, key, "power: running")]
    elif running or (running is None and old_power is Power.RUNNING):
        return [Change(ChangeKind.STOP, key, "power: stopped")]
    return []


def _compare_actual(
    spec: ContainerSpec,
    cur: Current,
    main: ActualContainer,
    expected_hash: str,
    expected_user: str | None,
) -> list[Change]:
    key = spec.internal_id
    changes: list[Change] = []
    recreated = main.spec_hash != expected_hash
    if recreated:
        detail = "image, command, ports, mounts or environment differ"
        moved = _user_change(cur.user, expected_user)
        changes.append(Change(ChangeKind.RECREATE, key, f"{detail}; {moved}" if moved else detail))
    elif limits_differ(spec, main):
        wanted = resources_of(spec)
        changes.append(
            Change(
                ChangeKind.UPDATE,
                key,
                f"memory: {main.memory or 0} -> {wanted.memory}; "
                f"nano_cpus: {main.nano_cpus or 0} -> {wanted.nano_cpus}",
            )
        )
    changes.extend(_power(spec, cur, None, recreated=recreated))
    return changes


def diff(
    *,
    wanted: Mapping[str, ContainerSpec],
    current: Mapping[str, Current],
    invalid: set[str],
    expected_hash: Callable[[ContainerSpec], str] | None = None,
    expected_user: Callable[[ContainerSpec], str | None] | None = None,
    default_user: str | None = None,
) -> list[Change]:
    """The container changes that reach ``wanted`` from ``current``.

    ``invalid`` are internal_ids whose document in the folder is invalid: the node keeps
    their last good spec, so they are neither changed nor deleted. ``expected_hash`` and
    ``expected_user`` (engine mode) give the re-create hash and the user a document
    would have; ``default_user`` is ``containers.user`` (what a re-created container
    without a ``user`` of its own runs as).
    """
    changes: list[Change] = []
    for key in sorted(set(wanted) | set(current)):
        if key in invalid:
            continue
        spec = wanted.get(key)
        cur = current.get(key)
        has = cur is not None and (cur.document is not None or cur.exists or cur.actual)
        if spec is None:
            if has:
                changes.append(Change(ChangeKind.DELETE, key))
            continue
        if cur is None or not has:
            changes.append(Change(ChangeKind.CREATE, key))
            continue
        if cur.document is not None:
            changes.extend(_compare_documents(spec, cur, cur.document, default_user=default_user))
        elif cur.actual is not None and expected_hash is not None:
            user = expected_user(spec) if expected_user is not None else cur.user
            changes.extend(_compare_actual(spec, cur, cur.actual, expected_hash(spec), user))
        else:
            changes.append(Change(ChangeKind.RECREATE, key, "no document known for it"))
    return changes


def pool_diff(wanted: tuple[PortEntry, ...], current: list[dict[str, Any]]) -> list[Change]:
    """Ports added, removed or changed (protocol, reserved) in the pool."""
    now = {
        (str(item["ip"]), int(item["port"])): (str(item["protocol"]), bool(item.get("reserved")))
        for item in current
    }
    then = {entry.key: (entry.protocol, entry.reserved) for entry in wanted}
    changes: list[Change] = []
    for key in sorted(set(now) | set(then), key=lambda k: (k[0], k[1])):
        target = format_key(key)
        if key not in now:
            changes.append(Change(ChangeKind.ADD_PORT, target, then[key][0]))
        elif key not in then:
            changes.append(Change(ChangeKind.REMOVE_PORT, target, now[key][0]))
        elif now[key] != then[key]:
            (old_proto, old_res), (new_proto, new_res) = now[key], then[key]
            parts = []
            if old_proto != new_proto:
                parts.append(f"protocol: {old_proto} -> {new_proto}")
            if old_res != new_res:
                parts.append(f"reserved: {old_res} -> {new_res}")
            changes.append(Change(ChangeKind.UPDATE_PORT, target, "; ".join(parts)))
    return changes


def summary(changes: list[Change]) -> str:
    if not changes:
        return "No changes: the node already matches the folder."
    counts: dict[ChangeKind, int] = {}
    for change in changes:
        counts[change.kind] = counts.get(change.kind, 0) + 1
    parts = [f"{counts[kind]} to {kind.value}" for kind in ChangeKind if kind in counts]
    return "Plan: " + ", ".join(parts) + "."
