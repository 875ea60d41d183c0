"""Container routes: the contract's ``/containers`` API plus stop, logs and install log.

Each write validates its body and edits the desired document through
:class:`~lightd.desired.service.ContainerService`; answers come from desired and
observed state. It must not call the engine to change anything.
"""

from __future__ import annotations

from pydantic import BaseModel, Field
from quart import Blueprint, Response
from quart_schema import (
    document_response,
    validate_querystring,
    validate_request,
    validate_response,
)

from lightd.api.context import get_services
from lightd.api.routes.common import ErrorBody, MessageBody, RequestModel
from lightd.desired.service import ContainerNotFound
from lightd.spec.container import ContainerSpec, Limits, PortBinding, Power
from lightd.spec.ids import is_internal_id
from lightd.spec.observed import InstallState, RuntimeState

blueprint = Blueprint("containers", __name__)


class CreateContainerRequest(ContainerSpec):
    """The contract's create body (with lightd's optional fields); unknown fields are 400."""


class CreateContainerResponse(BaseModel):
    message: str
    internal_id: str
    state: str


class ContainerView(BaseModel):
    internal_id: str
    container_id: str | None
    volume_id: str
    image: str
    startup_command: str
    start_pattern: str | None
    install_state: InstallState
    state: RuntimeState
    power: Power
    ports: list[PortBinding]
    limits: Limits
    mount: dict[str, str]
    environment: dict[str, str]
    last_error: str | None
    exit_code: int | None
    install_exit_code: int | None
    crash_count: int
    engine_available: bool
    revision_desired: str | None
    revision_applied: str | None
    document_error: str | None
    created_at: int
    updated_at: int


class ContainerSummary(BaseModel):
    internal_id: str
    container_id: str | None
    install_state: InstallState
    image: str
    state: RuntimeState


class ContainerList(BaseModel):
    containers: list[ContainerSummary]


class ActionResponse(BaseModel):
    message: str
    internal_id: str


class ReinstallRequest(RequestModel):
    image: str | None = None
    install_script: str | None = None


class RebindRequest(RequestModel):
    ports: list[PortBinding]


def _require_id(internal_id: str) -> str:
    if not is_internal_id(internal_id):
        raise ContainerNotFound()
    return internal_id


def _view(internal_id: str) -> ContainerView:
    view = get_services().reads.container(internal_id)
    if view is None:
        raise ContainerNotFound()
    return ContainerView.model_validate(view)


@blueprint.post("/containers")
@validate_request(CreateContainerRequest)
@validate_response(CreateContainerResponse)
@validate_response(ErrorBody, 400)
@validate_response(ErrorBody, 409)
async def create(data: CreateContainerRequest) -> CreateContainerResponse:
    spec = await get_services().containers.create(data.model_dump(exclude_unset=True))
    return CreateContainerResponse(
        message="Container creation started", internal_id=spec.internal_id, state="installing"
    )


@blueprint.get("/containers")
@document_response(ContainerList)
async def list_all() -> Response:
    return Response(get_services().reads.container_list_body(), content_type="application/json")


@blueprint.get("/containers/<internal_id>")
@validate_response(ContainerView)
@validate_response(ErrorBody, 404)
async def show(internal_id: str) -> ContainerView:
    return _view(_require_id(internal_id))


@blueprint.delete("/containers/<internal_id>")
@validate_response(MessageBody)
@validate_response(ErrorBody, 404)
async def delete(internal_id: str) -> MessageBody:
    await get_services().containers.delete(_require_id(internal_id))
    return MessageBody(message="Container deleted successfully")


def _action(message: str, internal_id: str) -> ActionResponse:
    return ActionResponse(message=message, internal_id=internal_id)


@blueprint.post("/containers/<internal_id>/start")
@validate_response(ActionResponse)
@validate_response(ErrorBody, 404)
async def start(internal_id: str) -> ActionResponse:
    await get_services().containers.start(_require_id(internal_id))
    return _action("Container start initiated", internal_id)


@blueprint.post("/containers/<internal_id>/stop")
@validate_response(ActionResponse)
@validate_response(ErrorBody, 404)
async def stop(internal_id: str) -> ActionResponse:
    await get_services().containers.stop(_require_id(internal_id))
    return _action("Container stop initiated", internal_id)


@blueprint.post("/containers/<internal_id>/kill")
@validate_response(ActionResponse)
@validate_response(ErrorBody, 404)
async def kill(internal_id: str) -> ActionResponse:
    await get_services().containers.kill(_require_id(internal_id))
    return _action("Container kill initiated", internal_id)


@blueprint.post("/containers/<internal_id>/restart")
@validate_response(ActionResponse)
@validate_response(ErrorBody, 404)
async def restart(internal_id: str) -> ActionResponse:
    await get_services().containers.restart(_require_id(internal_id))
    return _action("Container restart initiated", internal_id)


@blueprint.post("/containers/<internal_id>/reinstall")
@validate_request(ReinstallRequest)
@validate_response(ActionResponse)
@validate_response(ErrorBody, 404)
async def reinstall(internal_id: str, data: ReinstallRequest) -> ActionResponse:
    await get_services().containers.reinstall(
        _require_id(internal_id), image=data.image, install_script=data.install_script
    )
    return _action("Container reinstall started", internal_id)


@blueprint.post("/containers/<internal_id>/rebind-network")
@validate_request(RebindRequest)
@validate_response(ActionResponse)
@validate_response(ErrorBody, 400)
@validate_response(ErrorBody, 404)
async def rebind(internal_id: str, data: RebindRequest) -> ActionResponse:
    await get_services().containers.rebind(_require_id(internal_id), data.ports)
    return _action("Network rebinding started", internal_id)


@blueprint.get("/containers/<internal_id>/install-log")
async def install_log(internal_id: str) -> Response:
    services = get_services()
    services.containers.get(_require_id(internal_id))
    text = await services.consoles.install_log(internal_id)
    return Response(text, status=200, content_type="text/plain; charset=utf-8")


class CommandRequest(RequestModel):
    command: str = Field(min_length=1, max_length=4096, pattern=r"^[^\r\n]*$")


class LogsQuery(BaseModel):
    lines: int = Field(default=100, ge=1, le=100_000)


class LogsResponse(BaseModel):
    internal_id: str
    data: str


@blueprint.post("/containers/<internal_id>/command")
@validate_request(CommandRequest)
@validate_response(ActionResponse)
@validate_response(ErrorBody, 404)
@validate_response(ErrorBody, 409)
async def command(internal_id: str, data: CommandRequest) -> ActionResponse:
    services = get_services()
    services.containers.get(_require_id(internal_id))
    await services.consoles.send_command(internal_id, data.command)
    return _action("Command sent", internal_id)


@blueprint.get("/containers/<internal_id>/logs")
@validate_querystring(LogsQuery)
@validate_response(LogsResponse)
@validate_response(ErrorBody, 404)
async def logs(internal_id: str, query_args: LogsQuery) -> LogsResponse:
    services = get_services()
    services.containers.get(_require_id(internal_id))
    lines = min(query_args.lines, services.settings.containers.console_ring_lines)
    data = await services.consoles.history(internal_id, lines)
    return LogsResponse(internal_id=internal_id, data=data)
