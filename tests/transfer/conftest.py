"""The two-daemon fixture of the transfer tests (see :mod:`tests.transfer.helpers`).

``node_env`` is the extra environment of each daemon (``{"source": {...}, "target":
{...}}``); a test changes it with ``@pytest.mark.parametrize("node_env", [...])``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import FAST_RECONCILER
from tests.support import engine
from tests.support.daemon import DaemonProcess
from tests.support.lab import Lab, new_prefix
from tests.transfer.helpers import Nodes


@pytest.fixture
def node_env() -> dict[str, dict[str, str]]:
    return {}


@pytest.fixture
def nodes(tmp_path: Path, node_env: dict[str, Any]) -> Iterator[Nodes]:
    source = DaemonProcess(
        tmp_path / "source",
        env={**FAST_RECONCILER, **node_env.get("source", {})},
        token="lightd_" + "a1" * 16,
    )
    target = DaemonProcess(
        tmp_path / "target",
        env={**FAST_RECONCILER, **node_env.get("target", {})},
        token="lightd_" + "b2" * 16,
    )
    source.spawn()
    try:
        target.spawn()
        source.wait_started()
        target.wait_started()
        prefix = new_prefix()
        with source.client() as src_api, target.client() as dst_api:
            pair = Nodes(
                source,
                target,
                Lab(source, src_api, prefix),
                Lab(target, dst_api, prefix),
                src_api,
                dst_api,
            )
            try:
                yield pair
            finally:
                try:
                    pair.src.cleanup()
                    for item in pair.dst_api.get("/containers").json()["containers"]:
                        pair.dst_api.delete(f"/containers/{item['internal_id']}")
                    pair.dst.cleanup()
                finally:
                    # Whatever a killed or failed daemon left behind goes even so.
                    engine.remove_prefixed(prefix)
                    # A test that restarted a daemon gave the pair a new client.
                    pair.src_api.close()
                    pair.dst_api.close()
    finally:
        target.stop(kill=True)
        source.stop(kill=True)
