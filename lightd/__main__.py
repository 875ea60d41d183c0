"""The ``lightd`` command line: ``lightd serve`` and the operator commands.

Parses arguments, loads settings, and turns configuration errors into one line (exit
code 2 for ``serve``, 1 for the operator commands, whose 2 means "plan has changes").
The operator commands live in :mod:`lightd.cli`. It must not contain daemon logic.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
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

    def operator(name: str, help_text: str, *, remote: bool) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("--config", type=Path, help="JSON config file (or $LIGHTD_CONFIG)")
        if remote:
            sub.add_argument(
                "--url", help="the daemon's URL (default: from server.host and server.port)"
            )
        return sub

    validate = operator("validate", "check every desired document (no daemon needed)", remote=False)
    validate.add_argument("dir", nargs="?", type=Path, help="desired folder (storage.desired_dir)")
    plan = operator("plan", "show what would change to reach a desired folder", remote=True)
    plan.add_argument("dir", nargs="?", type=Path, help="desired folder (storage.desired_dir)")
    operator("status", "containers and the port pool of the running daemon", remote=True)
    apply = operator("apply", "make the daemon re-read its desired folder now", remote=True)
    apply.add_argument(
        "--allow-mass-delete",
        action="store_true",
        help="delete containers whose documents are gone even beyond gitops.max_delete_share",
    )
    template = commands.add_parser("template", help="templates in the desired folder")
    template_commands = template.add_subparsers(dest="template_command", required=True)
    importing = template_commands.add_parser(
        "import", help="write desired/templates/<name>.json from an egg (or a lightd template)"
    )
    importing.add_argument("egg", type=Path, help="the egg file (JSON, or a Pelican YAML export)")
    importing.add_argument("--name", help="the template's name (default: from the egg's name)")
    importing.add_argument("--config", type=Path, help="JSON config file (or $LIGHTD_CONFIG)")
    importing.add_argument("--dir", type=Path, help="desired folder (storage.desired_dir)")
    schema = commands.add_parser("schema", help="print or write the documents' JSON Schemas")
    target = schema.add_mutually_exclusive_group()
    target.add_argument("--write", type=Path, metavar="DIR", help="write the schema files")
    target.add_argument("--check", type=Path, metavar="DIR", help="exit 1 when DIR is stale")
    return parser


def _serve(args: argparse.Namespace) -> int:
    # No cyclic collections while the modules load and the daemon starts (they only
    # create objects that live as long as the process): the server collects and
    # freezes them once, then turns the collector back on.
    gc.disable()
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


def _operator(args: argparse.Namespace) -> int:
    from lightd.cli import commands
    from lightd.cli.client import DaemonClient, daemon_url, master_token
    from lightd.config import load_settings

    if args.command == "schema":
        return commands.schema(write=args.write, check=args.check, out=sys.stdout)
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        print(f"lightd: {exc.message}", file=sys.stderr)
        return commands.EXIT_ERROR
    folder = getattr(args, "dir", None) or settings.storage.desired_dir
    if args.command == "template":
        return commands.template_import(args.egg, name=args.name, folder=folder, out=sys.stdout)
    if args.command == "validate":
        return commands.validate(folder, out=sys.stdout)
    with DaemonClient(daemon_url(settings, args.url), master_token(settings)) as client:
        if args.command == "plan":
            return commands.plan(folder, settings=settings, client=client, out=sys.stdout)
        if args.command == "status":
            return commands.status(client=client, out=sys.stdout)
        return commands.apply(
            client=client, allow_mass_delete=args.allow_mass_delete, out=sys.stdout
        )


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    return _operator(args)


if __name__ == "__main__":
    sys.exit(main())
