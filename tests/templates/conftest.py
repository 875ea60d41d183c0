"""A daemon whose ``templates.image_map`` maps the eggs' images to the local busybox image."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import FAST_RECONCILER
from tests.support.daemon import DaemonProcess
from tests.support.engine import TEST_IMAGE
from tests.support.lab import Lab, new_prefix

EGGS = Path(__file__).parent / "eggs"


def egg_images() -> dict[str, str]:
    """Every image (main and installer) the test eggs name, mapped to the local image."""
    found: dict[str, str] = {}
    for path in EGGS.glob("*.json"):
        egg = orjson.loads(path.read_bytes())
        images = egg.get("docker_images") or {egg.get("image"): egg.get("image")}
        for image in images.values():
            found[image] = TEST_IMAGE
        installer = egg.get("scripts", {}).get("installation", {}).get("container")
        if installer:
            found[installer] = TEST_IMAGE
    return found


def read_egg(name: str) -> dict[str, Any]:
    return dict(orjson.loads((EGGS / name).read_bytes()))


@pytest.fixture(scope="module")
def tdaemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    proc = DaemonProcess(
        tmp_path_factory.mktemp("templates-daemon"),
        env=dict(FAST_RECONCILER),
        config={"templates": {"image_map": egg_images(), "timezone": "Europe/Berlin"}},
    )
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def tapi(tdaemon: DaemonProcess) -> Iterator[httpx.Client]:
    with tdaemon.client() as client:
        yield client


@pytest.fixture
def tlab(tdaemon: DaemonProcess, tapi: httpx.Client) -> Iterator[Lab]:
    corner = Lab(tdaemon, tapi, new_prefix())
    try:
        yield corner
    finally:
        corner.cleanup()
