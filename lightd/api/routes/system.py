"""``GET /system``: version, the engine's reachability, the desired folder, SFTP, backup
adapters, the disk backend.

Read-only; it must not change anything.
"""

from __future__ import annotations

from pydantic import BaseModel
from quart import Blueprint
from quart_schema import validate_response

from lightd import __version__
from lightd.api.context import get_services
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


class SftpView(BaseModel):
    enabled: bool
    host: str
    port: int
    host_key_fingerprint: str | None
    sessions: int


class BackupsView(BaseModel):
    default_adapter: str
    # The adapters a backup can use here: archive, s3 once configured, restic if installed.
    adapters: list[str]


class ProbeView(BaseModel):
    name: str
    usable: bool
    reason: str


class DiskView(BaseModel):
    backend: str
    reason: str
    kernel_enforced: bool
    probes: list[ProbeView]


class SystemResponse(BaseModel):
    version: str
    docker: DockerView
    runtime: RuntimeView
    desired: DesiredView
    sftp: SftpView
    # restic's version (the backup adapter), None when it is not installed.
    restic: str | None = None
    backups: BackupsView
    disk: DiskView


@blueprint.get("/system")
@validate_response(SystemResponse)
async def show() -> SystemResponse:
    services = get_services()
    status = await services.node.engine_status()
    disk = services.files.disk.status
    return SystemResponse(
        version=__version__,
        docker=DockerView(
            reachable=status.reachable,
            version=status.version,
            api_version=status.api_version,
            error=status.error,
        ),
        runtime=RuntimeView(
            node_id=services.node.node_id,
            console_readers=services.consoles.console_readers,
            stats_readers=services.consoles.stats_readers,
            container_sockets=services.sockets.containers,
            watch_sockets=services.sockets.watch,
        ),
        desired=desired_view(services),
        sftp=SftpView.model_validate(services.sftp.info()),
        restic=services.backups.restic_version,
        backups=BackupsView(
            default_adapter=services.backups.settings.default_adapter,
            adapters=list(services.backups.available_adapters()),
        ),
        disk=DiskView(
            backend=disk.backend,
            reason=disk.reason,
            kernel_enforced=disk.kernel_enforced,
            probes=[ProbeView(name=p.name, usable=p.usable, reason=p.reason) for p in disk.probes],
        ),
    )
