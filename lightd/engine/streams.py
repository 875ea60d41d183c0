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
from lightd.reconcile.model import LABEL_MANAGED, LABEL_NODE


class Stream(Protocol):
    def __iter__(self) -> Iterator[Any]: ...
    def close(self) -> None: ...


def follow_output(client: docker.DockerClient, container_id: str, *, since: float | None) -> Stream:
    """stdout and stderr of a container from ``since`` on, following until it stops.

    Every line starts with the engine's timestamp and a space (so a reader can resume).
    """
    try:
        kwargs: dict[str, Any] = {
            "stdout": True,
            "stderr": True,
            "stream": True,
            "follow": True,
            "timestamps": True,
        }
        if since is not None:
            kwargs["since"] = int(since)
        stream: Stream = client.api.logs(container_id, **kwargs)
        return stream
    except Exception as exc:
        raise translate(exc) from exc


def events(client: docker.DockerClient, node_id: str) -> Stream:
    """Container events of this node's containers, decoded."""
    try:
        stream: Stream = client.api.events(
            decode=True,
            filters={
                "type": "container",
                "label": [f"{LABEL_MANAGED}=true", f"{LABEL_NODE}={node_id}"],
            },
        )
        return stream
    except Exception as exc:
        raise translate(exc) from exc


def send_line(client: docker.DockerClient, container_id: str, line: str) -> None:
    """Write ``line`` and a newline to the container's stdin."""
    try:
        sock = client.api.attach_socket(container_id, params={"stdin": 1, "stream": 1})
        try:
            raw = getattr(sock, "_sock", sock)
            raw.sendall(line.encode("utf-8") + b"\n")
        finally:
            sock.close()
    except Exception as exc:
        raise translate(exc) from exc


def follow_stats(client: docker.DockerClient, container_id: str) -> Stream:
    """The engine's stats samples of a container, about one a second, decoded."""
    try:
        stream: Stream = client.api.stats(container_id, stream=True, decode=True)
        return stream
    except Exception as exc:
        raise translate(exc) from exc


def stats_once(client: docker.DockerClient, container_id: str) -> dict[str, Any]:
    """One stats sample (with the previous one, so CPU can be computed)."""
    try:
        return dict(client.api.stats(container_id, stream=False))
    except Exception as exc:
        raise translate(exc) from exc
