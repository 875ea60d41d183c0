"""Property-based fuzzing of the whole REST API from its OpenAPI description.

schemathesis runs as its CLI does with ``-c all`` (its engine, from Python): the
examples, coverage and fuzzing phases generate requests for every operation of
``/openapi.json`` (valid and invalid data, boundary values, missing required
parameters, methods the description does not list) against a real daemon with a real
engine, and every check applies: no 5xx, status codes, content types, headers and
bodies as documented, schema-valid requests accepted and invalid ones refused, 405
with ``Allow``. Bounded by example count so it fits CI; the seed is fixed
(``LIGHTD_FUZZ_SEED`` picks another, ``LIGHTD_FUZZ_EXAMPLES`` the bound).

A schema-valid request may still be refused with 400 where the refusal depends on
state or on a rule JSON Schema cannot say (listed in :data:`STATE_DEPENDENT_400`, each
with its reason); every other check stays strict for those operations too.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import Status, events, from_schema

from tests.conftest import FAST_RECONCILER
from tests.support.daemon import VENDOR, DaemonProcess
from tests.support.lab import new_prefix

EXAMPLES = int(os.environ.get("LIGHTD_FUZZ_EXAMPLES", "15"))
SEED = int(os.environ.get("LIGHTD_FUZZ_SEED", "20260128"))
# Re-reads the environment and configuration: there is no input to fuzz, and a fuzzed
# call would only reload the same settings.
SKIPPED = ("/remote/config/reload", "/volumes/{ref}/pull", "/containers/{internal_id}/transfer")
# (Pulls and transfers open outbound connections to fuzzed URLs; tests contact loopback
# only, so those routes are exercised by tests/volumes/test_pull.py and tests/transfer/
# against their own servers and daemons.)
_FILES = "volume paths are limited in bytes and may not climb above the root with '..'"
_STATE = "the answer depends on what is on disk"
STATE_DEPENDENT_400: dict[str, str] = {
    "POST /auth/tokens": "a TTL's units add up to at most 30 days",
    "POST /transfers/tokens": "a TTL's units add up to at most 24 hours",
    "POST /containers": "ports must be in the pool, mounts under the allowed folders",
    "POST /containers/{internal_id}/rebind-network": "ports must be in the pool",
    "POST /network/ports": "the contract's 400 'Port already exists in pool'",
    "POST /network/ports/bulk": "a range starts no higher than it ends, and is bounded",
    "POST /templates": "an egg's shape (its version, nested JSON texts, rules) is the "
    "importer's to check; the body is any object",
    **{
        f"{method} /volumes/{{ref}}{path}": f"{_FILES}; {_STATE}"
        for method, path in [
            ("GET", "/files"),
            ("DELETE", "/files"),
            ("POST", "/files"),
            ("GET", "/files/content"),
            ("PUT", "/files/content"),
            ("POST", "/folders"),
            ("POST", "/copy"),
            ("POST", "/move"),
            ("POST", "/chmod"),
            ("POST", "/compress"),
            ("POST", "/decompress"),
            ("GET", "/search"),
        ]
    },
}
ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx"]


@pytest.fixture(scope="module")
def fuzz_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    # FAST_RECONCILER keeps the soft disk backend: fuzzed limits never make images.
    proc = DaemonProcess(tmp_path_factory.mktemp("fuzz-daemon"), env=dict(FAST_RECONCILER))
    proc.start()
    try:
        yield proc
    finally:
        with proc.client() as api:
            for item in api.get("/containers").json()["containers"]:
                api.delete(f"/containers/{item['internal_id']}")
        proc.stop()


def _config(daemon: DaemonProcess) -> SchemathesisConfig:
    return SchemathesisConfig.from_dict(
        {
            "seed": SEED,
            "base-url": daemon.base_url,
            "headers": {"Authorization": f"Bearer {daemon.token}", "Accept": VENDOR},
            "request-timeout": 30,
            # One worker: hypothesis describes strategies with `ast`, whose recursion
            # guard CPython 3.11 does not keep per thread ("AST constructor recursion
            # depth mismatch" from two workers at once).
            "workers": 1,
            "checks": {"enabled": True},  # every check, as `-c all`
            "generation": {"max-examples": EXAMPLES, "database": "none"},
            "phases": {
                "examples": {"enabled": True},
                "coverage": {"enabled": True},
                "fuzzing": {"enabled": True},
                "stateful": {"enabled": False},
            },
            "suppress-health-check": ["all"],
            "operations": [
                {
                    "include-name": label,
                    "checks": {
                        "positive_data_acceptance": {"expected-statuses": [*ACCEPTED, "400"]}
                    },
                }
                for label in STATE_DEPENDENT_400
            ],
        }
    )


@pytest.fixture(scope="module")
def api_schema(fuzz_daemon: DaemonProcess) -> Any:
    with fuzz_daemon.client() as api:
        document = api.get("/openapi.json").json()
        # One real volume so that file routes reach deep code, not only 404s.
        volume = api.post("/volumes").json()["volume_id"]
        api.post(f"/volumes/{volume}/files", json={"path": "a/b.txt", "content": "x"})
    assert new_prefix()
    schema = schemathesis.openapi.from_dict(document, config=_config(fuzz_daemon))
    for path in SKIPPED:
        schema = schema.exclude(path=path)
    return schema


def _describe(event: events.ScenarioFinished) -> list[str]:
    found = []
    for checks in event.recorder.checks.values():
        for check in checks:
            if check.status == Status.FAILURE and check.failure_info is not None:
                failure = check.failure_info.failure
                found.append(
                    f"{event.label} [{event.phase.value}] {check.name}: {failure.title}\n"
                    f"{failure.message}\n{check.failure_info.code_sample}"
                )
    return found or [f"{event.label} [{event.phase.value}]: {event.status.value}"]


def test_every_operation_answers_as_documented(api_schema: Any) -> None:
    failures: list[str] = []
    tested: set[str] = set()
    for event in from_schema(api_schema).execute():
        if isinstance(event, events.ScenarioFinished) and event.label:
            tested.add(event.label)
            if event.status in (Status.FAILURE, Status.ERROR):
                failures.extend(_describe(event))
        elif isinstance(event, events.NonFatalError | events.FatalError):
            failures.append(f"{getattr(event, 'label', '')}: {event.info.format()}")
    assert len(tested) >= 40, sorted(tested)
    assert set(STATE_DEPENDENT_400) <= tested, set(STATE_DEPENDENT_400) - tested
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
