"""``/templates``: import eggs (or lightd templates), list, read and delete templates.

``POST /templates`` takes an egg (``PTDL_v1``/``PTDL_v2``, Pelican's export) or a lightd
template document, optionally renamed with ``?name=``, and writes
``desired/templates/<name>.json`` through :class:`~lightd.desired.templates.TemplateService`
(a malformed egg is 400 naming the field); ``DELETE`` is 409 while a container document
uses the template. It must not call the engine.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from quart import Blueprint
from quart_schema import validate_querystring, validate_request, validate_response

from lightd.api.context import get_services
from lightd.api.routes.common import ErrorBody, MessageBody
from lightd.desired.templates import TemplateNotFound
from lightd.spec.template import TEMPLATE_NAME_PATTERN, TemplateSpec, is_template_name

blueprint = Blueprint("templates", __name__)


class ImportBody(BaseModel):
    """An egg (``meta.version`` PTDL_v1/PTDL_v2/PLCN_*) or a lightd template document.

    Its shape is checked by the importer (:mod:`lightd.templates.eggs`), which names the
    field it refuses.
    """

    model_config = ConfigDict(extra="allow", title="Egg or lightd template")


class ImportQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, pattern=TEMPLATE_NAME_PATTERN)


class TemplateSummary(BaseModel):
    name: str
    description: str
    source: str
    images: dict[str, str]
    variables: list[str]
    used_by: list[str]


class TemplateList(BaseModel):
    templates: list[TemplateSummary]


class TemplateWritten(BaseModel):
    message: str
    name: str
    used_by: list[str]


class TemplateView(BaseModel):
    template: dict[str, Any]
    used_by: list[str]


def _summary(template: TemplateSpec, used_by: list[str]) -> TemplateSummary:
    return TemplateSummary(
        name=template.name,
        description=template.description,
        source=template.source,
        images=template.images,
        variables=[variable.env_variable for variable in template.variables],
        used_by=used_by,
    )


def _require_name(name: str) -> str:
    if not is_template_name(name):
        raise TemplateNotFound()
    return name


@blueprint.post("/templates")
@validate_querystring(ImportQuery)
@validate_request(ImportBody)
@validate_response(TemplateWritten)
@validate_response(ErrorBody, 400)
async def put(data: ImportBody, query_args: ImportQuery) -> TemplateWritten:
    services = get_services()
    body = {**(data.model_extra or {})}
    template = await services.templates.put(body, name=query_args.name)
    return TemplateWritten(
        message="Template written",
        name=template.name,
        used_by=services.templates.users(template.name),
    )


@blueprint.get("/templates")
@validate_response(TemplateList)
async def list_all() -> TemplateList:
    service = get_services().templates
    return TemplateList(
        templates=[_summary(template, service.users(template.name)) for template in service.all()]
    )


@blueprint.get("/templates/<name>")
@validate_response(TemplateView)
@validate_response(ErrorBody, 404)
async def show(name: str) -> TemplateView:
    service = get_services().templates
    template = service.get(_require_name(name))
    return TemplateView(template=template.document(), used_by=service.users(name))


@blueprint.delete("/templates/<name>")
@validate_response(MessageBody)
@validate_response(ErrorBody, 404)
@validate_response(ErrorBody, 409)
async def delete(name: str) -> MessageBody:
    await get_services().templates.delete(_require_name(name))
    return MessageBody(message="Template deleted")
