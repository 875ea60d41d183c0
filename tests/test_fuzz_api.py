"""Property-based fuzzing of the whole REST API from its OpenAPI description.

schemathesis generates valid and invalid requests for every operation (path parameters
and file paths included) against a real daemon with a real engine. Every answer must be
documented (status code and body) and none may be a 5xx or a traceback. Bounded by
example count so it fits CI.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import positive_data_acceptance

from tests.conftest import FAST_RECONCILER
from tests.support.daemon import VENDOR, DaemonProcess
from tests.support.lab import new_prefix

EXAMPLES = 40


@pytest.fixture(scope="module")
def fuzz_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    proc = DaemonProcess(tmp_path_factory.mktemp("fuzz-daemon"), env=dict(FAST_RECONCILER))
    proc.start()
    try:
        yield proc
    finally:
        with proc.client() as api:
            for item in api.get("/containers").json()["containers"]:
                api.delete(f"/containers/{item['internal_id']}")
        proc.stop()


@pytest.fixture(scope="module")
def api_schema(fuzz_daemon: DaemonProcess) -> Any:
    with fuzz_daemon.client() as api:
        document = api.get("/openapi.json").json()
        # One real volume so that file routes reach deep code, not only 404s.
        volume = api.post("/volumes").json()["volume_id"]
        api.post(f"/volumes/{volume}/files", json={"path": "a/b.txt", "content": "x"})
    assert new_prefix()
    return schemathesis.openapi.from_dict(document)


def check_operation(operation: Any, daemon: DaemonProcess) -> None:
    headers = {"Authorization": f"Bearer {daemon.token}", "Accept": VENDOR}

    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def run(case: Any) -> None:
        response = case.call(base_url=daemon.base_url, headers=headers, timeout=30)
        where = f"{case.method} {case.formatted_path}"
        assert response.status_code < 500, f"{where}: {response.status_code} {response.text}"
        assert "Traceback" not in response.text
        # Positive-data acceptance is not checked: the description cannot say that a
        # path string must be an IP address or an existing file, so lightd rightly
        # answers 400/404 to some schema-valid requests.
        case.validate_response(response, excluded_checks=[positive_data_acceptance])

    run()


def test_every_operation_answers_as_documented(api_schema: Any, fuzz_daemon: DaemonProcess) -> None:
    failures = []
    seen = 0
    for result in api_schema.get_all_operations():
        operation = result.ok()
        if operation.path == "/remote/config/reload":
            continue  # re-reads the environment: there is no input to fuzz
        seen += 1
        try:
            check_operation(operation, fuzz_daemon)
        except (Exception, BaseExceptionGroup) as exc:  # collect all, then report
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}")
    assert seen >= 30
    assert failures == [], "\n\n".join(failures)


def test_fuzz_daemon_logged_no_traceback(fuzz_daemon: DaemonProcess, tmp_path: Path) -> None:
    httpx.get(f"{fuzz_daemon.base_url}/api/v1/public/ping")
    assert "Traceback" not in fuzz_daemon.log()


# httpx normalises a ".." segment away (even percent-encoded), so none is listed alone.
HOSTILE = [
    "%2e%2e%2f",
    "..%2f..%2fetc",
    "%00",
    "a%00b",
    "x" * 300,
    "%ff%fe",
    "con",
    "\u202e",
    "%E2%80%AE",
    "~root",
    "$(id)",
    "`id`",
    "' OR 1=1 --",
    "%0d%0aX: y",
]
TEMPLATES = [
    ("GET", "/containers/{}"),
    ("POST", "/containers/{}/start"),
    ("DELETE", "/containers/{}"),
    ("GET", "/containers/{}/logs"),
    ("GET", "/volumes/{}"),
    ("GET", "/volumes/{}/files"),
    ("DELETE", "/volumes/{}"),
    ("GET", "/network/ports/{}/25565"),
    ("GET", "/network/ports/127.0.0.1/{}"),
    ("DELETE", "/auth/tokens/{}"),
]


@pytest.mark.parametrize(("method", "template"), TEMPLATES)
def test_hostile_path_parameters(fuzz_daemon: DaemonProcess, method: str, template: str) -> None:
    with fuzz_daemon.client() as api:
        for value in HOSTILE:
            answer = api.request(method, template.format(value))
            assert 400 <= answer.status_code < 500, (template, value, answer.text)
            assert set(answer.json()) == {"error"}, (template, value, answer.text)


@pytest.mark.parametrize(
    "path", ["../../etc/passwd", "/../../etc", "a/../../b", "a\x00b", "x/" + "y" * 300, "a" * 5000]
)
def test_hostile_file_paths(fuzz_daemon: DaemonProcess, path: str) -> None:
    with fuzz_daemon.client() as api:
        volume = api.post("/volumes").json()["volume_id"]
        answers = [
            api.get(f"/volumes/{volume}/files", params={"path": path}),
            api.get(f"/volumes/{volume}/files/content", params={"path": path}),
            api.post(f"/volumes/{volume}/files", json={"path": path, "content": "x"}),
            api.post(f"/volumes/{volume}/folders", json={"path": path}),
            api.post(f"/volumes/{volume}/copy", json={"source": "a", "destination": path}),
            api.post(
                f"/volumes/{volume}/decompress", json={"archive_path": path, "destination": "x"}
            ),
        ]
        for answer in answers:
            assert 400 <= answer.status_code < 500, (path, answer.request.url, answer.text)
            assert "error" in answer.json()
