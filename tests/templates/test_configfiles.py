"""Config file rewrites per parser: comments and layout kept, unchanged files untouched."""

from __future__ import annotations

from typing import Any

import pytest

from lightd.spec.template import ConfigFile, Replacement
from lightd.templates.configfiles import (
    ConfigParseError,
    ServerFacts,
    placeholder_values,
    rewrite,
)

FACTS = ServerFacts(
    internal_id="srv1", ip="10.1.2.3", port=25565, memory_mib=1024, cpu=2.0, swap_mib=0,
    environment={"MOTD": "Hello | world", "WORLD": "Midgard"},
)  # fmt: skip
VALUES = placeholder_values(FACTS)


def config(parser: str, **find: Any) -> ConfigFile:
    replace = [
        Replacement(match=k, if_value=v) if isinstance(v, dict) else Replacement(match=k, value=v)
        for k, v in find.items()
    ]
    return ConfigFile(path="f", parser=parser, replace=replace)  # type: ignore[arg-type]


PORT = "{{server.build.default.port}}"


@pytest.mark.parametrize(
    ("parser", "before", "find", "after"),
    [
        pytest.param(
            "properties",
            "# Minecraft server properties\n#Mon Jan 01\nmotd=A Minecraft Server\n"
            "server-port = 25000\n! bang comment\nquery.port:1\n",
            {"server-port": PORT, "motd": "{{env.MOTD}}", "query.port": PORT},
            "# Minecraft server properties\n#Mon Jan 01\nmotd=Hello | world\n"
            "server-port = 25565\n! bang comment\nquery.port:25565\n",
            id="properties keeps comments and each line's separator",
        ),
        pytest.param(
            "properties", "a=1\n", {"server-ip": "{{server.build.default.ip}}"},
            "a=1\nserver-ip=10.1.2.3\n", id="properties appends a missing key",
        ),
        pytest.param(
            "ini",
            "; network settings\n[network]\nport=28015 \nip = 0.0.0.0\n\n[other]\nx=1\n",
            {"network.port": PORT, "network.ip": "{{server.build.default.ip}}",
             "limits.memory": "{{server.build.memory}}", "other.y": "2", "root": "r"},
            "root=r\n; network settings\n[network]\nport=25565\nip = 10.1.2.3\n\n[other]\nx=1\n"
            "y=2\n\n[limits]\nmemory=1024\n",
            id="ini keeps comments, adds keys to their section and new sections at the end",
        ),
        pytest.param(
            "yaml",
            "# world settings\nserver:\n  port: 2456 # the game port\n  address: '0.0.0.0'\n"
            "world:\n  name: Dedicated\n",
            {"server.port": PORT, "server.address": "{{server.build.default.ip}}",
             "world.name": "{{env.WORLD}}", "new.deep.key": "x"},
            "# world settings\nserver:\n  port: 25565 # the game port\n  address: '10.1.2.3'\n"
            "world:\n  name: Midgard\nnew:\n  deep:\n    key: x\n",
            id="yaml keeps comments and quoting, numbers stay numbers",
        ),
        pytest.param(
            "json",
            '{\n  "Rcon": {"Port": 1},\n  "Options": {"Modded": false},\n'
            '  "Hosts": [{"Name": "a"}, {"Name": "b"}]\n}\n',
            {"Rcon.Port": PORT, "Options.Modded": {"false": "true"},
             "Hosts.*.Name": "{{env.WORLD}}"},
            '{\n  "Rcon": {\n    "Port": 25565\n  },\n  "Options": {\n    "Modded": true\n  },\n'
            '  "Hosts": [\n    {\n      "Name": "Midgard"\n    },\n    {\n      "Name": "Midgard"\n'
            "    }\n  ]\n}\n",
            id="json keeps key order and indent, if_value and wildcards apply",
        ),
        pytest.param(
            "toml",
            '# game settings\n[network]\nport = 1 # udp\nname = "x"\n',
            {"network.port": PORT, "memory.limit_mb": "{{server.build.memory_limit}}"},
            '# game settings\n[network]\nport = 25565 # udp\nname = "x"\n'
            "\n[memory]\nlimit_mb = 1024\n",
            id="toml keeps comments and creates tables",
        ),
        pytest.param(
            "xml",
            '<?xml version="1.0" encoding="utf-8"?>\n<ServerSettings>\n  <!-- the port -->\n'
            "  <Port>1</Port>\n  <Name>x</Name>\n</ServerSettings>\n",
            {"ServerSettings.Port": PORT, "ServerSettings.Name": "{{env.MOTD}}",
             "ServerSettings.Admin": "[enabled='true']"},
            '<?xml version="1.0" encoding="utf-8"?>\n<ServerSettings>\n  <!-- the port -->\n'
            '  <Port>25565</Port>\n  <Name>Hello | world</Name>\n<Admin enabled="true" />'
            "</ServerSettings>\n",
            id="xml keeps comments and the declaration, sets attributes",
        ),
        pytest.param(
            "file",
            "# start options\nport 1\nname x\nport2 3\n",
            {"port ": "port {{server.build.default.port}}"},
            "# start options\nport 25565\nname x\nport2 3\n",
            id="file replaces whole lines by prefix",
        ),
    ],
)  # fmt: skip
def test_rewrite_keeps_the_rest(parser: str, before: str, find: dict[str, Any], after: str) -> None:
    cfg = config(parser, **find)
    assert rewrite(before, cfg, VALUES) == after
    assert rewrite(after, cfg, VALUES) is None, "a second rewrite changes nothing"


@pytest.mark.parametrize(
    ("parser", "text"),
    [
        pytest.param("properties", "# c\nserver-port=25565\n", id="properties"),
        pytest.param("ini", "[network]\n; c\nport = 25565\n", id="ini"),
        pytest.param("yaml", "network:\n  port: 25565  # c\n", id="yaml"),
        pytest.param("json", '{"network": {"port": 25565}}', id="json in another layout"),
        pytest.param("toml", "[network]\nport = 25565 # c\n", id="toml"),
        pytest.param("xml", "<network><port>25565</port></network>", id="xml"),
        pytest.param("file", "port 25565\n", id="file"),
    ],
)
def test_unchanged_content_is_not_rewritten(parser: str, text: str) -> None:
    key = {"file": "port "}.get(parser, "network.port")
    value = "port 25565" if parser == "file" else PORT
    if parser == "properties":
        key = "server-port"
    assert rewrite(text, config(parser, **{key: value}), VALUES) is None


@pytest.mark.parametrize(
    ("parser", "created"),
    [
        pytest.param("properties", "server-port=25565\n", id="properties"),
        pytest.param("ini", "[network]\nport=25565\n", id="ini"),
        pytest.param("yaml", "network:\n  port: 25565\n", id="yaml"),
        pytest.param("json", '{\n    "network": {\n        "port": 25565\n    }\n}\n', id="json"),
        pytest.param("toml", "[network]\nport = 25565\n", id="toml"),
        pytest.param(
            "xml",
            '<?xml version="1.0" encoding="utf-8"?>\n<network><port>25565</port></network>\n',
            id="xml",
        ),
        pytest.param("file", None, id="file cannot be created"),
    ],
)  # fmt: skip
def test_missing_file_is_created_where_the_parser_can(parser: str, created: str | None) -> None:
    key = "server-port" if parser == "properties" else "network.port"
    assert rewrite(None, config(parser, **{key: PORT}), VALUES) == created


@pytest.mark.parametrize(
    ("parser", "text"),
    [
        pytest.param("yaml", "a: [1, 2\n", id="yaml"),
        pytest.param("json", '{"a": ', id="json"),
        pytest.param("toml", "a = = 1\n", id="toml"),
        pytest.param("xml", "<a><b></a>", id="xml"),
        pytest.param(
            "xml", '<!DOCTYPE a [<!ENTITY e "x">]><a>&e;</a>', id="xml with entities is refused"
        ),
        pytest.param("json", "[1, 2]", id="json that is no object"),
    ],
)
def test_parse_errors_leave_the_file(parser: str, text: str) -> None:
    with pytest.raises(ConfigParseError):
        rewrite(text, config(parser, **{"a.b": "1"}), VALUES)


def test_if_value_with_a_pattern() -> None:
    cfg = config("properties", **{"level-type": {"regex:^(default|normal)$": "flat"}})
    assert rewrite("level-type=normal\n", cfg, VALUES) == "level-type=flat\n"
    assert rewrite("level-type=amplified\n", cfg, VALUES) is None


def test_unknown_placeholders_are_left_as_written() -> None:
    cfg = config("properties", a="{{server.nope}}")
    assert rewrite("a=1\n", cfg, VALUES) == "a={{server.nope}}\n"


def test_placeholder_list() -> None:
    assert VALUES["server.build.default.port"] == "25565"
    assert VALUES["server.allocations.default.ip"] == "10.1.2.3"
    assert VALUES["server.build.memory"] == VALUES["server.build.memory_limit"] == "1024"
    for prefix in ("env.", "server.build.env.", "server.environment."):
        assert VALUES[prefix + "WORLD"] == "Midgard"
