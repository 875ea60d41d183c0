"""``/desired…``: the state of the desired folder (GitOps) and an explicit apply.

``GET /desired`` reports the watcher, the deletion guard and every document problem;
``POST /desired/apply`` re-reads the folder now, optionally allowing a mass deletion
(``lightd apply --allow-mass-delete``); ``GET /desired/containers`` lists each
container's current document with its observed and actual state (``lightd plan`` and
``lightd status`` read it). Writes go through the daemon's ingest only; this module must
not edit documents or change anything on the engine.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from quart import Blueprint
from quart_schema import validate_request, validate_response

from lightd.api.context import get_daemon
from lightd.api.routes.common import ErrorBody, RequestModel
from lightd.daemon import Daemon
from lightd.desired.documents import DocumentProblem
from lightd.errors import EngineError
from lightd.spec.observed import InstallState, ObservedContainer, RuntimeState

blueprint = Blueprint("desired", __name__)


class ProblemView(BaseModel):
    file: str
    line: int | None
    column: int | None
    reason: str
    text: str


class DesiredView(BaseModel):
    folder: str
    watching: bool
    deletion_blocked: str | None
    held: list[str]
    problems: list[ProblemView]
    last_scan_at: float | None


class ApplyRequest(RequestModel):
    allow_mass_delete: bool = False


class ApplyResponse(BaseModel):
    message: str
    changed: list[str]
    deleted: list[str]
    held: list[str]
    deletion_blocked: str | None
    desired: DesiredView


class MainView(BaseModel):
    exists: bool
    running: bool


class CurrentContainer(BaseModel):
    internal_id: str
    document: dict[str, Any] | None
    install_state: InstallState
    state: RuntimeState
    last_error: str | None
    document_error: str | None
    held: bool
    main: MainView | None


class CurrentList(BaseModel):
    containers: list[CurrentContainer]


def problem_view(problem: DocumentProblem) -> ProblemView:
    return ProblemView(
        file=problem.file,
        line=problem.line,
        column=problem.column,
        reason=problem.reason,
        text=str(problem),
    )


def desired_view(daemon: Daemon) -> DesiredView:
    status = daemon.ingest.status
    return DesiredView(
        folder=status.folder,
        watching=daemon.watcher.watching,
        deletion_blocked=status.deletion_blocked,
        held=status.held,
        problems=[problem_view(problem) for problem in daemon.ingest.problems()],
        last_scan_at=status.last_scan_at,
    )


@blueprint.get("/desired")
@validate_response(DesiredView)
async def show() -> DesiredView:
    return desired_view(get_daemon())


@blueprint.post("/desired/apply")
@validate_request(ApplyRequest)
@validate_response(ApplyResponse)
@validate_response(ErrorBody, 400)
async def apply(data: ApplyRequest) -> ApplyResponse:
    daemon = get_daemon()
    result = await daemon.ingest.ingest("apply", allow_mass_delete=data.allow_mass_delete)
    message = "Deletion blocked" if result.deletion_blocked is not None else "Desired state applied"
    return ApplyResponse(
        message=message,
        changed=result.changed,
        deleted=result.deleted,
        held=result.held,
        deletion_blocked=result.deletion_blocked,
        desired=desired_view(daemon),
    )


@blueprint.get("/desired/containers")
@validate_response(CurrentList)
async def containers() -> CurrentList:
    daemon = get_daemon()
    held = daemon.containers.held()
    keys = set(daemon.containers.ids()) | held
    keys |= {item.internal_id for item in daemon.observed.all()}
    items = []
    for key in sorted(keys):
        spec = daemon.containers.get(key)
        observed = daemon.observed.get(key) or ObservedContainer(internal_id=key)
        problem = daemon.containers.problem(key)
        main: MainView | None
        try:
            actual = await daemon.controller.observe(key)
        except EngineError:
            main = None
        else:
            found = actual.main
            main = MainView(exists=found is not None, running=bool(found and found.running))
        items.append(
            CurrentContainer(
                internal_id=key,
                document=spec.document() if spec is not None else None,
                install_state=observed.install_state,
                state=observed.state,
                last_error=observed.last_error,
                document_error=str(problem) if problem else None,
                held=key in held,
                main=main,
            )
        )
    return CurrentList(containers=items)
