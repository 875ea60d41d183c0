"""Pulls from a loopback HTTP server the test runs, in process and through the daemon.

In process, :class:`~lightd.transfer.pull.Pulls` runs on a real volume folder with a
resolver seam (names of the test's own choosing, no /etc/hosts), so a name that
resolves to loopback and a resolver that would answer differently the second time
(DNS rebinding) can be tried. Through the shared daemon (which allows only
``127.0.0.1/32``), the route's answers, a private address, a redirect to another
loopback address, the per-volume count and cancelling. Only loopback is ever contacted.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from lightd.errors import PullRefused
from lightd.fs import ArchiveLimits, VolumeManager
from lightd.fs.files import VolumeFiles
from lightd.store import DocumentStore
from lightd.transfer.guard import parse_networks
from lightd.transfer.pull import Pull, Pulls
from tests.support.webserver import LoopbackServer
from tests.volumes.conftest import Vol

T = TypeVar("T")


@pytest.fixture
def web() -> Iterator[LoopbackServer]:
    with LoopbackServer() as server:
        server.put("target", b"the pulled file\n")
        yield server


# -- in process ------------------------------------------------------------------------


class Rig:
    def __init__(self, root: Path, *, allow: list[str], max_bytes: int = 10**9) -> None:
        self.manager = VolumeManager(
            root / "volumes",
            meta=DocumentStore(root),
            limits=ArchiveLimits(max_total_bytes=10**9, max_entries=1000, max_ratio=200),
        )
        self.files = VolumeFiles(self.manager)
        self.names: dict[str, list[list[str]]] = {}
        self.asked: list[str] = []
        self.pulls = Pulls(
            self.files,
            allow_networks=lambda: parse_networks(allow),
            max_bytes=lambda: max_bytes,
            resolver=self.resolve,
        )
        self.volume = self.manager.create()

    async def resolve(self, host: str, port: int) -> list[str]:
        """Answers queued per name: each lookup takes the next (the last one repeats)."""
        self.asked.append(host)
        answers = self.names.get(host)
        if not answers:
            raise PullRefused(f"{host} does not resolve")
        return answers.pop(0) if len(answers) > 1 else answers[0]

    async def finished(self, pull: Pull) -> Pull:
        assert pull.task is not None
        await pull.task
        return pull

    def close(self) -> None:
        self.manager.close()


def run_rig(
    tmp_path: Path, allow: list[str], test: Callable[[Rig], Coroutine[Any, Any, T]], **kw: int
) -> T:
    rig = Rig(tmp_path, allow=allow, **kw)
    try:
        return asyncio.run(test(rig))
    finally:
        rig.close()


def leftovers(rig: Rig) -> list[str]:
    return sorted(os.listdir(rig.volume.path))


def test_a_name_is_resolved_once_and_pinned(tmp_path: Path, web: LoopbackServer) -> None:
    """The second answer (a rebinding to 10.0.0.1) is never asked for: one lookup per hop."""

    async def test(rig: Rig) -> Pull:
        rig.names["files.test"] = [["127.0.0.1"], ["10.0.0.1"]]
        pull = await rig.pulls.start(
            rig.volume.id,
            f"http://files.test:{web.port}/files/target",
            ("got.txt",),
            use_header=False,
            overwrite=False,
        )
        return await rig.finished(pull)

    pull = run_rig(tmp_path, ["127.0.0.1/32"], test)
    assert pull.state == "completed", pull.error
    assert (tmp_path / "volumes" / pull.volume_id / "got.txt").read_bytes() == b"the pulled file\n"
    assert web.hosts == [f"files.test:{web.port}"]  # the original Host header went out


def test_a_name_resolving_to_loopback_is_refused(tmp_path: Path, web: LoopbackServer) -> None:
    async def test(rig: Rig) -> str:
        rig.names["innocent.test"] = [["127.0.0.1", "::1"]]
        with pytest.raises(PullRefused) as caught:
            await rig.pulls.start(
                rig.volume.id,
                f"http://innocent.test:{web.port}/files/target",
                ("x",),
                use_header=False,
                overwrite=False,
            )
        assert rig.pulls.list(rig.volume.id) == []
        return caught.value.message

    message = run_rig(tmp_path, [], test)
    assert "innocent.test resolves only to refused addresses" in message
    assert "loopback" in message
    assert web.hits == {}  # never contacted


def test_a_redirect_to_a_name_resolving_to_loopback_fails(
    tmp_path: Path, web: LoopbackServer
) -> None:
    async def test(rig: Rig) -> Pull:
        rig.names["public.test"] = [["127.0.0.1"]]
        rig.names["inside.test"] = [["127.0.0.9"]]
        pull = await rig.pulls.start(
            rig.volume.id,
            web.url(f"/to?url=http://inside.test:{web.port}/files/target"),
            ("x",),
            use_header=False,
            overwrite=False,
        )
        return await rig.finished(pull)

    pull = run_rig(tmp_path, ["127.0.0.1/32"], test)
    assert pull.state == "failed"
    assert pull.error is not None and "127.0.0.9 is a loopback address" in pull.error
    assert web.hits["/files/target"] == 0


def test_ten_redirects_pass_eleven_fail(tmp_path: Path, web: LoopbackServer) -> None:
    async def test(rig: Rig) -> tuple[Pull, Pull]:
        ten = await rig.pulls.start(
            rig.volume.id, web.url("/redirect/9"), ("ten",), use_header=False, overwrite=False
        )
        eleven = await rig.pulls.start(
            rig.volume.id, web.url("/redirect/10"), ("eleven",), use_header=False, overwrite=False
        )
        return await rig.finished(ten), await rig.finished(eleven)

    ten, eleven = run_rig(tmp_path, ["127.0.0.1/32"], test)
    assert ten.state == "completed", ten.error
    assert eleven.state == "failed"
    assert eleven.error == "Pull refused: more than 10 redirects"
    assert not (tmp_path / "volumes" / eleven.volume_id / "eleven").exists()


@pytest.mark.parametrize(
    ("path", "declared"),
    [
        pytest.param("/files/big", True, id="a declared length over the limit"),
        pytest.param("/chunked/5000", False, id="a chunked body that grows over the limit"),
    ],
)
def test_a_body_over_the_limit_leaves_nothing(
    tmp_path: Path, web: LoopbackServer, path: str, declared: bool
) -> None:
    web.put("big", b"b" * 5000)

    async def test(rig: Rig) -> tuple[Pull, list[str]]:
        pull = await rig.pulls.start(
            rig.volume.id, web.url(path), ("big.bin",), use_header=False, overwrite=False
        )
        await rig.finished(pull)
        return pull, leftovers(rig)

    pull, left = run_rig(tmp_path, ["127.0.0.1/32"], test, max_bytes=4096)
    assert pull.state == "failed"
    assert pull.error == "body larger than volumes.max_upload_bytes (4096 bytes)"
    assert left == []  # no file, no temporary entry
    assert (pull.bytes_total is not None) is declared


def test_a_failing_answer_is_reported(tmp_path: Path, web: LoopbackServer) -> None:
    async def test(rig: Rig) -> Pull:
        pull = await rig.pulls.start(
            rig.volume.id, web.url("/status/503"), ("x",), use_header=False, overwrite=False
        )
        return await rig.finished(pull)

    pull = run_rig(tmp_path, ["127.0.0.1/32"], test)
    assert pull.state == "failed"
    assert pull.error is not None and pull.error.endswith("answered 503")


def test_a_connection_refused_is_reported(tmp_path: Path) -> None:
    with LoopbackServer() as closed:
        port = closed.port  # a loopback port nobody listens on once stopped

    async def test(rig: Rig) -> Pull:
        pull = await rig.pulls.start(
            rig.volume.id,
            f"http://127.0.0.1:{port}/x",
            ("x",),
            use_header=False,
            overwrite=False,
        )
        return await rig.finished(pull)

    pull = run_rig(tmp_path, ["127.0.0.1/32"], test)
    assert pull.state == "failed"
    assert pull.error is not None and pull.error.startswith("HTTP error: ConnectError")


# -- through the daemon ----------------------------------------------------------------


def wait_pull(api: httpx.Client, vol: Vol, pull_id: str, timeout: float = 15) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        pulls = api.get(f"{vol.url}/pull").json()["pulls"]
        mine = [p for p in pulls if p["pull_id"] == pull_id]
        assert mine, pulls
        found: dict[str, object] = mine[0]
        if found["state"] != "running" or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def test_pull_into_a_volume(api: httpx.Client, volume: Vol, web: LoopbackServer) -> None:
    started = api.post(
        f"{volume.url}/pull", json={"url": web.url("/files/target"), "path": "mods/a.txt"}
    )
    assert started.status_code == 202, started.text
    assert set(started.json()) == {"pull_id"}
    done = wait_pull(api, volume, started.json()["pull_id"])
    assert done["state"] == "completed", done
    assert done["bytes_done"] == done["bytes_total"] == len(b"the pulled file\n")
    assert done["path"] == "mods/a.txt"
    assert done["error"] is None
    assert (volume.path / "mods" / "a.txt").read_bytes() == b"the pulled file\n"
    again = api.post(
        f"{volume.url}/pull", json={"url": web.url("/files/target"), "path": "mods/a.txt"}
    )
    assert again.status_code == 409
    assert again.json() == {"error": "File already exists: mods/a.txt"}
    web.put("target", b"second version")
    over = api.post(
        f"{volume.url}/pull",
        json={"url": web.url("/files/target"), "path": "mods/a.txt", "overwrite": True},
    )
    assert over.status_code == 202
    assert wait_pull(api, volume, over.json()["pull_id"])["state"] == "completed"
    assert (volume.path / "mods" / "a.txt").read_bytes() == b"second version"


def test_pull_names_the_file_from_the_header(
    api: httpx.Client, volume: Vol, web: LoopbackServer
) -> None:
    started = api.post(
        f"{volume.url}/pull",
        json={"url": web.url("/named?name=../../escape.sh"), "path": "in", "use_header": True},
    )
    assert started.status_code == 202, started.text
    done = wait_pull(api, volume, started.json()["pull_id"])
    assert done["state"] == "completed", done
    assert done["path"] == "in/escape.sh"
    assert (volume.path / "in" / "escape.sh").read_bytes() == b"the pulled file\n"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        pytest.param("http://10.0.0.1/x", "10.0.0.1 is a private address", id="a private address"),
        pytest.param("http://[::1]:9/x", "::1 is a loopback address", id="loopback not allowed"),
        pytest.param("http://169.254.169.254/", "link-local", id="the metadata address"),
        pytest.param("ftp://127.0.0.1/x", "only http and https", id="another scheme"),
    ],
)
def test_pull_refusals_are_400(api: httpx.Client, volume: Vol, url: str, reason: str) -> None:
    answer = api.post(f"{volume.url}/pull", json={"url": url, "path": "x"})
    assert answer.status_code == 400
    assert answer.json()["error"].startswith("Pull refused: ")
    assert reason in answer.json()["error"]
    assert api.get(f"{volume.url}/pull").json() == {"pulls": []}


def test_pull_redirect_to_loopback_fails(
    api: httpx.Client, volume: Vol, web: LoopbackServer
) -> None:
    """127.0.0.1 is allowed on the shared daemon, 127.0.0.2 (loopback too) is not."""
    target = f"http://127.0.0.2:{web.port}/files/target"
    started = api.post(
        f"{volume.url}/pull", json={"url": web.url(f"/to?url={target}"), "path": "x"}
    )
    assert started.status_code == 202
    done = wait_pull(api, volume, started.json()["pull_id"])
    assert done["state"] == "failed"
    assert done["error"] == "Pull refused: 127.0.0.2 is a loopback address"
    assert not (volume.path / "x").exists()


def test_three_pulls_per_volume_and_cancel(
    api: httpx.Client, volume: Vol, web: LoopbackServer
) -> None:
    ids = []
    for index in range(3):
        answer = api.post(
            f"{volume.url}/pull", json={"url": web.url("/slow"), "path": f"slow-{index}"}
        )
        assert answer.status_code == 202, answer.text
        ids.append(answer.json()["pull_id"])
    fourth = api.post(f"{volume.url}/pull", json={"url": web.url("/slow"), "path": "slow-3"})
    assert fourth.status_code == 429
    assert fourth.json() == {"error": "Too many pulls for this volume (at most 3 at once)"}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        running = api.get(f"{volume.url}/pull").json()["pulls"]
        if all(p["bytes_done"] > 0 for p in running):
            break
        time.sleep(0.1)
    assert all(p["bytes_total"] == 10**9 and p["state"] == "running" for p in running)
    for pull_id in ids:
        gone = api.delete(f"{volume.url}/pull/{pull_id}")
        assert gone.status_code == 200
        assert gone.json() == {"message": "Pull cancelled"}
    states = {p["pull_id"]: p["state"] for p in api.get(f"{volume.url}/pull").json()["pulls"]}
    assert states == dict.fromkeys(ids, "cancelled")
    assert sorted(os.listdir(volume.path)) == []  # temporary entries removed
    forgotten = api.delete(f"{volume.url}/pull/{ids[0]}")
    assert forgotten.json() == {"message": "Pull removed"}
    assert api.delete(f"{volume.url}/pull/{ids[0]}").status_code == 404
    assert api.post(f"{volume.url}/pull", json={"url": web.url("/files/target"), "path": "ok"})


def test_pull_bad_bodies(api: httpx.Client, volume: Vol, web: LoopbackServer) -> None:
    no_path = api.post(f"{volume.url}/pull", json={"url": web.url("/files/target")})
    assert no_path.status_code == 400
    assert "path" in no_path.json()["error"]
    traversal = api.post(f"{volume.url}/pull", json={"url": web.url("/x"), "path": "../x"})
    assert traversal.json() == {"error": "Invalid path: path traversal detected"}
    unknown = api.post(f"{volume.url}/pull", json={"url": web.url("/x"), "path": "x", "y": 1})
    assert unknown.status_code == 400
    missing = api.post("/volumes/00000000/pull", json={"url": web.url("/x"), "path": "x"})
    assert missing.status_code == 404


def test_a_pull_past_the_disk_limit_fails_and_leaves_nothing(
    api: httpx.Client, web: LoopbackServer
) -> None:
    answer = api.post("/volumes", json={"disk_limit": 8 * 1024 * 1024})
    assert answer.status_code == 201, answer.text
    vol = Vol(id=answer.json()["volume_id"], path=Path(answer.json()["path"]))
    try:
        web.put("large", b"L" * (9 * 1024 * 1024))
        started = api.post(f"{vol.url}/pull", json={"url": web.url("/files/large"), "path": "x"})
        assert started.status_code == 202, started.text
        done = wait_pull(api, vol, started.json()["pull_id"])
        assert done["state"] == "failed", done
        assert done["error"] == "Disk limit exceeded"
        assert sorted(os.listdir(vol.path)) == []  # no file, no temporary entry
    finally:
        assert api.delete(vol.url).status_code == 200
