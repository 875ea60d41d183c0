"""NodeWatch refreshes the ports of the container whose document changed, not the pool.

Pure logic (no daemon): the views are dictionaries the test edits; what is counted is
which port views the watch asks for, and what it sends.
"""

from __future__ import annotations

from typing import Any

from lightd.runtime.watch import NodeWatch


def test_a_document_change_refreshes_its_own_ports_only() -> None:
    pool = {f"127.0.0.1:{port}": None for port in range(20000, 20300)}  # key -> container
    bound_by: dict[str, set[str]] = {}
    asked: list[str] = []

    def view(key: str) -> dict[str, Any] | None:
        asked.append(key)
        return {"id": key, "container": pool[key]} if key in pool else None

    def views() -> dict[str, dict[str, Any]]:
        return {key: {"id": key, "container": owner} for key, owner in pool.items()}

    watch = NodeWatch(
        container_view=lambda _key: None,
        container_views=dict,
        port_views=views,
        port_view=view,
        port_keys_of=lambda internal_id: set(bound_by.get(internal_id, set())),
    )
    watch.prime()
    sent: list[dict[str, Any]] = []
    watch.subscribe(sent.append)

    first, second = "127.0.0.1:20001", "127.0.0.1:20002"
    pool[first] = "mc-1"
    bound_by["mc-1"] = {first}
    watch.refresh_ports_soon("mc-1")  # off a loop: at once
    assert asked == [first]
    assert [(e["id"], e["object"]["container"]) for e in sent] == [(first, "mc-1")]

    asked.clear()
    pool[first], pool[second] = None, "mc-1"  # the document moved to another port
    bound_by["mc-1"] = {second}
    watch.refresh_ports_soon("mc-1")
    assert sorted(asked) == [first, second]  # the port it held and the one it holds
    assert [(e["id"], e["object"]["container"]) for e in sent[1:]] == [
        (first, None),
        (second, "mc-1"),
    ]

    asked.clear()
    pool[second] = None
    bound_by.pop("mc-1")
    watch.refresh_ports_soon("mc-1")  # deleted: its last port is free again
    assert asked == [second]
    assert sent[-1]["id"] == second and sent[-1]["object"]["container"] is None

    sent.clear()
    watch.refresh_ports_soon()  # the pool itself changed: every entry, nothing new
    assert sent == []
