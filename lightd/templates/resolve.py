"""The effective spec: a container document with its template applied, in one place.

:func:`effective_spec` turns a document that names a template into the spec the planner
and the executor work with: the image (the document's, else the template's first, as
one of the template's images, through ``templates.image_map``), the startup command
substituted safely (:func:`~lightd.templates.startup.substitute`), the environment
(every variable, ``STARTUP``, ``SERVER_MEMORY`` in MiB, ``SERVER_IP``, ``SERVER_PORT``,
``TZ``; the document's own ``environment`` wins), the start pattern from ``done``, the
stop, the install script with its image, and the config files. A field the document sets
itself (not left at its default) overrides the template's. A document without a template
is returned as it is, so containers made before templates keep their hash. Pure: it
must not do I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from lightd.spec.container import ContainerSpec, StopPolicy
from lightd.spec.template import TemplateSpec
from lightd.templates.rules import RuleBroken, effective_variables
from lightd.templates.startup import start_pattern, substitute

MIB = 1024 * 1024


@dataclass(frozen=True)
class Unresolved:
    """Why a document cannot be resolved; ``field`` names what to fix."""

    field: str
    reason: str

    @property
    def message(self) -> str:
        return f"Invalid field '{self.field}': {self.reason}"


def mapped(image: str, image_map: Mapping[str, str]) -> str:
    return image_map.get(image, image)


def builtin_environment(spec: ContainerSpec, *, tz: str) -> dict[str, str]:
    """``SERVER_MEMORY`` (MiB, 0 unlimited), ``SERVER_IP``, ``SERVER_PORT`` (first port), ``TZ``."""
    first = spec.ports[0] if spec.ports else None
    return {
        "SERVER_MEMORY": str((spec.limits.memory or 0) // MIB),
        "SERVER_IP": first.ip if first is not None else "0.0.0.0",
        "SERVER_PORT": str(first.port) if first is not None else "",
        "TZ": tz,
    }


def _image(spec: ContainerSpec, template: TemplateSpec) -> str | Unresolved:
    if not spec.image:
        return template.default_image()
    if spec.image in template.images.values():
        return spec.image
    if spec.image in template.images:  # a label names its image
        return template.images[spec.image]
    choices = ", ".join(sorted(set(template.images.values())))
    return Unresolved("image", f"must be one of the template's images: {choices}")


def effective_spec(
    spec: ContainerSpec,
    template: TemplateSpec | None,
    *,
    image_map: Mapping[str, str],
    tz: str,
) -> ContainerSpec | Unresolved | RuleBroken:
    """The spec with its template applied, or why it cannot be."""
    if spec.template is None:
        if spec.image in image_map:
            return spec.model_copy(update={"image": mapped(spec.image, image_map)})
        return spec
    if template is None:
        return Unresolved("template", f"no template named {spec.template!r}")
    image = _image(spec, template)
    if isinstance(image, Unresolved):
        return image
    values = effective_variables(template.variables, spec.variables)
    if isinstance(values, RuleBroken):
        return values
    environment = {**values, **builtin_environment(spec, tz=tz)}
    startup = substitute(
        spec.startup_command or template.startup, {**environment, **spec.environment}
    )
    environment["STARTUP"] = startup
    environment.update(spec.environment)
    stop = spec.stop
    if stop == StopPolicy():
        if template.stop.command is not None:
            stop = StopPolicy(command=template.stop.command)
        elif template.stop.signal is not None:
            stop = StopPolicy(signal=template.stop.signal)
    install = template.install
    install_script = spec.install_script
    install_image = spec.install_image
    if install_script is None and install is not None:
        install_script = install.script
        install_image = install_image or install.image
    return spec.model_copy(
        update={
            "image": mapped(image, image_map),
            "startup_command": startup,
            "environment": environment,
            "start_pattern": spec.start_pattern or start_pattern(template.start.done),
            "stop": stop,
            "install_script": install_script,
            "install_image": mapped(install_image, image_map) if install_image else "",
            "config_files": spec.config_files or list(template.config_files),
        }
    )
