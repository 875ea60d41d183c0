"""The effective desired side: container documents with their templates applied.

:class:`Resolver` resolves one document against the current templates and settings
(:func:`lightd.templates.resolve.effective_spec`); :class:`EffectiveDesired` is what the
reconciler and the read views see: every container's effective spec, and a revision that
changes when its document *or* its template changes (so a template edit re-converges
every container using it, and a refusal is retried). A document that cannot be resolved
is served as it is and refused by admission. It must not talk to the engine.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from lightd.desired.documents import DesiredContainers, DocumentProblem
from lightd.desired.templates import DesiredTemplates
from lightd.errors import InvalidField, LightdError
from lightd.spec.container import ContainerSpec
from lightd.store.documents import digest
from lightd.templates.resolve import Unresolved, effective_spec
from lightd.templates.rules import RuleBroken


def resolution_error(problem: Unresolved | RuleBroken) -> LightdError:
    """The 400 a document that cannot be resolved answers with (variable and rule named)."""
    if isinstance(problem, RuleBroken):
        return InvalidField(
            f"variables.{problem.variable}", f"{problem.reason} (rule {problem.rule!r})"
        )
    return InvalidField(problem.field, problem.reason)


class Resolver:
    """Resolves documents against the templates and the ``templates`` settings."""

    def __init__(
        self,
        *,
        templates: DesiredTemplates,
        image_map: Callable[[], Mapping[str, str]],
        timezone: Callable[[], str],
    ) -> None:
        self.templates = templates
        self._image_map = image_map
        self._timezone = timezone

    def resolve(self, spec: ContainerSpec) -> ContainerSpec | Unresolved | RuleBroken:
        template = self.templates.get(spec.template) if spec.template else None
        return effective_spec(spec, template, image_map=self._image_map(), tz=self._timezone())

    def check(self, spec: ContainerSpec) -> None:
        """Raise the 400 of a document that cannot be resolved."""
        resolved = self.resolve(spec)
        if not isinstance(resolved, ContainerSpec):
            raise resolution_error(resolved)


class EffectiveDesired:
    """The reconciler's and the views' reader: effective specs of the container documents."""

    def __init__(self, *, containers: DesiredContainers, resolver: Resolver) -> None:
        self.containers = containers
        self.resolver = resolver

    def raw(self, internal_id: str) -> ContainerSpec | None:
        return self.containers.get(internal_id)

    def get(self, internal_id: str) -> ContainerSpec | None:
        spec = self.containers.get(internal_id)
        if spec is None:
            return None
        resolved = self.resolver.resolve(spec)
        return resolved if isinstance(resolved, ContainerSpec) else spec

    def ids(self) -> list[str]:
        return self.containers.ids()

    def all(self) -> list[ContainerSpec]:
        return [spec for key in self.ids() if (spec := self.get(key)) is not None]

    def users_of_template(self, name: str) -> list[str]:
        return [spec.internal_id for spec in self.containers.all() if spec.template == name]

    def digest(self, internal_id: str) -> str | None:
        own = self.containers.digest(internal_id)
        spec = self.containers.get(internal_id)
        if own is None or spec is None or spec.template is None:
            return own
        template = self.resolver.templates.digest(spec.template) or "missing"
        return digest(f"{own}:{template}".encode())[:16]

    def deletion_held(self, internal_id: str) -> bool:
        return self.containers.deletion_held(internal_id)

    def problem(self, internal_id: str) -> DocumentProblem | None:
        return self.containers.problem(internal_id)

    def problems(self) -> dict[str, DocumentProblem]:
        return self.containers.problems()
