"""GitOps against a real daemon, real files and the real engine.

Containers are created, edited and deleted by writing documents into the desired
folder only (editor saves, ``git checkout``, removing the folder), and the engine is
checked after each step. One daemon serves the whole module: each test works on
documents with its own prefix and cleans them up; the deletion-guard tests count on the
others having cleaned up.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from lightd.desired.guard import mass_delete_reason
from lightd.spec.schema import schema_documents
from lightd.store.documents import encode_document
from tests.conftest import FAST_RECONCILER
from tests.support import engine
from tests.support.daemon import REPO, DaemonProcess, wait_for
from tests.support.gitops import MIB, Docs, run_cli
from tests.support.lab import new_prefix

SECOND_IMAGE = "lightd-test/busybox:gitops"


@pytest.fixture(scope="module")
def gitops_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    env = dict(FAST_RECONCILER)
    env["LIGHTD_GITOPS__RESCAN_SECONDS"] = "1"
    proc = DaemonProcess(tmp_path_factory.mktemp("gitops-daemon"), env=env)
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def docs(gitops_daemon: DaemonProcess) -> Iterator[Docs]:
    with gitops_daemon.client() as client:
        corner = Docs(gitops_daemon, client, new_prefix())
        try:
            yield corner
        finally:
            corner.cleanup()


@pytest.fixture(scope="module")
def second_image() -> Iterator[str]:
    with engine.client() as client:
        client.images.get(engine.TEST_IMAGE).tag(SECOND_IMAGE)
    try:
        yield SECOND_IMAGE
    finally:
        with engine.client() as client:
            client.images.remove(SECOND_IMAGE)


def test_create_edit_delete_through_files(docs: Docs, second_image: str) -> None:
    port = docs.pool_port()
    document = docs.document("web", ports=[port])
    docs.write(document)
    first = docs.wait_running("web")
    assert first["Config"]["Image"] == engine.TEST_IMAGE
    assert first["HostConfig"]["Memory"] == 64 * MIB
    bindings = first["HostConfig"]["PortBindings"]
    assert bindings[f"{port['port']}/tcp"][0]["HostPort"] == str(port["port"])

    document["limits"] = {"memory": 96 * MIB, "cpu": 0.5}
    docs.write(document)
    updated = docs.wait_engine("web", lambda c: c["HostConfig"]["Memory"] == 96 * MIB, what="limit")
    assert updated["Id"] == first["Id"]  # limits change live
    assert updated["HostConfig"]["NanoCpus"] == 500_000_000

    document["image"] = second_image
    docs.write(document)
    recreated = docs.wait_engine(
        "web",
        lambda c: c["Config"]["Image"] == second_image and c["State"]["Running"],
        what="image",
    )
    assert recreated["Id"] != first["Id"]

    other = docs.pool_port()
    document["ports"] = [other]
    docs.write(document)
    rebound = docs.wait_engine(
        "web",
        lambda c: (
            f"{other['port']}/tcp" in (c["HostConfig"]["PortBindings"] or {})
            and c["State"]["Running"]
        ),
        what="new port",
    )
    assert f"{port['port']}/tcp" not in rebound["HostConfig"]["PortBindings"]

    document["power"] = "stopped"
    docs.write(document)
    docs.wait_engine("web", lambda c: not c["State"]["Running"], what="stopped")
    document["power"] = "running"
    docs.write(document)
    docs.wait_running("web")

    docs.path("web").unlink()
    docs.wait_removed("web")
    assert docs.container("web").status_code == 404


def test_editor_save_and_touch(docs: Docs) -> None:
    document = docs.document("edit")
    docs.write(document)
    first = docs.wait_running("edit")
    path = docs.path("edit")

    # An editor writes a temp file beside the document and renames it over.
    document["limits"] = {"memory": 80 * MIB}
    temp = path.with_name(f".{path.name}.swp")
    temp.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
    os.replace(temp, path)
    changed = docs.wait_engine("edit", lambda c: c["HostConfig"]["Memory"] == 80 * MIB, what="save")
    assert changed["Id"] == first["Id"]
    view = wait_for(
        lambda: (
            (v := docs.container("edit").json())["revision_applied"] == v["revision_desired"] and v
        ),
        what="revision applied",
    )
    applied = view["revision_applied"]

    # Same content (a touch, or a rewrite of the same bytes) causes no work.
    os.utime(path)
    path.write_bytes(path.read_bytes())
    time.sleep(1.5)
    after = docs.inspect("edit")
    assert after is not None
    assert after["Id"] == first["Id"]
    assert after["State"]["StartedAt"] == first["State"]["StartedAt"]
    assert docs.container("edit").json()["revision_applied"] == applied


def git(folder: Path, *args: str) -> str:
    result = subprocess.run(
        [
            "git",
            "-c",
            "user.name=lightd tests",
            "-c",
            "user.email=tests@lightd.invalid",
            "-c",
            "init.defaultBranch=main",
            *args,
        ],
        cwd=folder,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


def test_git_checkout_changes_ten_documents(docs: Docs) -> None:
    folder = docs.daemon.desired_dir
    names = [f"g{index}" for index in range(10)]
    documents = {name: docs.document(name) for name in names}
    for document in documents.values():
        docs.write(document)
    git(folder, "init", "-q")
    try:
        git(folder, "add", "containers")
        git(folder, "commit", "-q", "-m", "ten containers")
        git(folder, "branch", "small")
        for name in names:
            docs.wait_running(name)
        git(folder, "checkout", "-q", "-b", "big")
        for document in documents.values():
            document["limits"] = {"memory": 128 * MIB}
            docs.write(document)
        git(folder, "commit", "-q", "-am", "more memory")
        git(folder, "checkout", "-q", "small")
        ids = {name: docs.inspect(name)["Id"] for name in names}  # type: ignore[index]

        started = time.monotonic()
        git(folder, "checkout", "-q", "big")
        for name in names:
            docs.wait_engine(name, lambda c: c["HostConfig"]["Memory"] == 128 * MIB, what="big")
        elapsed = time.monotonic() - started
        git(folder, "checkout", "-q", "small")
        for name in names:
            found = docs.wait_engine(
                name, lambda c: c["HostConfig"]["Memory"] == 64 * MIB, what="small"
            )
            assert found["Id"] == ids[name]
        assert elapsed < 15
    finally:
        shutil.rmtree(folder / ".git", ignore_errors=True)


def test_invalid_document_affects_only_its_container(docs: Docs) -> None:
    keep = docs.document("keep")
    docs.write(keep)
    docs.wait_running("keep")

    broken = docs.path("broken")
    broken.parent.mkdir(parents=True, exist_ok=True)
    broken.write_text(f'{{\n  "internal_id": "{docs.id("broken")}",\n  "image": ,\n}}\n')
    keep_text = orjson.dumps(keep, option=orjson.OPT_INDENT_2).decode()
    docs.path("keep").write_text(keep_text.replace(str(64 * MIB), '"lots"'))
    fresh = docs.document("fresh")
    docs.write(fresh)
    docs.wait_running("fresh")

    def reported() -> list[str]:
        texts = [p["text"] for p in docs.desired()["problems"]]
        return [t for t in texts if docs.prefix in t]

    problems = wait_for(lambda: len(reported()) == 2 and reported(), what="two problems")
    assert any(
        p.startswith(f"containers/{docs.id('broken')}.json:3:") and "not valid JSON" in p
        for p in problems
    ), problems
    view = docs.container("keep").json()
    error = view["document_error"]
    assert error.startswith(f"containers/{docs.id('keep')}.json:")
    assert "limits.memory" in error
    assert view["limits"]["memory"] == 64 * MIB  # the last good spec
    assert docs.container("broken").status_code == 404
    time.sleep(1.5)
    assert docs.inspect("keep")["State"]["Running"] is True  # type: ignore[index]

    docs.write(keep)  # fixed
    wait_for(lambda: docs.container("keep").json()["document_error"] is None, what="fixed")


def test_renamed_file_is_reported_and_nothing_deleted(docs: Docs) -> None:
    docs.write(docs.document("orig"))
    first = docs.wait_running("orig")
    renamed = docs.path("copy")
    os.rename(docs.path("orig"), renamed)

    def mismatch() -> list[str]:
        return [
            p["text"]
            for p in docs.desired()["problems"]
            if p["file"] == f"containers/{docs.id('copy')}.json"
        ]

    problems = wait_for(mismatch, what="name mismatch reported")
    assert "does not match the file name" in problems[0]
    time.sleep(2.5)  # rescans and resyncs have run
    still = docs.inspect("orig")
    assert still is not None and still["Id"] == first["Id"] and still["State"]["Running"]
    assert docs.container("orig").json()["document_error"] is not None
    assert docs.inspect("copy") is None

    os.rename(renamed, docs.path("orig"))
    wait_for(lambda: not mismatch(), what="problem cleared")
    wait_for(lambda: docs.container("orig").json()["document_error"] is None, what="clean")
    assert docs.inspect("orig")["Id"] == first["Id"]  # type: ignore[index]


def test_desired_folder_removed_and_restored(docs: Docs, tmp_path: Path) -> None:
    names = ["r1", "r2", "r3"]
    documents = {name: docs.document(name) for name in names}
    for document in documents.values():
        docs.write(document)
    ids = {name: docs.wait_running(name)["Id"] for name in names}

    folder = docs.daemon.desired_dir
    backup = tmp_path / "desired-backup"
    shutil.copytree(folder, backup)
    shutil.rmtree(folder)
    blocked = wait_for(lambda: docs.desired()["deletion_blocked"], what="deletion blocked")
    assert "missing" in blocked
    system = docs.api.get("/system").json()
    assert system["desired"]["deletion_blocked"] == blocked
    assert set(system["desired"]["held"]) >= {docs.id(n) for n in names}
    time.sleep(3)  # several rescans and a resync while the folder is gone
    for name in names:
        found = docs.inspect(name)
        assert found is not None and found["Id"] == ids[name] and found["State"]["Running"]

    shutil.copytree(backup, folder)
    wait_for(lambda: docs.desired()["deletion_blocked"] is None, what="unblocked")
    wait_for(lambda: docs.desired()["watching"], what="watching again")
    documents["r1"]["limits"] = {"memory": 72 * MIB}
    docs.write(documents["r1"])  # the watcher sees the restored folder
    docs.wait_engine("r1", lambda c: c["HostConfig"]["Memory"] == 72 * MIB, what="edit")
    for name in names:
        assert docs.inspect(name)["Id"] == ids[name]  # type: ignore[index]


def test_mass_deletion_blocked_then_allowed(docs: Docs) -> None:
    names = ["m1", "m2", "m3", "m4"]
    for name in names:
        docs.write(docs.document(name))
    for name in names:
        docs.wait_running(name)
    for name in names[:3]:
        docs.path(name).unlink()

    blocked = wait_for(lambda: docs.desired()["deletion_blocked"], what="deletion blocked")
    assert "3 of 4 containers would be deleted at once" in blocked
    assert docs.daemon.new_log().count("deletion blocked") >= 1
    time.sleep(2.5)
    for name in names:
        assert docs.inspect(name) is not None

    refused = run_cli(docs.daemon, "apply")
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert "deletion blocked" in refused.stdout
    allowed = run_cli(docs.daemon, "apply", "--allow-mass-delete")
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    for name in names[:3]:
        assert f"deleted  {docs.id(name)}" in allowed.stdout
        docs.wait_removed(name)
    assert docs.inspect("m4") is not None
    assert docs.desired()["deletion_blocked"] is None


def test_restart_with_emptied_folder_deletes_nothing(fresh_daemon: DaemonProcess) -> None:
    fresh_daemon.start()
    with fresh_daemon.client() as client:
        docs = Docs(fresh_daemon, client, new_prefix())
        try:
            for name in ("e1", "e2", "e3"):
                docs.write(docs.document(name))
            ids = {name: docs.wait_running(name)["Id"] for name in ("e1", "e2", "e3")}
            fresh_daemon.stop()
            folder = fresh_daemon.desired_dir
            aside = folder.with_name("desired-aside")
            folder.rename(aside)
            fresh_daemon.start()
            docs.api = client = fresh_daemon.client()
            blocked = wait_for(lambda: docs.desired()["deletion_blocked"], what="blocked")
            assert "missing" in blocked
            time.sleep(3)  # the first resync and a periodic one have run
            for name, cid in ids.items():
                found = docs.inspect(name)
                assert found is not None and found["Id"] == cid and found["State"]["Running"]
            shutil.rmtree(folder)
            aside.rename(folder)
            wait_for(lambda: docs.desired()["deletion_blocked"] is None, what="unblocked")
            for name in ids:
                assert docs.container(name).status_code == 200
        finally:
            docs.cleanup()
            docs.api.close()


def test_single_deletion_is_not_blocked(docs: Docs) -> None:
    docs.write(docs.document("s1"))
    docs.write(docs.document("s2"))
    docs.wait_running("s1")
    docs.wait_running("s2")
    docs.path("s1").unlink()
    docs.wait_removed("s1")
    assert docs.inspect("s2") is not None


def test_status_lists_containers_and_pool(docs: Docs) -> None:
    port = docs.pool_port()
    docs.write(docs.document("st", ports=[port]))
    docs.wait_running("st")
    wait_for(lambda: docs.container("st").json()["state"] == "running", what="running")
    result = run_cli(docs.daemon, "status")
    assert result.returncode == 0, result.stderr
    line = next(row for row in result.stdout.splitlines() if row.startswith(docs.id("st")))
    assert "ready" in line and "running" in line and f"127.0.0.1:{port['port']}/tcp" in line
    assert f"127.0.0.1:{port['port']}" in result.stdout.split("POOL PORT", 1)[1]


def test_status_and_apply_without_daemon() -> None:
    result = run_cli(None, "status", "--url", "http://127.0.0.1:9")
    assert result.returncode == 1
    assert "no lightd answers" in result.stdout


# ---- validate and plan on prepared folders -----------------------------------------


def prepared(folder: Path, documents: dict[str, str], ports: str | None = None) -> Path:
    (folder / "containers").mkdir(parents=True)
    for name, text in documents.items():
        (folder / "containers" / name).write_text(text)
    if ports is not None:
        (folder / "ports.json").write_text(ports)
    return folder


VALID = """{
  "internal_id": "%s",
  "image": "lightd-test/busybox:latest",
  "volume_id": "0123abcd",
  "ports": [{"ip": "127.0.0.1", "port": 25565}]
}
"""


def test_validate_valid_folder(tmp_path: Path) -> None:
    folder = prepared(
        tmp_path / "ok",
        {"a.json": VALID % "a"},
        '{"$schema": "schema/ports.schema.json", "ports": [{"ip": "127.0.0.1", "port": 25565}]}',
    )
    result = run_cli(None, "validate", str(folder))
    assert result.returncode == 0, result.stdout
    assert "1 container document(s), 1 pool port(s), ok" in result.stdout


def test_validate_reports_file_line_column(tmp_path: Path) -> None:
    folder = prepared(
        tmp_path / "bad",
        {
            "a.json": VALID % "a",
            "b.json": '{\n  "internal_id": "b",\n  "image": "x",\n  "volume_id": 7\n}\n',
            "c.json": '{\n  "internal_id": "c",\n  "image" "x"\n}\n',
            "d.json": VALID % "not-d",
            "e.json": (VALID % "e").replace("25565", "25566"),
        },
        '{\n  "ports": [\n    {"ip": "127.0.0.1", "port": 25565},\n'
        '    {"ip": "nope", "port": 1}\n  ]\n}\n',
    )
    result = run_cli(None, "validate", str(folder))
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    root = str(folder)
    assert f"{root}/containers/b.json:4:3: volume_id: Input should be a valid string" in lines
    assert any(line.startswith(f"{root}/containers/c.json:3:11: not valid JSON") for line in lines)
    assert any(
        line.startswith(f"{root}/containers/d.json:2:3: internal_id 'not-d' does not match")
        for line in lines
    )
    assert any(
        line.startswith(f"{root}/containers/e.json:5:3: ports: 127.0.0.1:25566/tcp is not in")
        for line in lines
    )
    assert any(line.startswith(f"{root}/ports.json:4:5: ports[1]: ip:") for line in lines)
    assert lines[-1] == f"5 problem(s) in {root}"


def test_validate_missing_folder(tmp_path: Path) -> None:
    result = run_cli(None, "validate", str(tmp_path / "nothing"))
    assert result.returncode == 1
    assert "does not exist" in result.stdout


def test_plan_against_running_daemon(docs: Docs, tmp_path: Path, second_image: str) -> None:
    port = docs.pool_port()
    docs.write(docs.document("p1", ports=[port]))
    docs.write(docs.document("p2"))
    docs.wait_running("p1")
    docs.wait_running("p2")
    wait_for(lambda: docs.container("p2").json()["state"] == "running", what="observed")

    def snapshot(name: str) -> Path:
        target = tmp_path / name
        shutil.copytree(docs.daemon.desired_dir, target, ignore=shutil.ignore_patterns("schema"))
        return target

    same = snapshot("same")
    result = run_cli(docs.daemon, "plan", str(same))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No changes" in result.stdout

    changed = snapshot("changed")
    p1 = orjson.loads((changed / "containers" / f"{docs.id('p1')}.json").read_bytes())
    p1["limits"]["memory"] = 96 * MIB
    p1["power"] = "stopped"
    (changed / "containers" / f"{docs.id('p1')}.json").write_bytes(orjson.dumps(p1))
    p2 = orjson.loads((changed / "containers" / f"{docs.id('p2')}.json").read_bytes())
    p2["image"] = second_image
    (changed / "containers" / f"{docs.id('p2')}.json").write_bytes(orjson.dumps(p2))
    new = docs.document("p3")
    (changed / "containers" / f"{docs.id('p3')}.json").write_bytes(orjson.dumps(new))
    result = run_cli(docs.daemon, "plan", str(changed))
    assert result.returncode == 2, result.stdout + result.stderr
    out = result.stdout
    assert f"~ update      {docs.id('p1')}  (limits.memory: {64 * MIB} -> {96 * MIB})" in out
    assert f"< stop        {docs.id('p1')}  (power: stopped)" in out
    assert f"-/+ re-create   {docs.id('p2')}  (image: '{engine.TEST_IMAGE}'" in out
    assert f"+ create      {docs.id('p3')}" in out
    assert "Plan: 1 to create, 1 to re-create, 1 to update, 1 to stop." in out

    (changed / "containers" / f"{docs.id('p2')}.json").unlink()
    (changed / "containers" / f"{docs.id('p3')}.json").write_text("{")
    result = run_cli(docs.daemon, "plan", str(changed))
    assert result.returncode == 1, result.stdout
    assert f"- delete      {docs.id('p2')}" in result.stdout
    assert f"problem: {changed}/containers/{docs.id('p3')}.json:1:2: not valid JSON" in (
        result.stdout
    )

    # No daemon answers: the engine is read directly.
    result = run_cli(docs.daemon, "plan", str(same), "--url", "http://127.0.0.1:9")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "the Docker engine" in result.stdout
    assert "No changes" in result.stdout
    result = run_cli(docs.daemon, "plan", str(changed), "--url", "http://127.0.0.1:9")
    assert f"< stop        {docs.id('p1')}" in result.stdout
    assert f"~ update      {docs.id('p1')}  (memory: {64 * MIB} -> {96 * MIB}" in result.stdout


def test_plan_error_exit_code(tmp_path: Path) -> None:
    result = run_cli(None, "plan", str(tmp_path / "missing"), "--url", "http://127.0.0.1:9")
    assert result.returncode == 1


# ---- schemas and pure pieces -------------------------------------------------------


def test_schema_files_are_current() -> None:
    folder = REPO / "desired" / "schema"
    for name, schema in schema_documents().items():
        committed = (folder / name).read_bytes()
        assert committed == encode_document(schema), f"{name} is stale: run `lightd schema --write`"
    result = run_cli(None, "schema", "--check", str(folder))
    assert result.returncode == 0, result.stdout


def test_documents_accept_a_schema_key(tmp_path: Path) -> None:
    document = (VALID % "a").replace("{", '{\n  "$schema": "../schema/container.schema.json",', 1)
    folder = prepared(tmp_path / "with-schema", {"a.json": document})
    result = run_cli(None, "validate", str(folder))
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize(
    ("removing", "known", "share", "blocked"),
    [
        (0, 0, 0.5, False),
        (1, 1, 0.5, False),
        (1, 4, 0.0, False),
        (2, 2, 0.5, True),
        (2, 4, 0.5, False),
        (3, 4, 0.5, True),
        (3, 4, 1.0, False),
        (2, 10, 0.1, True),
    ],
    ids=["none", "one-of-one", "one-always", "all-two", "half", "three-of-four", "share-1", "low"],
)
def test_mass_delete_rule(removing: int, known: int, share: float, blocked: bool) -> None:
    assert (mass_delete_reason(removing, known, share) is not None) is blocked


def test_unknown_route_needs_auth(gitops_daemon: DaemonProcess) -> None:
    with httpx.Client(base_url=gitops_daemon.base_url) as anonymous:
        assert anonymous.post("/desired/apply", json={}).status_code == 401
        assert anonymous.get("/desired").status_code == 401


def test_hand_edited_ports_must_come_from_the_pool(docs: Docs) -> None:
    from tests.support.lab import free_port

    port = {"ip": "127.0.0.1", "port": free_port(), "protocol": "tcp"}
    docs.write(docs.document("outside", ports=[port]))
    shown = wait_for(
        lambda: (
            (c := docs.container("outside")).status_code == 200
            and c.json()["last_error"]
            and c.json()
        ),
        what="refusal reported",
    )
    assert shown["last_error"] == "Invalid port binding: port not in network pool"
    assert docs.inspect("outside") is None  # nothing published outside the pool
    answer = docs.api.post("/network/ports", json=port)
    assert answer.status_code == 200
    docs.ports.append(port["port"])
    docs.wait_running("outside")
    assert docs.container("outside").json()["last_error"] is None


def test_hand_edited_mount_outside_allowed_roots_is_refused(docs: Docs) -> None:
    docs.write(docs.document("hostetc", mount={"/etc": "/data"}))
    shown = wait_for(
        lambda: (
            (c := docs.container("hostetc")).status_code == 200
            and c.json()["last_error"]
            and c.json()
        ),
        what="refusal reported",
    )
    assert "'mount'" in shown["last_error"]
    assert "allowed" in shown["last_error"]
    time.sleep(1)
    assert docs.inspect("hostetc") is None  # the host's /etc is never mounted
