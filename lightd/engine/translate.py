"""Translation of docker-py and requests exceptions into lightd's error tree.

Pure mapping only: it must not call the engine or retry.
"""

from __future__ import annotations

import docker.errors
import requests.exceptions

from lightd.errors import (
    EngineConflict,
    EngineError,
    EngineNotFound,
    EngineRequestError,
    EngineUnavailable,
    ImageNotFound,
)


def _explanation(exc: docker.errors.APIError) -> str:
    text = exc.explanation if isinstance(exc.explanation, str) else None
    return text or str(exc)


def translate(exc: BaseException) -> EngineError:
    """The lightd error for a foreign exception raised by a docker-py call."""
    if isinstance(exc, EngineError):
        return exc
    if isinstance(exc, docker.errors.ImageNotFound):
        return ImageNotFound()
    if isinstance(exc, docker.errors.NotFound):
        return EngineNotFound(_explanation(exc))
    if isinstance(exc, docker.errors.APIError):
        status = exc.status_code or 0
        text = _explanation(exc)
        if status == 409 or "port is already allocated" in text or "address already in use" in text:
            return EngineConflict(text)
        if status >= 500 or status == 0:
            return EngineUnavailable(f"Docker engine error: {_explanation(exc)}")
        return EngineRequestError(_explanation(exc))
    if isinstance(exc, requests.exceptions.Timeout | TimeoutError):
        return EngineUnavailable("Docker engine did not answer in time")
    if isinstance(exc, requests.exceptions.ConnectionError | ConnectionError | FileNotFoundError):
        return EngineUnavailable("Docker engine unreachable")
    if isinstance(exc, docker.errors.DockerException):
        # docker-py raises a bare DockerException when it cannot reach the engine at all.
        return EngineUnavailable(f"Docker engine unreachable: {exc}")
    if isinstance(exc, requests.exceptions.RequestException):
        return EngineUnavailable(f"Docker engine unreachable: {exc}")
    return EngineError(f"Docker engine error: {exc}")
