"""Startup substitution (table and a property test in a real container), done, stop."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import docker
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lightd.spec.template import TemplateStop
from lightd.templates.startup import parse_stop, start_pattern, substitute
from tests.support.engine import TEST_IMAGE, client


@pytest.mark.parametrize(
    ("command", "values", "expected"),
    [
        pytest.param(
            "java -Xmx{{SERVER_MEMORY}}M -jar {{SERVER_JARFILE}}",
            {"SERVER_MEMORY": "1024", "SERVER_JARFILE": "server.jar"},
            "java -Xmx1024M -jar server.jar",
            id="plain values are written as they are",
        ),
        pytest.param(
            "./run +hostname {{NAME}}",
            {"NAME": "a | b"},
            "./run +hostname 'a | b'",
            id="a value with a bar is single-quoted",
        ),
        pytest.param(
            './run +hostname "{{NAME}}"',
            {"NAME": 'say "$(id)" `x` \\'},
            './run +hostname "say \\"\\$(id)\\" \\`x\\` \\\\"',
            id="inside double quotes the special characters are escaped",
        ),
        pytest.param(
            "./run '{{NAME}}'",
            {"NAME": "it's"},
            "./run 'it'\\''s'",
            id="inside single quotes a quote closes, is escaped and reopens",
        ),
        pytest.param(
            "./run ${PORT} $PORT ${UNSET}",
            {"PORT": "25565"},
            "./run 25565 $PORT ${UNSET}",
            id="dollar-brace of a known name is replaced, the rest is left to the shell",
        ),
        pytest.param(
            "./run {{UNKNOWN}}",
            {},
            "./run ''",
            id="an unknown double-brace name becomes empty",
        ),
        pytest.param(
            "./run {{ SPACED }}",
            {"SPACED": "x"},
            "./run x",
            id="spaces inside the braces are allowed",
        ),
    ],
)
def test_substitute(command: str, values: dict[str, str], expected: str) -> None:
    assert substitute(command, values) == expected


@pytest.mark.parametrize(
    ("done", "lines", "expected"),
    [
        pytest.param([")! For help, type "], ['Done (3.2s)! For help, type "help"'], [True],
                     id="a plain substring"),
        pytest.param(["a.b"], ["axb", "a.b"], [False, True], id="plain text is not a pattern"),
        pytest.param(["Server started", "regex:^Ready in \\d+ms$"],
                     ["Ready in 30ms", "Server started.", "Ready in ms"], [True, True, False],
                     id="a list mixes substrings and patterns"),
    ],
)  # fmt: skip
def test_start_pattern(done: list[str], lines: list[str], expected: list[bool]) -> None:
    pattern = start_pattern(done)
    assert pattern is not None
    assert [re.search(pattern, line) is not None for line in lines] == expected


def test_no_done_means_no_pattern() -> None:
    assert start_pattern([]) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("^C", TemplateStop(signal="SIGINT"), id="caret C is SIGINT"),
        pytest.param("^c", TemplateStop(signal="SIGINT"), id="caret c too"),
        pytest.param("^\\", TemplateStop(signal="SIGQUIT"), id="caret backslash is SIGQUIT"),
        pytest.param("^SIGTERM", TemplateStop(signal="SIGTERM"), id="caret and a signal name"),
        pytest.param("^KILL", TemplateStop(signal="SIGKILL"), id="caret and a short name"),
        pytest.param("SIGHUP", TemplateStop(signal="SIGHUP"), id="a signal name"),
        pytest.param("stop", TemplateStop(command="stop"), id="a console command"),
        pytest.param("^NOPE", TemplateStop(command="^NOPE"), id="no such signal: a command"),
        pytest.param("", TemplateStop(), id="empty is the default"),
        pytest.param(None, TemplateStop(), id="missing is the default"),
    ],
)
def test_parse_stop(text: str | None, expected: TemplateStop) -> None:
    assert parse_stop(text) == expected


@pytest.fixture(scope="module")
def shell() -> Iterator[docker.models.containers.Container]:
    """One busybox container that the examples exec their startup commands in."""
    with client() as handle:
        box = handle.containers.run(
            TEST_IMAGE,
            ["sleep", "600"],
            name=f"lightd-tplprop-{uuid.uuid4().hex[:8]}",
            labels={"io.lightd.test": "true"},
            detach=True,
            network_mode="none",
        )
        try:
            yield box
        finally:
            box.remove(force=True)


VALUES = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="\x00", exclude_categories=["Cs"]),
    max_size=40,
)
CONTEXTS = (
    "printf '<%s>\\n' {{A}}",
    "printf '<%s>\\n' \"{{A}}\"",
    "printf '<%s>\\n' 'x{{A}}y'",
    "printf '<%s>\\n' ${A}",
)


@pytest.mark.docker
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=VALUES, other=VALUES)
def test_no_value_executes_or_changes(
    shell: docker.models.containers.Container, value: str, other: str
) -> None:
    """Each value reaches the program as one argument, verbatim, in every quoting spot."""
    template = "; ".join(CONTEXTS) + "; printf '<%s>\\n' {{B}} \"$A\"; printf 'ran\\n'"
    command = substitute(template, {"A": value, "B": other})
    result = shell.exec_run(
        ["/bin/sh", "-c", command], environment={"A": value, "B": other, "STARTUP": command}
    )
    assert result.exit_code == 0, result.output
    expected = f"<{value}>\n<{value}>\n<x{value}y>\n<{value}>\n<{other}>\n<{value}>\nran\n"
    assert result.output.decode() == expected
