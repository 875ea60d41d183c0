"""``/desired…``: the state of the desired folder (GitOps) and an explicit apply.

``GET /desired`` reports the watcher, the deletion guard and every document problem;
``POST /desired/apply`` re-reads the folder now, optionally allowing a mass deletion
(``lightd apply --allow-mass-delete``); ``GET /desired/containers`` lists each
container's current document with its observed and actual state (``lightd plan`` and
``lightd status`` read it). Writes go through the GitOps facade's ingest only; this module must
not edit documents or change anything on the engine.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from quart import Blueprint
from quart_schema import validate_request, validate_response

from lightd.api.context import get_services
from lightd.api.routes.common import ErrorBody, RequestModel
from lightd.desired.documents import DocumentProblem
from lightd.services import Services
from lightd.spec.observed import InstallState, RuntimeState

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
    # The user it runs as (recorded when lightd created it; None: the image's own).
    user: str | None = None


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


def desired_view(services: Services) -> DesiredView:
    gitops = services.gitops
    status = gitops.status
    return DesiredView(
        folder=status.folder,
        watching=gitops.watching,
        deletion_blocked=status.deletion_blocked,
        held=status.held,
        problems=[problem_view(problem) for problem in gitops.problems()],
        last_scan_at=status.last_scan_at,
    )


@blueprint.get("/desired")
@validate_response(DesiredView)
async def show() -> DesiredView:
    return desired_view(get_services())


@blueprint.post("/desired/apply")
@validate_request(ApplyRequest)
@validate_response(ApplyResponse)
@validate_response(ErrorBody, 400)
async def apply(data: ApplyRequest) -> ApplyResponse:
    services = get_services()
    result = await services.gitops.apply(allow_mass_delete=data.allow_mass_delete)
    message = "Deletion blocked" if result.deletion_blocked is not None else "Desired state applied"
    return ApplyResponse(
        message=message,
        changed=result.changed,
        deleted=result.deleted,
        held=result.held,
        deletion_blocked=result.deletion_blocked,
        desired=desired_view(services),
    )


@blueprint.get("/desired/containers")
@validate_response(CurrentList)
async def containers() -> CurrentList:
    items = [
        CurrentContainer(
            internal_id=item.internal_id,
            document=item.spec.document() if item.spec is not None else None,
            install_state=item.observed.install_state,
            state=item.observed.state,
            last_error=item.observed.last_error,
            document_error=str(item.problem) if item.problem else None,
            held=item.held,
            main=MainView(
                exists=item.main.exists, running=item.main.running, user=item.observed.run_user
            )
            if item.main
            else None,
        )
        for item in await get_services().gitops.current()
    ]
    return CurrentList(containers=items)
