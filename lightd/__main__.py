"""The ``lightd`` command line: ``lightd serve`` and the operator commands.

Parses arguments, loads settings, and turns configuration errors into one line and
exit code 2. It must not contain daemon logic.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from lightd import __version__
from lightd.errors import ConfigError

EXIT_CONFIG = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lightd", description="lightd node daemon")
    parser.add_argument("--version", action="version", version=f"lightd {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the daemon")
    serve.add_argument("--config", type=Path, help="JSON config file (or $LIGHTD_CONFIG)")
    return parser


def _serve(args: argparse.Namespace) -> int:
    from lightd.config import load_settings
    from lightd.logsetup import configure_logging
    from lightd.server import run_server

    try:
        settings = load_settings(args.config)
        configure_logging(settings.logging)
        asyncio.run(run_server(settings, config_path=args.config))
    except ConfigError as exc:
        print(f"lightd: {exc.message}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 0
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    return 1


if __name__ == "__main__":
    sys.exit(main())
