"""``GET /system``: the daemon's version, the Docker engine's reachability, the desired folder.

Read-only; it must not change anything.
"""

from __future__ import annotations

from pydantic import BaseModel
from quart import Blueprint
from quart_schema import validate_response

from lightd import __version__
from lightd.api.context import get_daemon
from lightd.api.routes.desired import DesiredView, desired_view

blueprint = Blueprint("system", __name__)


class DockerView(BaseModel):
    reachable: bool
    version: str | None
    api_version: str | None
    error: str | None


class RuntimeView(BaseModel):
    node_id: str
    console_readers: int
    stats_readers: int
    container_sockets: int
    watch_sockets: int


class SystemResponse(BaseModel):
    version: str
    docker: DockerView
    runtime: RuntimeView
    desired: DesiredView
    # restic's version (the backup adapter), None when it is not installed.
    restic: str | None = None


@blueprint.get("/system")
@validate_response(SystemResponse)
async def show() -> SystemResponse:
    daemon = get_daemon()
    status = await daemon.engine.status()
    return SystemResponse(
        version=__version__,
        docker=DockerView(
            reachable=status.reachable,
            version=status.version,
            api_version=status.api_version,
            error=status.error,
        ),
        runtime=RuntimeView(
            node_id=daemon.node_id,
            console_readers=daemon.consoles.readers(),
            stats_readers=daemon.stats.readers(),
            container_sockets=sum(daemon.sockets.values()),
            watch_sockets=daemon.watch_sockets,
        ),
        restic=daemon.backups.restic_version,
        desired=desired_view(daemon),
    )
