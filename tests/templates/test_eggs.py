"""Eggs in the real format (tests/templates/eggs/) read as lightd templates; bad eggs named."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson
import pytest

from lightd.spec.template import TemplateSpec, TemplateStop
from lightd.templates.eggs import EggInvalid, parse_egg_bytes, template_from_body, template_name

EGGS = Path(__file__).parent / "eggs"


def egg(name: str) -> dict[str, Any]:
    return parse_egg_bytes((EGGS / name).read_bytes())


def test_paper_ptdl_v2() -> None:
    template = template_from_body(egg("egg-paper.json"))
    assert template.name == "paper"
    assert template.source == "PTDL_v2"
    assert list(template.images) == ["Java 21", "Java 17"]
    assert template.default_image() == "ghcr.io/pterodactyl/yolks:java_21"
    assert template.start.done == [")! For help, type "]
    assert template.stop == TemplateStop(command="stop")
    assert template.features == {"eula": True, "java_version": True, "pid_limit": True}
    assert template.install is not None
    assert template.install.entrypoint == "ash"
    assert "\r" not in template.install.script
    jar = template.variable("SERVER_JARFILE")
    assert jar is not None and jar.rules == ["required", "regex:/^([\\w\\d._-]+)(\\.jar)$/"]
    (properties,) = template.config_files
    assert properties.path == "server.properties" and properties.parser == "properties"
    assert [r.match for r in properties.replace] == [
        "server-ip",
        "server-port",
        "query.port",
        "motd",
    ]


def test_rust_done_list_signal_stop_and_choices() -> None:
    template = template_from_body(egg("egg-rust.json"))
    assert template.name == "rust-tests"
    assert template.start.done == ["Server startup complete", "regex:^SteamServer Connected \\d+$"]
    assert template.stop == TemplateStop(signal="SIGINT")
    assert template.file_denylist == ["*.so", "RustDedicated"]
    parsers = {f.path: f.parser for f in template.config_files}
    assert parsers == {"server/cfg/server.ini": "ini", "server/oxide.config.json": "json"}
    json_file = template.config_files[1]
    modded = next(r for r in json_file.replace if r.match == "Options.Modded")
    assert modded.if_value == {"false": "true"} and modded.value is None


def test_pelican_export_with_objects_and_list_rules() -> None:
    template = template_from_body(egg("egg-pelican-valheim.json"))
    assert template.source == "PLCN_v1"
    assert {f.parser for f in template.config_files} == {"yaml", "toml", "xml", "file"}
    assert template.start.done == ["Game server connected"]
    world = template.variable("WORLD")
    assert world is not None and world.rules == ["required", "string", "alpha_dash", "max:32"]


def test_ptdl_v1_single_image_and_empty_install() -> None:
    template = template_from_body(egg("egg-ptdl-v1-terraria.json"))
    assert template.images == {
        "quay.io/parkervcp/pterodactyl-images:debian_mono-5": (
            "quay.io/parkervcp/pterodactyl-images:debian_mono-5"
        )
    }
    assert template.install is None
    assert template.config_files == []


def test_name_override_and_lightd_template_round_trip() -> None:
    template = template_from_body(egg("egg-paper.json"), name="paper-21")
    assert template.name == "paper-21"
    again = template_from_body(orjson.loads(orjson.dumps(template.document())))
    assert again == template
    assert TemplateSpec.model_validate(template.document()) == template


def test_a_yaml_export_is_read() -> None:
    data = parse_egg_bytes(b"meta:\n  version: PLCN_v2\nname: Tiny\nstartup: ./run\n"
                           b"docker_images:\n  Debian: debian:12\n")  # fmt: skip
    assert template_from_body(data).images == {"Debian": "debian:12"}


def _broken(change: Any) -> dict[str, Any]:
    data = copy.deepcopy(egg("egg-rust.json"))
    change(data)
    return data


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        pytest.param(lambda d: d["meta"].update(version="PTDL_v9"), "meta.version",
                     id="an unknown egg version"),
        pytest.param(lambda d: d.pop("docker_images"), "docker_images", id="no images"),
        pytest.param(lambda d: d.update(startup=["./run"]), "startup", id="startup not a text"),
        pytest.param(lambda d: d["config"].update(files="{not json"), "config.files",
                     id="config.files not JSON"),
        pytest.param(
            lambda d: d["config"].update(files='{"a.cfg": {"parser": "hcl", "find": {}}}'),
            "config.files.a.cfg.parser", id="an unknown parser",
        ),
        pytest.param(
            lambda d: d["config"].update(files='{"../../etc/passwd": {"parser": "file"}}'),
            "config.files.../../etc/passwd", id="a config file outside the volume",
        ),
        pytest.param(lambda d: d["config"].update(startup='{"done": 5}'), "config.startup.done",
                     id="done not a text"),
        pytest.param(lambda d: d["config"].update(startup='{"done": "regex:(["}'),
                     "config.startup.done", id="done with a bad pattern"),
        pytest.param(lambda d: d["variables"][2].update(env_variable="MAX PLAYERS"),
                     "variables[2].env_variable", id="a variable name with a space"),
        pytest.param(lambda d: d["variables"][2].update(rules="required|between:1"),
                     "variables[2].rules", id="a rule that cannot be read"),
        pytest.param(lambda d: d["variables"][1].update(env_variable="HOSTNAME"),
                     "variables[1].env_variable", id="a variable listed twice"),
        pytest.param(lambda d: d.update(variables={"a": 1}), "variables",
                     id="variables not a list"),
    ],
)  # fmt: skip
def test_malformed_eggs_name_the_field(mutate: Any, field: str) -> None:
    with pytest.raises(EggInvalid) as caught:
        template_from_body(_broken(mutate))
    assert caught.value.field == field
    assert f"'{field}'" in caught.value.message


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param({"name": "x"}, "images", id="a template without images"),
        pytest.param({"name": "X Y", "images": {"a": "b"}}, "name", id="a bad template name"),
        pytest.param({"name": "x", "images": {"a": "b"}, "colour": 1}, "colour",
                     id="an unknown field"),
    ],
)  # fmt: skip
def test_malformed_lightd_templates_name_the_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(EggInvalid) as caught:
        template_from_body(body)
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("text", "expected"),
    [("Paper", "paper"), ("Rust (tests)", "rust-tests"), ("  ", "template"),
     ("Ünïcode Egg", "n-code-egg")],
)  # fmt: skip
def test_template_name(text: str, expected: str) -> None:
    assert template_name(text) == expected
