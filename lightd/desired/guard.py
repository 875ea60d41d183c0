"""The deletion guard: which container deletions one scan of the desired folder may apply.

A container is deleted when its document is gone. Deletions are applied only when the
folder could be listed, and only when they are one, or at most ``max_share`` of the known
containers, or when an apply explicitly allows a mass deletion; otherwise every pending
deletion is held and the reason reported. Containers that lightd had at start (observed
state) without a document are pending deletions under the same rule. While a deletion is
held, or while a container's document exists but is invalid (or a misnamed file claims
it), the reconciler must not delete the container.

This module decides only: it must stay pure (no files, no clock, no asyncio, no engine).
"""

from __future__ import annotations

from collections.abc import Set
from dataclasses import dataclass


@dataclass(frozen=True)
class Deletions:
    """What to do with the pending deletions of one scan.

    ``apply`` are deleted now; ``hold`` are kept (their containers stay as they are) and
    ``blocked_reason`` says why. Exactly one of the two sets is non-empty, or both are
    empty when nothing is pending.
    """

    apply: frozenset[str]
    hold: frozenset[str]
    blocked_reason: str | None


def mass_delete_reason(removing: int, known: int, max_share: float) -> str | None:
    """Why deleting ``removing`` of ``known`` containers at once is refused, or None."""
    if removing <= 1 or removing <= max_share * known:
        return None
    return (
        f"{removing} of {known} containers would be deleted at once "
        f"(more than gitops.max_delete_share = {max_share:g})"
    )


def decide_deletions(
    scan: Set[str],
    *,
    known: Set[str],
    orphans: Set[str],
    folder_problem: str | None,
    max_share: float,
    allow_mass_delete: bool,
) -> Deletions:
    """Decide the deletions of one scan.

    ``scan`` are the containers whose document the scan found gone, ``known`` those with
    a (last good) spec, ``orphans`` those lightd had at start without a document.
    ``folder_problem`` says why the folder could not be listed, if it could not.
    """
    pending = frozenset(scan) | frozenset(orphans)
    if not pending:
        return Deletions(apply=frozenset(), hold=frozenset(), blocked_reason=None)
    blocked: str | None = folder_problem
    if blocked is None and not allow_mass_delete:
        blocked = mass_delete_reason(len(pending), len(set(known) | set(orphans)), max_share)
    if blocked is not None:
        return Deletions(apply=frozenset(), hold=pending, blocked_reason=blocked)
    return Deletions(apply=pending, hold=frozenset(), blocked_reason=None)


def deletion_held(
    internal_id: str, *, held: Set[str], invalid: Set[str], claimed: Set[str]
) -> bool:
    """True when a container without a spec must not be deleted by the reconciler.

    Either the guard holds its deletion (``held``), or a document for it exists but is
    invalid (``invalid``: no last good spec yet, e.g. right after a restart), or a
    misnamed document names it (``claimed``): nothing is deleted because of a broken file.
    """
    return internal_id in held or internal_id in invalid or internal_id in claimed
