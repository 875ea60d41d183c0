"""Long-lived engine streams: a container's output and the engine's event feed.

Blocking iterators for threads of their own (not the engine pool). Each returns an
object with ``close()`` so that its reader can be stopped from another thread. Errors
are translated like every engine call. Decides nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import docker

from lightd.engine.translate import translate
from lightd.reconcile.model import LABEL_MANAGED


class Stream(Protocol):
    def __iter__(self) -> Iterator[Any]: ...
    def close(self) -> None: ...


def follow_output(client: docker.DockerClient, container_id: str, *, since: float | None) -> Stream:
    """stdout and stderr of a container from ``since`` on, following until it stops."""
    try:
        kwargs: dict[str, Any] = {"stdout": True, "stderr": True, "stream": True, "follow": True}
        if since is not None:
            kwargs["since"] = int(since)
        stream: Stream = client.api.logs(container_id, **kwargs)
        return stream
    except Exception as exc:
        raise translate(exc) from exc


def events(client: docker.DockerClient) -> Stream:
    """Container events of lightd's containers, decoded."""
    try:
        stream: Stream = client.api.events(
            decode=True, filters={"type": "container", "label": f"{LABEL_MANAGED}=true"}
        )
        return stream
    except Exception as exc:
        raise translate(exc) from exc


def attach_stdin(client: docker.DockerClient, container_id: str) -> Any:
    """A socket writing to the container's stdin."""
    try:
        return client.api.attach_socket(container_id, params={"stdin": 1, "stream": 1})
    except Exception as exc:
        raise translate(exc) from exc
