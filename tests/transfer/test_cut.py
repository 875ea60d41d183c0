"""A transfer whose connection is cut mid-stream by a proxy the test controls.

The source stays authoritative (the server runs again, its volume untouched), the
target keeps nothing, a retry through the same proxy (no longer cutting) succeeds, and
both transfer records, the failed and the completed one, survive a restart of both
daemons.
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.support.daemon import wait_for
from tests.transfer.helpers import (
    Nodes,
    running_container,
    start_transfer,
    target_clean,
    tree,
    wait_ended,
)
from tests.transfer.proxy import Proxy

MIB = 1024 * 1024


def test_a_cut_connection_fails_cleanly_and_a_retry_succeeds(nodes: Nodes) -> None:
    internal_id, volume_id, volume, port = running_container(nodes)
    for index in range(3):
        (volume / f"big-{index}.bin").write_bytes(os.urandom(16 * MIB))
    before = tree(volume)
    assert nodes.dst_api.post("/network/ports", json=port).status_code == 200
    nodes.dst.ports.append(port["port"])
    with Proxy(nodes.target.port) as proxy:
        proxy.cut_after(20 * MIB)
        url = f"http://127.0.0.1:{proxy.port}"
        failed_id = start_transfer(nodes, internal_id, target_url=url)
        failed = wait_ended(nodes.src_api, failed_id, timeout=90)
        assert proxy.cuts == 1, failed["error"]
        assert failed["state"] == "failed", failed
        assert failed["error"].startswith("Transfer failed: "), failed
        assert failed["bytes_done"] > 10 * MIB  # it was mid-stream
        nodes.src.wait_state(internal_id, "running", timeout=60)
        assert nodes.src.get(internal_id)["power"] == "running"
        assert tree(volume) == before
        target_clean(nodes, internal_id, volume_id)
        on_target = wait_ended(nodes.dst_api, failed_id)
        assert on_target["state"] == "failed" and on_target["role"] == "target", on_target
        proxy.cut_after(None)
        done_id = start_transfer(nodes, internal_id, target_url=url)
        done = wait_ended(nodes.src_api, done_id, timeout=120)
        assert done["state"] == "completed", done
    assert tree(Path(nodes.dst.volume_path(volume_id))) == before
    assert nodes.dst.get(internal_id)["state"] == "running"
    assert nodes.src_api.get(f"/containers/{internal_id}").status_code == 404
    wait_for(lambda: not volume.exists(), timeout=30, what="the source volume gone")
    # The records survive a restart of both nodes.
    nodes.source.restart()
    nodes.target.restart()
    nodes.reconnect("source")
    nodes.reconnect("target")
    for api in (nodes.src_api, nodes.dst_api):
        assert api.get(f"/transfers/{failed_id}").json()["state"] == "failed"
        assert api.get(f"/transfers/{done_id}").json()["state"] == "completed"
