"""The HTTP surface of the foundation against a real daemon and a real HTTP client."""

from __future__ import annotations

import time
from typing import Any

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


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        pytest.param("PUT", "/auth/tokens", {"OPTIONS", "POST"}, id="a post-only route names POST"),
        pytest.param(
            "PATCH", "/volumes", {"GET", "HEAD", "OPTIONS", "POST"}, id="a listing names its verbs"
        ),
        pytest.param(
            "TRACE",
            "/network/ports/127.0.0.1/25565",
            {"GET", "HEAD", "OPTIONS", "DELETE"},
            id="an unlisted verb on a resource names the resource's verbs",
        ),
        pytest.param(
            "POST", "/api/v1/public/ping", {"GET", "HEAD", "OPTIONS"}, id="a public route too"
        ),
    ],
)
def test_wrong_method_is_json_405_with_allow(
    api: httpx.Client, method: str, path: str, allowed: set[str]
) -> None:
    answer = api.request(method, path)
    assert answer.status_code == 405
    assert answer.json() == {"error": "Method not allowed"}
    assert {verb.strip() for verb in answer.headers["allow"].split(",")} == allowed


def _parameter(document: dict[str, Any], path: str, method: str, name: str) -> dict[str, Any]:
    for parameter in document["paths"][path][method]["parameters"]:
        if parameter["name"] == name:
            return dict(parameter)
    raise AssertionError(f"{method} {path} has no parameter {name}")


@pytest.mark.parametrize(
    ("path", "method", "name", "expected"),
    [
        pytest.param(
            "/volumes/{ref}",
            "delete",
            "ref",
            {"pattern": "^[0-9a-fA-F][0-9a-fA-F-]{7,35}$"},
            id="the volume reference has the pattern the route checks",
        ),
        pytest.param(
            "/network/ports/{ip}/{port}",
            "delete",
            "port",
            {"type": "integer", "minimum": 1, "maximum": 65535},
            id="a port in a path is a bounded integer",
        ),
        pytest.param(
            "/network/ports/{ip}/{port}",
            "get",
            "ip",
            {"anyOf": [{"format": "ipv4"}, {"format": "ipv6"}]},
            id="an ip in a path is an address",
        ),
        pytest.param(
            "/containers/{internal_id}",
            "get",
            "internal_id",
            {"pattern": "^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}$"},
            id="a container id has its pattern",
        ),
        pytest.param(
            "/network/ports/random",
            "get",
            "ip",
            {"anyOf": [{"format": "ipv4"}, {"format": "ipv6"}]},
            id="an ip in a query is an address",
        ),
    ],
)
def test_openapi_describes_what_routes_check(
    api: httpx.Client, path: str, method: str, name: str, expected: dict[str, Any]
) -> None:
    schema = _parameter(api.get("/openapi.json").json(), path, method, name)["schema"]
    for branch in schema.get("anyOf", []):
        if branch.get("type") == "string":  # an optional parameter: its text branch
            schema = branch
    assert {key: schema.get(key) for key in expected} == expected


@pytest.mark.parametrize(
    ("path", "method"),
    [
        pytest.param("/volumes/{ref}/files", "delete", id="deleting needs a path"),
        pytest.param("/volumes/{ref}/files/content", "get", id="reading needs a path"),
        pytest.param("/volumes/{ref}/files/content", "put", id="uploading needs a path"),
    ],
)
def test_openapi_marks_required_query_path(api: httpx.Client, path: str, method: str) -> None:
    parameter = _parameter(api.get("/openapi.json").json(), path, method, "path")
    assert parameter["required"] is True
    assert parameter["schema"]["type"] == "string"
    assert api.request(method.upper(), path.replace("{ref}", "0" * 8)).status_code in (400, 404)


def test_openapi_marks_bodies_with_required_fields_required(api: httpx.Client) -> None:
    document = api.get("/openapi.json").json()
    command = document["paths"]["/containers/{internal_id}/command"]["post"]["requestBody"]
    assert command["required"] is True
    tokens = document["paths"]["/auth/tokens"]["post"]["requestBody"]
    assert not tokens.get("required")  # every field has a default: {} is a valid body


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


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({"remove_on_use": 0}, "remove_on_use", id="a number is not a boolean"),
        pytest.param({"remove_on_use": "true"}, "remove_on_use", id="a text is not a boolean"),
        pytest.param({"ttl": 60}, "ttl", id="a number is not a duration text"),
    ],
)
def test_body_types_are_strict(api: httpx.Client, body: dict[str, object], field: str) -> None:
    answer = api.post("/auth/tokens", json=body)
    assert answer.status_code == 400
    assert f"'{field}'" in answer.json()["error"]


def test_a_number_without_fraction_is_an_integer(api: httpx.Client) -> None:
    answer = api.post("/network/ports", json={"ip": "127.0.0.1", "port": 65432.0})
    assert answer.status_code == 200, answer.text
    assert answer.json()["port"] == 65432
    assert api.delete("/network/ports/127.0.0.1/65432").status_code == 200
    refused = api.post("/network/ports", json={"ip": "127.0.0.1", "port": 65432.5})
    assert refused.status_code == 400


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"[1, 2]", id="a list"),
        pytest.param(b'"AAA"', id="a text"),
        pytest.param(b"5", id="a number"),
        pytest.param(b"5.0", id="a number without fraction"),
        pytest.param(b"true", id="a boolean"),
        pytest.param(b"null", id="null"),
    ],
)
def test_non_object_body_is_400(daemon: DaemonProcess, api: httpx.Client, body: bytes) -> None:
    before = len(daemon.log())
    for path in ("/auth/tokens", "/network/ports", "/volumes/00000000/files"):
        answer = api.post(path, content=body, headers={"Content-Type": "application/json"})
        assert answer.status_code == 400, (path, answer.text)
        assert set(answer.json()) == {"error"}
    time.sleep(0.6)  # log lines are flushed twice a second
    assert "Traceback" not in daemon.log()[before:]


def test_system_reports_engine(api: httpx.Client) -> None:
    body = api.get("/system").json()
    assert body["docker"]["reachable"] is True
    assert body["docker"]["version"]
    # What the console offers: archive always, s3 only once configured (it is not here),
    # restic when its binary answered.
    backups = body["backups"]
    assert backups["default_adapter"] == "archive"
    assert backups["adapters"][0] == "archive" and "s3" not in backups["adapters"]
    assert ("restic" in backups["adapters"]) == (body["restic"] is not None)


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
