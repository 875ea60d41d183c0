"""How a container is shown: desired spec and observed state merged into one answer.

Pure: the same function serves ``GET /containers/<id>`` and the node watch stream, so
both always agree. It must not read files or call the engine.
"""

from __future__ import annotations

from typing import Any

from lightd.spec.container import ContainerSpec
from lightd.spec.observed import ObservedContainer


def container_view(
    spec: ContainerSpec,
    observed: ObservedContainer | None,
    *,
    document_error: str | None,
    revision_desired: str | None,
) -> dict[str, Any]:
    obs = observed or ObservedContainer(internal_id=spec.internal_id)
    return {
        "internal_id": spec.internal_id,
        "container_id": obs.container_id,
        "volume_id": spec.volume_id,
        "image": spec.image,
        "startup_command": spec.startup_command,
        "start_pattern": spec.start_pattern,
        "install_state": obs.install_state.value,
        "state": obs.state.value,
        "power": spec.power.value,
        "ports": [p.model_dump() for p in spec.ports],
        "limits": spec.limits.model_dump(),
        "mount": dict(spec.mount),
        "environment": dict(spec.environment),
        "last_error": obs.last_error,
        "exit_code": obs.exit_code,
        "install_exit_code": obs.install_exit_code,
        "crash_count": obs.crash_count,
        "engine_available": obs.engine_available,
        "revision_desired": revision_desired,
        "revision_applied": obs.revision_applied,
        "document_error": document_error,
        "created_at": int(obs.created_at),
        "updated_at": int(obs.updated_at),
    }
