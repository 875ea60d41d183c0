"""The OpenAPI description: quart-schema's, generated from the route models, completed.

Every operation also documents lightd's error body (``{"error": "..."}``) as its
``default`` answer, since any route can answer 400, 401, 403, 404, 405, 413 or 5xx with
it. Generated from :class:`ErrorBody`, never written by hand.

Panels generate their clients from this document, so it describes every rule a route
enforces on the shape of a request: the routes read path parameters as plain text, so
their patterns and bounds come from one table here, by parameter name, built from the
same patterns the code checks with; required query parameters and bodies are marked;
request-body fields get the formats (IP addresses, durations, port ranges, names) their
validators enforce. Rules that depend on state (a port in the pool, a file that exists)
stay the API's answer. Must not change routes.
"""

from __future__ import annotations

import re
from typing import Any

from quart_schema.openapi import OpenAPIProvider

from lightd.api.guard import PUBLIC_PATHS
from lightd.api.routes.common import ErrorBody
from lightd.backups.records import REF_RE as BACKUP_REF_RE
from lightd.fs.paths import MAX_NAME_BYTES, MAX_PATH_BYTES, TEMP_PREFIX
from lightd.fs.volumes import VOLUME_REF_RE
from lightd.spec.container import ContainerSpec
from lightd.spec.ids import INTERNAL_ID_RE
from lightd.spec.ports import MAX_PORT, MIN_PORT

ERROR_REF = "#/components/schemas/ErrorBody"
# Routes whose success answer is not JSON: (path, method) -> media type.
RAW_ANSWERS = {
    ("/containers/{internal_id}/install-log", "get"): "text/plain",
    ("/metrics", "get"): "text/plain",
    ("/volumes/{ref}/files/content", "get"): "*/*",
}
METHODS = {"get", "put", "post", "delete", "patch"}

IP_ADDRESS: dict[str, Any] = {
    "type": "string",
    "anyOf": [{"format": "ipv4"}, {"format": "ipv6"}],
    "description": "An IPv4 or IPv6 address (no zone index)",
}
PORT: dict[str, Any] = {"type": "integer", "minimum": MIN_PORT, "maximum": MAX_PORT}
# Volume file paths: names of at most 255 characters that do not start with the
# reserved prefix, no NUL, at most MAX_PATH_BYTES characters. Limits are in bytes, so
# longer text is always refused; a name or path over its byte limit in fewer characters
# (not ASCII) and `..` above the root are the API's answer, as is what is on disk.
_NAME = f"(?!{re.escape(TEMP_PREFIX)})[^/\\x00]{{1,{MAX_NAME_BYTES}}}"
VOLUME_PATH: dict[str, Any] = {
    "type": "string",
    "pattern": f"^/*(?:{_NAME}(?:/+|$))*$",
    "maxLength": MAX_PATH_BYTES,
}
_ABSOLUTE = "^/(?!(?:[\\s\\S]*/)?\\.\\.(?:/|$))[^\\x00]*$"
_PORT_TEXT = (
    "0*(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
)

# Path parameters by name: the routes take text and check it themselves.
PATH_PARAMETERS: dict[str, dict[str, Any]] = {
    "ref": {
        "type": "string",
        "pattern": VOLUME_REF_RE.pattern.replace("0-9a-f", "0-9a-fA-F"),
        "description": "A volume UUID or a unique prefix of at least 8 characters",
    },
    "internal_id": {"type": "string", "pattern": INTERNAL_ID_RE.pattern},
    "backup_id": {
        "type": "string",
        "pattern": BACKUP_REF_RE.pattern.replace("0-9a-f", "0-9a-fA-F"),
        "description": "A backup UUID or a unique prefix of at least 8 characters",
    },
    "ip": IP_ADDRESS,
    "port": PORT,
}
# Query parameters by name, wherever they appear.
QUERY_PARAMETERS: dict[str, dict[str, Any]] = {
    "path": VOLUME_PATH,
    "ip": IP_ADDRESS,
}
# Query parameters a route refuses to go without: (path, method) -> names.
REQUIRED_QUERY: dict[tuple[str, str], tuple[str, ...]] = {
    ("/volumes/{ref}/files", "delete"): ("path",),
    ("/volumes/{ref}/files/content", "get"): ("path",),
    ("/volumes/{ref}/files/content", "put"): ("path",),
}
_SPEC_FIELDS = ContainerSpec.model_json_schema()["properties"]


def _spec_field(name: str) -> dict[str, Any]:
    """The container document's own rule for a field (its text branch if optional)."""
    field = dict(_SPEC_FIELDS[name])
    for branch in field.pop("anyOf", []):
        if branch.get("type") == "string":
            field.update(branch)
    return {key: value for key, value in field.items() if key not in ("title", "default")}


# Request-body fields by name, in every body and the components bodies refer to.
BODY_FIELDS: dict[str, dict[str, Any]] = {
    # Reinstall takes the same image and script as the document it edits.
    "image": _spec_field("image"),
    "install_script": _spec_field("install_script"),
    "ip": IP_ADDRESS,
    "ttl": {
        "type": "string",
        "pattern": "^\\s*(?=[^\\s])(?:[0-9]{1,7}[dD])?(?:[0-9]{1,7}[hH])?"
        "(?:[0-9]{1,7}[mM])?(?:[0-9]{1,9}[sS])?\\s*$",
        "description": "A duration such as 30s, 15m, 1h30m or 7d: more than zero, at most 30 days",
    },
    "range": {
        "type": "string",
        "pattern": f"^\\s*{_PORT_TEXT}\\s*(?:-\\s*{_PORT_TEXT}\\s*)?$",
        "description": "Ports like 25565-25600 (or one port), each 1-65535, the first no higher",
    },
    "path": VOLUME_PATH,
    "source": VOLUME_PATH,
    "destination": VOLUME_PATH,
    "from": VOLUME_PATH,
    "to": VOLUME_PATH,
    "archive_path": VOLUME_PATH,
    "output_name": VOLUME_PATH,
}
# Whole-body rules an operation's validator adds: (path, method) -> keywords.
BODY_RULES: dict[tuple[str, str], dict[str, Any]] = {
    ("/network/ports/bulk", "post"): {
        "anyOf": [
            {
                "required": ["ports"],
                "properties": {
                    "ports": {"type": "array"},
                    "ip": {"type": "null"},
                    "range": {"type": "null"},
                    "protocol": {"type": "null"},
                },
            },
            {
                "required": ["ip", "range"],
                "properties": {
                    "ports": {"type": "null"},
                    "ip": {"type": "string"},
                    "range": {"type": "string"},
                },
            },
        ],
        "description": "Either 'ports', or 'ip' and 'range' (and 'protocol'), not both",
    },
}
# Object fields whose keys follow a rule: field -> schema of every key.
BODY_KEYS: dict[str, dict[str, Any]] = {
    "environment": {"pattern": "^[A-Za-z_][A-Za-z0-9_]{0,255}$"},
    "mount": {"pattern": _ABSOLUTE},  # host folders (which ones: the node's setting)
}
# Object fields whose values follow a rule: field -> schema of every value.
BODY_VALUES: dict[str, dict[str, Any]] = {
    "mount": {
        "type": "string",
        "pattern": "^(?!/(?:home/container|mnt/server)?/*$)" + _ABSOLUTE[1:],
        "description": "An absolute path in the container, not the volume's own",
    },
}


def _merge(target: dict[str, Any], rule: dict[str, Any]) -> None:
    """Add ``rule`` to a field schema, keeping its title, default and other notes."""
    if "anyOf" in target and any(item.get("type") == "null" for item in target["anyOf"]):
        # An optional field (``str | None``): the rule applies to its text branch.
        for item in target["anyOf"]:
            if item.get("type") == rule.get("type"):
                _merge(item, rule)
        return
    for key, value in rule.items():
        if key == "description" and "description" in target:
            continue
        if key in ("minLength",) and key in target:
            continue
        target[key] = value


def _complete_body(schema: dict[str, Any], components: dict[str, Any], seen: set[str]) -> None:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
        name = ref.rsplit("/", 1)[-1]
        if name not in seen and name in components:
            seen.add(name)
            _complete_body(components[name], components, seen)
        return
    for name, field in schema.get("properties", {}).items():
        if name in BODY_FIELDS and isinstance(field, dict):
            _merge(field, BODY_FIELDS[name])
        if name in BODY_KEYS and isinstance(field, dict):
            field["propertyNames"] = BODY_KEYS[name]
        if name in BODY_VALUES and isinstance(field, dict):
            field["additionalProperties"] = BODY_VALUES[name]
        if name == "paths" and isinstance(field, dict):
            for branch in field.get("anyOf", [field]):
                if branch.get("type") == "array":
                    branch["items"] = dict(VOLUME_PATH)
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            _complete_body(schema[key], components, seen)
    for key in ("anyOf", "oneOf", "allOf"):
        for item in schema.get(key, []):
            if isinstance(item, dict):
                _complete_body(item, components, seen)
    for field in schema.get("properties", {}).values():
        if isinstance(field, dict):
            _complete_body(field, components, seen)


def _complete_parameters(path: str, method: str, operation: dict[str, Any]) -> None:
    required = REQUIRED_QUERY.get((path, method), ())
    for parameter in operation.get("parameters", []):
        name, where = parameter.get("name"), parameter.get("in")
        if where == "path" and name in PATH_PARAMETERS:
            parameter["schema"] = dict(PATH_PARAMETERS[name])
        elif where == "query" and name in QUERY_PARAMETERS:
            schema = parameter.setdefault("schema", {})
            if name in required:
                parameter["required"] = True
                parameter["schema"] = {**QUERY_PARAMETERS[name], "title": name.title()}
            else:
                _merge(schema, QUERY_PARAMETERS[name])


def _complete_request_body(
    path: str, method: str, operation: dict[str, Any], components: dict[str, Any]
) -> None:
    body = operation.get("requestBody")
    if not isinstance(body, dict):
        return
    for media in body.get("content", {}).values():
        schema = media.get("schema", {})
        _complete_body(schema, components, set())
        schema.update(BODY_RULES.get((path, method), {}))
        target = schema
        ref = schema.get("$ref")
        if isinstance(ref, str):
            target = components.get(ref.rsplit("/", 1)[-1], {})
        if target.get("required"):
            body["required"] = True  # an empty body reads as {}: the fields are missing


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
                _complete_parameters(path, method, operation)
                _complete_request_body(path, method, operation, components)
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
