"""Container operations on the engine, in lightd's terms (names, labels, limits).

Every function here is blocking and is run through :meth:`DockerEngine.run`, which
translates errors. It turns engine data into ``lightd.reconcile.model`` views and a
container spec into create arguments; it decides nothing about what should happen.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import docker
import docker.errors
from docker.models.containers import Container

from lightd.reconcile.model import (
    LABEL_INTERNAL_ID,
    LABEL_MANAGED,
    LABEL_NODE,
    LABEL_ROLE,
    LABEL_SPEC_HASH,
    ActualContainer,
    Role,
    container_name,
)
from lightd.reconcile.planner import Resources

VOLUME_TARGET = "/home/container"
INSTALL_TARGET = "/mnt/server"
INSTALL_SCRIPT_DIR = "/mnt/install"
SHELL_PICKER = "if [ -x /bin/bash ]; then exec /bin/bash {script}; else exec /bin/sh {script}; fi"


def _timestamp(text: str | None) -> float | None:
    if not text or text.startswith("0001-"):
        return None
    cleaned = text.rstrip("Z")
    if "." in cleaned:
        head, frac = cleaned.split(".", 1)
        cleaned = f"{head}.{frac[:6]}"
    try:
        return dt.datetime.fromisoformat(cleaned).replace(tzinfo=dt.UTC).timestamp()
    except ValueError:
        return None


def view_of(attrs: dict[str, Any]) -> ActualContainer:
    """An :class:`ActualContainer` from ``docker inspect`` data."""
    config = attrs.get("Config") or {}
    labels = config.get("Labels") or {}
    state = attrs.get("State") or {}
    host = attrs.get("HostConfig") or {}
    return ActualContainer(
        id=attrs["Id"],
        name=str(attrs.get("Name", "")).lstrip("/"),
        managed=labels.get(LABEL_MANAGED) == "true",
        internal_id=labels.get(LABEL_INTERNAL_ID),
        role=labels.get(LABEL_ROLE),
        spec_hash=labels.get(LABEL_SPEC_HASH),
        running=bool(state.get("Running")) or bool(state.get("Restarting")),
        status=str(state.get("Status", "")),
        exit_code=state.get("ExitCode"),
        started_at=_timestamp(state.get("StartedAt")),
        finished_at=_timestamp(state.get("FinishedAt")),
        memory=host.get("Memory"),
        memory_swap=host.get("MemorySwap"),
        nano_cpus=host.get("NanoCpus"),
        pids_limit=host.get("PidsLimit"),
        oom_killed=bool(state.get("OOMKilled")),
        node=labels.get(LABEL_NODE),
    )


def inspect_named(client: docker.DockerClient, name: str) -> ActualContainer | None:
    try:
        attrs = client.api.inspect_container(name)
    except docker.errors.NotFound:
        return None
    return view_of(attrs)


def list_managed(client: docker.DockerClient) -> list[ActualContainer]:
    found = client.api.containers(all=True, filters={"label": f"{LABEL_MANAGED}=true"})
    views = []
    for entry in found:
        try:
            views.append(view_of(client.api.inspect_container(entry["Id"])))
        except docker.errors.NotFound:
            continue
    return views


def image_present(client: docker.DockerClient, image: str) -> bool:
    try:
        client.api.inspect_image(image)
    except docker.errors.ImageNotFound:
        return False
    except docker.errors.NotFound:
        return False
    return True


def pull_image(client: docker.DockerClient, image: str) -> None:
    repository, _, tag = image.rpartition(":") if ":" in image.split("/")[-1] else (image, "", "")
    client.api.pull(repository or image, tag=tag or "latest")


@dataclass(frozen=True)
class CreateRequest:
    internal_id: str
    role: Role
    image: str
    command: list[str] | None
    entrypoint: list[str] | None
    volume_path: str
    mounts: dict[str, str]
    extra_binds: dict[str, str]
    ports: list[tuple[str, int, str]]
    environment: dict[str, str]
    resources: Resources
    spec_hash: str | None
    stdin: bool
    node: str | None = None


def create(client: docker.DockerClient, request: CreateRequest) -> str:
    """Create (not start) a container; returns its id."""
    binds = {request.volume_path: {"bind": VOLUME_TARGET, "mode": "rw"}}
    if request.role is Role.INSTALL:
        binds[f"{request.volume_path}/"] = {"bind": INSTALL_TARGET, "mode": "rw"}
    for source, target in request.extra_binds.items():
        binds[source] = {"bind": target, "mode": "ro"}
    for source, target in request.mounts.items():
        binds[source] = {"bind": target, "mode": "rw"}
    port_bindings: dict[str, list[tuple[str, int]]] = {}
    for ip, port, protocol in request.ports:
        port_bindings.setdefault(f"{port}/{protocol}", []).append((ip, port))
    res = request.resources
    host_config = client.api.create_host_config(
        binds=binds,
        port_bindings=port_bindings,
        mem_limit=res.memory or None,
        memswap_limit=res.memory_swap if res.memory else None,
        nano_cpus=res.nano_cpus or None,
        pids_limit=res.pids_limit,
        security_opt=["no-new-privileges"],
        restart_policy={"Name": "no"},
        tmpfs={"/tmp": "rw,exec,nosuid,size=128m"},  # noqa: S108 (inside the container)
        log_config={"type": "json-file", "config": {"max-size": "10m", "max-file": "2"}},
        init=True,
    )
    labels = {
        LABEL_MANAGED: "true",
        LABEL_INTERNAL_ID: request.internal_id,
        LABEL_ROLE: request.role.value,
    }
    if request.spec_hash:
        labels[LABEL_SPEC_HASH] = request.spec_hash
    if request.node:
        labels[LABEL_NODE] = request.node
    created = client.api.create_container(
        image=request.image,
        name=container_name(request.internal_id, request.role),
        command=request.command,
        entrypoint=request.entrypoint,
        working_dir=VOLUME_TARGET,
        environment=request.environment,
        labels=labels,
        host_config=host_config,
        ports=[(port, protocol) for _ip, port, protocol in request.ports],
        stdin_open=request.stdin,
        tty=False,
        detach=True,
    )
    return str(created["Id"])


def start(client: docker.DockerClient, container_id: str) -> None:
    client.api.start(container_id)


def stop(client: docker.DockerClient, container_id: str, *, timeout: float) -> None:
    client.api.stop(container_id, timeout=int(timeout))


def signal(client: docker.DockerClient, container_id: str, signame: str) -> None:
    client.api.kill(container_id, signal=signame)


def kill(client: docker.DockerClient, container_id: str) -> None:
    try:
        client.api.kill(container_id, signal="SIGKILL")
    except docker.errors.APIError as exc:
        if exc.status_code == 409:  # not running any more
            return
        raise


def remove(client: docker.DockerClient, container_id: str) -> None:
    try:
        client.api.remove_container(container_id, force=True, v=False)
    except docker.errors.NotFound:
        return


def update_limits(client: docker.DockerClient, container_id: str, res: Resources) -> None:
    kwargs: dict[str, Any] = {"nano_cpus": res.nano_cpus, "pids_limit": res.pids_limit}
    if res.memory:
        kwargs["mem_limit"] = res.memory
        kwargs["memswap_limit"] = res.memory_swap
    _update(client, container_id, kwargs)


def _update(client: docker.DockerClient, container_id: str, kwargs: dict[str, Any]) -> None:
    # docker-py's update_container lacks NanoCpus/PidsLimit; post the body directly.
    body: dict[str, Any] = {"NanoCpus": kwargs["nano_cpus"], "PidsLimit": kwargs["pids_limit"]}
    if "mem_limit" in kwargs:
        body["Memory"] = kwargs["mem_limit"]
        body["MemorySwap"] = kwargs["memswap_limit"]
    api = client.api
    url = api._url("/containers/{0}/update", container_id)
    api._raise_for_status(api._post_json(url, data=body))


def logs(client: docker.DockerClient, container_id: str, *, tail: int | str = "all") -> bytes:
    data = client.api.logs(container_id, stdout=True, stderr=True, tail=tail, timestamps=False)
    return data if isinstance(data, bytes) else b""


def wait_exit(client: docker.DockerClient, container_id: str, *, timeout: float) -> int | None:
    """Wait for a container to stop; None when it still runs after ``timeout``."""
    import requests.exceptions

    try:
        result = client.api.wait(container_id, timeout=timeout)
    except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
        return None
    return int(result.get("StatusCode", -1))


def container_object(client: docker.DockerClient, container_id: str) -> Container:
    return client.containers.get(container_id)
