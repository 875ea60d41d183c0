"""Pure rules and small pieces of the SFTP room, table-tested without a daemon."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lightd.errors import FileExists, InvalidField, PathTraversal
from lightd.fs import handles
from lightd.fs.beneath import Root
from lightd.remote.events import Notification, activity
from lightd.remote.outbox import Outbox
from lightd.sftp.activity import ActivityBatch
from lightd.sftp.credentials import CredentialStore, UsernameTaken, hash_password, verify_password
from lightd.sftp.rules import (
    Lockouts,
    allowed,
    normalized_permissions,
    permissions_problem,
    session_refusal,
    username_problem,
)
from lightd.store import DocumentStore

# (failure times, check time, locked?)
LOCKOUT_TABLE = [
    ([0.0, 1.0], 2.0, False),
    ([0.0, 1.0, 2.0], 2.5, True),
    ([0.0, 1.0, 2.0], 61.9, True),
    ([0.0, 1.0, 2.0], 62.1, False),
    ([0.0, 30.0, 61.0], 61.5, False),  # the first failure left the 60 s window
    ([0.0, 30.0, 59.0], 59.5, True),
]


@pytest.mark.parametrize(("failures", "at", "locked"), LOCKOUT_TABLE)
def test_lockout_table(failures: list[float], at: float, locked: bool) -> None:
    book = Lockouts()
    for t in failures:
        book.fail("alice", "10.0.0.1", t)
    assert book.locked("alice", "10.0.0.1", at) is locked
    # Other pairs are never affected.
    assert not book.locked("alice", "10.0.0.2", at)
    assert not book.locked("bob", "10.0.0.1", at)


def test_lockout_counts_and_success_resets() -> None:
    book = Lockouts()
    assert [book.fail("a", "ip", t) for t in (0, 1, 2)] == [False, False, True]
    assert book.count == 1
    book2 = Lockouts()
    book2.fail("a", "ip", 0)
    book2.fail("a", "ip", 1)
    book2.succeed("a", "ip")
    assert not book2.fail("a", "ip", 2)
    book.prune(1000)
    assert len(book) == 0


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("abc", True),
        ("user.abcd1234", True),
        ("a", True),
        ("-abc", True),
        (".abc", False),
        ("", False),
        ("a b c", False),
        ("x" * 64, True),
        ("x" * 65, False),
        ("é-user", False),
    ],
)
def test_usernames(name: str, ok: bool) -> None:
    assert (username_problem(name) is None) is ok


def test_permissions() -> None:
    assert permissions_problem(["read", "write"]) is None
    assert "root" in (permissions_problem(["read", "root"]) or "")
    assert normalized_permissions(["delete", "read", "read"]) == ["read", "delete"]
    assert allowed(["read"], ["read"])
    assert not allowed(["read"], ["read", "write"])


def test_session_caps() -> None:
    assert (
        session_refusal(container_sessions=7, node_sessions=7, per_container=8, node_cap=10) is None
    )
    assert "container" in (
        session_refusal(container_sessions=8, node_sessions=8, per_container=8, node_cap=10) or ""
    )
    assert "node" in (
        session_refusal(container_sessions=0, node_sessions=10, per_container=8, node_cap=10) or ""
    )


def test_activity_bursts_merge() -> None:
    batch = ActivityBatch(quiet=1.0, max_delay=10.0)
    for t in (0.0, 0.5, 0.9):
        batch.add(container="c", action="sftp.upload", user="u", address="ip", now=t, path="/a")
    batch.add(container="c", action="sftp.upload", user="u", address="ip", now=0.2, path="/b")
    assert [(d.path, d.count) for d in batch.due(1.5)] == [("/b", 1)]  # quiet since 0.2
    assert batch.due(1.5) == []  # "/a" was written at 0.9
    assert [(d.path, d.count) for d in batch.due(1.95)] == [("/a", 3)]
    assert len(batch) == 0
    # A never-ending burst is still told after max_delay.
    for t in range(0, 12):
        batch.add(
            container="c", action="sftp.upload", user="u", address="ip", now=t * 0.9, path="/x"
        )
    due = batch.due(10.0)
    assert len(due) == 1 and due[0].count == 12
    body = due[0].body()
    assert body["event"] == "activity" and body["server"] == "c" and body["path"] == "/x"


def test_outbox_drops_activity_before_states() -> None:
    box = Outbox(max_entries=3)
    state = Notification("state", {"event": "update", "server": "c", "status": "running"})
    box.add("c", state)
    box.add("c", activity({"event": "activity", "server": "c", "activity": "sftp.login"}))
    box.add("c", state)
    box.add("c", state)
    kinds = [e.kind for e in box.entries()]
    assert kinds == ["state", "state", "state"]
    roomy, restored = Outbox(10), Outbox(10)
    roomy.add("c", activity({"event": "activity", "server": "c", "count": 2}))
    restored.restore(roomy.snapshot())
    assert restored.entries()[-1].body["count"] == 2


def test_password_hashes() -> None:
    stored = hash_password("s3cret")
    assert stored.startswith("scrypt$") and "s3cret" not in stored
    assert verify_password("s3cret", stored)
    assert not verify_password("other", stored)
    assert not verify_password("s3cret", None)
    assert not verify_password("s3cret", "garbage")


def test_credential_store(tmp_path: Path) -> None:
    store = CredentialStore(DocumentStore(tmp_path, file_mode=0o600))
    issued = store.issue("c1", username=None, password=None, public_keys=None, permissions=None)
    assert issued.credential.username == "c1" and issued.generated_password
    assert len(issued.generated_password) == 24
    with pytest.raises(UsernameTaken):
        store.issue("c2", username="c1", password="p", public_keys=None, permissions=None)
    with pytest.raises(InvalidField, match=r"public_keys\[1\]"):
        key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
        store.issue("c2", username=None, password=None, public_keys=[key, "nope"], permissions=None)
    again = CredentialStore(DocumentStore(tmp_path, file_mode=0o600))
    assert again.load() == 1
    assert again.by_username("c1") is not None
    assert (tmp_path / "sftp" / "credentials.json").stat().st_mode & 0o777 == 0o600


# -- lightd.fs.handles ---------------------------------------------------------------


def test_upload_commits_on_close_and_abort_keeps_the_old_file(tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_bytes(b"old")
    with Root(tmp_path) as root:
        upload = handles.Upload(root, ("f.txt",), keep=True, exclusive=False)
        assert upload.pread(10, 0) == b"old"
        upload.pwrite(b"NEW", 0)
        upload.abort()
        assert (tmp_path / "f.txt").read_bytes() == b"old"
        upload = handles.Upload(root, ("f.txt",), keep=False, exclusive=False)
        upload.pwrite(b"new content", 0)
        assert (tmp_path / "f.txt").read_bytes() == b"old"
        upload.commit()
        assert (tmp_path / "f.txt").read_bytes() == b"new content"
        with pytest.raises(FileExists):
            handles.Upload(root, ("f.txt",), keep=False, exclusive=True)
    assert sorted(os.listdir(tmp_path)) == ["f.txt"]


def test_upload_never_replaces_a_link_made_while_it_was_open(tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_bytes(b"old")
    (tmp_path / "elsewhere").write_bytes(b"kept")
    with Root(tmp_path) as root:
        upload = handles.Upload(root, ("f.txt",), keep=False, exclusive=False)
        upload.pwrite(b"new", 0)
        (tmp_path / "f.txt").unlink()
        (tmp_path / "f.txt").symlink_to("elsewhere")  # a container swaps in a link
        with pytest.raises(PathTraversal):
            upload.commit()
    assert os.readlink(tmp_path / "f.txt") == "elsewhere"
    assert (tmp_path / "elsewhere").read_bytes() == b"kept"
    assert sorted(os.listdir(tmp_path)) == ["elsewhere", "f.txt"]


@pytest.mark.parametrize(
    ("link", "target", "expected"),
    [
        (("a", "l"), "b", ("a", "b")),
        (("l",), "a/../b", ("b",)),
        (("l",), "..", None),
        (("a", "l"), "../../x", None),
        (("l",), "/etc", None),
        (("l",), "/home/container/x", ("x",)),
        (("a", "l"), "/home/container/x", ("x",)),
        (("a", "l"), "/home/container", ()),
        (("l",), "/home/containerx", None),
    ],
)
def test_link_targets(
    tmp_path: Path, link: tuple[str, ...], target: str, expected: tuple[str, ...] | None
) -> None:
    """A link's target as a container sees it: relative, or absolute below its mount."""
    folder = tmp_path.joinpath(*link[:-1])
    folder.mkdir(parents=True, exist_ok=True)
    os.symlink(target, folder / link[-1])
    with Root(tmp_path) as root:
        if expected is None:
            with pytest.raises(PathTraversal):
                handles.resolve(root, link, mount="/home/container")
        else:
            assert handles.resolve(root, link, mount="/home/container") == expected


def test_resolve_follows_only_inside(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    os.symlink("dir", tmp_path / "in")
    os.symlink("/etc", tmp_path / "out")
    os.symlink("loop", tmp_path / "loop")
    with Root(tmp_path) as root:
        assert handles.resolve(root, ("in", "x")) == ("dir", "x")
        assert handles.resolve(root, ("in",), follow_last=False) == ("in",)
        with pytest.raises(PathTraversal):
            handles.resolve(root, ("out", "passwd"))
        with pytest.raises(PathTraversal):
            handles.resolve(root, ("loop",))


def test_recent_logins() -> None:
    from lightd.sftp.credentials import RecentLogins

    recent = RecentLogins(ttl=10, size=2)
    recent.remember("u", "pw", "hash1", 0)
    assert recent.known("u", "pw", "hash1", 5)
    assert not recent.known("u", "pw", "hash2", 5)  # a new credential never matches
    assert not recent.known("u", "other", "hash1", 5)
    assert not recent.known("u", "pw", "hash1", 11)  # expired
    for i in range(5):
        recent.remember(f"u{i}", "pw", "h", 20)
    assert len(recent._seen) <= 2
