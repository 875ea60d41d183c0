"""Foreign exceptions of docker-py and requests become lightd's own: one row per case."""

from __future__ import annotations

import docker.errors
import pytest
import requests
import requests.exceptions

from lightd.engine.translate import translate
from lightd.errors import (
    EngineConflict,
    EngineError,
    EngineNotFound,
    EngineRequestError,
    EngineUnavailable,
    ImageNotFound,
)


def api_error(status: int, explanation: str = "engine says no") -> docker.errors.APIError:
    response = requests.Response()
    response.status_code = status
    return docker.errors.APIError("boom", response=response, explanation=explanation)


CASES = [
    pytest.param(
        docker.errors.ImageNotFound("no such image"),
        ImageNotFound,
        "Failed to create Docker container: image not found",
        id="a-missing-image-says-so-in-the-seed-wording",
    ),
    pytest.param(
        docker.errors.NotFound("gone", explanation="No such container: x"),
        EngineNotFound,
        "No such container: x",
        id="a-missing-object-keeps-the-engine-explanation",
    ),
    pytest.param(
        api_error(409, "name in use"),
        EngineConflict,
        "name in use",
        id="http-409-is-a-conflict",
    ),
    pytest.param(
        api_error(500, "driver failed: port is already allocated"),
        EngineConflict,
        "driver failed: port is already allocated",
        id="a-taken-port-is-a-conflict-even-as-500",
    ),
    pytest.param(
        api_error(500, "address already in use"),
        EngineConflict,
        "address already in use",
        id="an-address-in-use-is-a-conflict",
    ),
    pytest.param(
        api_error(503, "overloaded"),
        EngineUnavailable,
        "Docker engine error: overloaded",
        id="a-5xx-is-transient",
    ),
    pytest.param(
        api_error(400, "bad parameter"),
        EngineRequestError,
        "bad parameter",
        id="a-4xx-is-a-refused-request",
    ),
    pytest.param(
        requests.exceptions.ReadTimeout("slow"),
        EngineUnavailable,
        "Docker engine did not answer in time",
        id="a-timeout-is-transient",
    ),
    pytest.param(
        TimeoutError(),
        EngineUnavailable,
        "Docker engine did not answer in time",
        id="a-builtin-timeout-is-transient",
    ),
    pytest.param(
        requests.exceptions.ConnectionError("refused"),
        EngineUnavailable,
        "Docker engine unreachable",
        id="a-refused-connection-is-unreachable",
    ),
    pytest.param(
        FileNotFoundError("/var/run/docker.sock"),
        EngineUnavailable,
        "Docker engine unreachable",
        id="a-missing-socket-is-unreachable",
    ),
    pytest.param(
        docker.errors.DockerException("Error while fetching server API version"),
        EngineUnavailable,
        "Docker engine unreachable: Error while fetching server API version",
        id="a-bare-docker-exception-is-unreachable",
    ),
    pytest.param(
        requests.exceptions.InvalidURL("bad url"),
        EngineUnavailable,
        "Docker engine unreachable: bad url",
        id="any-other-requests-failure-is-unreachable",
    ),
    pytest.param(
        ValueError("odd"),
        EngineError,
        "Docker engine error: odd",
        id="anything-else-is-a-plain-engine-error",
    ),
]


@pytest.mark.parametrize(("foreign", "expected", "message"), CASES)
def test_translation(foreign: BaseException, expected: type[EngineError], message: str) -> None:
    translated = translate(foreign)
    assert type(translated) is expected
    assert translated.message == message


def test_lightd_errors_pass_through_unchanged() -> None:
    original = EngineConflict("already ours")
    assert translate(original) is original


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        pytest.param(EngineUnavailable(), True, id="unavailable-is-retried"),
        pytest.param(EngineConflict(), False, id="conflict-is-not-retried"),
        pytest.param(EngineNotFound(), False, id="not-found-is-not-retried"),
    ],
)
def test_transient_flag(error: EngineError, transient: bool) -> None:
    assert error.transient is transient
