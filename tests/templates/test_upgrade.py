"""Upgrading lightd re-creates nothing: a root container of the previous release is adopted.

The previous release (the commit before templates, users and capability drops) runs
from its own source tree on a data folder and creates a running container the way it
did: no ``user`` in its document, a spec hash without a user, running as the image's
user (root). This version then starts on the same folders and adopts it: same
container id, same ``StartedAt``, still root. ``lightd plan`` of an edited folder says
the edit moves it to ``containers.user`` (``user: 0:0 -> 988:988``), and once the
document is edited it is re-created as 988:988.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

import tests.support.daemon as daemon_module
from tests.conftest import FAST_RECONCILER
from tests.support import engine
from tests.support.daemon import REPO, DaemonProcess, wait_for
from tests.support.gitops import run_cli
from tests.support.lab import Lab, new_prefix

# The last commit of main before issue 18 (templates, users) was merged.
PREVIOUS_RELEASE = "c1ec068"
NEWER_SETTINGS = {"LIGHTD_VOLUMES__DISK_BACKEND"}


@pytest.fixture
def previous_source(tmp_path: Path) -> Path:
    """The previous release's ``lightd`` package, exported from git into a folder."""
    try:
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", "--format=tar", PREVIOUS_RELEASE, "lightd"],
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"the previous release is not in this clone: {exc}")
    target = tmp_path / "previous"
    target.mkdir()
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")
    return target


@pytest.fixture
def node(tmp_path: Path) -> Iterator[DaemonProcess]:
    proc = DaemonProcess(tmp_path / "node", env=dict(FAST_RECONCILER))
    try:
        yield proc
    finally:
        proc.stop(kill=True)


def started_as(previous: Path, proc: DaemonProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    """Start ``proc`` from the previous release's source (``python -m lightd`` in it),
    without the settings it did not know yet."""
    with monkeypatch.context() as patch:
        patch.setattr(daemon_module, "REPO", previous)
        patch.setattr(proc, "extra_env", {
            k: v for k, v in proc.extra_env.items() if k not in NEWER_SETTINGS
        })  # fmt: skip
        proc.start()


def inspect(internal_id: str) -> dict[str, Any]:
    found = engine.inspect(f"lightd-{internal_id}")
    assert found is not None, f"no container for {internal_id}"
    return found


def test_a_previous_release_container_is_adopted_then_moved_on_edit(
    previous_source: Path, node: DaemonProcess, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    started_as(previous_source, node, monkeypatch)
    prefix = new_prefix()
    with node.client() as api:
        lab = Lab(node, api, prefix)
        internal_id = lab.create("old", startup_command="exec sleep 1000")
        lab.wait_state(internal_id, "running")
    before = inspect(internal_id)
    assert before["Config"]["User"] == ""  # the image's user: root
    document = node.desired_dir / "containers" / f"{internal_id}.json"
    assert "user" not in orjson.loads(document.read_bytes())
    node.stop()  # containers keep running while lightd is away

    node.start()  # this version, same folders
    try:
        with node.client() as api:
            lab = Lab(node, api, prefix)
            wait_for(
                lambda: (
                    api.get("/system").status_code == 200
                    and lab.get(internal_id)["state"] == "running"
                ),
                timeout=30,
                what="the adopted container reported running",
            )
            time.sleep(3)  # a resync or two (2 s): nothing is re-created meanwhile
            after = inspect(internal_id)
            assert after["Id"] == before["Id"]
            assert after["State"]["StartedAt"] == before["State"]["StartedAt"]
            assert after["Config"]["User"] == ""

            # The plan of an edit says it moves the container to containers.user.
            edited = tmp_path / "edited"
            shutil.copytree(node.desired_dir, edited, ignore=shutil.ignore_patterns("schema"))
            body = orjson.loads((edited / "containers" / f"{internal_id}.json").read_bytes())
            body["startup_command"] = "echo edited; exec sleep 1000"
            (edited / "containers" / f"{internal_id}.json").write_bytes(orjson.dumps(body))
            planned = run_cli(node, "plan", str(edited))
            assert planned.returncode == 2, planned.stdout + planned.stderr
            line = next(x for x in planned.stdout.splitlines() if internal_id in x)
            assert "re-create" in line and "user: 0:0 -> 988:988" in line, planned.stdout
            unchanged = run_cli(node, "plan", str(node.desired_dir))
            assert "No changes" in unchanged.stdout, unchanged.stdout

            # The edit itself: re-created once, as containers.user.
            document.write_bytes(orjson.dumps(body))
            wait_for(
                lambda: (
                    (found := engine.inspect(f"lightd-{internal_id}")) is not None
                    and found["Id"] != before["Id"]
                    and found["State"]["Running"]
                ),
                timeout=60,
                what="the edited container re-created and running",
            )
            moved = inspect(internal_id)
            assert moved["Config"]["User"] == "988:988"
            api.delete(f"/containers/{internal_id}")
            lab.wait_gone(internal_id)
    finally:
        engine.remove_prefixed(prefix)
