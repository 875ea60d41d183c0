"""Config files rewritten before a start: text in, text out, per parser, purely.

:func:`rewrite` takes a file's current text (None when it is missing), one
:class:`~lightd.spec.template.ConfigFile` and the placeholder values, and returns the
new text, or None when nothing would change (so the caller leaves the file and its mtime
alone) or the parser cannot create a missing file. Comments and layout are kept:
``properties``, ``ini`` and ``file`` are edited line by line, ``yaml`` through
ruamel.yaml's round trip, ``toml`` through tomlkit, ``json`` keeps its order and indent,
``xml`` is parsed by defusedxml (no entities, no DTD) with comments kept. A file that
does not parse raises :class:`ConfigParseError`. Keys are dotted paths
(``server.port``; ``*`` matches every key or item of a level in yaml, json and toml; an
ini key is ``section.key``; an xml key is ``root.child``, ``[attr='v']`` as the value sets
an attribute). A replacement whose value is an object (``if_value``) replaces only a
current value it names (or matches after ``regex:``).

Placeholders in values (see :func:`placeholder_values`): ``{{server.build.default.ip}}``,
``{{server.build.default.port}}``, ``{{server.build.memory}}`` (MiB),
``{{server.build.env.NAME}}`` and ``{{env.NAME}}``, Pelican's
``{{server.allocations.default.ip|port}}``, ``{{server.build.memory_limit}}`` and
``{{server.environment.NAME}}``, ``{{server.uuid}}``, ``{{server.build.cpu}}``,
``{{server.build.swap}}``, ``{{config.docker.interface}}`` and
``{{config.docker.network.interface}}``. An unknown placeholder is left as written.
It must not do I/O.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from xml.etree import ElementTree

from lightd.spec.template import ConfigFile, Replacement

MAX_CONFIG_BYTES = 16 * 1024 * 1024
_PLACEHOLDER = re.compile(r"\{\{\s*([\w.-]+)\s*\}\}")


class ConfigParseError(ValueError):
    """The file does not parse as its parser's format; it is left alone."""


@dataclass(frozen=True)
class ServerFacts:
    """What placeholders may name about a server."""

    internal_id: str
    ip: str
    port: int | None
    memory_mib: int
    cpu: float
    swap_mib: int
    environment: Mapping[str, str]
    docker_interface: str = "172.18.0.1"


def placeholder_values(facts: ServerFacts) -> dict[str, str]:
    """Every placeholder name -> its value (the list in the module docstring)."""
    port = "" if facts.port is None else str(facts.port)
    values = {
        "server.build.default.ip": facts.ip,
        "server.build.default.port": port,
        "server.allocations.default.ip": facts.ip,
        "server.allocations.default.port": port,
        "server.build.memory": str(facts.memory_mib),
        "server.build.memory_limit": str(facts.memory_mib),
        "server.build.cpu": f"{facts.cpu:g}",
        "server.build.swap": str(facts.swap_mib),
        "server.uuid": facts.internal_id,
        "config.docker.interface": facts.docker_interface,
        "config.docker.network.interface": facts.docker_interface,
    }
    for name, value in facts.environment.items():
        for prefix in ("env.", "server.build.env.", "server.environment."):
            values[prefix + name] = value
    return values


def render(value: Any, placeholders: Mapping[str, str]) -> Any:
    if not isinstance(value, str):
        return value
    return _PLACEHOLDER.sub(lambda m: placeholders.get(m.group(1), m.group(0)), value)


def _typed(text: Any, current: Any) -> Any:
    """A rendered text as the type the file holds there (numbers stay numbers)."""
    if not isinstance(text, str) or isinstance(current, str):
        return text
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    if re.fullmatch(r"-?\d+\.\d+", text):
        return float(text)
    if text in ("true", "false"):
        return text == "true"
    return text


_MISSING = object()


def _new_value(replacement: Replacement, current: Any, placeholders: Mapping[str, str]) -> Any:
    """The value to write, or ``_MISSING`` when the replacement does not apply."""
    if replacement.if_value is None:
        return render(replacement.value, placeholders)
    shown = "" if current is _MISSING or current is None else _as_str(current)
    for when, then in replacement.if_value.items():
        rendered = render(then, placeholders)
        if when.startswith("regex:"):
            pattern = re.compile(when[len("regex:") :])
            if pattern.search(shown):
                return pattern.sub(str(rendered), shown) if isinstance(rendered, str) else rendered
        elif shown == when:
            return rendered
    return _MISSING


def _as_str(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# ---- line files: properties, ini, file ---------------------------------------------------

_PROP_LINE = re.compile(r"^(\s*)((?:\\.|[^\s=:\\])+)(\s*[=:]\s*|\s+)(.*?)(\r?)$")


def _properties(text: str | None, config: ConfigFile, placeholders: Mapping[str, str]) -> str:
    lines = (text or "").split("\n")
    trailing = text is None or text.endswith("\n") or text == ""
    if lines and lines[-1] == "":
        lines.pop()
    for replacement in config.replace:
        found = False
        for index, line in enumerate(lines):
            if line.lstrip().startswith(("#", "!")):
                continue
            match = _PROP_LINE.match(line)
            if match is None:
                bare = line.strip()
                if bare == replacement.match:
                    match = _PROP_LINE.match(line.rstrip() + "=")
                if match is None:
                    continue
            indent, key, separator, value, cr = match.groups()
            if key.replace("\\", "") != replacement.match:
                continue
            found = True
            new = _new_value(replacement, value, placeholders)
            if new is not _MISSING:
                separator = "=" if separator.strip() == "" and not value else separator
                lines[index] = f"{indent}{key}{separator}{_prop_escape(_as_str(new))}{cr}"
        if not found:
            new = _new_value(replacement, _MISSING, placeholders)
            if new is not _MISSING:
                lines.append(f"{replacement.match}={_prop_escape(_as_str(new))}")
    return "\n".join(lines) + ("\n" if trailing or lines else "")


def _prop_escape(value: str) -> str:
    return value.replace("\r", "\\r").replace("\n", "\\n")


_SECTION = re.compile(r"^\s*\[([^\]]*)\]\s*$")
_INI_LINE = re.compile(r"^(\s*)([^=:;#\s][^=:]*?)(\s*[=:]\s*)(.*?)(\r?)$")


def _ini_path(match: str) -> tuple[str, str]:
    """``section.key`` -> (section, key); brackets keep dots: ``[a.b].key``."""
    bracket = re.fullmatch(r"\[([^\]]*)\]\.?(.*)", match)
    if bracket:
        return bracket.group(1), bracket.group(2)
    section, dot, key = match.partition(".")
    return (section, key) if dot else ("", match)


def _ini(text: str | None, config: ConfigFile, placeholders: Mapping[str, str]) -> str:
    lines = (text or "").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for replacement in config.replace:
        section_wanted, key_wanted = _ini_path(replacement.match)
        section = ""
        last_line_of_section: int | None = -1 if section_wanted == "" else None
        found = False
        for index, line in enumerate(lines):
            header = _SECTION.match(line)
            if header:
                section = header.group(1).strip()
                if section == section_wanted:
                    last_line_of_section = index
                continue
            if section != section_wanted:
                continue
            match = _INI_LINE.match(line)
            if match is None or line.lstrip().startswith((";", "#")):
                continue
            last_line_of_section = index  # new keys go after the section's last key
            indent, key, separator, value, cr = match.groups()
            if key.strip() != key_wanted:
                continue
            found = True
            new = _new_value(replacement, value, placeholders)
            if new is not _MISSING:
                lines[index] = f"{indent}{key}{separator}{_as_str(new)}{cr}"
        if found:
            continue
        new = _new_value(replacement, _MISSING, placeholders)
        if new is _MISSING:
            continue
        entry = f"{key_wanted}={_as_str(new)}"
        if last_line_of_section is None:
            if lines and lines[-1].strip():
                lines.append("")
            lines.extend([f"[{section_wanted}]", entry])
        else:
            lines.insert(last_line_of_section + 1, entry)
    return "\n".join(lines) + "\n" if lines else ""


def _file(text: str, config: ConfigFile, placeholders: Mapping[str, str]) -> str:
    out: list[str] = []
    lines = text.split("\n")
    trailing = text.endswith("\n")
    if trailing:
        lines.pop()
    for line in lines:
        for replacement in config.replace:
            if line.startswith(replacement.match):
                new = _new_value(replacement, line, placeholders)
                if new is not _MISSING:
                    line = _as_str(new)
                    break
        out.append(line)
    return "\n".join(out) + ("\n" if trailing else "")


# ---- trees: yaml, json, toml ---------------------------------------------------------------


def _set_path(
    tree: Any,
    parts: list[str],
    replacement: Replacement,
    placeholders: Mapping[str, str],
    *,
    new_map: Any,
) -> None:
    head, rest = parts[0], parts[1:]
    if head == "*":
        keys = list(tree.keys()) if isinstance(tree, dict) else range(len(tree))
        for key in keys:
            if rest:
                child = tree[key]
                if isinstance(child, dict | list):
                    _set_path(child, rest, replacement, placeholders, new_map=new_map)
            else:
                _set_leaf(tree, key, replacement, placeholders)
        return
    slot: Any = head
    if isinstance(tree, list):
        if not head.isdigit() or int(head) >= len(tree):
            return
        slot = int(head)
    if not rest:
        _set_leaf(tree, slot, replacement, placeholders)
        return
    if isinstance(tree, dict) and not isinstance(tree.get(slot), dict | list):
        if replacement.if_value is not None:
            return
        tree[slot] = new_map()
    _set_path(tree[slot], rest, replacement, placeholders, new_map=new_map)


def _set_leaf(
    tree: Any, key: Any, replacement: Replacement, placeholders: Mapping[str, str]
) -> None:
    current = tree[key] if (isinstance(tree, list) or key in tree) else _MISSING
    new = _new_value(replacement, current, placeholders)
    if new is _MISSING:
        return
    typed = _typed(new, None if current is _MISSING else _plain(current))
    if (
        current is not _MISSING
        and _plain(current) == typed
        and type(_plain(current)) is type(typed)
    ):
        return  # keep the node (its comments, quoting and style) when nothing changes
    tree[key] = typed


def _plain(value: Any) -> Any:
    unwrap = getattr(value, "unwrap", None)
    return unwrap() if callable(unwrap) else value


def _yaml(text: str | None, config: ConfigFile, placeholders: Mapping[str, str]) -> str:
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    yaml = YAML(typ="rt", pure=True)
    yaml.preserve_quotes = True
    yaml.width = 4096
    try:
        tree = yaml.load(text) if text else None
    except YAMLError as exc:
        raise ConfigParseError(f"not valid YAML: {exc}") from None
    if tree is None:
        from ruamel.yaml.comments import CommentedMap

        tree = CommentedMap()
    if not isinstance(tree, dict):
        raise ConfigParseError("the YAML document is not a mapping")
    from ruamel.yaml.comments import CommentedMap

    for replacement in config.replace:
        _set_path(
            tree, replacement.match.split("."), replacement, placeholders, new_map=CommentedMap
        )
    out = io.StringIO()
    yaml.dump(tree, out)
    return out.getvalue()


def _json(text: str | None, config: ConfigFile, placeholders: Mapping[str, str]) -> str:
    indent = 4
    if text:
        try:
            tree = json.loads(text)
        except ValueError as exc:
            raise ConfigParseError(f"not valid JSON: {exc}") from None
        found = re.search(r"\n([ \t]+)\S", text)
        indent = len(found.group(1)) if found else indent
    else:
        tree = {}
    if not isinstance(tree, dict):
        raise ConfigParseError("the JSON document is not an object")
    for replacement in config.replace:
        _set_path(tree, replacement.match.split("."), replacement, placeholders, new_map=dict)
    return json.dumps(tree, indent=indent, ensure_ascii=False) + "\n"


def _toml(text: str | None, config: ConfigFile, placeholders: Mapping[str, str]) -> str:
    import tomlkit
    from tomlkit.exceptions import TOMLKitError

    try:
        tree = tomlkit.parse(text or "")
    except TOMLKitError as exc:
        raise ConfigParseError(f"not valid TOML: {exc}") from None
    for replacement in config.replace:
        _set_path(
            tree, replacement.match.split("."), replacement, placeholders, new_map=tomlkit.table
        )
    return tomlkit.dumps(tree)


# ---- xml --------------------------------------------------------------------------------

_XML_ATTRIBUTE = re.compile(r"^\[([\w:.-]+)='(.*)'\]$", re.DOTALL)


def _xml(text: str | None, config: ConfigFile, placeholders: Mapping[str, str]) -> str:
    import defusedxml.ElementTree as SafeElementTree
    from defusedxml import DefusedXmlException

    declaration = ""
    if text:
        try:
            parser = SafeElementTree.DefusedXMLParser(
                target=ElementTree.TreeBuilder(insert_comments=True, insert_pis=True),
                forbid_dtd=True,
            )
            parser.feed(text)
            root = parser.close()
        except (ElementTree.ParseError, DefusedXmlException) as exc:
            raise ConfigParseError(f"not valid XML: {exc}") from None
        found = re.match(r"\s*(<\?xml[^>]*\?>\s*)", text)
        declaration = found.group(1) if found else ""
    else:
        first = config.replace[0].match.split(".")[0] if config.replace else "config"
        root = ElementTree.Element(first)
        declaration = '<?xml version="1.0" encoding="utf-8"?>\n'
    for replacement in config.replace:
        parts = replacement.match.split(".")
        if parts[0] != root.tag:
            continue
        elements = [root]
        for tag in parts[1:]:
            nxt: list[ElementTree.Element] = []
            for element in elements:
                children = element.findall(tag) if tag != "*" else list(element)
                if not children and tag != "*" and replacement.if_value is None:
                    child = ElementTree.SubElement(element, tag)
                    children = [child]
                nxt.extend(children)
            elements = nxt
        for element in elements:
            new = _new_value(replacement, element.text or "", placeholders)
            if new is _MISSING:
                continue
            shown = _as_str(new)
            attribute = _XML_ATTRIBUTE.match(shown)
            if attribute:
                element.set(attribute.group(1), attribute.group(2))
            elif (element.text or "") != shown:
                element.text = shown
    body = ElementTree.tostring(root, encoding="unicode")
    tail = text[len(text.rstrip()) :] if text else "\n"
    return declaration + body + tail


def rewrite(text: str | None, config: ConfigFile, placeholders: Mapping[str, str]) -> str | None:
    """The new text of the file, or None when it stays as it is (or stays missing)."""
    if text is not None and len(text) > MAX_CONFIG_BYTES:
        raise ConfigParseError(f"larger than {MAX_CONFIG_BYTES} bytes; not rewritten")
    if config.parser == "file":
        if text is None:
            return None  # lines by prefix: nothing to match in a file that is not there
        new = _file(text, config, placeholders)
    elif config.parser == "properties":
        new = _properties(text, config, placeholders)
    elif config.parser == "ini":
        new = _ini(text, config, placeholders)
    elif config.parser == "yaml":
        new = _yaml(text, config, placeholders)
    elif config.parser == "json":
        new = _json(text, config, placeholders)
    elif config.parser == "toml":
        new = _toml(text, config, placeholders)
    else:
        new = _xml(text, config, placeholders)
    if text is not None and _same(text, new, config.parser):
        return None
    return new


def _same(old: str, new: str, parser: str) -> bool:
    if old == new:
        return True
    if parser == "json":
        # Same data and same order: a reformat alone is no reason to write.
        try:
            return bool(json.loads(old) == json.loads(new)) and list(json.loads(old)) == list(
                json.loads(new)
            )
        except ValueError:
            return False
    return False
