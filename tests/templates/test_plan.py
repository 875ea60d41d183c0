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
