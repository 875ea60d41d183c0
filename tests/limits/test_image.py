"""The image backend with a real daemon: limited volumes are loop-mounted ext4 images.

Root only. The kernel stops ``dd`` at the image's size (ENOSPC) and a raised limit grows
the image online while the container runs (where the kernel allows it; else offline once
it stopped); a shrink below the usage is 409; a lowered limit shrinks the image offline
so the kernel holds it for the container (409 while one runs); usage reads never walk;
every lightd writer answers 507; a restart mounts the images again before any container
starts; a kill -9 during a resize leaves a volume that mounts and works.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lightd.fs.limits.image import online_resize_allowed
from tests.limits.conftest import ROOT_ONLY, mounts_below, tools_present
from tests.limits.rig import DiskRig, MiB
from tests.limits.writers import assert_every_writer_refused, assert_reads_do_not_walk
from tests.support import engine
from tests.support.daemon import wait_for

pytestmark = [
    ROOT_ONLY,
    pytest.mark.docker,
    pytest.mark.skipif(not tools_present("mkfs.ext4", "resize2fs"), reason="e2fsprogs missing"),
]


@pytest.fixture
def rig(ext4_mount: Path) -> Iterator[DiskRig]:
    made = DiskRig(ext4_mount / "daemon", "image")
    try:
        made.start()
        yield made
    finally:
        made.close()


def is_mounted(path: str) -> bool:
    return path in mounts_below(Path(path).parent)


def unmount(path: str, image: Path) -> None:
    """Unmount a volume, then wait until its loop device has detached (written back)."""
    subprocess.run(["umount", path], check=True)
    wait_for(
        lambda: (
            not subprocess.run(
                ["losetup", "-j", str(image)], capture_output=True, text=True
            ).stdout.strip()
        ),
        what="the image's loop device detached",
    )


def test_a_limited_volume_is_a_mounted_image(rig: DiskRig) -> None:
    volume_id = rig.volume(32 * MiB)
    shown = rig.show(volume_id)
    assert shown["disk_limit"] == 32 * MiB
    assert is_mounted(shown["path"])
    assert os.listdir(shown["path"]) == []  # no lost+found in the volume
    plain = rig.show(rig.volume())
    assert plain["disk_limit"] is None and not is_mounted(plain["path"])
    assert rig.http.get("/system").json()["disk"]["backend"] == "image"
    assert rig.http.delete(f"/volumes/{volume_id}").status_code == 200
    assert not Path(shown["path"]).exists()
    assert not (rig.daemon.data_dir / "volume-images" / f"{volume_id}.img").exists()


def test_kernel_stops_dd_grow_lets_it_go_on_and_shrink_below_usage_is_409(
    rig: DiskRig,
) -> None:
    volume_id = rig.volume(16 * MiB)
    command = (
        "dd if=/dev/zero of=/home/container/big bs=1M count=32; echo dd-exit-$?; "
        "until dd if=/dev/zero of=/home/container/more bs=1M count=24 2>/dev/null; "
        "do sleep 0.3; done; echo wrote-more; exec sleep 1000"
    )
    internal_id = rig.container("dd", volume_id, command)
    out = rig.wait_console(internal_id, "dd-exit-")
    assert "No space left on device" in out and "dd-exit-1" in out
    used = rig.show(volume_id)["disk_usage"]
    assert 8 * MiB < used <= 16 * MiB
    shrink = rig.http.post(f"/volumes/{volume_id}/limit", json={"disk_limit": 8 * MiB})
    assert shrink.status_code == 409, shrink.text
    assert "uses" in shrink.json()["error"]
    grown = rig.http.post(f"/volumes/{volume_id}/limit", json={"disk_limit": 96 * MiB})
    if online_resize_allowed():
        assert grown.status_code == 200, grown.text
        rig.wait_console(internal_id, "wrote-more")
    else:
        # This kernel refuses online ext4 resizing to a process without CAP_SYS_RESOURCE:
        # the grow is refused while the container runs, and done offline once it stopped.
        assert grown.status_code == 409, grown.text
        assert "stop the container" in grown.json()["error"]
        assert rig.show(volume_id)["disk_limit"] == 16 * MiB
        assert rig.http.post(f"/containers/{internal_id}/kill").status_code == 200
        wait_for(lambda: rig.get(internal_id)["state"] == "offline", what="stopped")
        grown = rig.http.post(f"/volumes/{volume_id}/limit", json={"disk_limit": 96 * MiB})
        assert grown.status_code == 200, grown.text
        assert rig.http.post(f"/containers/{internal_id}/start").status_code == 200
        rig.wait_console(internal_id, "dd-exit-0")
    assert rig.show(volume_id)["disk_limit"] == 96 * MiB
    info = os.statvfs(rig.show(volume_id)["path"])
    assert info.f_blocks * info.f_frsize > 64 * MiB


def test_usage_reads_do_not_walk(rig: DiskRig) -> None:
    assert_reads_do_not_walk(rig, rig.volume(64 * MiB))


def test_every_writer_answers_507_and_writes_nothing_past_the_limit(rig: DiskRig) -> None:
    assert_every_writer_refused(rig, rig.volume(24 * MiB), limit=24 * MiB)


def test_restart_mounts_images_before_any_container_starts(rig: DiskRig) -> None:
    volume_id = rig.volume(32 * MiB)
    path = rig.show(volume_id)["path"]
    written = rig.http.post(
        f"/volumes/{volume_id}/files", json={"path": "marker", "content": "inside-the-image"}
    )
    assert written.status_code == 200
    internal_id = rig.container(
        "boot", volume_id, "echo seen-$(cat /home/container/marker); exec sleep 1000"
    )
    rig.wait_console(internal_id, "seen-inside-the-image")
    # A reboot, as far as the volume knows: lightd and the container stop, the image
    # is unmounted. The container's document still wants it running.
    rig.daemon.stop()
    with engine.client() as client:
        client.containers.get(f"lightd-{internal_id}").stop(timeout=1)
    subprocess.run(["umount", path], check=True)
    assert not is_mounted(path)
    rig.restart()
    wait_for(
        lambda: rig.console(internal_id).count("seen-inside-the-image") >= 2,
        timeout=60,
        what="the container started again on its remounted image",
    )
    # Every start saw the image's content, never the empty folder beneath it.
    assert rig.console(internal_id).count("seen-\n") == 0
    assert is_mounted(path)


def test_kill_9_during_a_resize_leaves_a_usable_volume(rig: DiskRig) -> None:
    volume_id = rig.volume(16 * MiB)
    url = f"/volumes/{volume_id}"
    assert (
        rig.http.post(f"{url}/files", json={"path": "keep", "content": "kept"}).status_code == 200
    )
    image = rig.daemon.data_dir / "volume-images" / f"{volume_id}.img"

    # A real kill -9 while a grow is under way (wherever it is by then) ...
    # (in another process: a socket cut by the kill stays out of this one)
    grow = subprocess.Popen(
        [
            "curl",
            "-s",
            "-m",
            "30",
            "-X",
            "POST",
            "-H",
            f"Authorization: Bearer {rig.daemon.token}",
            "-H",
            "Content-Type: application/json",
            "-H",
            "Accept: application/vnd.pkglatv1+json",
            "-d",
            f'{{"disk_limit": {256 * MiB}}}',
            f"{rig.daemon.base_url}{url}/limit",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.05)
    rig.restart(kill=True)
    grow.wait(timeout=40)
    path = rig.show(volume_id)["path"]
    assert is_mounted(path)
    shown = rig.http.get(f"{url}/files/content", params={"path": "keep"})
    assert shown.status_code == 200 and shown.text == "kept"
    limit = rig.show(volume_id)["disk_limit"]
    assert limit in (16 * MiB, 256 * MiB)
    # ... and the state a kill in the middle of resize2fs leaves: the file extended, an
    # undo file of a resize that never finished. The next start replays it, mounts.
    assert rig.http.post(f"{url}/files", json={"path": "keep2", "content": "k2"}).status_code == 200
    rig.daemon.stop()
    unmount(path, image)
    undo = image.with_suffix(".e2undo")
    os.truncate(image, max(image.stat().st_size, 300 * MiB))
    killed = subprocess.Popen(
        ["resize2fs", "-z", str(undo), str(image)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.02)
    killed.kill()
    killed.wait()
    rig.start()
    assert is_mounted(path), rig.daemon.log_path.read_text()[-6000:]  # why it did not mount
    assert not undo.exists()
    for name, text in (("keep", "kept"), ("keep2", "k2")):
        shown = rig.http.get(f"{url}/files/content", params={"path": name})
        assert shown.status_code == 200 and shown.text == text
    again = rig.http.post(f"{url}/limit", json={"disk_limit": 320 * MiB})
    assert again.status_code == 200, again.text
    # The file system fills the whole image: the grow that was cut short is finished.
    info = os.statvfs(path)
    assert info.f_blocks * info.f_frsize > 256 * MiB
    big = rig.http.put(f"{url}/files/content", params={"path": "big"}, content=b"\0" * 40 * MiB)
    assert big.status_code == 200, big.text
    rig.daemon.stop()
    unmount(path, image)
    fsck = subprocess.run(["e2fsck", "-f", "-n", str(image)], capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stdout  # the file system is whole


def test_a_lowered_limit_shrinks_the_image_and_the_kernel_holds_it(rig: DiskRig) -> None:
    volume_id = rig.volume(64 * MiB)
    url = f"/volumes/{volume_id}"
    path = rig.show(volume_id)["path"]
    image = rig.daemon.data_dir / "volume-images" / f"{volume_id}.img"
    kept = os.urandom(3 * MiB)
    assert rig.http.put(f"{url}/files/content", params={"path": "keep"}, content=kept).is_success
    before = os.statvfs(path)
    assert before.f_blocks * before.f_frsize > 48 * MiB
    # No container uses it: the image shrinks offline to the new limit.
    lowered = rig.http.post(f"{url}/limit", json={"disk_limit": 24 * MiB})
    assert lowered.status_code == 200, lowered.text
    assert rig.show(volume_id)["disk_limit"] == 24 * MiB
    assert is_mounted(path)
    assert image.stat().st_size == 24 * MiB
    info = os.statvfs(path)
    # (statvfs leaves out the journal and inode tables sized for the old 64 MiB)
    assert 16 * MiB < info.f_blocks * info.f_frsize <= 24 * MiB
    assert not image.with_suffix(".e2undo").exists()
    assert rig.http.get(f"{url}/files/content", params={"path": "keep"}).content == kept
    # The container meets the lowered limit in the kernel (ENOSPC), not only lightd.
    command = (
        "dd if=/dev/zero of=/home/container/big bs=1M count=40; echo dd-exit-$?; exec sleep 1000"
    )
    internal_id = rig.container("low", volume_id, command)
    out = rig.wait_console(internal_id, "dd-exit-")
    assert "No space left on device" in out and "dd-exit-1" in out
    assert rig.show(volume_id)["disk_usage"] <= 24 * MiB
    assert os.path.getsize(Path(path) / "big") < 24 * MiB
    # While it runs, lowering is refused (ext4 cannot shrink mounted), nothing changed.
    assert rig.http.delete(f"{url}/files", params={"path": "big"}).status_code == 200
    refused = rig.http.post(f"{url}/limit", json={"disk_limit": 16 * MiB})
    assert refused.status_code == 409, refused.text
    assert "stop the container" in refused.json()["error"]
    assert rig.show(volume_id)["disk_limit"] == 24 * MiB
    assert image.stat().st_size == 24 * MiB
    # Stopped: it shrinks; a size resize2fs will not take (its minimum) is 409, untouched.
    assert rig.http.post(f"/containers/{internal_id}/kill").status_code == 200
    wait_for(lambda: rig.get(internal_id)["state"] == "offline", what="stopped")
    assert rig.http.post(f"{url}/limit", json={"disk_limit": 16 * MiB}).status_code == 200
    assert image.stat().st_size == 16 * MiB
    # 8 MiB is above the usage (3 MiB) but below what the journal, inode tables and
    # files need: resize2fs refuses it, and so does lightd, with nothing changed.
    assert rig.show(volume_id)["disk_usage"] < 8 * MiB
    tight = rig.http.post(f"{url}/limit", json={"disk_limit": 8 * MiB})
    assert tight.status_code == 409, tight.text
    assert "smaller than minimum" in tight.json()["error"]
    assert rig.show(volume_id)["disk_limit"] == 16 * MiB
    assert image.stat().st_size == 16 * MiB and is_mounted(path)
    assert not image.with_suffix(".e2undo").exists()
    assert rig.http.get(f"{url}/files/content", params={"path": "keep"}).content == kept
    rig.daemon.stop()
    unmount(path, image)
    fsck = subprocess.run(["e2fsck", "-f", "-n", str(image)], capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stdout  # the shrunk file system is whole


# The kill lands before resize2fs wrote anything, in the middle, or after it finished
# (it cuts the file itself as its last step): each must come back whole at 64 MiB.
@pytest.mark.parametrize("kill_after", [0.0, 0.005, 0.02, 0.3])
def test_a_shrink_killed_in_its_resize_comes_back_whole(rig: DiskRig, kill_after: float) -> None:
    volume_id = rig.volume(64 * MiB)
    url = f"/volumes/{volume_id}"
    path = rig.show(volume_id)["path"]
    image = rig.daemon.data_dir / "volume-images" / f"{volume_id}.img"
    kept = os.urandom(2 * MiB)
    assert rig.http.put(f"{url}/files/content", params={"path": "keep"}, content=kept).is_success
    # What a kill -9 in the middle of the shrink's resize2fs leaves: the image unmounted,
    # checked, an undo file of a shrink that never finished (the file not cut yet).
    rig.daemon.stop()
    unmount(path, image)
    subprocess.run(["e2fsck", "-f", "-y", str(image)], capture_output=True, check=False)
    undo = image.with_suffix(".e2undo")
    killed = subprocess.Popen(
        ["resize2fs", "-z", str(undo), str(image), "20000"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(kill_after)
    killed.kill()
    killed.wait()
    rig.start()
    assert is_mounted(path) and not undo.exists()
    assert rig.http.get(f"{url}/files/content", params={"path": "keep"}).content == kept
    assert rig.show(volume_id)["disk_limit"] == 64 * MiB
    lowered = rig.http.post(f"{url}/limit", json={"disk_limit": 24 * MiB})
    assert lowered.status_code == 200, lowered.text
    assert image.stat().st_size == 24 * MiB
    assert rig.http.get(f"{url}/files/content", params={"path": "keep"}).content == kept
    rig.daemon.stop()
    unmount(path, image)
    fsck = subprocess.run(["e2fsck", "-f", "-n", str(image)], capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stdout


def test_a_loop_device_held_elsewhere_refuses_the_resize_and_stays_mounted(
    rig: DiskRig,
) -> None:
    volume_id = rig.volume(32 * MiB)
    url = f"/volumes/{volume_id}"
    path = rig.show(volume_id)["path"]
    image = rig.daemon.data_dir / "volume-images" / f"{volume_id}.img"
    assert rig.http.post(f"{url}/files", json={"path": "keep", "content": "k"}).is_success
    device = next(
        line.split()[-2]
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
        if line.split()[4] == path
    )
    # Something else holds the loop device open: after the umount it cannot detach, so
    # the file must not be checked or resized; the volume goes back on its device.
    holder = os.open(device, os.O_RDONLY)
    try:
        answer = rig.http.post(f"{url}/limit", json={"disk_limit": 24 * MiB}, timeout=60)
        assert answer.status_code >= 500, answer.text
        assert "stays attached" in answer.json()["error"]
        assert is_mounted(path)
        assert rig.http.get(f"{url}/files/content", params={"path": "keep"}).text == "k"
        assert rig.show(volume_id)["disk_limit"] == 32 * MiB
        assert image.stat().st_size == 32 * MiB
    finally:
        os.close(holder)
    lowered = rig.http.post(f"{url}/limit", json={"disk_limit": 24 * MiB})
    assert lowered.status_code == 200, lowered.text
    assert image.stat().st_size == 24 * MiB
