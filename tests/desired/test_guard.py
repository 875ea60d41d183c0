"""The deletion guard as a table: pending deletions in, what is applied or held (and why) out."""

from __future__ import annotations

import pytest

from lightd.desired.guard import Deletions, decide_deletions, deletion_held, mass_delete_reason

FOUR = {"a", "b", "c", "d"}
TEN = {f"c{n}" for n in range(10)}
MISSING = "the desired folder /srv/desired is missing"


def held(ids: set[str], reason: str) -> Deletions:
    return Deletions(apply=frozenset(), hold=frozenset(ids), blocked_reason=reason)


def applied(ids: set[str]) -> Deletions:
    return Deletions(apply=frozenset(ids), hold=frozenset(), blocked_reason=None)


NOTHING = Deletions(apply=frozenset(), hold=frozenset(), blocked_reason=None)


@pytest.mark.parametrize(
    ("gone", "known", "orphans", "folder_problem", "share", "allow", "expected"),
    [
        pytest.param(
            set(), FOUR, set(), None, 0.5, False, NOTHING, id="nothing-gone-nothing-to-do"
        ),
        pytest.param(
            set(),
            FOUR,
            set(),
            MISSING,
            0.5,
            False,
            NOTHING,
            id="missing-folder-alone-holds-nothing",
        ),
        pytest.param(
            {"a"}, FOUR, set(), None, 0.5, False, applied({"a"}), id="one-gone-is-deleted"
        ),
        pytest.param(
            {"a"}, {"a"}, set(), None, 0.5, False, applied({"a"}), id="the-last-one-may-go"
        ),
        pytest.param(
            {"a"}, FOUR, set(), None, 0.0, False, applied({"a"}), id="one-is-deleted-at-share-zero"
        ),
        pytest.param(
            {"a", "b"}, FOUR, set(), None, 0.5, False, applied({"a", "b"}), id="half-is-allowed"
        ),
        pytest.param(
            {"a", "b", "c"},
            FOUR,
            set(),
            None,
            0.5,
            False,
            held(
                {"a", "b", "c"},
                "3 of 4 containers would be deleted at once "
                "(more than gitops.max_delete_share = 0.5)",
            ),
            id="more-than-the-share-is-held",
        ),
        pytest.param(
            {"a", "b", "c"},
            FOUR,
            set(),
            None,
            0.5,
            True,
            applied({"a", "b", "c"}),
            id="an-apply-may-allow-a-mass-deletion",
        ),
        pytest.param(
            {"a", "b", "c"},
            FOUR,
            set(),
            None,
            1.0,
            False,
            applied({"a", "b", "c"}),
            id="share-one-allows-all",
        ),
        pytest.param(
            {"c0", "c1"},
            TEN,
            set(),
            None,
            0.1,
            False,
            held(
                {"c0", "c1"},
                "2 of 10 containers would be deleted at once "
                "(more than gitops.max_delete_share = 0.1)",
            ),
            id="two-of-ten-exceed-a-tenth",
        ),
        pytest.param(
            {"a"},
            FOUR,
            set(),
            MISSING,
            0.5,
            False,
            held({"a"}, MISSING),
            id="a-missing-folder-holds-even-one",
        ),
        pytest.param(
            FOUR,
            FOUR,
            set(),
            MISSING,
            1.0,
            True,
            held(FOUR, MISSING),
            id="a-missing-folder-holds-even-when-mass-deletion-is-allowed",
        ),
        pytest.param(
            set(),
            {"a"},
            {"x"},
            None,
            0.5,
            False,
            applied({"x"}),
            id="one-orphan-from-the-start-is-deleted",
        ),
        pytest.param(
            set(),
            set(),
            {"x", "y"},
            None,
            0.5,
            False,
            held(
                {"x", "y"},
                "2 of 2 containers would be deleted at once "
                "(more than gitops.max_delete_share = 0.5)",
            ),
            id="orphans-count-as-known-and-as-pending",
        ),
        pytest.param(
            {"a"},
            {"a", "b"},
            {"x"},
            None,
            0.5,
            False,
            held(
                {"a", "x"},
                "2 of 3 containers would be deleted at once "
                "(more than gitops.max_delete_share = 0.5)",
            ),
            id="gone-documents-and-orphans-share-one-budget",
        ),
        pytest.param(
            set(),
            set(),
            {"x"},
            MISSING,
            0.5,
            False,
            held({"x"}, MISSING),
            id="a-missing-folder-holds-orphans",
        ),
    ],
)
def test_decide_deletions(
    gone: set[str],
    known: set[str],
    orphans: set[str],
    folder_problem: str | None,
    share: float,
    allow: bool,
    expected: Deletions,
) -> None:
    assert (
        decide_deletions(
            gone,
            known=known,
            orphans=orphans,
            folder_problem=folder_problem,
            max_share=share,
            allow_mass_delete=allow,
        )
        == expected
    )


@pytest.mark.parametrize(
    ("internal_id", "held_ids", "invalid", "claimed", "expected"),
    [
        pytest.param("a", set(), set(), set(), False, id="a-plain-deletion-is-not-held"),
        pytest.param("a", {"a"}, set(), set(), True, id="the-guard-holds-it"),
        pytest.param("a", set(), {"a"}, set(), True, id="its-document-exists-but-is-invalid"),
        pytest.param("a", set(), set(), {"a"}, True, id="a-misnamed-document-claims-it"),
        pytest.param("a", {"b"}, {"c"}, {"d"}, False, id="others-being-held-does-not-hold-it"),
    ],
)
def test_deletion_held(
    internal_id: str, held_ids: set[str], invalid: set[str], claimed: set[str], expected: bool
) -> None:
    assert deletion_held(internal_id, held=held_ids, invalid=invalid, claimed=claimed) is expected


def test_the_reason_names_the_setting() -> None:
    assert mass_delete_reason(3, 4, 0.25) == (
        "3 of 4 containers would be deleted at once (more than gitops.max_delete_share = 0.25)"
    )
