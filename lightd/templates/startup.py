"""Safe startup substitution, start detection and stop forms, purely.

:func:`substitute` replaces ``{{VAR}}`` and ``${VAR}`` in a startup command with the
value quoted for the spot it is in (outside quotes, inside ``"…"`` or inside ``'…'``), so
the command run through ``/bin/sh -c`` hands every value to the program verbatim as
part of one word: quotes, ``|``, ``;``, ``$( )``, backticks and newlines never execute.
``{{NAME}}`` of an unknown name becomes empty (as the images' ``eval`` of ``${NAME}``
would); ``${NAME}`` of an unknown name is left to the shell (it reads the environment).
It must not do I/O.
"""

from __future__ import annotations

import re
import shlex
import signal
from collections.abc import Mapping

from lightd.spec.template import TemplateStop

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_.]*)\s*\}\}|\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _quoted(value: str, context: str) -> str:
    if context == "'":
        return value.replace("'", "'\\''")
    if context == '"':
        return re.sub(r'([\\"$`])', r"\\\1", value)
    return shlex.quote(value)


def substitute(command: str, values: Mapping[str, str]) -> str:
    """``command`` with every known placeholder replaced by its quoted value."""
    out: list[str] = []
    context = ""  # "", "'" or '"': the quoting in effect at this point
    index = 0
    while index < len(command):
        char = command[index]
        match = _PLACEHOLDER.match(command, index) if char in "{$" else None
        if match is not None:
            braces, dollar = match.group(1), match.group(2)
            name = braces or dollar
            if name in values or braces is not None:
                out.append(_quoted(values.get(name, ""), context))
                index = match.end()
                continue
        if context == "'":
            if char == "'":
                context = ""
        elif char == "\\" and index + 1 < len(command):
            out.append(command[index : index + 2])
            index += 2
            continue
        elif context == '"':
            if char == '"':
                context = ""
        elif char in "'\"":
            context = char
        out.append(char)
        index += 1
    return "".join(out)


def start_pattern(done: list[str]) -> str | None:
    """One regular expression matching any ``done`` entry (``regex:`` or a substring)."""
    parts = [
        entry[len("regex:") :] if entry.startswith("regex:") else re.escape(entry)
        for entry in done
        if entry
    ]
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else "|".join(f"(?:{part})" for part in parts)


_CARET = {"^C": "SIGINT", "^\\": "SIGQUIT", "^Z": "SIGTSTP", "^D": None}


def _signal_name(text: str) -> str | None:
    name = text.upper().removeprefix("SIG")
    if not name:
        return None
    full = f"SIG{name}"
    return full if full in signal.Signals.__members__ else None


def parse_stop(text: str | None) -> TemplateStop:
    """An egg's ``config.stop``: ``^C`` is SIGINT, ``^SIGTERM``/``SIGTERM`` a signal.

    ``^C`` (either case), ``^\\`` and ``^Z`` are the terminal's keys; ``^NAME`` and
    ``SIGNAME`` name a signal; anything else (``stop``, ``quit``) is a console command.
    An empty stop means the default signal.
    """
    value = (text or "").strip()
    if not value:
        return TemplateStop()
    upper = value.upper()
    if upper in _CARET and _CARET[upper] is not None:
        return TemplateStop(signal=_CARET[upper])
    if value.startswith("^"):
        named = _signal_name(value[1:])
        if named is not None:
            return TemplateStop(signal=named)
    if re.fullmatch(r"SIG[A-Z0-9]+", value):
        named = _signal_name(value)
        if named is not None:
            return TemplateStop(signal=named)
    return TemplateStop(command=value)
