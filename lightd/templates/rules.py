"""Variable rules: Laravel-style rule strings checked against a value, purely.

Eggs write rules as ``required|string|max:20``; :func:`split_rules` cuts such a string
into rules (a ``regex:/…/`` may itself contain ``|``). :func:`check_value` answers the
first rule a value breaks, :func:`effective_variables` applies a template's defaults and
checks every variable. Supported: ``required``, ``nullable``, ``sometimes``, ``present``,
``filled``, ``string``, ``integer``, ``numeric``, ``boolean``, ``in:``, ``not_in:``,
``min:``, ``max:``, ``between:``, ``size:``, ``digits:``, ``digits_between:``,
``regex:``, ``not_regex:``, ``alpha``, ``alpha_num``, ``alpha_dash``, ``url``, ``ip``,
``ipv4``, ``ipv6``, ``starts_with:``, ``ends_with:``, ``lowercase``, ``uppercase``,
``json``. A rule lightd does not know is listed by :func:`unknown_rules` and not
enforced (the panel that wrote it may still check it). It must not do I/O.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from lightd.spec.template import TemplateVariable

VariableValue = str | int | float | bool | None

KNOWN = frozenset(
    {
        "required", "nullable", "sometimes", "present", "filled", "string", "integer",
        "numeric", "boolean", "bail", "in", "not_in", "min", "max", "between", "size",
        "digits", "digits_between", "regex", "not_regex", "alpha", "alpha_num",
        "alpha_dash", "url", "ip", "ipv4", "ipv6", "starts_with", "ends_with", "lowercase",
        "uppercase", "json",
    }
)  # fmt: skip

_FLAGS = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL, "x": re.VERBOSE, "u": 0}


@dataclass(frozen=True)
class RuleBroken:
    """``variable`` breaks ``rule`` (as written in the template) for ``reason``."""

    variable: str
    rule: str
    reason: str

    def __str__(self) -> str:
        return f"variable {self.variable}: {self.reason} (rule {self.rule!r})"


def split_rules(text: str) -> list[str]:
    """``required|regex:/^(a|b)$/|max:3`` -> ``["required", "regex:/^(a|b)$/", "max:3"]``."""
    rules: list[str] = []
    index = 0
    while index < len(text):
        head = text[index:]
        match = re.match(r"(not_)?regex:(.)", head)
        if match is not None:
            delimiter = match.group(2)
            closing = {"(": ")", "[": "]", "{": "}", "<": ">"}.get(delimiter, delimiter)
            start = match.end()
            end = None
            for position in range(start, len(head)):
                if head[position] == closing and re.match(r"[a-zA-Z]*(\||$)", head[position + 1 :]):
                    end = position + 1 + len(re.match(r"[a-zA-Z]*", head[position + 1 :])[0])  # type: ignore[index]
                    break
            if end is None:
                end = len(head)
            rules.append(head[:end])
            index += end + 1
            continue
        cut = head.find("|")
        piece = head if cut < 0 else head[:cut]
        if piece.strip():
            rules.append(piece.strip())
        index += len(piece) + 1
    return [rule for rule in rules if rule]


def rule_name(rule: str) -> str:
    return rule.split(":", 1)[0].strip().lower()


def unknown_rules(rules: Iterable[str]) -> list[str]:
    return [rule for rule in rules if rule_name(rule) not in KNOWN]


def php_regex(rule_argument: str) -> re.Pattern[str]:
    """A PHP ``/pattern/flags`` as a Python pattern; raises ValueError when it is none."""
    if len(rule_argument) < 2:
        raise ValueError(f"{rule_argument!r} is not a delimited pattern")
    delimiter = rule_argument[0]
    closing = {"(": ")", "[": "]", "{": "}", "<": ">"}.get(delimiter, delimiter)
    end = rule_argument.rfind(closing)
    if delimiter.isalnum() or delimiter == "\\" or end <= 0:
        raise ValueError(f"{rule_argument!r} is not a delimited pattern")
    body, flags_text = rule_argument[1:end], rule_argument[end + 1 :]
    flags = 0
    for flag in flags_text:
        if flag not in _FLAGS:
            raise ValueError(f"unknown pattern flag {flag!r}")
        flags |= _FLAGS[flag]
    # PCRE's named groups (?<name>…) are Python's (?P<name>…); lookbehinds stay.
    body = re.sub(r"\(\?<(?![=!])", "(?P<", body)
    try:
        return re.compile(body, flags)
    except re.error as exc:
        raise ValueError(f"not a valid pattern: {exc}") from exc


def as_text(value: VariableValue) -> str | None:
    """The environment text of a document's value (PHP's casts: true -> "1")."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def _number(text: str) -> float | None:
    if re.fullmatch(r"\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*", text):
        return float(text)
    return None


def _size(text: str, *, numeric: bool) -> float:
    if numeric:
        number = _number(text)
        if number is not None:
            return number
    return float(len(text))


def _bound(argument: str, rule: str) -> float:
    number = _number(argument)
    if number is None:
        raise ValueError(f"rule {rule!r} needs a number")
    return number


def _is_url(text: str) -> bool:
    try:
        parts = urlsplit(text)
    except ValueError:
        return False
    return (
        parts.scheme.lower() in ("http", "https", "ftp", "ftps")
        and bool(parts.netloc)
        and (not re.search(r"\s", text))
    )


def _is_ip(text: str, version: int | None) -> bool:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    return version is None or address.version == version


def check_value(variable: str, rules: list[str], value: str | None) -> RuleBroken | None:
    """The first rule ``value`` breaks, or None. An empty value passes unless required."""
    names = {rule_name(rule) for rule in rules}
    if value is None or value == "":
        for rule in rules:
            if rule_name(rule) in ("required", "filled"):
                return RuleBroken(variable, rule, "a value is required")
        return None
    numeric = bool(names & {"integer", "numeric"})
    for rule in rules:
        name = rule_name(rule)
        argument = rule.split(":", 1)[1] if ":" in rule else ""
        broken = _check_one(name, argument, rule, value, numeric=numeric)
        if broken is not None:
            return RuleBroken(variable, rule, broken)
    return None


def _check_one(name: str, argument: str, rule: str, value: str, *, numeric: bool) -> str | None:
    """Why ``value`` breaks one rule, or None."""
    choices = [choice.strip() for choice in argument.split(",")] if argument else []
    if name == "integer" and not re.fullmatch(r"[+-]?\d+", value.strip()):
        return "must be an integer"
    if name == "numeric" and _number(value) is None:
        return "must be a number"
    if name == "boolean" and value not in ("0", "1", "true", "false"):
        return "must be a boolean (true, false, 1 or 0)"
    if name == "in" and value not in choices:
        return f"must be one of {', '.join(choices)}"
    if name == "not_in" and value in choices:
        return f"must not be one of {', '.join(choices)}"
    if name in ("min", "max", "size", "between"):
        size = _size(value, numeric=numeric)
        unit = "" if numeric else " characters"
        if name == "min" and size < _bound(argument, rule):
            return f"must be at least {argument}{unit}"
        if name == "max" and size > _bound(argument, rule):
            return f"must be at most {argument}{unit}"
        if name == "size" and size != _bound(argument, rule):
            return f"must be {argument}{unit}"
        if name == "between":
            low, _, high = argument.partition(",")
            if not _bound(low, rule) <= size <= _bound(high, rule):
                return f"must be between {low} and {high}{unit}"
    if name in ("digits", "digits_between"):
        if not value.isdigit() or not value.isascii():
            return "must be digits"
        low, _, high = argument.partition(",")
        if name == "digits" and len(value) != int(_bound(low, rule)):
            return f"must be {low} digits"
        if name == "digits_between" and not _bound(low, rule) <= len(value) <= _bound(high, rule):
            return f"must be between {low} and {high} digits"
    if name in ("regex", "not_regex"):
        found = php_regex(argument).search(value) is not None
        if name == "regex" and not found:
            return f"must match {argument}"
        if name == "not_regex" and found:
            return f"must not match {argument}"
    if name == "alpha" and not re.fullmatch(r"[^\W\d_]+", value):
        return "must contain letters only"
    if name == "alpha_num" and not re.fullmatch(r"[^\W_]+", value):
        return "must contain letters and digits only"
    if name == "alpha_dash" and not re.fullmatch(r"[\w-]+", value):
        return "must contain letters, digits, dashes and underscores only"
    if name == "url" and not _is_url(value):
        return "must be a URL"
    if name in ("ip", "ipv4", "ipv6"):
        version = {"ip": None, "ipv4": 4, "ipv6": 6}[name]
        if not _is_ip(value, version):
            return f"must be an {name.upper() if version else 'IP'} address"
    if name == "starts_with" and not any(value.startswith(c) for c in choices):
        return f"must start with {' or '.join(choices)}"
    if name == "ends_with" and not any(value.endswith(c) for c in choices):
        return f"must end with {' or '.join(choices)}"
    if name == "lowercase" and value != value.lower():
        return "must be lowercase"
    if name == "uppercase" and value != value.upper():
        return "must be uppercase"
    if name == "json":
        try:
            json.loads(value)
        except ValueError:
            return "must be JSON"
    return None


def check_rules_well_formed(variable: str, rules: list[str]) -> RuleBroken | None:
    """A rule whose argument cannot be read (a bad pattern, a bound that is no number)."""
    for rule in rules:
        name = rule_name(rule)
        argument = rule.split(":", 1)[1] if ":" in rule else ""
        try:
            if name in ("regex", "not_regex"):
                php_regex(argument)
            elif name in ("min", "max", "size"):
                _bound(argument, rule)
            elif name in ("between", "digits_between"):
                low, _, high = argument.partition(",")
                _bound(low, rule)
                _bound(high, rule)
            elif name == "digits":
                _bound(argument, rule)
        except ValueError as exc:
            return RuleBroken(variable, rule, str(exc))
    return None


def effective_variables(
    variables: list[TemplateVariable], given: Mapping[str, VariableValue]
) -> dict[str, str] | RuleBroken:
    """Every variable's value (given, else the default), or the first broken rule.

    A given name the template does not declare is refused (rule ``declared``).
    """
    declared = {variable.env_variable for variable in variables}
    for name in sorted(given):
        if name not in declared:
            return RuleBroken(name, "declared", "the template declares no such variable")
    values: dict[str, str] = {}
    for variable in variables:
        name = variable.env_variable
        text = as_text(given[name]) if name in given else variable.default_value
        broken = check_value(name, variable.rules, text)
        if broken is not None:
            return broken
        values[name] = text or ""
    return values
