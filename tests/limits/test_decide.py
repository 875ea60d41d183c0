"""The pure decisions of disk limits: one row per case."""

from __future__ import annotations

import pytest

from lightd.errors import ConfigError, DiskLimitConflict, DiskLimitExceeded
from lightd.fs.limits.btrfs import parse_qgroup_show
from lightd.fs.limits.decide import (
    Probe,
    Resize,
    check_room,
    check_shrink,
    choose,
    image_resize,
    over_message,
    project_id,
    room,
)

MiB = 1024 * 1024


def probes(**usable: bool) -> dict[str, Probe]:
    return {
        name: Probe(name, usable.get(name, False), f"{name} reason")
        for name in ("btrfs", "project", "image", "soft")
    } | {"soft": Probe("soft", True, "soft reason")}


@pytest.mark.parametrize(
    ("setting", "usable", "expected"),
    [
        pytest.param("auto", {"btrfs": True, "image": True}, "btrfs", id="auto-prefers-btrfs"),
        pytest.param("auto", {"project": True, "image": True}, "project", id="then-project"),
        pytest.param("auto", {"image": True}, "image", id="then-image"),
        pytest.param("auto", {}, "soft", id="soft-when-nothing-else-works"),
        pytest.param("image", {"image": True, "btrfs": True}, "image", id="a-named-one-is-used"),
        pytest.param("soft", {"btrfs": True}, "soft", id="soft-may-be-named-anywhere"),
    ],
)
def test_choose(setting: str, usable: dict[str, bool], expected: str) -> None:
    assert choose(setting, probes(**usable)).name == expected


def test_auto_says_why_it_passed_the_others_over() -> None:
    choice = choose("auto", probes(image=True))
    assert choice.reason.startswith("auto: image reason")
    assert "not btrfs: btrfs reason" in choice.reason
    assert "not project: project reason" in choice.reason


@pytest.mark.parametrize("setting", ["btrfs", "project", "image", "zfs"])
def test_a_named_backend_that_cannot_work_is_a_config_error(setting: str) -> None:
    with pytest.raises(ConfigError, match=f"volumes.disk_backend = {setting}"):
        choose(setting, probes())


@pytest.mark.parametrize(
    ("limit", "usage", "adding", "fits"),
    [
        pytest.param(None, 10**12, 10**12, True, id="no-limit-takes-anything"),
        pytest.param(10 * MiB, 4 * MiB, 6 * MiB, True, id="exactly-to-the-limit"),
        pytest.param(10 * MiB, 4 * MiB, 6 * MiB + 1, False, id="one-byte-past"),
        pytest.param(10 * MiB, 12 * MiB, 1, False, id="already-over-takes-nothing"),
        pytest.param(10 * MiB, 12 * MiB, -5, True, id="shrinking-a-file-is-fine"),
    ],
)
def test_check_room(limit: int | None, usage: int, adding: int, fits: bool) -> None:
    if fits:
        check_room(limit=limit, usage=usage, adding=adding)
    else:
        with pytest.raises(DiskLimitExceeded, match="Disk limit exceeded"):
            check_room(limit=limit, usage=usage, adding=adding)


@pytest.mark.parametrize(
    ("limit", "usage", "expected"),
    [
        pytest.param(None, 5, None, id="no-limit"),
        pytest.param(10, 5, 5, id="what-is-left"),
        pytest.param(10, 15, 0, id="never-negative"),
    ],
)
def test_room(limit: int | None, usage: int, expected: int | None) -> None:
    assert room(limit, usage) == expected


@pytest.mark.parametrize(
    ("limit", "usage", "image_size", "expected"),
    [
        pytest.param(64 * MiB, 0, None, Resize.MAKE, id="first-limit-makes-the-image"),
        pytest.param(64 * MiB, 10 * MiB, 32 * MiB, Resize.GROW, id="raised-grows-online"),
        pytest.param(16 * MiB, 10 * MiB, 32 * MiB, Resize.LOWER, id="lowered-above-usage"),
        pytest.param(32 * MiB, 10 * MiB, 32 * MiB, Resize.SAME, id="same-size"),
    ],
)
def test_image_resize(limit: int, usage: int, image_size: int | None, expected: Resize) -> None:
    assert image_resize(limit=limit, usage=usage, image_size=image_size) is expected


def test_shrink_below_usage_is_refused() -> None:
    with pytest.raises(DiskLimitConflict, match="uses 20 bytes"):
        image_resize(limit=10, usage=20, image_size=40)
    with pytest.raises(DiskLimitConflict):
        check_shrink(limit=10, usage=20)
    check_shrink(limit=None, usage=20)
    check_shrink(limit=20, usage=20)


@pytest.mark.parametrize(
    ("limit", "usage", "over"),
    [
        pytest.param(None, 10**9, False, id="no-limit-never-over"),
        pytest.param(100, 100, False, id="at-the-limit-is-within"),
        pytest.param(100, 101, True, id="past-it-is-over"),
    ],
)
def test_over_message(limit: int | None, usage: int, over: bool) -> None:
    message = over_message(limit=limit, usage=usage)
    assert (message is not None) is over
    if message:
        assert message.startswith("Disk limit exceeded")
        assert str(usage) in message and str(limit) in message


@pytest.mark.parametrize(
    "volume_id",
    [
        "d6764075-c5f1-4045-9fb3-85315b85cb0f",
        "00000000-0000-4000-8000-000000000000",
        "ffffffff-ffff-4fff-bfff-ffffffffffff",
    ],
)
def test_project_ids_are_stable_nonzero_and_31_bit(volume_id: str) -> None:
    first = project_id(volume_id)
    assert first == project_id(volume_id)
    assert 0 < first < 2**31


QGROUP_SHOW = """\
Qgroupid    Referenced    Exclusive  Max referenced  Max exclusive   Path
--------    ----------    ---------  --------------  -------------   ----
0/5              16384        16384            none           none   <toplevel>
0/256          4210688      4210688         8388608           none   v
0/257                0            0            none           none   w
"""


@pytest.mark.parametrize(
    ("qgroup", "expected"),
    [
        pytest.param("0/256", (4210688, 8388608), id="limited-subvolume"),
        pytest.param("0/257", (0, None), id="unlimited-subvolume"),
        pytest.param("0/999", None, id="unknown-qgroup"),
    ],
)
def test_parse_qgroup_show(qgroup: str, expected: tuple[int, int | None] | None) -> None:
    assert parse_qgroup_show(QGROUP_SHOW, qgroup) == expected
