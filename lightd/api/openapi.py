"""The OpenAPI description: quart-schema's, generated from the route models, completed.

Every operation also documents lightd's error body (``{"error": "..."}``) as its
``default`` answer, since any route can answer 400, 401, 403, 404, 405, 413 or 5xx with
it. Generated from :class:`ErrorBody`, never written by hand. Must not change routes.
"""

from __future__ import annotations

from typing import Any

from quart_schema.openapi import OpenAPIProvider

from lightd.api.guard import PUBLIC_PATHS
from lightd.api.routes.common import ErrorBody

ERROR_REF = "#/components/schemas/ErrorBody"
# Routes whose success answer is not JSON: (path, method) -> media type.
RAW_ANSWERS = {
    ("/containers/{internal_id}/install-log", "get"): "text/plain",
    ("/metrics", "get"): "text/plain",
    ("/volumes/{ref}/files/content", "get"): "*/*",
}
METHODS = {"get", "put", "post", "delete", "patch"}


class LightdOpenAPIProvider(OpenAPIProvider):
    def schema(self) -> dict[str, Any]:
        schema = super().schema()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.setdefault(
            "ErrorBody", ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
        )
        for path, item in schema.get("paths", {}).items():
            for method, operation in item.items():
                if method not in METHODS:
                    continue
                if path in PUBLIC_PATHS:
                    operation["security"] = []  # no token needed
                responses = {
                    str(code): answer for code, answer in operation.get("responses", {}).items()
                }
                operation["responses"] = responses
                raw = RAW_ANSWERS.get((path, method))
                if raw is not None:
                    responses["200"] = {
                        "description": "The content",
                        "content": {raw: {"schema": {"type": "string"}}},
                    }
                responses.setdefault(
                    "default",
                    {
                        "description": "Error",
                        "content": {"application/json": {"schema": {"$ref": ERROR_REF}}},
                    },
                )
        return schema
