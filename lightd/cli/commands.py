"""The operator commands: ``validate``, ``plan``, ``status``, ``apply``, ``schema``, ``template``.

Each returns its exit code (documented in the README and below) and prints to the
streams it is given. ``plan`` asks the running daemon, or reads the engine directly when
nothing answers at the daemon's URL; it compares effective specs (documents with their
templates applied), so a template edit lists every container using it. Only
``template import`` writes a desired document (``templates/<name>.json``, atomically).

Exit codes:
    validate  0 every document is valid, 1 a problem was found (or the folder is missing)
    plan      0 no changes, 2 changes, 1 error (including an invalid document in DIR)
    status    0 shown, 1 error
    apply     0 applied, 1 error, 3 deletion still blocked
    schema    0 written or current, 1 stale (``--check``) or error
    template  0 imported, 1 error (a malformed egg names the field)
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, TextIO

import orjson

from lightd.cli.client import ApiError, DaemonClient, DaemonUnreachable
from lightd.cli.folder import read_folder
from lightd.cli.plan import Change, Current, diff, pool_diff, summary
from lightd.config import Settings
from lightd.desired.templates import template_document
from lightd.errors import LightdError
from lightd.reconcile.planner import Policy, main_user
from lightd.spec.container import ContainerSpec, recreate_hash
from lightd.spec.observed import ObservedContainer
from lightd.spec.schema import schema_documents
from lightd.spec.template import TemplateSpec
from lightd.store import DocumentStore
from lightd.store.documents import encode_document
from lightd.store.observed import STATE_FOLDER
from lightd.templates.eggs import EggInvalid, parse_egg_bytes, template_from_body
from lightd.templates.resolve import effective_spec

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_PROBLEMS = 1
EXIT_CHANGES = 2
EXIT_BLOCKED = 3


def validate(folder: Path, *, out: TextIO) -> int:
    reading = read_folder(folder)
    for problem in reading.problems:
        print(problem, file=out)
    if reading.problems:
        print(f"{len(reading.problems)} problem(s) in {folder}", file=out)
        return EXIT_PROBLEMS
    pool = len(reading.pool.entries) if reading.pool is not None else 0
    specs = len(reading.specs)
    print(f"{folder}: {specs} container document(s), {pool} pool port(s), ok", file=out)
    return EXIT_OK


# ---- plan ------------------------------------------------------------------------------


def templates_from_daemon(client: DaemonClient) -> dict[str, TemplateSpec]:
    found: dict[str, TemplateSpec] = {}
    for item in client.get("/templates")["templates"]:
        answer = client.get(f"/templates/{item['name']}")
        found[item["name"]] = TemplateSpec.model_validate(answer["template"])
    return found


def resolved(
    specs: dict[str, ContainerSpec], templates: dict[str, TemplateSpec], settings: Settings
) -> dict[str, ContainerSpec]:
    """Each document with its template applied (as is when it cannot be)."""
    found: dict[str, ContainerSpec] = {}
    for key, spec in specs.items():
        template = templates.get(spec.template) if spec.template else None
        effective = effective_spec(
            spec,
            template,
            image_map=settings.templates.image_map,
            tz=settings.templates.timezone,
        )
        found[key] = effective if isinstance(effective, ContainerSpec) else spec
    return found


def current_from_daemon(
    client: DaemonClient, *, settings: Settings | None = None
) -> dict[str, Current]:
    answer = client.get("/desired/containers")
    templates = templates_from_daemon(client) if settings is not None else {}
    found: dict[str, Current] = {}
    for item in answer["containers"]:
        document = item.get("document")
        main = item.get("main")
        running = (
            bool(main["running"]) if main is not None else item["state"] in ("starting", "running")
        )
        spec = ContainerSpec.model_validate(document) if document is not None else None
        if spec is not None and settings is not None:
            spec = resolved({spec.internal_id: spec}, templates, settings)[spec.internal_id]
        found[item["internal_id"]] = Current(
            internal_id=item["internal_id"],
            document=spec,
            exists=bool(main["exists"]) if main is not None else None,
            running=running,
            # The user it runs as now (daemons that say it; None: the image's).
            user=main.get("user") if main is not None else None,
            user_known=main is not None and bool(main["exists"]) and "user" in main,
        )
    return found


def current_from_engine(settings: Settings) -> dict[str, Current]:
    """This node's main containers as the engine shows them (no daemon runs)."""
    from lightd.auth.node import NODE_ID_FILE
    from lightd.engine.docker import DockerEngine
    from lightd.engine.records import Role

    try:
        node = (settings.storage.data_dir / NODE_ID_FILE).read_text("utf-8").strip()
    except OSError:
        return {}  # this data folder never ran a daemon: no container is ours

    async def read() -> list[Any]:
        engine = DockerEngine(settings.docker, node_id=node)
        try:
            return await engine.list_managed()
        finally:
            engine.close()

    found: dict[str, Current] = {}
    for actual in asyncio.run(read()):
        if actual.internal_id and actual.role == Role.MAIN.value:
            found[actual.internal_id] = Current(
                internal_id=actual.internal_id,
                exists=True,
                running=actual.running,
                actual=actual,
                user=observed_of(settings, actual.internal_id).run_user,
                user_known=True,
            )
    return found


def observed_of(settings: Settings, internal_id: str) -> ObservedContainer:
    """The daemon's observed state of a container, read from its data folder (or empty)."""
    store = DocumentStore(settings.storage.data_dir)
    try:
        data = store.read(f"{STATE_FOLDER}/{internal_id}.json")
        return ObservedContainer.model_validate(data)
    except (LightdError, ValueError):
        return ObservedContainer(internal_id=internal_id)


def volume_path(settings: Settings, volume_id: str) -> str:
    # Mirrors Daemon.volume_path: volumes live in <data_dir>/volumes/<id>.
    return str(settings.storage.data_dir / "volumes" / volume_id)


def plan(folder: Path, *, settings: Settings, client: DaemonClient, out: TextIO) -> int:
    reading = read_folder(folder)
    if not folder.is_dir():
        print(f"lightd plan: {folder} is not a folder", file=out)
        return EXIT_ERROR
    for problem in reading.problems:
        print(f"problem: {problem}", file=out)
    pool_changes: list[Change] = []
    try:
        current = current_from_daemon(client, settings=settings)
        source = f"the daemon at {client.url}"
        if reading.pool is not None:
            listing = client.get("/network/ports")
            pool_changes = pool_diff(reading.pool.entries, listing["ports"])
        expected = None
        expected_user = None
    except DaemonUnreachable:
        try:
            current = current_from_engine(settings)
        except LightdError as exc:
            print(f"lightd plan: no daemon answers and the engine cannot be read: {exc}", file=out)
            return EXIT_ERROR
        source = "the Docker engine (no daemon answers; the pool is not compared)"

        def expected_user(spec: ContainerSpec) -> str | None:
            return main_user(
                spec,
                observed_of(settings, spec.internal_id),
                volume_path=volume_path(settings, spec.volume_id),
                policy=Policy(default_user=settings.containers.user),
            )

        def expected(spec: ContainerSpec) -> str:
            path = volume_path(settings, spec.volume_id)
            return recreate_hash(spec, volume_path=path, user=expected_user(spec))

    except ApiError as exc:
        print(f"lightd plan: {exc.message}", file=out)
        return EXIT_ERROR
    changes = diff(
        wanted=resolved(reading.specs, reading.templates, settings),
        current=current,
        invalid=reading.invalid,
        expected_hash=expected,
        expected_user=expected_user,
        default_user=settings.containers.user,
    )
    changes += pool_changes
    print(f"Comparing {folder} with {source}.", file=out)
    for change in changes:
        print(change, file=out)
    print(summary(changes), file=out)
    if reading.problems:
        print(
            f"{len(reading.problems)} problem(s): invalid documents keep their last good spec",
            file=out,
        )
        return EXIT_ERROR
    return EXIT_CHANGES if changes else EXIT_OK


# ---- status ----------------------------------------------------------------------------


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]


def _ports_text(document: dict[str, Any] | None) -> str:
    if not document:
        return "-"
    ports = document.get("ports") or []
    return ",".join(f"{p['ip']}:{p['port']}/{p['protocol']}" for p in ports) or "-"


def status(*, client: DaemonClient, out: TextIO) -> int:
    try:
        containers = client.get("/desired/containers")["containers"]
        pool = client.get("/network/ports")["ports"]
        desired = client.get("/desired")
    except ApiError as exc:
        print(f"lightd status: {exc.message}", file=out)
        return EXIT_ERROR
    rows = [["ID", "INSTALL", "STATE", "PORTS", "LAST ERROR"]]
    for item in containers:
        error = item.get("document_error") or item.get("last_error") or ""
        rows.append(
            [
                item["internal_id"] + (" (held)" if item.get("held") else ""),
                item["install_state"],
                item["state"],
                _ports_text(item.get("document")),
                error,
            ]
        )
    print("\n".join(_table(rows)) if containers else "No containers.", file=out)
    print("", file=out)
    port_rows = [["POOL PORT", "PROTOCOL", "IN USE", "BY"]]
    for port in pool:
        used = "reserved" if port.get("reserved") else ("yes" if port.get("in_use") else "no")
        port_rows.append(
            [f"{port['ip']}:{port['port']}", port["protocol"], used, port.get("container") or ""]
        )
    print("\n".join(_table(port_rows)) if pool else "The pool is empty.", file=out)
    if desired.get("deletion_blocked"):
        print(f"\ndeletion blocked: {desired['deletion_blocked']}", file=out)
    for problem in desired.get("problems", []):
        print(f"problem: {problem['text']}", file=out)
    return EXIT_OK


# ---- apply -----------------------------------------------------------------------------


def apply(*, client: DaemonClient, allow_mass_delete: bool, out: TextIO) -> int:
    try:
        answer = client.post("/desired/apply", {"allow_mass_delete": allow_mass_delete})
    except ApiError as exc:
        print(f"lightd apply: {exc.message}", file=out)
        return EXIT_ERROR
    for key in answer["changed"]:
        print(f"  changed  {key}", file=out)
    for key in answer["deleted"]:
        print(f"  deleted  {key}", file=out)
    for problem in answer["desired"]["problems"]:
        print(f"problem: {problem['text']}", file=out)
    if answer["deletion_blocked"]:
        print(f"deletion blocked: {answer['deletion_blocked']}", file=out)
        print(f"  held: {', '.join(answer['held'])}", file=out)
        if not allow_mass_delete:
            print("  run `lightd apply --allow-mass-delete` to delete them", file=out)
        return EXIT_BLOCKED
    print(answer["message"], file=out)
    return EXIT_OK


# ---- schema ----------------------------------------------------------------------------


def schema(*, write: Path | None, check: Path | None, out: TextIO) -> int:
    documents = {name: encode_document(value) for name, value in schema_documents().items()}
    if check is not None:
        stale = [
            name
            for name, data in documents.items()
            if not (check / name).is_file() or (check / name).read_bytes() != data
        ]
        for name in stale:
            print(f"{check / name} is stale: run `lightd schema --write {check}`", file=out)
        return EXIT_ERROR if stale else EXIT_OK
    if write is not None:
        write.mkdir(parents=True, exist_ok=True)
        for name, data in documents.items():
            (write / name).write_bytes(data)
            print(f"wrote {write / name}", file=out)
        return EXIT_OK
    out.write(orjson.dumps(schema_documents(), option=orjson.OPT_INDENT_2).decode() + "\n")
    return EXIT_OK


# ---- template import -------------------------------------------------------------------


def template_import(egg: Path, *, name: str | None, folder: Path, out: TextIO) -> int:
    """Write ``templates/<name>.json`` in ``folder`` from an egg or a lightd template."""
    try:
        raw = egg.read_bytes()
    except OSError as exc:
        print(f"lightd template import: cannot read {egg}: {exc.strerror}", file=out)
        return EXIT_ERROR
    try:
        template = template_from_body(parse_egg_bytes(raw), name=name)
    except EggInvalid as exc:
        print(f"lightd template import: {egg}: {exc.message}", file=out)
        return EXIT_ERROR
    store = DocumentStore(folder)
    document = template_document(template.name)
    try:
        store.write(document, template.document())
    except LightdError as exc:
        print(f"lightd template import: {exc.message}", file=out)
        return EXIT_ERROR
    print(f"wrote {folder / document} ({template.source}, {len(template.variables)} variables)",
          file=out)  # fmt: skip
    return EXIT_OK
