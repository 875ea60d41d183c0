"""Health, readiness, metrics, the OpenAPI description and systemd notification."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest
from quart import Quart

from lightd.api.app import create_app
from lightd.config import Settings, StorageSettings
from lightd.daemon import Daemon
from lightd.sdnotify import notify
from tests.support.daemon import DaemonProcess, wait_for


def test_health_is_public_and_cheap(daemon: DaemonProcess) -> None:
    answer = httpx.get(f"{daemon.base_url}/healthz")
    assert answer.status_code == 200
    assert answer.json() == {"status": "ok"}


def test_ready_after_first_reconcile(daemon: DaemonProcess) -> None:
    answer = wait_for(
        lambda: (r := httpx.get(f"{daemon.base_url}/readyz")).status_code == 200 and r,
        what="ready",
    )
    assert answer.json() == {"status": "ready", "reconciled": True, "engine": True}


def test_not_ready_without_engine(tmp_path: Path) -> None:
    proc = DaemonProcess(
        tmp_path / "d", env={"LIGHTD_DOCKER__BASE_URL": f"unix://{tmp_path}/none.sock"}
    )
    proc.start()
    try:
        answer = httpx.get(f"{proc.base_url}/readyz")
        assert answer.status_code == 503
        assert answer.json()["engine"] is False
        assert httpx.get(f"{proc.base_url}/healthz").status_code == 200
    finally:
        proc.stop()


def test_metrics_need_token_and_speak_prometheus(daemon: DaemonProcess, api: httpx.Client) -> None:
    assert httpx.get(f"{daemon.base_url}/metrics").status_code == 401
    api.get("/system")
    answer = httpx.get(
        f"{daemon.base_url}/metrics", headers={"Authorization": f"Bearer {daemon.token}"}
    )
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    text = answer.text
    for name in (
        'lightd_http_requests_total{method="GET",route="/system",status="200"}',
        "lightd_http_request_duration_seconds_bucket",
        "lightd_containers",
        "lightd_pool_ports ",
        "lightd_pool_ports_in_use",
        "lightd_workqueue_depth",
        "lightd_workqueue_retries",
        'lightd_websocket_connections{kind="container"}',
        "lightd_engine_up 1.0",
        "lightd_reconcile_runs_total",
        "# TYPE lightd_reconcile_duration_seconds histogram",
        "# TYPE lightd_reconcile_actions_total counter",
        "lightd_panel_outbox_depth",
        "lightd_panel_delivery_failures",
    ):
        assert name in text, name


def test_openapi_describes_every_route(daemon: DaemonProcess, tmp_path: Path) -> None:
    assert httpx.get(f"{daemon.base_url}/openapi.json").status_code == 401
    spec = httpx.get(
        f"{daemon.base_url}/openapi.json", headers={"Authorization": f"Bearer {daemon.token}"}
    ).json()
    assert spec["openapi"].startswith("3.1")
    described = {(path, method.upper()) for path, item in spec["paths"].items() for method in item}
    app: Quart = create_app(
        Daemon(
            Settings(storage=StorageSettings(data_dir=tmp_path / "v", desired_dir=tmp_path / "d")),
            config_path=None,
        ).services
    )
    missing = []
    for rule in app.url_map.iter_rules():
        if rule.websocket or rule.endpoint in {"static", "openapi", "swagger_ui"}:
            continue
        if rule.endpoint.startswith("ui."):  # the web console's static files are not API
            continue
        path = rule.rule.replace("<", "{").replace(">", "}")
        path = "".join(
            part.split(":")[-1] if part.startswith("{") else part
            for part in path.replace("{", "\0{").split("\0")
        )
        for method in rule.methods or ():
            if method in {"HEAD", "OPTIONS"}:
                continue
            if (path, method) not in described:
                missing.append(f"{method} {path}")
    assert missing == []


def test_docs_page(daemon: DaemonProcess) -> None:
    answer = httpx.get(
        f"{daemon.base_url}/docs", headers={"Authorization": f"Bearer {daemon.token}"}
    )
    assert answer.status_code == 200
    assert "openapi.json" in answer.text


def test_sd_notify_sends_ready(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    address = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(address)
        monkeypatch.setenv("NOTIFY_SOCKET", address)
        assert notify("READY=1") is True
        assert server.recv(100) == b"READY=1"
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert notify("READY=1") is False


def test_daemon_notifies_systemd(tmp_path: Path) -> None:
    address = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(address)
        server.settimeout(30)
        proc = DaemonProcess(tmp_path / "d", env={"NOTIFY_SOCKET": address})
        proc.start()
        try:
            assert server.recv(100).startswith(b"READY=1")
        finally:
            proc.stop()
        assert server.recv(100) == b"STOPPING=1"
