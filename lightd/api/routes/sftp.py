"""SFTP credential routes: issue, show and revoke a container's SFTP login.

``POST /containers/<id>/sftp/credentials`` creates or replaces the container's one
credential (the answer carries the password only when lightd generated it),
``GET /containers/<id>/sftp/info`` shows it without any secret, ``DELETE`` revokes it
and closes its sessions. The work is done by :class:`~lightd.sftp.SftpService`; this
module only validates bodies and shapes answers. It must never answer or log a
password hash.
"""

from __future__ import annotations

import orjson
from pydantic import BaseModel, Field
from quart import Blueprint, Response
from quart_schema import document_response, validate_request, validate_response

from lightd.api.context import get_services
from lightd.api.routes.common import ErrorBody, MessageBody, RequestModel
from lightd.desired.service import ContainerNotFound
from lightd.sftp.credentials import Credential, CredentialNotFound
from lightd.spec.ids import is_internal_id

blueprint = Blueprint("sftp", __name__)

# Where the volume appears inside the container (and what panels show users).
VOLUME_PATH = "/home/container"


class CredentialsRequest(RequestModel):
    username: str | None = Field(default=None, max_length=64)
    password: str | None = Field(default=None, max_length=1024)
    public_keys: list[str] | None = None
    permissions: list[str] | None = None


class CredentialsResponse(BaseModel):
    username: str
    password: str | None = Field(default=None, description="Only when lightd generated it")
    host: str
    port: int
    volume_path: str


class SftpInfo(BaseModel):
    username: str
    host: str
    port: int
    volume_path: str
    public_keys: list[str]
    permissions: list[str]
    sessions: int


def _container(internal_id: str) -> str:
    if not is_internal_id(internal_id) or not get_services().reads.exists(internal_id):
        raise ContainerNotFound()
    return internal_id


def _info(cred: Credential) -> SftpInfo:
    sftp = get_services().sftp
    return SftpInfo(
        username=cred.username,
        host=sftp.settings.host,
        port=sftp.port,
        volume_path=VOLUME_PATH,
        public_keys=list(cred.public_keys),
        permissions=list(cred.permissions),
        sessions=sftp.sessions_of(cred.username),
    )


@blueprint.post("/containers/<internal_id>/sftp/credentials")
@validate_request(CredentialsRequest)
@document_response(CredentialsResponse)
@validate_response(ErrorBody, 400)
@validate_response(ErrorBody, 404)
@validate_response(ErrorBody, 409)
async def issue(internal_id: str, data: CredentialsRequest) -> Response:
    container = _container(internal_id)
    sftp = get_services().sftp
    issued = sftp.issue(
        container,
        username=data.username,
        password=data.password,
        public_keys=data.public_keys,
        permissions=data.permissions,
    )
    body: dict[str, object] = {
        "username": issued.credential.username,
        "host": sftp.settings.host,
        "port": sftp.port,
        "volume_path": VOLUME_PATH,
    }
    if issued.generated_password is not None:
        body["password"] = issued.generated_password
    return Response(orjson.dumps(body), content_type="application/json")


@blueprint.get("/containers/<internal_id>/sftp/info")
@validate_response(SftpInfo)
@validate_response(ErrorBody, 404)
async def info(internal_id: str) -> SftpInfo:
    container = _container(internal_id)
    cred = get_services().sftp.credentials.of_container(container)
    if cred is None:
        raise CredentialNotFound()
    return _info(cred)


@blueprint.delete("/containers/<internal_id>/sftp/credentials")
@validate_response(MessageBody)
@validate_response(ErrorBody, 404)
async def revoke(internal_id: str) -> MessageBody:
    get_services().sftp.revoke(_container(internal_id))
    return MessageBody(message="SFTP credentials revoked")
