"""Eggs (Pterodactyl ``PTDL_v1``/``PTDL_v2``, Pelican ``PLCN_v1``…``v3``) as lightd templates.

:func:`parse_egg_bytes` reads JSON (or a Pelican YAML export), :func:`template_from_body`
takes a decoded body that is either an egg or a lightd template document, and returns a
:class:`~lightd.spec.template.TemplateSpec`. An egg that does not have the shape eggs
have raises :class:`EggInvalid` naming the field (``config.files``,
``variables[2].env_variable``). Nested ``config.*`` values may be JSON text (as panels
export them) or objects. Pure: it must not do I/O.
"""

from __future__ import annotations

import io
import re
from typing import Any

import orjson
from pydantic import ValidationError

from lightd.errors import InvalidField
from lightd.spec.template import (
    PARSERS,
    ConfigFile,
    InstallStep,
    Replacement,
    StartDetection,
    TemplateSpec,
    TemplateStop,
    TemplateVariable,
)
from lightd.templates.rules import check_rules_well_formed, split_rules
from lightd.templates.startup import parse_stop

EGG_VERSIONS = frozenset({"PTDL_v1", "PTDL_v2", "PLCN_v1", "PLCN_v2", "PLCN_v3"})
MAX_EGG_BYTES = 4 * 1024 * 1024


class EggInvalid(InvalidField):
    """An egg (or template) field is malformed; the message names the field."""


def template_name(text: str) -> str:
    """A template name from an egg's ``name``: ``Paper (1.20)`` -> ``paper-1.20``."""
    slug = re.sub(r"[^a-z0-9_.-]+", "-", text.lower()).strip("-._")
    return slug[:64].rstrip("-._") or "template"


def parse_egg_bytes(raw: bytes) -> dict[str, Any]:
    """Decode an egg file: JSON, or YAML (Pelican exports both)."""
    from ruamel.yaml import YAML  # loaded on the first egg, not at start
    from ruamel.yaml.error import YAMLError

    if len(raw) > MAX_EGG_BYTES:
        raise EggInvalid("egg", f"larger than {MAX_EGG_BYTES} bytes")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as json_error:
        try:
            data = YAML(typ="safe", pure=True).load(io.BytesIO(raw))
        except YAMLError:
            raise EggInvalid("egg", f"neither JSON nor YAML: {json_error}") from None
    if not isinstance(data, dict):
        raise EggInvalid("egg", "an egg must be an object")
    return data


def _nested(value: Any, field: str) -> Any:
    """``config.files`` and friends: JSON text in exports, objects elsewhere."""
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise EggInvalid(field, f"not valid JSON: {exc}") from None
    return value


def _text(value: Any, field: str, *, default: str = "") -> str:
    if value is None:
        return default
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int | float | str):
        return str(value)
    raise EggInvalid(field, "must be a text")


def _images(egg: dict[str, Any]) -> dict[str, str]:
    images = egg.get("docker_images")
    if images is None and "image" in egg:
        image = egg["image"]
        if not isinstance(image, str) or not image:
            raise EggInvalid("image", "must be a non-empty text")
        return {image: image}
    if isinstance(images, list):
        images = {str(image): image for image in images}
    if not isinstance(images, dict) or not images:
        raise EggInvalid("docker_images", "must map at least one label to an image")
    for label, image in images.items():
        if not isinstance(image, str) or not image.strip():
            raise EggInvalid(f"docker_images.{label}", "must be a non-empty text")
    return {str(label): image.strip() for label, image in images.items()}


def _replacement(key: str, value: Any, field: str) -> Replacement:
    if isinstance(value, dict):
        if "value" in value or "replace_with" in value:
            return Replacement(
                match=key,
                value=value.get("replace_with", value.get("value")),
                if_value=({value["if_value"]: value.get("replace_with", value.get("value"))})
                if isinstance(value.get("if_value"), str)
                else None,
            )
        choices: dict[str, str | int | float | bool | None] = {}
        for when, then in value.items():
            if not isinstance(then, str | int | float | bool) and then is not None:
                raise EggInvalid(f"{field}.{when}", "must be a text, number or boolean")
            choices[str(when)] = then
        return Replacement(match=key, if_value=choices)
    if not isinstance(value, str | int | float | bool) and value is not None:
        raise EggInvalid(field, "must be a text, number, boolean or an object of choices")
    return Replacement(match=key, value=value)


def _config_files(value: Any) -> list[ConfigFile]:
    files = _nested(value, "config.files")
    if isinstance(files, list):  # an empty list is what PHP's json_encode of [] gives
        if files:
            raise EggInvalid("config.files", "must map file paths to parsers")
        return []
    if not isinstance(files, dict):
        raise EggInvalid("config.files", "must map file paths to parsers")
    found: list[ConfigFile] = []
    for path, entry in files.items():
        field = f"config.files.{path}"
        if not isinstance(entry, dict):
            raise EggInvalid(field, "must be an object with parser and find")
        parser: Any = entry.get("parser")
        parser = "yaml" if parser == "yml" else parser
        if parser not in PARSERS:
            raise EggInvalid(f"{field}.parser", f"must be one of {', '.join(PARSERS)}")
        find = entry.get("find", {})
        if isinstance(find, list) and not find:
            find = {}
        if not isinstance(find, dict):
            raise EggInvalid(f"{field}.find", "must map keys to values")
        try:
            found.append(
                ConfigFile(
                    path=path,
                    parser=parser,
                    replace=[
                        _replacement(str(key), item, f"{field}.find.{key}")
                        for key, item in find.items()
                    ],
                )
            )
        except ValidationError as exc:
            raise EggInvalid(field, exc.errors()[0]["msg"].removeprefix("Value error, ")) from None
    return found


def _start(value: Any) -> StartDetection:
    startup = _nested(value, "config.startup")
    if isinstance(startup, list) and not startup:
        startup = {}
    if not isinstance(startup, dict):
        raise EggInvalid("config.startup", "must be an object")
    done = startup.get("done", [])
    if isinstance(done, str):
        done = [done]
    if not isinstance(done, list) or not all(isinstance(entry, str) for entry in done):
        raise EggInvalid("config.startup.done", "must be a text or a list of texts")
    try:
        return StartDetection(
            done=[entry for entry in done if entry], strip_ansi=bool(startup.get("strip_ansi"))
        )
    except ValidationError as exc:
        raise EggInvalid(
            "config.startup.done", exc.errors()[0]["msg"].removeprefix("Value error, ")
        ) from None


def _variables(value: Any) -> list[TemplateVariable]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise EggInvalid("variables", "must be a list")
    found: list[TemplateVariable] = []
    for index, item in enumerate(value):
        field = f"variables[{index}]"
        if not isinstance(item, dict):
            raise EggInvalid(field, "must be an object")
        env = item.get("env_variable")
        if not isinstance(env, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,255}", env):
            raise EggInvalid(f"{field}.env_variable", "must be an environment variable name")
        rules = item.get("rules", "")
        if isinstance(rules, str):
            rule_list = split_rules(rules)
        elif isinstance(rules, list) and all(isinstance(rule, str) for rule in rules):
            rule_list = list(rules)
        else:
            raise EggInvalid(f"{field}.rules", "must be a rule text or a list of rules")
        broken = check_rules_well_formed(env, rule_list)
        if broken is not None:
            raise EggInvalid(f"{field}.rules", f"{broken.rule!r}: {broken.reason}")
        try:
            found.append(
                TemplateVariable(
                    name=_text(item.get("name"), f"{field}.name"),
                    env_variable=env,
                    description=_text(item.get("description"), f"{field}.description"),
                    default_value=_text(item.get("default_value"), f"{field}.default_value"),
                    rules=rule_list,
                    user_viewable=bool(item.get("user_viewable", True)),
                    user_editable=bool(item.get("user_editable", True)),
                )
            )
        except ValidationError as exc:
            raise EggInvalid(field, exc.errors()[0]["msg"]) from None
    seen: set[str] = set()
    for index, variable in enumerate(found):
        if variable.env_variable in seen:
            raise EggInvalid(f"variables[{index}].env_variable", "is listed twice")
        seen.add(variable.env_variable)
    return found


def _install(scripts: Any) -> InstallStep | None:
    if scripts is None:
        return None
    if not isinstance(scripts, dict):
        raise EggInvalid("scripts", "must be an object")
    install = scripts.get("installation")
    if install is None:
        return None
    if not isinstance(install, dict):
        raise EggInvalid("scripts.installation", "must be an object")
    script = _text(install.get("script"), "scripts.installation.script")
    if not script.strip():
        return None
    return InstallStep(
        # Exports keep the panel's CRLF line ends; sh reads \r as part of a word.
        script=script.replace("\r\n", "\n"),
        image=_text(install.get("container"), "scripts.installation.container"),
        entrypoint=_text(install.get("entrypoint"), "scripts.installation.entrypoint") or "sh",
    )


def _features(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, list):
        return {str(name): True for name in value}
    if isinstance(value, dict):
        return dict(value)
    raise EggInvalid("features", "must be a list or an object")


def _denylist(value: Any) -> list[str]:
    if value in (None, "", {}):
        return []
    if isinstance(value, str):
        return [line for line in value.splitlines() if line.strip()]
    if isinstance(value, list) and all(isinstance(entry, str) for entry in value):
        return list(value)
    raise EggInvalid("file_denylist", "must be a list of texts")


def is_egg(body: dict[str, Any]) -> bool:
    meta = body.get("meta")
    return isinstance(meta, dict) and "version" in meta


def template_from_egg(egg: dict[str, Any], *, name: str | None = None) -> TemplateSpec:
    """The lightd template an egg describes (``name`` overrides the egg's own)."""
    meta = egg.get("meta")
    version = meta.get("version") if isinstance(meta, dict) else None
    if version not in EGG_VERSIONS:
        raise EggInvalid("meta.version", f"must be one of {', '.join(sorted(EGG_VERSIONS))}")
    egg_name = egg.get("name")
    if name is None and (not isinstance(egg_name, str) or not egg_name.strip()):
        raise EggInvalid("name", "must be a non-empty text")
    startup = egg.get("startup")
    commands = egg.get("startup_commands")
    if startup is None and isinstance(commands, dict) and commands:
        startup = next(iter(commands.values()))
    if not isinstance(startup, str):
        raise EggInvalid("startup", "must be a text")
    config = egg.get("config") or {}
    if not isinstance(config, dict):
        raise EggInvalid("config", "must be an object")
    stop = config.get("stop")
    if stop is not None and not isinstance(stop, str):
        raise EggInvalid("config.stop", "must be a text")
    try:
        stop_form: TemplateStop = parse_stop(stop)
    except ValidationError as exc:
        raise EggInvalid("config.stop", exc.errors()[0]["msg"]) from None
    try:
        return TemplateSpec(
            name=name if name is not None else template_name(str(egg_name)),
            description=_text(egg.get("description"), "description"),
            author=_text(egg.get("author"), "author"),
            source=str(version),
            images=_images(egg),
            startup=startup.replace("\r\n", "\n"),
            variables=_variables(egg.get("variables")),
            start=_start(config.get("startup")),
            stop=stop_form,
            install=_install(egg.get("scripts")),
            config_files=_config_files(config.get("files")),
            file_denylist=_denylist(egg.get("file_denylist")),
            features=_features(egg.get("features")),
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(part) for part in first["loc"]) or "egg"
        raise EggInvalid(loc, first["msg"].removeprefix("Value error, ")) from None


def template_from_body(body: dict[str, Any], *, name: str | None = None) -> TemplateSpec:
    """An egg or a lightd template document, as a template."""
    if is_egg(body):
        return template_from_egg(body, name=name)
    data = dict(body)
    if name is not None:
        data["name"] = name
    try:
        template = TemplateSpec.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(part) for part in first["loc"]) or "template"
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "missing":
            message = "field required"
        elif first["type"] == "extra_forbidden":
            message = "unknown field"
        raise EggInvalid(loc, message) from None
    for index, variable in enumerate(template.variables):
        broken = check_rules_well_formed(variable.env_variable, variable.rules)
        if broken is not None:
            raise EggInvalid(f"variables[{index}].rules", f"{broken.rule!r}: {broken.reason}")
    return template
