"""``lightd plan`` compares effective specs: a template edit lists every container using it."""

from __future__ import annotations

from lightd.cli.commands import resolved
from lightd.cli.plan import ChangeKind, Current, diff
from lightd.config import Settings
from lightd.spec.container import ContainerSpec
from lightd.templates.eggs import parse_egg_bytes, template_from_body
from tests.templates.conftest import EGGS

SETTINGS = Settings()


def document(internal_id: str, **changes: object) -> ContainerSpec:
    base: dict[str, object] = {
        "internal_id": internal_id,
        "volume_id": "0123456789abcdef",
        "template": "paper",
        "ports": [{"ip": "127.0.0.1", "port": 25565}],
    }
    base.update(changes)
    return ContainerSpec.model_validate(base)


def test_a_template_edit_lists_its_containers() -> None:
    old = template_from_body(parse_egg_bytes((EGGS / "egg-paper.json").read_bytes()))
    new = old.model_copy(update={"startup": old.startup.replace("echo ", "echo new ", 1)})
    docs = {
        "a": document("a"),
        "b": document("b", variables={"MOTD": "x"}),
        "plain": ContainerSpec.model_validate(
            {"internal_id": "plain", "image": "busybox", "volume_id": "0123456789abcdef"}
        ),
    }
    before = resolved(docs, {"paper": old}, SETTINGS)
    current = {
        key: Current(internal_id=key, document=spec, exists=True, running=True)
        for key, spec in before.items()
    }
    changes = diff(wanted=resolved(docs, {"paper": new}, SETTINGS), current=current, invalid=set())
    assert [(c.kind, c.target) for c in changes] == [
        (ChangeKind.RECREATE, "a"),
        (ChangeKind.RECREATE, "b"),
    ]
    assert all("startup_command" in c.detail and "environment" in c.detail for c in changes)


def test_plan_shows_a_user_edit() -> None:
    spec = ContainerSpec.model_validate(
        {"internal_id": "a", "image": "busybox", "volume_id": "0123456789abcdef"}
    )
    current = {"a": Current(internal_id="a", document=spec, exists=True, running=True)}
    edited = spec.model_copy(update={"user": "1000:1000"})
    (change,) = diff(wanted={"a": edited}, current=current, invalid=set())
    assert change.kind is ChangeKind.RECREATE
    assert "user: None -> '1000:1000'" in change.detail


def test_plan_says_when_an_edit_moves_a_container_to_another_user() -> None:
    """Older containers run as the image's user (root) until an edit re-creates them."""
    doc = ContainerSpec.model_validate(
        {"internal_id": "a", "image": "busybox", "volume_id": "0123456789abcdef"}
    )
    edited = doc.model_copy(update={"startup_command": "echo new"})

    def changes(current_user: str | None, wanted: ContainerSpec) -> list[str]:
        cur = Current(
            internal_id="a", document=doc, exists=True, running=True,
            user=current_user, user_known=True,
        )  # fmt: skip
        found = diff(wanted={"a": wanted}, current={"a": cur}, invalid=set(),
                     default_user="988:988")  # fmt: skip
        return [f"{c.kind.value}: {c.detail}" for c in found]

    # An older (root) container: the edit re-creates it as containers.user.
    assert changes(None, edited) == [
        "re-create: startup_command: '' -> 'echo new'; user: 0:0 -> 988:988"
    ]
    # Unedited, it keeps its user: nothing to do.
    assert changes(None, doc) == []
    # A container that already runs as containers.user: no user line.
    assert changes("988:988", edited) == ["re-create: startup_command: '' -> 'echo new'"]
    # A document's own user: that one, even without another change.
    assert changes("988:988", doc.model_copy(update={"user": "1000:1000"})) == [
        "re-create: user: 988:988 -> 1000:1000"
    ]
