"""The daemon's start does not load what only some requests need (memory: issue 13).

Each check runs in a fresh interpreter: ``import lightd.server`` (what ``lightd serve``
loads before it listens) must leave httpx (panel, S3, transfers) and the config-file
parsers (ruamel.yaml, tomlkit, defusedxml) unloaded, and the first use of each lazily
imported part must still work there.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

LAZY = ("httpx", "ruamel.yaml", "tomlkit", "defusedxml")


def run(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_serving_imports_leave_the_lazy_parts_unloaded() -> None:
    out = run(
        f"""
        import sys
        import lightd.server
        print(",".join(m for m in {LAZY!r} if m in sys.modules))
        """
    )
    assert out.strip() == ""


def test_config_parsers_and_eggs_load_on_first_use() -> None:
    out = run(
        """
        import sys
        import lightd.server
        from lightd.spec.template import ConfigFile
        from lightd.templates.configfiles import rewrite
        from lightd.templates.eggs import parse_egg_bytes

        def cfg(parser):
            return ConfigFile(path="f", parser=parser, replace=[{"match": "a.b", "value": "7"}])

        print(rewrite("a:\\n  b: 1\\n", cfg("yaml"), {}).strip().replace("\\n", "|"))
        print(rewrite("[a]\\nb = 1\\n", cfg("toml"), {}).strip().replace("\\n", "|"))
        print(rewrite("<a><b>1</b></a>", cfg("xml"), {}).strip())
        print(parse_egg_bytes(b"name: egg\\n")["name"])
        print(all(m in sys.modules for m in ("ruamel.yaml", "tomlkit", "defusedxml")))
        """
    )
    lines = out.splitlines()
    assert lines[0] == "a:|  b: 7", lines
    assert lines[1] == "[a]|b = 7" or lines[1].startswith("[a]|b = "), lines
    assert "<b>7</b>" in lines[2], lines
    assert lines[3] == "egg"
    assert lines[4] == "True"


def test_panel_client_makes_its_http_client_on_first_use() -> None:
    out = run(
        """
        import asyncio, sys
        import lightd.server
        from lightd.remote.client import PanelClient

        async def main():
            client = PanelClient()
            print("httpx" in sys.modules)
            # Nothing listens on port 9 of localhost: an answer of why, not an exception.
            why = await client.health("http://127.0.0.1:9", "t", timeout_seconds=2)
            print("httpx" in sys.modules, bool(why))
            await client.aclose()

        asyncio.run(main())
        """
    )
    assert out.splitlines() == ["False", "True True"]
