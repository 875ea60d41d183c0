"""The Docker adapter: every engine call of lightd goes through here.

docker-py is blocking, so calls run in a dedicated thread pool; transient failures
(connection errors, timeouts, 5xx, 409 "removal in progress") are retried briefly with
tenacity; every docker-py exception leaves this module translated into lightd's error
tree. This module decides nothing about desired state; it must not be imported outside
``lightd.engine`` for anything but its public types.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import docker
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from lightd.config import DockerSettings
from lightd.engine.translate import translate
from lightd.errors import EngineConflict, EngineError

log = logging.getLogger("lightd.engine")

T = TypeVar("T")

# Only used to ask the engine which API version it speaks; every later call uses that.
MIN_API_VERSION = "1.24"


@dataclass(frozen=True)
class RetryPolicy:
    """Short retries around one engine call (longer backoff belongs to the reconciler)."""

    attempts: int = 3
    initial_seconds: float = 0.2
    max_seconds: float = 2.0


@dataclass(frozen=True)
class EngineStatus:
    reachable: bool
    version: str | None
    api_version: str | None
    error: str | None


def _retryable(exc: BaseException) -> bool:
    if not isinstance(exc, EngineError):
        return False
    if exc.transient:
        return True
    return isinstance(exc, EngineConflict) and "removal" in exc.message.lower()


class DockerEngine:
    """Async facade over one docker-py client."""

    def __init__(
        self,
        settings: DockerSettings,
        *,
        retry: RetryPolicy | None = None,
        max_workers: int = 32,
    ) -> None:
        self._settings = settings
        self._retry = retry or RetryPolicy()
        self._client: docker.DockerClient | None = None
        self._client_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="engine")

    def _client_kwargs(self) -> dict[str, Any]:
        if self._settings.base_url:
            kwargs: dict[str, Any] = {"base_url": self._settings.base_url}
        else:
            kwargs = dict(docker.utils.kwargs_from_env())
        kwargs.update(timeout=self._settings.timeout_seconds, max_pool_size=64)
        return kwargs

    def _make_client(self) -> docker.DockerClient:
        with self._client_lock:
            if self._client is None:
                # Negotiate the API version on a client we own, so that a failure closes
                # its socket (docker-py's own "auto" leaks it when the engine is down).
                kwargs = self._client_kwargs()
                probe = docker.DockerClient(version=MIN_API_VERSION, **kwargs)
                try:
                    api_version = str(probe.api.version(api_version=False)["ApiVersion"])
                finally:
                    probe.close()
                client = docker.DockerClient(version=api_version, **kwargs)
                # requests would look for ~/.netrc and proxy variables on every call;
                # neither applies to the engine's API.
                client.api.trust_env = False
                self._client = client
            return self._client

    def client(self) -> docker.DockerClient:
        """The docker-py client (blocking; only for code inside ``lightd.engine``)."""
        return self._make_client()

    async def run(self, fn: Callable[..., T], *args: Any, retry: bool = True, **kwargs: Any) -> T:
        """Run a blocking docker-py call in the engine pool, translated and retried."""
        loop = asyncio.get_running_loop()

        def call() -> T:
            try:
                return fn(*args, **kwargs)
            except BaseException as exc:
                raise translate(exc) from exc

        if not retry:
            return await loop.run_in_executor(self._pool, call)
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(_retryable),
            stop=stop_after_attempt(self._retry.attempts),
            wait=wait_exponential_jitter(
                multiplier=self._retry.initial_seconds, max=self._retry.max_seconds
            ),
            reraise=True,
        ):
            with attempt:
                return await loop.run_in_executor(self._pool, call)
        raise AssertionError("unreachable")  # pragma: no cover

    async def status(self) -> EngineStatus:
        """Ping the engine and report its version; never raises."""

        def probe() -> dict[str, Any]:
            client = self._make_client()
            client.ping()
            return dict(client.version())

        try:
            info = await self.run(probe, retry=False)
        except EngineError as exc:
            return EngineStatus(reachable=False, version=None, api_version=None, error=exc.message)
        return EngineStatus(
            reachable=True,
            version=str(info.get("Version")),
            api_version=str(info.get("ApiVersion")),
            error=None,
        )

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._client_lock:
            if self._client is not None:
                self._client.close()
                self._client = None
