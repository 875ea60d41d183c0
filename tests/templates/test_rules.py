"""Variable rules: every rule's pass and fail, rule texts split as eggs write them."""

from __future__ import annotations

import pytest

from lightd.spec.template import TemplateVariable
from lightd.templates.rules import (
    RuleBroken,
    check_rules_well_formed,
    check_value,
    effective_variables,
    split_rules,
    unknown_rules,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("required|string|max:20", ["required", "string", "max:20"], id="plain"),
        pytest.param(
            "required|regex:/^(true|false)$/|max:5",
            ["required", "regex:/^(true|false)$/", "max:5"],
            id="a regex holding a bar stays one rule",
        ),
        pytest.param(
            "nullable|regex:/^[a-z]+$/i", ["nullable", "regex:/^[a-z]+$/i"], id="regex flags kept"
        ),
        pytest.param("", [], id="no rules"),
        pytest.param("required||string", ["required", "string"], id="empty pieces dropped"),
    ],
)
def test_split_rules(text: str, expected: list[str]) -> None:
    assert split_rules(text) == expected


@pytest.mark.parametrize(
    ("rules", "value", "broken_rule"),
    [
        pytest.param(["required"], "", "required", id="required refuses an empty value"),
        pytest.param(["required"], None, "required", id="required refuses a missing value"),
        pytest.param(["required"], "x", None, id="required takes any text"),
        pytest.param(["nullable", "integer"], "", None, id="nullable lets an empty value pass"),
        pytest.param(["nullable", "integer"], None, None, id="nullable lets null pass"),
        pytest.param(["string"], "anything", None, id="string takes text"),
        pytest.param(["integer"], "-12", None, id="integer takes a signed integer"),
        pytest.param(["integer"], "1.5", "integer", id="integer refuses a fraction"),
        pytest.param(["integer"], "12; rm -rf /", "integer", id="integer refuses a command"),
        pytest.param(["numeric"], "1.5e3", None, id="numeric takes a float"),
        pytest.param(["numeric"], "abc", "numeric", id="numeric refuses letters"),
        pytest.param(["boolean"], "true", None, id="boolean takes true"),
        pytest.param(["boolean"], "0", None, id="boolean takes 0"),
        pytest.param(["boolean"], "yes", "boolean", id="boolean refuses yes"),
        pytest.param(["in:easy,normal,hard"], "hard", None, id="in takes a listed value"),
        pytest.param(["in:easy,normal,hard"], "peaceful", "in:easy,normal,hard", id="in refuses"),
        pytest.param(["not_in:root,admin"], "root", "not_in:root,admin", id="not_in refuses"),
        pytest.param(["string", "min:3"], "ab", "min:3", id="min counts characters of text"),
        pytest.param(["integer", "min:128"], "64", "min:128", id="min compares integers"),
        pytest.param(["integer", "min:128"], "1024", None, id="min passes a large integer"),
        pytest.param(["string", "max:5"], "abcdef", "max:5", id="max counts characters"),
        pytest.param(["numeric", "max:5"], "100", "max:5", id="max compares numbers"),
        pytest.param(["integer", "between:1,10"], "11", "between:1,10", id="between above"),
        pytest.param(["integer", "between:1,10"], "10", None, id="between at the edge"),
        pytest.param(["string", "between:2,4"], "abcde", "between:2,4", id="between of length"),
        pytest.param(["size:3"], "abc", None, id="size of length"),
        pytest.param(["digits:4"], "12a4", "digits:4", id="digits refuses letters"),
        pytest.param(["digits_between:2,3"], "1234", "digits_between:2,3", id="digits_between"),
        pytest.param(["regex:/^[\\w.-]+\\.jar$/"], "server.jar", None, id="regex matches"),
        pytest.param(
            ["regex:/^[\\w.-]+\\.jar$/"],
            "x.jar; id",
            "regex:/^[\\w.-]+\\.jar$/",
            id="regex refuses",
        ),
        pytest.param(["regex:/^[A-Z]+$/i"], "abc", None, id="regex honours the i flag"),
        pytest.param(["not_regex:/\\s/"], "a b", "not_regex:/\\s/", id="not_regex refuses"),
        pytest.param(["alpha_dash"], "my_world-2", None, id="alpha_dash takes dashes"),
        pytest.param(["alpha_dash"], "my world", "alpha_dash", id="alpha_dash refuses a space"),
        pytest.param(["alpha"], "abc1", "alpha", id="alpha refuses digits"),
        pytest.param(["alpha_num"], "abc1", None, id="alpha_num takes digits"),
        pytest.param(["url"], "https://example.org/a.jar", None, id="url takes https"),
        pytest.param(["url"], "file:///etc/passwd", "url", id="url refuses file"),
        pytest.param(["url"], "not a url", "url", id="url refuses text"),
        pytest.param(["ip"], "10.0.0.1", None, id="ip takes an address"),
        pytest.param(["ipv6"], "10.0.0.1", "ipv6", id="ipv6 refuses v4"),
        pytest.param(["starts_with:a,b"], "cat", "starts_with:a,b", id="starts_with"),
        pytest.param(["ends_with:.jar"], "x.jar", None, id="ends_with"),
        pytest.param(["lowercase"], "Abc", "lowercase", id="lowercase"),
        pytest.param(["json"], "{]", "json", id="json"),
        pytest.param(["some_panel_rule:1"], "x", None, id="an unknown rule is not enforced"),
    ],
)
def test_check_value(rules: list[str], value: str | None, broken_rule: str | None) -> None:
    broken = check_value("VAR", rules, value)
    assert (broken.rule if broken else None) == broken_rule
    if broken is not None:
        assert broken.variable == "VAR"
        assert broken.reason


def test_unknown_rules_are_listed() -> None:
    assert unknown_rules(["required", "some_panel_rule:1", "max:3"]) == ["some_panel_rule:1"]


@pytest.mark.parametrize(
    "rule",
    [
        pytest.param("regex:/[/", id="a pattern that does not compile"),
        pytest.param("regex:abc", id="a pattern without delimiters"),
        pytest.param("max:lots", id="a bound that is no number"),
        pytest.param("between:1", id="between without its upper bound"),
    ],
)
def test_malformed_rules_are_named(rule: str) -> None:
    broken = check_rules_well_formed("VAR", ["required", rule])
    assert broken is not None and broken.rule == rule


VARIABLES = [
    TemplateVariable(env_variable="SERVER_JARFILE", default_value="server.jar",
                     rules=["required", "string", "max:20"]),
    TemplateVariable(env_variable="MAX_PLAYERS", default_value="20",
                     rules=["required", "integer", "between:1,100"]),
    TemplateVariable(env_variable="MOTD", default_value="", rules=["nullable", "string"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        pytest.param(
            {},
            {"SERVER_JARFILE": "server.jar", "MAX_PLAYERS": "20", "MOTD": ""},
            id="defaults fill every variable",
        ),
        pytest.param(
            {"MAX_PLAYERS": 50, "MOTD": None},
            {"SERVER_JARFILE": "server.jar", "MAX_PLAYERS": "50", "MOTD": ""},
            id="numbers become text and null is empty",
        ),
        pytest.param(
            {"MAX_PLAYERS": "500"},
            RuleBroken("MAX_PLAYERS", "between:1,100", "must be between 1 and 100"),
            id="a broken rule names the variable and the rule",
        ),
        pytest.param(
            {"NOPE": "1"},
            RuleBroken("NOPE", "declared", "the template declares no such variable"),
            id="an undeclared variable is refused",
        ),
        pytest.param(
            {"SERVER_JARFILE": ""},
            RuleBroken("SERVER_JARFILE", "required", "a value is required"),
            id="a required variable cannot be emptied",
        ),
    ],
)
def test_effective_variables(
    given: dict[str, str | int | None], expected: dict[str, str] | RuleBroken
) -> None:
    assert effective_variables(VARIABLES, given) == expected
