"""JSON Schemas of the desired documents, generated from lightd's models.

``desired/schema/container.schema.json`` and ``desired/schema/ports.schema.json`` and
``desired/schema/template.schema.json`` are
these, written by ``lightd schema --write``; a test fails when the committed files are
stale. Pure functions: this module must not read or write files.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from lightd.spec.container import ContainerSpec
from lightd.spec.ports import PortsDocument
from lightd.spec.template import TemplateSpec

DIALECT = "https://json-schema.org/draft/2020-12/schema"

SCHEMA_MODELS: dict[str, type[BaseModel]] = {
    "container.schema.json": ContainerSpec,
    "ports.schema.json": PortsDocument,
    "template.schema.json": TemplateSpec,
}


def schema_of(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON Schema (validation mode, by alias) with its dialect."""
    schema = model.model_json_schema(by_alias=True, mode="validation")
    return {"$schema": DIALECT, **schema}


def schema_documents() -> dict[str, dict[str, Any]]:
    """File name -> schema, for every desired document kind."""
    return {name: schema_of(model) for name, model in SCHEMA_MODELS.items()}
