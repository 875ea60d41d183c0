"""The HTTP surface of the foundation against a real daemon and a real HTTP client."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.support.daemon import VENDOR, DaemonProcess, wait_for


def test_ping_is_public(daemon: DaemonProcess) -> None:
    answer = httpx.get(f"{daemon.base_url}/api/v1/public/ping")
    assert answer.status_code == 200
    assert answer.json() == {"status": "ok", "message": "Lightd is running"}


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="no-header"),
        pytest.param({"Authorization": "Bearer lightd_wrong"}, id="wrong-token"),
        pytest.param({"Authorization": "Basic abc"}, id="wrong-scheme"),
        pytest.param({"Authorization": "Bearer"}, id="no-token"),
        pytest.param({"Authorization": "Bearer a b"}, id="two-words"),
        pytest.param({"Authorization": "lightd_" + "ab" * 16}, id="no-scheme"),
    ],
)
def test_missing_or_wrong_token_is_401(daemon: DaemonProcess, headers: dict[str, str]) -> None:
    answer = httpx.get(f"{daemon.base_url}/system", headers={"Accept": VENDOR, **headers})
    assert answer.status_code == 401
    assert answer.json() == {"error": "Missing or invalid authorization token"}


def test_unknown_route_without_token_is_401_not_404(daemon: DaemonProcess) -> None:
    answer = httpx.get(f"{daemon.base_url}/no/such/route")
    assert answer.status_code == 401


@pytest.mark.parametrize(
    "accept",
    [
        pytest.param(None, id="missing"),
        pytest.param("application/json", id="json"),
        pytest.param("application/vnd.other+json", id="other-vendor"),
        pytest.param("text/html, application/json; q=0.9", id="browser"),
        pytest.param("application/json; x=application/vnd.pkglatv1+json", id="vendor-in-param"),
    ],
)
def test_vendor_header_required(daemon: DaemonProcess, accept: str | None) -> None:
    headers = {"Authorization": f"Bearer {daemon.token}"}
    if accept is not None:
        headers["Accept"] = accept
    answer = httpx.get(f"{daemon.base_url}/system", headers=headers)
    assert answer.status_code == 403
    assert answer.json() == {"error": "Invalid vendor header"}


@pytest.mark.parametrize(
    "accept",
    [
        "application/vnd.pkglatv1+json",
        "APPLICATION/VND.PKGLATV1+JSON",
        "Application/Vnd.PkgLatV2+json",
        "text/html, application/vnd.pkglatv1+json;q=0.5",
    ],
)
def test_vendor_header_accepted_case_insensitively(daemon: DaemonProcess, accept: str) -> None:
    headers = {"Authorization": f"Bearer {daemon.token}", "Accept": accept}
    answer = httpx.get(f"{daemon.base_url}/system", headers=headers)
    assert answer.status_code == 200, answer.text


def test_unknown_route_is_json_404(api: httpx.Client) -> None:
    answer = api.get("/no/such/route")
    assert answer.status_code == 404
    assert answer.headers["content-type"].startswith("application/json")
    assert answer.json() == {"error": "Not found"}


def test_wrong_method_is_json_405(api: httpx.Client) -> None:
    answer = api.put("/auth/tokens")
    assert answer.status_code == 405
    assert answer.json() == {"error": "Method not allowed"}


def test_body_over_limit_is_json_413(api: httpx.Client) -> None:
    answer = api.post("/auth/tokens", content=b'{"ttl": "' + b"1" * (2 * 1024 * 1024) + b'"}')
    assert answer.status_code == 413
    assert answer.json() == {"error": "Request body too large"}


def test_malformed_json_is_400(api: httpx.Client) -> None:
    answer = api.post("/auth/tokens", content=b'{"ttl": ')
    assert answer.status_code == 400
    assert answer.json() == {"error": "Malformed JSON body"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({"ttl": 5}, "ttl", id="ttl-type"),
        pytest.param({"remove_on_use": "maybe"}, "remove_on_use", id="bool-type"),
        pytest.param({"bogus": 1}, "bogus", id="unknown-field"),
        pytest.param({"container": "../etc"}, "container", id="bad-container-id"),
    ],
)
def test_invalid_fields_are_named(api: httpx.Client, body: dict[str, object], field: str) -> None:
    answer = api.post("/auth/tokens", json=body)
    assert answer.status_code == 400
    assert f"'{field}'" in answer.json()["error"]


def test_non_object_body_is_400(api: httpx.Client) -> None:
    answer = api.post("/auth/tokens", json=[1, 2])
    assert answer.status_code == 400
    assert "error" in answer.json()


def test_system_reports_engine(api: httpx.Client) -> None:
    body = api.get("/system").json()
    assert body["docker"]["reachable"] is True
    assert body["docker"]["version"]


def test_tokens_never_logged(daemon: DaemonProcess, api: httpx.Client) -> None:
    minted = api.post("/auth/tokens", json={"ttl": "1m"}).json()["token"]
    time.sleep(0.6)  # request lines are flushed twice a second, not one system call each
    before = daemon.log().count("GET /system 401")
    httpx.get(f"{daemon.base_url}/system?token={minted}", headers={"Accept": VENDOR})
    httpx.get(f"{daemon.base_url}/system", headers={"Authorization": "Bearer lightd_secretvalue"})
    log = wait_for(
        lambda: (text := daemon.log()).count("GET /system 401") >= before + 2 and text,
        timeout=5,
        what="the request lines in the log",
    )
    assert minted not in log
    assert daemon.token not in log
    assert "lightd_secretvalue" not in log
