"""The soft backend with a real daemon: accounting, the throttled rescan, the stop.

No kernel limit here: lightd's writers refuse past the limit from its own accounting, the
background rescan sees what a container wrote, and a container over its limit is
stopped with ``last_error`` saying why (and not started again while it is over).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.limits.rig import DiskRig, MiB
from tests.limits.writers import apparent_size, assert_every_writer_refused
from tests.support.daemon import wait_for
from tests.support.ws import Watcher

pytestmark = [pytest.mark.docker]

FAST_SCAN = {
    "LIGHTD_VOLUMES__SOFT_RESCAN_SECONDS": "0.5",
    "LIGHTD_VOLUMES__DISK_CHECK_SECONDS": "0.5",
}


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[DiskRig]:
    made = DiskRig(tmp_path / "daemon", "soft", **FAST_SCAN)
    try:
        made.start()
        yield made
    finally:
        made.close()


def test_system_reports_soft_and_no_kernel_enforcement(rig: DiskRig) -> None:
    disk = rig.http.get("/system").json()["disk"]
    assert disk["backend"] == "soft"
    assert disk["kernel_enforced"] is False


def test_rescan_sees_container_writes_and_stops_an_over_limit_container(rig: DiskRig) -> None:
    volume_id = rig.volume(8 * MiB)
    internal_id = rig.container(
        "hog",
        volume_id,
        "dd if=/dev/zero of=/home/container/hog bs=1M count=12 && echo wrote; exec sleep 1000",
    )
    rig.wait_console(internal_id, "wrote")  # no kernel limit: the write went through
    stopped = wait_for(
        lambda: (
            (c := rig.get(internal_id))["state"] == "offline"
            and (c.get("last_error") or "").startswith("Disk limit exceeded")
            and c
        ),
        timeout=30,
        what="the over-limit container stopped with the reason",
    )
    assert f"of its {8 * MiB} byte limit" in stopped["last_error"]
    assert rig.show(volume_id)["disk_usage"] >= 12 * MiB
    # Still over: not started again, whatever its power says.
    assert rig.get(internal_id)["power"] == "running"
    # Back within the limit (the file removed through lightd): it starts again.
    gone = rig.http.delete(f"/volumes/{volume_id}/files", params={"path": "hog"})
    assert gone.status_code == 200
    wait_for(
        lambda: rig.get(internal_id)["state"] in ("running", "starting"),
        timeout=30,
        what="started again once within the limit",
    )


def test_every_writer_answers_507_and_writes_nothing_past_the_limit(rig: DiskRig) -> None:
    volume_id = rig.volume(24 * MiB)
    assert_every_writer_refused(rig, volume_id, limit=24 * MiB)
    # Writes and rescans count one measure: the figure is the files' apparent size, the
    # same before and after the rescans that run every 0.5 s here (no jump, no slack).
    path = Path(rig.show(volume_id)["path"])
    on_disk = apparent_size(path)
    assert 23 * MiB < on_disk <= 24 * MiB
    seen = set()
    for _ in range(8):
        seen.add(rig.show(volume_id)["disk_usage"])
        time.sleep(0.3)
    assert seen == {on_disk}


def test_a_rescan_counts_what_a_container_adds_in_the_same_measure(rig: DiskRig) -> None:
    volume_id = rig.volume(64 * MiB)
    written = rig.http.post(
        f"/volumes/{volume_id}/files", json={"path": "a/b/lightd.txt", "content": "x" * 1000}
    )
    assert written.status_code == 200, written.text
    assert rig.show(volume_id)["disk_usage"] == 1000  # folders count nothing
    internal_id = rig.container(
        "few",
        volume_id,
        "head -c 123457 /dev/zero > /home/container/a/c.bin && mkdir -p /home/container/d/e"
        " && ln /home/container/a/c.bin /home/container/d/hard && echo made; exec sleep 1000",
    )
    rig.wait_console(internal_id, "made")
    # The container's file once (its hard link not again), folders and links nothing.
    wait_for(
        lambda: rig.show(volume_id)["disk_usage"] == 1000 + 123457,
        timeout=30,
        what="the rescan's figure: 1000 + 123457 bytes",
    )


def test_document_limit_wins_over_the_api(rig: DiskRig) -> None:
    volume_id = rig.volume(16 * MiB)
    internal_id = rig.container("doc", volume_id, "exec sleep 1000", limits={"disk": 32 * MiB})
    wait_for(
        lambda: rig.show(volume_id)["disk_limit"] == 32 * MiB,
        timeout=30,
        what="the reconciler applied limits.disk",
    )
    wait_for(lambda: rig.get(internal_id)["state"] == "running", what="running")
    with Watcher(rig.daemon, f"/ws/{internal_id}?token={rig.daemon.token}") as watcher:
        stats = watcher.until(lambda e: e["event"] == "stats", what="a stats event")
    assert stats["disk_limit"] == 32 * MiB
    assert 0 <= stats["disk_usage"] <= 32 * MiB
    series = f'lightd_volume_disk_limit_bytes{{volume_id="{volume_id}"}} '
    lines = [line for line in rig.http.get("/metrics").text.splitlines() if line.startswith(series)]
    assert [float(line.removeprefix(series)) for line in lines] == [32 * MiB]
    refused = rig.http.post(f"/volumes/{volume_id}/limit", json={"disk_limit": 64 * MiB})
    assert refused.status_code == 409, refused.text
    assert internal_id in refused.json()["error"]
    assert rig.show(volume_id)["disk_limit"] == 32 * MiB
