"""The image backend: a limited volume is a sparse ext4 image mounted on its folder.

``<data_dir>/volume-images/<uuid>.img`` is made (sparse, ``mkfs.ext4``) when a volume
first gets a limit, and loop-mounted on the volume folder; the kernel answers ENOSPC at
its size, also to the container. :meth:`ImageBackend.attach` mounts it again at every
start, before anything uses the volume. A raised limit grows it online: the file is
extended, the loop device told (``losetup -c``), then ``resize2fs`` on the mounted file
system (the kernel's online resize: a kill leaves the old or the new size). A kernel that
refuses online resizing (no ``CAP_SYS_RESOURCE``, as on this project's machines) gets the
offline grow while no container uses the volume: unmount, ``e2fsck``, ``resize2fs -z``
with an undo file, mount. While a container runs on it such a grow is refused (409),
never forced.

A lowered limit (at or above the usage; below it is refused, 409) shrinks the image so
the kernel holds it for the container too: ext4 cannot shrink online, so this is done
only while no container uses the volume (unmount, ``e2fsck -f``, ``resize2fs -z`` with
an undo file to the new size, then the file is cut to it, mount); while a container
runs on it the change is refused (409: stop the container, then lower the limit), never
left to lightd's writers alone. A kill during a grow's or a shrink's ``resize2fs``
leaves the undo file; the next start, before mounting, keeps a file system that checks
clean (the resize had finished, a shrink's cut of the file included: replaying the undo
then would lose data) and replays the undo (``e2undo``) otherwise, then resizes the file
system to the stored limit: the volume comes back whole, at its limit. Every mount goes through a fresh loop device
(:func:`free_loops`): one an umount left attached would serve the blocks cached from
before a resize. ``resize2fs`` refusing a size (below its minimum for
the files kept) is a 409 with its words, the image untouched. Usage is ``statvfs``, O(1).
A volume with content gets its image by a copy into it while no container uses it.
Unlimited volumes stay plain folders (usage from the soft accountant).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from pathlib import Path

from lightd.errors import DiskLimitConflict
from lightd.fs.limits.base import CommandFailed, VolumeRef, is_mount_point, mount_of, run
from lightd.fs.limits.decide import Probe, Resize, image_resize

MOUNT_OPTIONS = "nosuid,nodev"
LOOP_DETACH_SECONDS = 10.0
CAP_SYS_RESOURCE = 24


def online_resize_allowed() -> bool:
    """Whether this process holds CAP_SYS_RESOURCE (the kernel's online ext4 resize)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> CAP_SYS_RESOURCE & 1)
    except (OSError, ValueError):
        pass
    return False


def probe() -> Probe:
    if os.geteuid() != 0:
        return Probe("image", False, "lightd does not run as root (mounting needs it)")
    if not Path("/dev/loop-control").exists():
        return Probe("image", False, "no loop devices (/dev/loop-control is missing)")
    missing = [
        tool
        for tool in ("mkfs.ext4", "resize2fs", "losetup", "blockdev", "mount", "umount")
        if shutil.which(tool) is None
    ]
    if missing:
        return Probe("image", False, f"missing tools: {', '.join(missing)} (e2fsprogs)")
    grow = (
        "grown online"
        if online_resize_allowed()
        else "grown offline while unused (no CAP_SYS_RESOURCE for online resize)"
    )
    return Probe("image", True, f"root with loop devices and e2fsprogs: ext4 images, {grow}")


def loops_of(image: Path) -> list[str]:
    """Loop devices attached to ``image`` (``losetup -j``: by the file's inode)."""
    text = run(["losetup", "-j", str(image)], timeout=10)
    return [line.split(":", 1)[0] for line in text.splitlines() if line.strip()]


def mounted_sources() -> set[str]:
    found = set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            rest = line.partition(" - ")[2].split()
            if len(rest) >= 2:
                found.add(rest[1])
    return found


def free_loops(image: Path) -> None:
    """Before a mount: detach what still serves ``image`` from an earlier, unmounted mount.

    ``mount -o loop`` reuses a loop device already attached to the file, and the one an
    umount left (its automatic detach can come late) still caches the blocks of before an
    offline resize: mounted through it, the file system shows its old size, and writing
    through it would damage the resized one. A device still mounted is not touched.
    """
    deadline = time.monotonic() + LOOP_DETACH_SECONDS
    while True:
        devices = loops_of(image)
        if not devices:
            return
        mounted = mounted_sources()
        if any(device in mounted for device in devices):
            raise CommandFailed(f"{image.name} is still mounted through {', '.join(devices)}")
        if time.monotonic() > deadline:
            raise CommandFailed(f"{image.name} stays attached to {', '.join(devices)}")
        for device in devices:
            with contextlib.suppress(CommandFailed):
                run(["losetup", "-d", device], timeout=10)
        time.sleep(0.05)


def unmount_image(image: Path, target: Path) -> None:
    """Unmount ``target`` and wait until no loop device serves ``image`` any more.

    The loop device detaches (and writes back what it still holds) after the umount
    returns; a check or resize of the file before that would read it half written.
    """
    found = mount_of(target)
    device = found[2] if found is not None and found[0] == str(target.resolve()) else None
    run(["umount", str(target)])
    try:
        free_loops(image)
    except CommandFailed:
        # Still held elsewhere (nothing was changed yet): back on the same device, so
        # the volume never shows the empty folder beneath it.
        if device is not None:
            run(["mount", "-o", MOUNT_OPTIONS, device, str(target)])
        raise


def mount_image(image: Path, target: Path) -> None:
    """Mount ``image`` on ``target`` through a fresh loop device with an empty cache.

    No loop device is reused (:func:`free_loops`), the new one's buffer cache is dropped
    (``blockdev --flushbufs``) before the kernel reads the superblock, and once mounted
    the device is marked to detach itself at the umount (``losetup -d`` of a busy
    device), as ``mount -o loop`` would.
    """
    free_loops(image)
    device = run(["losetup", "-f", "--show", str(image)], timeout=10).strip()
    try:
        run(["blockdev", "--flushbufs", device], timeout=10)
        run(["mount", "-o", MOUNT_OPTIONS, device, str(target)])
    except CommandFailed:
        with contextlib.suppress(CommandFailed):
            run(["losetup", "-d", device], timeout=10)
        raise
    run(["losetup", "-d", device], timeout=10)


def grown(path: Path, limit: int) -> bool:
    """Whether the mounted file system spans (most of) ``limit``: ext4 keeps some for itself."""
    info = os.statvfs(path)
    return info.f_blocks * info.f_frsize >= limit * 0.8


def used_bytes(path: Path) -> int:
    info = os.statvfs(path)
    return (info.f_blocks - info.f_bfree) * info.f_frsize


class ImageBackend:
    name = "image"
    kernel_enforced = True

    def __init__(self, images: Path) -> None:
        self.images = images

    def image_of(self, volume: VolumeRef) -> Path:
        return self.images / f"{volume.id}.img"

    # -- protocol --------------------------------------------------------------------

    def make_folder(self, volume: VolumeRef) -> None:
        volume.path.mkdir(mode=0o755)
        volume.path.chmod(0o755)

    def measures(self, volume: VolumeRef) -> bool:
        return self.image_of(volume).exists()

    def usage(self, volume: VolumeRef) -> int | None:
        if not self.image_of(volume).exists() or not is_mount_point(volume.path):
            return None
        return used_bytes(volume.path)

    def apply(self, volume: VolumeRef, *, limit: int | None, usage: int, in_use: bool) -> None:
        image = self.image_of(volume)
        size = image.stat().st_size if image.exists() else None
        if limit is None:
            if size is not None:
                raise DiskLimitConflict(
                    "An image volume keeps a size: set a larger limit instead of none"
                )
            return
        step = image_resize(limit=limit, usage=usage, image_size=size)
        try:
            if step is Resize.MAKE:
                if in_use:
                    raise DiskLimitConflict(
                        "The volume becomes an image on its first limit: stop its container first"
                    )
                self._make(volume, limit)
            elif step is Resize.GROW:
                self._ensure_mounted(volume)
                self.grow(volume, limit, in_use=in_use)
            elif step is Resize.LOWER:
                if in_use:
                    raise DiskLimitConflict(
                        "The kernel cannot shrink a mounted ext4 image: "
                        "stop the container, then lower the limit"
                    )
                self._ensure_mounted(volume)
                self.shrink(volume, limit)
        except OSError as exc:  # e.g. EFBIG: larger than the images' file system allows
            raise DiskLimitConflict(
                f"Cannot make the volume's image {limit} bytes: {exc.strerror or exc}"
            ) from exc

    def attach(self, volume: VolumeRef, *, limit: int | None) -> None:
        image = self.image_of(volume)
        if not image.exists():
            return
        undo = self.undo_of(volume)
        if not is_mount_point(volume.path):
            free_loops(image)  # an umount (of an earlier run, an operator) may still flush
        if undo.exists() and not is_mount_point(volume.path):
            self._recover_resize(image, undo, limit)
        self._ensure_mounted(volume)

    def _recover_resize(self, image: Path, undo: Path, limit: int | None) -> None:
        """A resize was killed (its undo file is left): make the image whole again, at
        the stored limit.

        When the file system checks clean as it is, ``resize2fs`` had finished or not
        begun (a shrink cuts the file itself as its last step, so replaying the undo
        after it would point the file system at blocks the cut removed): it is kept.
        Otherwise the undo is replayed: the size before the resize, whole. (An undo file
        cut short by the kill replays nothing: the check repairs then.) Either way the
        file system is then resized to the stored limit, since the request that changed
        it may or may not have been stored before the kill.
        """
        if not self.clean(image):
            with contextlib.suppress(CommandFailed):
                run(["e2undo", str(undo), str(image)])
            self.repair(image)
        undo.unlink()
        if limit is not None and fs_bytes(image) != limit:
            self._resize_unmounted(image, undo, limit)

    def _resize_unmounted(self, image: Path, undo: Path, limit: int) -> None:
        """Check, resize the file system to ``limit`` with an undo file, check, and make
        the file that size."""
        self.repair(image)
        if image.stat().st_size < limit:
            with image.open("r+b") as handle:
                handle.truncate(limit)
        with contextlib.suppress(FileNotFoundError):
            undo.unlink()
        run(["resize2fs", "-z", str(undo), str(image), str(limit // fs_block(image))])
        self.repair(image)
        undo.unlink()
        with image.open("r+b") as handle:
            handle.truncate(limit)

    def clean(self, image: Path) -> bool:
        """Whether ``e2fsck -f -n`` finds nothing to put right (and the file holds the
        whole file system)."""
        try:
            run(["e2fsck", "-f", "-n", str(image)])
        except CommandFailed:
            return False
        return True

    def repair(self, image: Path) -> None:
        """``e2fsck -f -y``: what a kill left half done is put right before the mount."""
        run(["e2fsck", "-f", "-y", str(image)], ok=(0, 1))

    def undo_of(self, volume: VolumeRef) -> Path:
        return self.images / f"{volume.id}.e2undo"

    def release(self, volume: VolumeRef) -> None:
        if is_mount_point(volume.path):
            unmount_image(self.image_of(volume), volume.path)
        with contextlib.suppress(FileNotFoundError):
            self.image_of(volume).unlink()

    # -- steps -----------------------------------------------------------------------

    def _ensure_mounted(self, volume: VolumeRef) -> None:
        if not is_mount_point(volume.path):
            image = self.image_of(volume)
            free_loops(image)
            # A kill may have left the journal to replay or a resize half done: the
            # preening check fixes what is safe, a full one what preening will not.
            try:
                run(["e2fsck", "-p", str(image)], ok=(0, 1))
            except CommandFailed:
                self.repair(image)
            mount_image(image, volume.path)

    def _make(self, volume: VolumeRef, limit: int) -> None:
        self.images.mkdir(parents=True, exist_ok=True)
        image = self.image_of(volume)
        building = image.with_suffix(".img.new")
        staging = self.images / f"{volume.id}.staging"
        try:
            with building.open("wb") as handle:
                handle.truncate(limit)
            run(["mkfs.ext4", "-q", "-F", "-m", "0", "-E", "nodiscard", str(building)])
            staging.mkdir(exist_ok=True)
            mount_image(building, staging)
            try:
                with contextlib.suppress(OSError):
                    (staging / "lost+found").rmdir()
                if any(volume.path.iterdir()):
                    # cp copies links as links, keeps modes and times, no shell.
                    run(["cp", "-a", "--", f"{volume.path}/.", f"{staging}/"])
                os.chmod(staging, 0o755)  # noqa: S103 (the volume root)  # noqa: S103 (the volume root, as a folder volume)
            finally:
                unmount_image(building, staging)
            os.replace(building, image)
        finally:
            with contextlib.suppress(FileNotFoundError):
                building.unlink()
            with contextlib.suppress(OSError):
                staging.rmdir()
        # The old content is dropped only once the image holds it and is in place.
        for child in list(volume.path.iterdir()):
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
        mount_image(image, volume.path)

    def loop_device(self, volume: VolumeRef) -> str:
        found = mount_of(volume.path)
        if found is None or found[0] != str(volume.path.resolve()):
            raise CommandFailed(f"{volume.path} is not mounted")
        return found[2]

    def grow(self, volume: VolumeRef, limit: int, *, in_use: bool) -> None:
        image = self.image_of(volume)
        before = image.stat().st_size
        if before < limit:
            with image.open("r+b") as handle:
                handle.truncate(limit)
        device = self.loop_device(volume)
        run(["losetup", "-c", device])
        try:
            run(["resize2fs", device])
            if grown(volume.path, limit):
                return
            raise CommandFailed("resize2fs left the file system at its old size")
        except CommandFailed as exc:
            if in_use:
                # The file system never grew: the file goes back to its size (the image's
                # size is its limit).
                with image.open("r+b") as handle:
                    handle.truncate(before)
                run(["losetup", "-c", device])
                raise DiskLimitConflict(
                    f"The kernel refused to grow the image online ({exc.message}): "
                    "stop the container, then raise the limit"
                ) from exc
        self.grow_offline(volume)

    def grow_offline(self, volume: VolumeRef) -> None:
        """Unmount, check, grow to the file's size with an undo file, mount again."""
        image = self.image_of(volume)
        undo = self.undo_of(volume)
        unmount_image(image, volume.path)
        try:
            self._grow_unmounted(image, undo)
        finally:
            mount_image(image, volume.path)

    def _grow_unmounted(self, image: Path, undo: Path) -> None:
        """Check, grow the file system to the file's size with an undo file, check."""
        self.repair(image)
        with contextlib.suppress(FileNotFoundError):
            undo.unlink()
        run(["resize2fs", "-z", str(undo), str(image)])
        # Growing past the reserved descriptor blocks leaves the resize inode stale
        # (e2fsck's "Resize inode not valid"): put it right while still unmounted.
        self.repair(image)
        undo.unlink()

    def shrink(self, volume: VolumeRef, limit: int) -> None:
        """Offline: unmount, check, shrink to ``limit`` with an undo file, cut the file, mount.

        DiskLimitConflict (the image untouched) when ``resize2fs`` refuses the size.
        """
        image = self.image_of(volume)
        undo = self.undo_of(volume)
        block = os.statvfs(volume.path).f_frsize
        unmount_image(image, volume.path)
        try:
            self.repair(image)  # resize2fs shrinks only a freshly checked file system
            with contextlib.suppress(FileNotFoundError):
                undo.unlink()
            try:
                run(["resize2fs", "-z", str(undo), str(image), str(limit // block)])
            except CommandFailed as exc:
                if undo.exists():  # whatever it changed before it gave up is put back
                    with contextlib.suppress(CommandFailed):
                        run(["e2undo", str(undo), str(image)])
                    undo.unlink()
                    self.repair(image)
                raise DiskLimitConflict(
                    f"Cannot shrink the volume's image to {limit} bytes ({exc.message})"
                ) from exc
            undo.unlink()
            # Only once the file system ends inside it is the file cut to the new size.
            with image.open("r+b") as handle:
                handle.truncate(limit)
        finally:
            mount_image(image, volume.path)


def _superblock(image: Path) -> dict[str, str]:
    fields = {}
    for line in run(["dumpe2fs", "-h", str(image)]).splitlines():
        name, sep, value = line.partition(":")
        if sep:
            fields[name.strip()] = value.strip()
    return fields


def fs_block(image: Path) -> int:
    """The block size of the ext4 file system in ``image`` (its superblock)."""
    return int(_superblock(image)["Block size"])


def fs_bytes(image: Path) -> int:
    """The size of the ext4 file system in ``image`` (its superblock), in bytes."""
    fields = _superblock(image)
    return int(fields["Block count"]) * int(fields["Block size"])
