"""Progress and reporting: ``/watch`` backup changes (progress at most once a second),
the panel's ``backup`` notification, ``/metrics``, and a schedule's console hooks
reaching a real container's stdin in order around its backup.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.backups.conftest import Vol, backup_config, wait_backup
from tests.conftest import FAST_RECONCILER
from tests.support import engine
from tests.support.daemon import DaemonProcess, wait_for
from tests.support.lab import Lab, new_prefix
from tests.support.panel import Panel
from tests.support.ws import Watcher
from tests.test_panel import remote_env

ECHO = "echo 'Done!'; while read line; do echo \"got: $line\"; done"


@pytest.fixture
def reporting(tmp_path: Path) -> Iterator[tuple[Lab, Panel]]:
    panel = Panel().start()
    proc = DaemonProcess(
        tmp_path / "d",
        env={**FAST_RECONCILER, **remote_env(panel.url)},
        config=backup_config(tmp_path / "d", write_limit_mib_s=4),
    )
    proc.start()
    lab = Lab(proc, proc.client(), new_prefix())
    try:
        yield lab, panel
    finally:
        try:
            lab.cleanup()
        finally:
            engine.remove_prefixed(lab.prefix)
            lab.api.close()
            proc.stop(kill=True)
            panel.stop()


def test_watch_panel_and_metrics(reporting: tuple[Lab, Panel]) -> None:
    lab, panel = reporting
    volume_id = lab.volume()
    vol = Vol(id=volume_id, path=Path(lab.volume_path(volume_id)))
    (vol.path / "big.bin").write_bytes(os.urandom(12 * 1024 * 1024))  # 3 s at 4 MiB/s
    cid = lab.create("bk", volume_id=volume_id, startup_command=ECHO, start_pattern="Done")
    lab.wait_state(cid, "running")
    events: list[tuple[float, dict[str, Any]]] = []
    with Watcher(lab.daemon, f"/watch?token={lab.daemon.token}") as watch:
        backup_id = lab.api.post(f"{vol.url}/backups", json={}).json()["backup_id"]
        while True:
            event = watch.recv(timeout=20)
            if event.get("kind") != "backup":
                continue
            events.append((time.monotonic(), event))
            if event["type"] == "MODIFIED" and event["object"]["state"] != "running":
                break
        assert lab.api.delete(f"{vol.url}/backups/{backup_id}").status_code == 200
        gone = watch.until(lambda e: e.get("kind") == "backup" and e["type"] == "DELETED")
        assert gone["id"] == backup_id
    kinds = [e["type"] for _, e in events]
    assert kinds[0] == "ADDED" and set(kinds[1:]) == {"MODIFIED"}, kinds
    assert events[-1][1]["object"]["state"] == "done"
    progress = [(at, e) for at, e in events[1:-1] if e["object"]["state"] == "running"]
    assert len(progress) >= 2, kinds
    done = [e["object"]["progress"]["bytes_done"] for _, e in progress]
    assert done == sorted(done) and 0 < done[-1] <= 12 * 1024 * 1024 + 8192  # + tar framing
    for _, event in progress:
        shown = event["object"]["progress"]
        assert shown["bytes_done"] <= shown["bytes_total"], shown
    gaps = [b - a for (a, _), (b, _) in itertools.pairwise(progress)]
    assert all(gap > 0.8 for gap in gaps), gaps  # at most once a second (network jitter)

    found = wait_for(
        lambda: [r.body for r in panel.updates(cid) if r.body.get("event") == "backup"],
        what="the panel's backup notification",
    )
    assert found[0]["backup_id"] == backup_id and found[0]["state"] == "done"
    assert found[0]["operation"] == "backup" and found[0]["adapter"] == "archive"

    metrics = lab.api.get("/metrics").text
    assert (
        'lightd_backup_runs_total{adapter="archive",operation="backup",outcome="done"} 1.0'
        in metrics
    )
    assert 'lightd_backup_bytes_total{adapter="archive",operation="backup"}' in metrics
    assert "lightd_backup_duration_seconds_bucket" in metrics


def test_schedule_runs_console_hooks_in_order(reporting: tuple[Lab, Panel]) -> None:
    lab, _panel = reporting
    volume_id = lab.volume()
    vol = Vol(id=volume_id, path=Path(lab.volume_path(volume_id)))
    (vol.path / "world.dat").write_bytes(b"w" * 1000)
    schedule = {
        "every_seconds": 3600,
        "before_commands": ["save-off", "save-all"],
        "after_commands": ["save-on"],
        "command_wait_seconds": 0.5,
        "keep_last": 2,
    }
    with Watcher(lab.daemon, f"/watch?token={lab.daemon.token}") as watch:
        cid = lab.create(
            "sched", volume_id=volume_id, startup_command=ECHO, start_pattern="Done",
            backups=schedule,
        )  # fmt: skip
        lab.wait_state(cid, "running")
        added = watch.until(
            lambda e: e.get("kind") == "backup" and e["type"] == "ADDED", timeout=30
        )
    backup_id = added["id"]
    record = wait_backup(lab.api, vol, backup_id)
    assert record["state"] == "done" and record["scheduled_for"] == cid
    logs = wait_for(
        lambda: (
            (text := lab.api.get(f"/containers/{cid}/logs").text)
            and "got: save-on" in text
            and text
        ),
        what="the after command",
    )
    order = [logs.index(f"got: {c}") for c in ("save-off", "save-all", "save-on")]
    assert order == sorted(order), logs
    # One scheduled backup per period, even across checks.
    time.sleep(6)
    listed = lab.api.get(f"{vol.url}/backups").json()["backups"]
    assert [b["backup_id"] for b in listed] == [backup_id]
